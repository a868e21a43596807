import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  type Certificate,
  CertificateAuthority,
  createCsr,
  decodePem,
  DEFAULT_LEAF_TTL_SECONDS,
  DEFAULT_MAX_LEAF_TTL_SECONDS,
  exportPrivateKeyPem,
  formatName,
  generateKeyPair,
  IdentityMismatch,
  importPrivateKeyPem,
  IssuanceRefused,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type KeyPair,
  parseCertificate,
  parseCertificates,
  parseCrl,
  parseCsr,
  type RevocationReason,
  SpiffeId,
  TtlExceedsMaximum,
  uriSans,
  verifySignature,
  verifySvid,
} from "../../mod.ts";
import { keySigner } from "../../lib/x509/signature.ts";
import { buildCsr, extension, extensionRequest, sanExtension } from "../support/csr-builder.ts";
import { issue, type Issued } from "../support/cert-factory.ts";
import { uriName } from "../../lib/x509/general-name.ts";

// Big RSA keys take seconds to make (more on a busy machine): above Bun's 5 s default.
const SLOW = { timeout: 120_000 };

const generated = new Map<KeyAlgorithm, Promise<KeyPair>>();
function keysFor(algorithm: KeyAlgorithm): Promise<KeyPair> {
  if (!generated.has(algorithm)) generated.set(algorithm, generateKeyPair(algorithm));
  return generated.get(algorithm)!;
}

const TD = "cluster.local";
const ID = SpiffeId.fromServiceAccount(TD, "default", "photos");
const NOW = new Date("2026-06-01T12:00:00Z");
const HOUR = 3600;
const DAY = 24 * HOUR;

const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  subjectAltName: "2.5.29.17",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

function root(options: Partial<Parameters<typeof CertificateAuthority.createRoot>[0]> = {}) {
  return CertificateAuthority.createRoot({ trustDomain: TD, now: () => NOW, ...options });
}

let sharedRoot: Promise<CertificateAuthority> | undefined;
function fixedRoot(): Promise<CertificateAuthority> {
  sharedRoot ??= root();
  return sharedRoot;
}

async function csrFor(
  algorithm: KeyAlgorithm = "ECDSA-P256",
  id: SpiffeId | string = ID,
  dnsNames?: string[],
) {
  return await createCsr({ keys: await keysFor(algorithm), id, dnsNames });
}

async function issuedLeaf(algorithm: KeyAlgorithm = "ECDSA-P256"): Promise<Certificate> {
  const svid = await (await fixedRoot()).issue(await csrFor(algorithm), { id: ID });
  return parseCertificate(svid.certificateDer);
}

function isCritical(cert: Certificate, oid: string): boolean | undefined {
  return cert.extensions.find((e) => e.oid === oid)?.critical;
}

async function signedBy(cert: Certificate, issuer: Certificate): Promise<boolean> {
  return await verifySignature(
    cert.signatureAlgorithm,
    issuer.spki,
    issuer.publicKeyAlgorithm,
    cert.tbs,
    cert.signature,
  );
}

async function sha1(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-1", bytes.slice()));
}

describe("issued X509-SVIDs follow the profile", () => {
  test("exactly one URI SAN, the SPIFFE ID", SLOW, async () => {
    const leaf = await issuedLeaf();
    assert.deepEqual(uriSans(leaf), [ID.toString()]);
  });

  test("basic constraints CA:FALSE, marked critical", SLOW, async () => {
    const leaf = await issuedLeaf();
    assert.equal(leaf.basicConstraints?.ca, false);
    assert.equal(leaf.basicConstraints?.pathLength, undefined);
    assert.equal(isCritical(leaf, OID.basicConstraints), true);
  });

  for (const algorithm of ["ECDSA-P256", "ECDSA-P384", "Ed25519"] as const) {
    test(`key usage digitalSignature only, critical, for a ${algorithm} key`, SLOW, async () => {
      const leaf = await issuedLeaf(algorithm);
      assert.deepEqual([...leaf.keyUsage!], ["digitalSignature"]);
      assert.equal(isCritical(leaf, OID.keyUsage), true);
    });
  }

  for (const algorithm of ["RSA-2048", "RSA-3072", "RSA-4096"] as const) {
    test(
      `key usage digitalSignature and keyEncipherment, critical, for a ${algorithm} key`,
      SLOW,
      async () => {
        const leaf = await issuedLeaf(algorithm);
        assert.deepEqual([...leaf.keyUsage!].sort(), ["digitalSignature", "keyEncipherment"]);
        assert.equal(isCritical(leaf, OID.keyUsage), true);
      },
    );
  }

  test("extended key usage serverAuth and clientAuth", SLOW, async () => {
    const leaf = await issuedLeaf();
    assert.deepEqual(leaf.extendedKeyUsage, [OID.serverAuth, OID.clientAuth]);
  });

  test("subject key identifier is the SHA-1 of the leaf's public key", SLOW, async () => {
    const leaf = await issuedLeaf();
    assert.deepEqual(leaf.subjectKeyIdentifier, await sha1(leaf.publicKey));
  });

  test("authority key identifier is the issuing CA's subject key identifier", SLOW, async () => {
    const leaf = await issuedLeaf();
    const ca = (await fixedRoot()).certificate;
    assert.ok(ca.subjectKeyIdentifier);
    assert.deepEqual(leaf.authorityKeyIdentifier, ca.subjectKeyIdentifier);
  });

  test("serial number is positive and 128 bits long", SLOW, async () => {
    for (let i = 0; i < 20; i++) {
      const leaf = await issuedLeaf();
      assert.equal(leaf.serialBytes.length, 16);
      assert.equal(leaf.serialBytes[0] & 0x80, 0, "positive");
      assert.notEqual(leaf.serialBytes[0], 0, "minimal DER");
    }
  });

  test("serial numbers are random", SLOW, async () => {
    const ca = await fixedRoot();
    const csr = await csrFor();
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) serials.add((await ca.issue(csr)).serialNumber);
    assert.equal(serials.size, 20);
  });

  test("serialNumber is the hex of the certificate's serial", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor());
    assert.equal(svid.serialNumber, parseCertificate(svid.certificateDer).serialNumber);
    assert.match(svid.serialNumber, /^[0-9a-f]{32}$/);
  });

  test("version 3, issued by the CA's subject, with the trust domain as organization", SLOW, async () => {
    const leaf = await issuedLeaf();
    assert.equal(leaf.version, 3);
    assert.equal(leaf.issuer.key, (await fixedRoot()).certificate.subject.key);
    assert.equal(formatName(leaf.subject), `O=${TD}`);
  });

  test("notBefore is backdated by 30 seconds", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor());
    const leaf = parseCertificate(svid.certificateDer);
    assert.equal(leaf.notBefore.getTime(), NOW.getTime() - 30_000);
    assert.equal(svid.notBefore.getTime(), leaf.notBefore.getTime());
  });

  test("the backdate is configurable", SLOW, async () => {
    const ca = await root({ backdateSeconds: 300 });
    const svid = await ca.issue(await csrFor());
    assert.equal(svid.notBefore.getTime(), NOW.getTime() - 300_000);
  });

  test("the default lifetime is 24 hours", SLOW, async () => {
    assert.equal(DEFAULT_LEAF_TTL_SECONDS, DAY);
    const svid = await (await fixedRoot()).issue(await csrFor());
    const leaf = parseCertificate(svid.certificateDer);
    assert.equal(leaf.notAfter.getTime(), NOW.getTime() + DAY * 1000);
    assert.equal(svid.notAfter.getTime(), leaf.notAfter.getTime());
  });

  test(
    "issue returns the validity the certificate carries when the clock has milliseconds",
    SLOW,
    async () => {
      const at = new Date("2026-06-01T12:00:00.750Z");
      const ca = await CertificateAuthority.createRoot({ trustDomain: TD, now: () => at });
      const svid = await ca.issue(await csrFor());
      const leaf = parseCertificate(svid.certificateDer);
      assert.equal(svid.notBefore.getTime(), leaf.notBefore.getTime());
      assert.equal(svid.notAfter.getTime(), leaf.notAfter.getTime());
    },
  );

  test("certificatePem and certificateDer are the same certificate", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor());
    assert.deepEqual(decodePem(svid.certificatePem)[0].der, svid.certificateDer);
  });

  test("the id field is the CSR's SPIFFE ID", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor());
    assert.ok(svid.id.equals(ID));
  });

  for (const algorithm of KEY_ALGORITHMS) {
    test(`a ${algorithm} leaf carries the CSR's key and verifies under the CA's key`, SLOW, async () => {
      const ca = await fixedRoot();
      const svid = await ca.issue(await csrFor(algorithm));
      const leaf = parseCertificate(svid.certificateDer);
      assert.deepEqual(leaf.spki, await keySignerSpki(algorithm));
      assert.ok(await signedBy(leaf, ca.certificate));
    });
  }
});

async function keySignerSpki(algorithm: KeyAlgorithm): Promise<Uint8Array> {
  const keys = await keysFor(algorithm);
  return (await keySigner(keys.privateKey, keys.publicKey)).spki;
}

describe("issuance rules", () => {
  test("a requested lifetime below the maximum is honoured", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor(), { ttlSeconds: HOUR });
    assert.equal(svid.notAfter.getTime(), NOW.getTime() + HOUR * 1000);
  });

  test("a lifetime equal to the maximum is issued", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor(), {
      ttlSeconds: DEFAULT_MAX_LEAF_TTL_SECONDS,
    });
    assert.equal(svid.notAfter.getTime(), NOW.getTime() + DEFAULT_MAX_LEAF_TTL_SECONDS * 1000);
  });

  test("a lifetime above the maximum is refused with ERR_TTL_EXCEEDS_MAXIMUM", SLOW, async () => {
    const ca = await root({ maxTtlSeconds: 2 * DAY });
    const err = await ca.issue(await csrFor(), { ttlSeconds: 2 * DAY + 1 }).catch((e) => e);
    assert.ok(err instanceof TtlExceedsMaximum);
    assert.ok(err instanceof IssuanceRefused);
    assert.equal(err.code, "ERR_TTL_EXCEEDS_MAXIMUM");
    assert.equal(err.requestedSeconds, 2 * DAY + 1);
    assert.equal(err.maximumSeconds, 2 * DAY);
  });

  test("a default lifetime above the maximum is refused when the CA is made", SLOW, async () => {
    await assert.rejects(root({ defaultTtlSeconds: 2 * DAY, maxTtlSeconds: DAY }), {
      code: "ERR_ISSUANCE_REFUSED",
    });
  });

  for (
    const [name, policy] of [
      ["a NaN maximum lifetime", { maxTtlSeconds: Number.NaN }],
      ["a negative maximum lifetime", { maxTtlSeconds: -1 }],
      ["a zero default lifetime", { defaultTtlSeconds: 0 }],
    ] as const
  ) {
    test(`a CA with ${name} is refused when it is made`, SLOW, async () => {
      await assert.rejects(root(policy), { code: "ERR_INVALID_ARGUMENT" });
    });
  }

  test("a negative backdate is refused when the CA is made", SLOW, async () => {
    await assert.rejects(root({ backdateSeconds: -60 }), { code: "ERR_INVALID_ARGUMENT" });
  });

  test("a configured default lifetime is used when the request gives none", SLOW, async () => {
    const ca = await root({ defaultTtlSeconds: 4 * HOUR });
    const svid = await ca.issue(await csrFor());
    assert.equal(svid.notAfter.getTime(), NOW.getTime() + 4 * HOUR * 1000);
  });

  for (const ttlSeconds of [0, -60, 1.5, Number.NaN]) {
    test(`a lifetime of ${ttlSeconds} seconds is refused as an invalid argument`, SLOW, async () => {
      await assert.rejects((await fixedRoot()).issue(await csrFor(), { ttlSeconds }), {
        name: "InvalidArgument",
        code: "ERR_INVALID_ARGUMENT",
      });
    });
  }

  test("notAfter never passes the issuing CA's notAfter", SLOW, async () => {
    const parent = await fixedRoot();
    const ca = await parent.createIntermediate({ ttlSeconds: 2 * HOUR });
    const svid = await ca.issue(await csrFor(), { ttlSeconds: DAY });
    assert.equal(svid.notAfter.getTime(), ca.notAfter.getTime());
    assert.equal(parseCertificate(svid.certificateDer).notAfter.getTime(), ca.notAfter.getTime());
  });

  test("an expired CA refuses to issue", SLOW, async () => {
    let clock = NOW;
    const ca = await CertificateAuthority.createRoot({ trustDomain: TD, ttlSeconds: DAY, now: () => clock });
    clock = new Date(NOW.getTime() + 2 * DAY * 1000);
    await assert.rejects(ca.issue(await csrFor()), { code: "ERR_ISSUANCE_REFUSED", message: /expired/ });
  });

  test(
    "a CSR naming another ID than the authorized one is refused with ERR_IDENTITY_MISMATCH",
    SLOW,
    async () => {
      const other = SpiffeId.fromServiceAccount(TD, "default", "admin");
      const err = await (await fixedRoot()).issue(await csrFor("ECDSA-P256", other), { id: ID }).catch((e) =>
        e
      );
      assert.ok(err instanceof IdentityMismatch);
      assert.equal(err.code, "ERR_IDENTITY_MISMATCH");
      assert.equal(err.requested, other.toString());
      assert.equal(err.authorized, ID.toString());
    },
  );

  test("the authorized ID may be given as a string", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor(), { id: ID.toString() });
    assert.ok(svid.id.equals(ID));
  });

  test("a CSR for another trust domain is refused", SLOW, async () => {
    const foreign = SpiffeId.parse("spiffe://partner.example/ns/default/sa/photos");
    await assert.rejects((await fixedRoot()).issue(await csrFor("ECDSA-P256", foreign)), {
      code: "ERR_ISSUANCE_REFUSED",
      message: /trust domain/,
    });
    await assert.rejects((await fixedRoot()).issue(await csrFor("ECDSA-P256", foreign), { id: foreign }), {
      code: "ERR_ISSUANCE_REFUSED",
    });
  });

  test("a CSR for the trust domain's own ID is refused: a leaf's ID needs a path", SLOW, async () => {
    const tdId = SpiffeId.parse(`spiffe://${TD}`);
    await assert.rejects((await fixedRoot()).issue(await csrFor("ECDSA-P256", tdId)), {
      code: "ERR_ISSUANCE_REFUSED",
      message: /path/,
    });
  });

  test("a CSR asking for CA:TRUE and keyCertSign still gets the leaf profile", SLOW, async () => {
    const keys = await keysFor("ECDSA-P256");
    const der = await buildCsr({
      signer: await keySigner(keys.privateKey, keys.publicKey),
      attributes: [
        extensionRequest([
          sanExtension({ uris: [ID.toString()] }),
          extension(OID.basicConstraints, new Uint8Array([0x30, 0x03, 0x01, 0x01, 0xff])),
          extension(OID.keyUsage, new Uint8Array([0x03, 0x02, 0x01, 0x06])),
        ]),
      ],
    });
    const leaf = parseCertificate((await (await fixedRoot()).issue(der)).certificateDer);
    assert.equal(leaf.basicConstraints?.ca, false);
    assert.deepEqual([...leaf.keyUsage!], ["digitalSignature"]);
  });

  test("DNS names the caller may have are issued", SLOW, async () => {
    const csr = await csrFor("ECDSA-P256", ID, ["photos.default.svc"]);
    const svid = await (await fixedRoot()).issue(csr, { dnsNames: ["photos.default.svc", "x.example"] });
    const names = parseCertificate(svid.certificateDer).subjectAltName!;
    assert.deepEqual(names.filter((n) => n.type === "dns").map((n) => n.value), ["photos.default.svc"]);
    assert.deepEqual(uriSans(parseCertificate(svid.certificateDer)), [ID.toString()]);
  });

  test("DNS names the caller may not have are refused", SLOW, async () => {
    const csr = await csrFor("ECDSA-P256", ID, ["photos.default.svc", "bank.example"]);
    await assert.rejects((await fixedRoot()).issue(csr, { dnsNames: ["photos.default.svc"] }), {
      code: "ERR_ISSUANCE_REFUSED",
      message: /bank\.example/,
    });
  });

  test("IP addresses the caller may have are issued, compared as addresses", SLOW, async () => {
    const keys = await keysFor("ECDSA-P256");
    const csr = await createCsr({ keys, id: ID, ipAddresses: ["127.0.0.1", "::1"] });
    assert.deepEqual((await parseCsr(csr)).ipAddresses, ["127.0.0.1", "::1"]);
    const svid = await (await fixedRoot()).issue(csr, { ipAddresses: ["0:0:0:0:0:0:0:1", "127.0.0.1"] });
    const ips = parseCertificate(svid.certificateDer).subjectAltName!.filter((n) => n.type === "ip");
    assert.deepEqual(ips.map((n) => [...n.value]), [[127, 0, 0, 1], [
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      1,
    ]]);
  });

  test(
    "IP addresses are refused unless the caller may have them; bad ones are an argument error",
    SLOW,
    async () => {
      const keys = await keysFor("ECDSA-P256");
      const csr = await createCsr({ keys, id: ID, ipAddresses: ["10.0.0.7"] });
      await assert.rejects((await fixedRoot()).issue(csr), {
        code: "ERR_ISSUANCE_REFUSED",
        message: /10\.0\.0\.7/,
      });
      await assert.rejects(createCsr({ keys, id: ID, ipAddresses: ["localhost"] }), {
        code: "ERR_INVALID_ARGUMENT",
        message: /"localhost" is not an IPv4 or IPv6 address/,
      });
    },
  );

  test("DNS names are refused when the caller is authorized for none (deny by default)", SLOW, async () => {
    const csr = await csrFor("ECDSA-P256", ID, ["photos.default.svc"]);
    await assert.rejects((await fixedRoot()).issue(csr), {
      code: "ERR_ISSUANCE_REFUSED",
      message: /photos\.default\.svc/,
    });
  });

  test("an invalid CSR is refused with ERR_CSR_INVALID", SLOW, async () => {
    await assert.rejects((await fixedRoot()).issue("not a CSR"), { code: "ERR_CSR_INVALID" });
  });
});

describe("root CAs", () => {
  test(
    "carry CA:TRUE (critical), keyCertSign and cRLSign (critical) and the trust domain ID",
    SLOW,
    async () => {
      const ca = (await fixedRoot()).certificate;
      assert.equal(ca.basicConstraints?.ca, true);
      assert.equal(isCritical(ca, OID.basicConstraints), true);
      assert.deepEqual([...ca.keyUsage!].sort(), ["cRLSign", "keyCertSign"]);
      assert.equal(isCritical(ca, OID.keyUsage), true);
      assert.deepEqual(uriSans(ca), [`spiffe://${TD}`]);
    },
  );

  test("are self-signed, with matching subject and authority key identifiers", SLOW, async () => {
    const ca = (await fixedRoot()).certificate;
    assert.equal(ca.subject.key, ca.issuer.key);
    assert.ok(await signedBy(ca, ca));
    assert.deepEqual(ca.subjectKeyIdentifier, await sha1(ca.publicKey));
    assert.deepEqual(ca.authorityKeyIdentifier, ca.subjectKeyIdentifier);
  });

  test("have no path length limit unless asked", SLOW, async () => {
    assert.equal((await fixedRoot()).certificate.basicConstraints?.pathLength, undefined);
    assert.equal((await root({ pathLen: 2 })).certificate.basicConstraints?.pathLength, 2);
  });

  test("have the default subject, or the one given", SLOW, async () => {
    assert.equal(formatName((await fixedRoot()).certificate.subject), `O=${TD}, CN=meshauth root CA`);
    const custom = await root({ subject: { C: "DE", O: "Example", CN: "Mesh Root" } });
    assert.equal(formatName(custom.certificate.subject), "C=DE, O=Example, CN=Mesh Root");
  });

  test("refuse an unknown subject attribute", SLOW, async () => {
    await assert.rejects(root({ subject: { XX: "y" } }), { code: "ERR_INVALID_ARGUMENT" });
  });

  test(
    "refuse an empty subject, which every certificate they sign would carry as its issuer",
    SLOW,
    async () => {
      await assert.rejects(root({ subject: {} }), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects((await fixedRoot()).createIntermediate({ ttlSeconds: DAY, subject: {} }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    },
  );

  test("refuse a negative path length", SLOW, async () => {
    await assert.rejects(root({ pathLen: -1 }), { code: "ERR_INVALID_ARGUMENT" });
  });

  test("live for the lifetime asked", SLOW, async () => {
    const ca = await root({ ttlSeconds: 30 * DAY });
    assert.equal(ca.notAfter.getTime(), NOW.getTime() + 30 * DAY * 1000);
  });

  test("refuse a lifetime that would end after the last time X.509 can express", SLOW, async () => {
    await assert.rejects(root({ ttlSeconds: 8000 * 365 * DAY }), { code: "ERR_INVALID_ARGUMENT" });
  });

  test("refuse an invalid trust domain", SLOW, async () => {
    await assert.rejects(CertificateAuthority.createRoot({ trustDomain: "Cluster.local" }), {
      code: "ERR_TRUST_DOMAIN_INVALID",
    });
  });

  for (const keyAlgorithm of ["ECDSA-P256", "ECDSA-P384", "RSA-2048", "Ed25519"] as const) {
    test(`with a ${keyAlgorithm} key sign leaves that verify`, SLOW, async () => {
      const ca = await root({ keyAlgorithm });
      const leaf = parseCertificate((await ca.issue(await csrFor())).certificateDer);
      assert.ok(await signedBy(leaf, ca.certificate));
      assert.ok(await signedBy(ca.certificate, ca.certificate));
    });
  }

  test("bundle() holds the root and is a copy", SLOW, async () => {
    const ca = await fixedRoot();
    const bundle = ca.bundle();
    assert.deepEqual(bundle.x509Authorities().map((c) => c.der), [ca.certificate.der]);
    assert.equal(bundle.trustDomain.name, TD);
    bundle.removeAuthority(ca.certificate);
    assert.equal(ca.bundle().x509Authorities().length, 1);
  });

  test("leaves from a root carry only the leaf in chainPem", SLOW, async () => {
    const svid = await (await fixedRoot()).issue(await csrFor());
    assert.equal(decodePem(svid.chainPem).length, 1);
  });
});

describe("intermediate CAs", () => {
  test("root -> intermediate -> leaf: each certificate is signed by the next", SLOW, async () => {
    const rootCa = await fixedRoot();
    const intermediate = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY });
    const svid = await intermediate.issue(await csrFor(), { id: ID });
    const [leaf, ca, extra] = parseCertificates(svid.chainPem);
    assert.equal(extra, undefined);
    assert.deepEqual(ca.der, intermediate.certificate.der);
    assert.ok(await signedBy(leaf, ca));
    assert.ok(await signedBy(ca, rootCa.certificate));
    assert.equal(leaf.issuer.key, ca.subject.key);
    assert.equal(ca.issuer.key, rootCa.certificate.subject.key);
    assert.deepEqual(leaf.authorityKeyIdentifier, ca.subjectKeyIdentifier);
    assert.deepEqual(ca.authorityKeyIdentifier, rootCa.certificate.subjectKeyIdentifier);
  });

  test("carry CA:TRUE with pathLen 0 by default, CA key usages and the trust domain ID", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
    const cert = intermediate.certificate;
    assert.deepEqual(cert.basicConstraints, { ca: true, pathLength: 0 });
    assert.equal(isCritical(cert, OID.basicConstraints), true);
    assert.deepEqual([...cert.keyUsage!].sort(), ["cRLSign", "keyCertSign"]);
    assert.deepEqual(uriSans(cert), [`spiffe://${TD}`]);
    assert.equal(intermediate.trustDomain.name, TD);
  });

  test("share the root's bundle", SLOW, async () => {
    const rootCa = await fixedRoot();
    const intermediate = await rootCa.createIntermediate({ ttlSeconds: DAY });
    assert.deepEqual(intermediate.bundle().x509Authorities().map((c) => c.der), [rootCa.certificate.der]);
  });

  test("never outlive their parent", SLOW, async () => {
    const parent = await root({ ttlSeconds: 10 * DAY });
    const intermediate = await parent.createIntermediate({ ttlSeconds: 100 * DAY });
    assert.equal(intermediate.notAfter.getTime(), parent.notAfter.getTime());
  });

  test("use the key algorithm asked for", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({
      ttlSeconds: DAY,
      keyAlgorithm: "Ed25519",
    });
    assert.equal(intermediate.certificate.publicKeyAlgorithm.oid, "1.3.101.112");
  });

  test("may have a larger pathLen under a root without a limit", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY, pathLen: 3 });
    assert.equal(intermediate.certificate.basicConstraints?.pathLength, 3);
  });

  test("cannot be made under a CA with pathLen 0", SLOW, async () => {
    const parent = await root({ pathLen: 0 });
    await assert.rejects(parent.createIntermediate({ ttlSeconds: DAY }), { code: "ERR_ISSUANCE_REFUSED" });
  });

  test("cannot be made under an intermediate with the default pathLen 0", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
    await assert.rejects(intermediate.createIntermediate({ ttlSeconds: HOUR }), {
      code: "ERR_ISSUANCE_REFUSED",
    });
  });

  test("cannot have a pathLen at or above their parent's", SLOW, async () => {
    const parent = await root({ pathLen: 1 });
    await assert.rejects(parent.createIntermediate({ ttlSeconds: DAY, pathLen: 1 }), {
      code: "ERR_ISSUANCE_REFUSED",
    });
    const ok = await parent.createIntermediate({ ttlSeconds: DAY, pathLen: 0 });
    assert.equal(ok.certificate.basicConstraints?.pathLength, 0);
  });

  test("refuse a negative or fractional pathLen", SLOW, async () => {
    const parent = await fixedRoot();
    await assert.rejects(parent.createIntermediate({ ttlSeconds: DAY, pathLen: -1 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    await assert.rejects(parent.createIntermediate({ ttlSeconds: DAY, pathLen: 0.5 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  test("refuse a lifetime that is not a positive whole number of seconds", SLOW, async () => {
    await assert.rejects((await fixedRoot()).createIntermediate({ ttlSeconds: 0 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  test("two levels deep: the leaf's chain holds both intermediates", SLOW, async () => {
    const rootCa = await fixedRoot();
    const upper = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY, pathLen: 1 });
    const lower = await upper.createIntermediate({ ttlSeconds: 10 * DAY });
    const [leaf, first, second, extra] = parseCertificates((await lower.issue(await csrFor())).chainPem);
    assert.equal(extra, undefined);
    assert.deepEqual(first.der, lower.certificate.der);
    assert.deepEqual(second.der, upper.certificate.der);
    assert.ok(await signedBy(leaf, first));
    assert.ok(await signedBy(first, second));
    assert.ok(await signedBy(second, rootCa.certificate));
  });
});

describe("issued chains pass verifySvid", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`a ${algorithm} leaf from an intermediate verifies against the root bundle`, SLOW, async () => {
      const rootCa = await fixedRoot();
      const intermediate = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY });
      const svid = await intermediate.issue(await csrFor(algorithm), { id: ID });
      const verified = await verifySvid(svid.chainPem, rootCa.bundle(), { at: NOW, purpose: "serverAuth" });
      assert.ok(verified.id.equals(ID));
      assert.equal(verified.notAfter.getTime(), svid.notAfter.getTime());
    });
  }

  async function intermediateSvid() {
    const rootCa = await fixedRoot();
    const intermediate = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY });
    return { rootCa, svid: await intermediate.issue(await csrFor(), { id: ID }) };
  }

  test("an issued leaf is refused once expired", SLOW, async () => {
    const { rootCa, svid } = await intermediateSvid();
    const at = new Date(svid.notAfter.getTime() + 1000);
    await assert.rejects(verifySvid(svid.chainPem, rootCa.bundle(), { at }), { code: "ERR_CERT_EXPIRED" });
  });

  test("an issued leaf is refused before its notBefore", SLOW, async () => {
    const { rootCa, svid } = await intermediateSvid();
    const at = new Date(svid.notBefore.getTime() - 1000);
    await assert.rejects(verifySvid(svid.chainPem, rootCa.bundle(), { at }), {
      code: "ERR_CERT_NOT_YET_VALID",
    });
  });

  test("an issued leaf is refused against another trust domain's bundle", SLOW, async () => {
    const { svid } = await intermediateSvid();
    const foreign = await CertificateAuthority.createRoot({ trustDomain: "partner.example", now: () => NOW });
    await assert.rejects(verifySvid(svid.chainPem, foreign.bundle(), { at: NOW }), {
      code: "ERR_TRUST_DOMAIN_UNKNOWN",
    });
  });

  test(
    "an issued leaf is refused under a root of its own trust domain that did not issue it",
    SLOW,
    async () => {
      const { svid } = await intermediateSvid();
      const impostor = await root();
      await assert.rejects(verifySvid(svid.chainPem, impostor.bundle(), { at: NOW }), {
        code: "ERR_CERT_UNTRUSTED",
      });
    },
  );

  test("an issued leaf with a flipped signature byte is refused", SLOW, async () => {
    const { rootCa, svid } = await intermediateSvid();
    const [leaf, ...rest] = parseCertificates(svid.chainPem);
    const tampered = leaf.der.slice();
    tampered[tampered.length - 1] ^= 0x01;
    await assert.rejects(
      verifySvid([tampered, ...rest.map((c) => c.der)], rootCa.bundle(), { at: NOW }),
      { code: "ERR_CERT_SIGNATURE_INVALID" },
    );
  });

  test("a loaded CA's leaves verify against the original bundle", SLOW, async () => {
    const original = await fixedRoot();
    const loaded = await CertificateAuthority.load({ ...(await original.exportPem()), now: () => NOW });
    const svid = await loaded.issue(await csrFor());
    const verified = await verifySvid(svid.chainPem, original.bundle(), { at: NOW, purpose: "clientAuth" });
    assert.ok(verified.id.equals(ID));
  });
});

describe("CertificateAuthority.load", () => {
  test("an exported root loads and issues leaves its original certificate verifies", SLOW, async () => {
    const original = await fixedRoot();
    const loaded = await CertificateAuthority.load({ ...(await original.exportPem()), now: () => NOW });
    assert.equal(loaded.trustDomain.name, TD);
    assert.deepEqual(loaded.certificate.der, original.certificate.der);
    const leaf = parseCertificate((await loaded.issue(await csrFor(), { id: ID })).certificateDer);
    assert.ok(await signedBy(leaf, original.certificate));
    assert.deepEqual(leaf.authorityKeyIdentifier, original.certificate.subjectKeyIdentifier);
  });

  test("an exported intermediate loads and issues leaves chained to the root", SLOW, async () => {
    const rootCa = await fixedRoot();
    const intermediate = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY });
    const exported = await intermediate.exportPem();
    assert.equal(decodePem(exported.certificateChainPem).length, 1);
    assert.equal(exported.trustBundlePem, rootCa.bundle().toPem());
    const loaded = await CertificateAuthority.load({ ...exported, now: () => NOW });
    const [leaf, ca] = parseCertificates((await loaded.issue(await csrFor())).chainPem);
    assert.deepEqual(ca.der, intermediate.certificate.der);
    assert.ok(await signedBy(leaf, intermediate.certificate));
    assert.deepEqual(loaded.bundle().toPem(), rootCa.bundle().toPem());
  });

  test("a chain ending in its root needs no separate bundle", SLOW, async () => {
    const rootCa = await fixedRoot();
    const intermediate = await rootCa.createIntermediate({ ttlSeconds: DAY });
    const { privateKeyPem } = await intermediate.exportPem();
    const loaded = await CertificateAuthority.load({
      certificateChainPem: intermediate.certificatePem + rootCa.certificatePem,
      privateKeyPem,
      now: () => NOW,
    });
    assert.deepEqual(loaded.bundle().x509Authorities().map((c) => c.der), [rootCa.certificate.der]);
    assert.equal(decodePem((await loaded.issue(await csrFor())).chainPem).length, 2);
  });

  test("a chain without its root and without a bundle is refused", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
    const { privateKeyPem } = await intermediate.exportPem();
    await assert.rejects(
      CertificateAuthority.load({ certificateChainPem: intermediate.certificatePem, privateKeyPem }),
      { code: "ERR_ISSUANCE_REFUSED" },
    );
  });

  test(
    "an intermediate loaded with the bundle of a root that did not issue it is refused",
    SLOW,
    async () => {
      const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
      const { certificateChainPem, privateKeyPem } = await intermediate.exportPem();
      const otherRoot = await root();
      await assert.rejects(
        CertificateAuthority.load({
          certificateChainPem,
          privateKeyPem,
          trustBundlePem: otherRoot.certificatePem,
          now: () => NOW,
        }),
        { code: "ERR_ISSUANCE_REFUSED", message: /does not chain/ },
      );
    },
  );

  test("a chain missing the intermediate between the CA and its root is refused", SLOW, async () => {
    const rootCa = await fixedRoot();
    const upper = await rootCa.createIntermediate({ ttlSeconds: 30 * DAY, pathLen: 1 });
    const lower = await upper.createIntermediate({ ttlSeconds: DAY });
    const { privateKeyPem, trustBundlePem } = await lower.exportPem();
    await assert.rejects(
      CertificateAuthority.load({
        certificateChainPem: lower.certificatePem,
        privateKeyPem,
        trustBundlePem,
        now: () => NOW,
      }),
      { code: "ERR_ISSUANCE_REFUSED", message: /does not chain/ },
    );
  });

  test("an expired intermediate is refused when it is loaded", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
    const later = new Date(NOW.getTime() + 2 * DAY * 1000);
    await assert.rejects(
      CertificateAuthority.load({ ...(await intermediate.exportPem()), now: () => later }),
      {
        code: "ERR_ISSUANCE_REFUSED",
      },
    );
  });

  test("fromSigner also refuses a chain that does not reach the bundle", SLOW, async () => {
    const intermediate = await (await fixedRoot()).createIntermediate({ ttlSeconds: DAY });
    const { certificateChainPem, privateKeyPem } = await intermediate.exportPem();
    const keys = await importPrivateKeyPem(privateKeyPem);
    await assert.rejects(
      CertificateAuthority.fromSigner({
        certificateChainPem,
        signer: await keySigner(keys.privateKey, keys.publicKey),
        trustBundlePem: (await root()).certificatePem,
        now: () => NOW,
      }),
      { code: "ERR_ISSUANCE_REFUSED" },
    );
  });

  test(
    "a private key that does not match the certificate is refused with ERR_KEY_INVALID",
    SLOW,
    async () => {
      const { certificateChainPem } = await (await fixedRoot()).exportPem();
      const privateKeyPem = await exportPrivateKeyPem((await generateKeyPair()).privateKey);
      await assert.rejects(CertificateAuthority.load({ certificateChainPem, privateKeyPem }), {
        name: "InvalidKey",
        code: "ERR_KEY_INVALID",
      });
    },
  );

  test("a leaf certificate is refused as a CA", SLOW, async () => {
    const keys = await keysFor("ECDSA-P256");
    const svid = await (await fixedRoot()).issue(await csrFor());
    await assert.rejects(
      CertificateAuthority.load({
        certificateChainPem: svid.certificatePem,
        privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
        trustBundlePem: (await fixedRoot()).bundle().toPem(),
      }),
      { code: "ERR_ISSUANCE_REFUSED" },
    );
  });

  test("a trust domain other than the certificate's is refused", SLOW, async () => {
    const exported = await (await fixedRoot()).exportPem();
    await assert.rejects(CertificateAuthority.load({ ...exported, trustDomain: "partner.example" }), {
      code: "ERR_ISSUANCE_REFUSED",
    });
  });

  test("a private key that is not PEM is refused", SLOW, async () => {
    const { certificateChainPem } = await (await fixedRoot()).exportPem();
    await assert.rejects(CertificateAuthority.load({ certificateChainPem, privateKeyPem: "nope" }), {
      code: "ERR_MALFORMED_INPUT",
    });
  });
});

describe("CertificateAuthority.fromSigner", () => {
  test("issues with an external signer, and refuses to export its key", SLOW, async () => {
    const original = await fixedRoot();
    const { certificateChainPem, privateKeyPem } = await original.exportPem();
    const keys = await importPrivateKeyPem(privateKeyPem, { extractable: false });
    const signer = await keySigner(keys.privateKey, keys.publicKey);
    const ca = await CertificateAuthority.fromSigner({ certificateChainPem, signer, now: () => NOW });
    const leaf = parseCertificate((await ca.issue(await csrFor())).certificateDer);
    assert.ok(await signedBy(leaf, original.certificate));
    await assert.rejects(ca.exportPem(), { code: "ERR_KEY_INVALID" });
  });

  test("refuses a CA certificate without keyCertSign, by the rule verifySvid applies", SLOW, async () => {
    // X509-SVID 4.3: a signing certificate asserts keyCertSign; no key usage at all is not enough.
    const refused = async (spec: { omit?: Array<"keyUsage">; keyUsage?: Array<"cRLSign"> }) => {
      const root = await issue({ name: "Root", ca: true, sans: [uriName("spiffe://args.example")], ...spec });
      await assert.rejects(
        CertificateAuthority.fromSigner({ certificateChainPem: root.pem, signer: root.signer }),
        { code: "ERR_ISSUANCE_REFUSED", message: /must assert the keyCertSign key usage/ },
      );
    };
    await refused({ omit: ["keyUsage"] });
    await refused({ keyUsage: ["cRLSign"] });
  });
});

describe("createCrl", () => {
  test("returns one X509 CRL PEM block", SLOW, async () => {
    const ca = await fixedRoot();
    const svid = await ca.issue(await csrFor());
    const pem = await ca.createCrl({
      revoked: [{ serialNumber: svid.serialNumber, revokedAt: NOW, reason: "keyCompromise" }],
      nextUpdateSeconds: HOUR,
    });
    assert.deepEqual(decodePem(pem).map((b) => b.label), ["X509 CRL"]);
  });

  async function crlWithOneRevocation() {
    const ca = await (await fixedRoot()).createIntermediate({ ttlSeconds: 30 * DAY });
    const svid = await ca.issue(await csrFor());
    const revokedAt = new Date(NOW.getTime() - HOUR * 1000);
    const pem = await ca.createCrl({
      revoked: [{ serialNumber: svid.serialNumber, revokedAt, reason: "keyCompromise" }],
      nextUpdateSeconds: 6 * HOUR,
      crlNumber: 42,
    });
    return { ca, svid, revokedAt, crl: parseCrl(pem), pem };
  }

  test("lists the revoked serial number with its date and reason", SLOW, async () => {
    const { svid, revokedAt, crl } = await crlWithOneRevocation();
    assert.equal(crl.revoked.length, 1);
    assert.equal(crl.revoked[0].serialNumber, svid.serialNumber);
    assert.equal(crl.revoked[0].revocationDate.getTime(), revokedAt.getTime());
    assert.equal(crl.revoked[0].reason, "keyCompromise");
  });

  test(
    "is a v2 CRL of the CA, with its key identifier, the CRL number and both update times",
    SLOW,
    async () => {
      const { ca, crl } = await crlWithOneRevocation();
      assert.equal(crl.version, 2);
      assert.equal(crl.issuer.key, ca.certificate.subject.key);
      assert.deepEqual(crl.authorityKeyIdentifier, ca.certificate.subjectKeyIdentifier);
      assert.equal(crl.crlNumber, 42n);
      assert.equal(crl.thisUpdate.getTime(), NOW.getTime());
      assert.equal(crl.nextUpdate?.getTime(), NOW.getTime() + 6 * HOUR * 1000);
    },
  );

  test("is signed by the CA's key", SLOW, async () => {
    const { ca, crl } = await crlWithOneRevocation();
    const issuer = ca.certificate;
    assert.ok(
      await verifySignature(
        crl.signatureAlgorithm,
        issuer.spki,
        issuer.publicKeyAlgorithm,
        crl.tbs,
        crl.signature,
      ),
    );
  });

  test("leaves out an unspecified reason", SLOW, async () => {
    const pem = await (await fixedRoot()).createCrl({
      revoked: [{ serialNumber: "0a0b0c", revokedAt: NOW, reason: "unspecified" }],
      nextUpdateSeconds: HOUR,
    });
    const [entry] = parseCrl(pem).revoked;
    assert.equal(entry.serialNumber, "0a0b0c");
    assert.equal(entry.reason, undefined);
  });

  test("with nothing revoked lists nothing", SLOW, async () => {
    const crl = parseCrl(await (await fixedRoot()).createCrl({ revoked: [], nextUpdateSeconds: HOUR }));
    assert.deepEqual(crl.revoked, []);
  });

  test("makes verifySvid refuse the revoked leaf with ERR_CERT_REVOKED", SLOW, async () => {
    const { svid, pem } = await crlWithOneRevocation();
    await assert.rejects(verifySvid(svid.chainPem, (await fixedRoot()).bundle(), { at: NOW, crls: [pem] }), {
      code: "ERR_CERT_REVOKED",
    });
  });

  test("refuses a serial number that is not hex", SLOW, async () => {
    await assert.rejects(
      (await fixedRoot()).createCrl({
        revoked: [{ serialNumber: "xyz1", revokedAt: NOW }],
        nextUpdateSeconds: HOUR,
      }),
      { code: "ERR_ISSUANCE_REFUSED" },
    );
  });

  test("refuses a serial number with a leading zero byte no certificate can have", SLOW, async () => {
    await assert.rejects(
      (await fixedRoot()).createCrl({
        revoked: [{ serialNumber: "0001", revokedAt: NOW }],
        nextUpdateSeconds: HOUR,
      }),
      { code: "ERR_ISSUANCE_REFUSED" },
    );
  });

  test("refuses a revocation date that is not a date", SLOW, async () => {
    await assert.rejects(
      (await fixedRoot()).createCrl({
        revoked: [{ serialNumber: "0a", revokedAt: new Date("yesterday") }],
        nextUpdateSeconds: HOUR,
      }),
      { code: "ERR_INVALID_ARGUMENT" },
    );
  });

  test("refuses a reason that is not a CRL reason", SLOW, async () => {
    const revoked = [{ serialNumber: "0a", revokedAt: NOW, reason: "bogus" as RevocationReason }];
    await assert.rejects((await fixedRoot()).createCrl({ revoked, nextUpdateSeconds: HOUR }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  test("refuses removeFromCRL, which only a delta CRL may carry", SLOW, async () => {
    const revoked = [{ serialNumber: "0a", revokedAt: NOW, reason: "removeFromCRL" as const }];
    await assert.rejects((await fixedRoot()).createCrl({ revoked, nextUpdateSeconds: HOUR }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  test("refuses a negative or fractional CRL number", SLOW, async () => {
    const ca = await fixedRoot();
    for (const crlNumber of [-1, 1.5, -1n]) {
      await assert.rejects(ca.createCrl({ revoked: [], nextUpdateSeconds: HOUR, crlNumber }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    }
  });

  test("refuses a nextUpdateSeconds that is not positive", SLOW, async () => {
    await assert.rejects((await fixedRoot()).createCrl({ revoked: [], nextUpdateSeconds: 0 }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });
});

describe("a plugged-in CA is checked with the verifier every peer uses", () => {
  const td = "spiffe://example.org";
  async function loads(chain: Issued[], root: Issued): Promise<unknown> {
    return await CertificateAuthority.load({
      certificateChainPem: chain.map((c) => c.pem).join("") + root.pem,
      privateKeyPem: await exportPrivateKeyPem(chain[0].keys.privateKey),
    });
  }

  test("a chain whose middle certificate is not a CA is refused", SLOW, async () => {
    const root = await issue({ name: "Root", ca: true, sans: [uriName(td)] });
    const mid = await issue({ name: "Not a CA", issuer: root, keyUsage: ["digitalSignature"] });
    const ca = await issue({ name: "Issuing CA", ca: true, issuer: mid, sans: [uriName(td)] });
    await assert.rejects(loads([ca, mid], root), { code: "ERR_ISSUANCE_REFUSED", message: /Not a CA/ });
  });

  test("an issuing CA without a key usage extension is refused (X509-SVID 4.3)", SLOW, async () => {
    const root = await issue({ name: "Root", ca: true, sans: [uriName(td)] });
    const ca = await issue({
      name: "Issuing CA",
      ca: true,
      issuer: root,
      keyUsage: null,
      sans: [uriName(td)],
    });
    await assert.rejects(loads([ca], root), { code: "ERR_ISSUANCE_REFUSED" });
  });

  test("an intermediate below a root with pathLen 0 is refused", SLOW, async () => {
    const root = await issue({ name: "Root", ca: true, pathLen: 0, sans: [uriName(td)] });
    const ca = await issue({ name: "Issuing CA", ca: true, issuer: root, sans: [uriName(td)] });
    await assert.rejects(loads([ca], root), {
      code: "ERR_ISSUANCE_REFUSED",
      message: /allows 0 intermediates/,
    });
  });
});
