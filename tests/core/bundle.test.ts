import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  BundleSet,
  CertificateAuthority,
  decodePem,
  generateKeyPair,
  type KeyAlgorithm,
  type SpiffeBundleDocument,
  TrustBundle,
  TrustDomain,
} from "../../mod.ts";
import { bitString, explicit, integer, nullValue, oid, seq, time } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { keySigner } from "../../lib/x509/signature.ts";

// Big RSA keys take seconds to make (more on a busy machine): above Bun's 5 s default.
const SLOW = { timeout: 120_000 };

const TD = "cluster.local";
const invalidBundle = { name: "InvalidBundle", code: "ERR_BUNDLE_INVALID" };

const roots = new Map<string, Promise<CertificateAuthority>>();
function rootCa(keyAlgorithm: KeyAlgorithm = "ECDSA-P256", trustDomain = TD): Promise<CertificateAuthority> {
  const key = `${trustDomain}/${keyAlgorithm}`;
  if (!roots.has(key)) roots.set(key, CertificateAuthority.createRoot({ trustDomain, keyAlgorithm }));
  return roots.get(key)!;
}

async function twoRootBundle(): Promise<TrustBundle> {
  const a = await rootCa("ECDSA-P256");
  const b = await rootCa("RSA-2048");
  return new TrustBundle(TD, [a.certificatePem, b.certificatePem], { sequence: 7, refreshHintSeconds: 300 });
}

describe("TrustBundle PEM", () => {
  test("fromPem then toPem gives back the same PEM", SLOW, async () => {
    const pem = (await rootCa("ECDSA-P256")).certificatePem + (await rootCa("Ed25519")).certificatePem;
    assert.equal(TrustBundle.fromPem(TD, pem).toPem(), pem);
  });

  test("fromPem keeps the trust domain and the options", SLOW, async () => {
    const bundle = TrustBundle.fromPem(TD, (await rootCa()).certificatePem, {
      sequence: 3,
      refreshHintSeconds: 60,
    });
    assert.equal(bundle.trustDomain.name, TD);
    assert.equal(bundle.sequence, 3);
    assert.equal(bundle.refreshHintSeconds, 60);
  });

  test("fromPem refuses text that is not a certificate with ERR_BUNDLE_INVALID", () => {
    assert.throws(() => TrustBundle.fromPem(TD, "no certificates here"), invalidBundle);
    assert.throws(
      () => TrustBundle.fromPem(TD, "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"),
      invalidBundle,
    );
  });

  test("fromPem refuses an invalid trust domain", SLOW, async () => {
    const pem = (await rootCa()).certificatePem;
    assert.throws(() => TrustBundle.fromPem("Cluster.local", pem), {
      code: "ERR_TRUST_DOMAIN_INVALID",
    });
  });

  test("duplicates are kept once", SLOW, async () => {
    const pem = (await rootCa()).certificatePem;
    assert.equal(TrustBundle.fromPem(TD, pem + pem).x509Authorities().length, 1);
  });
});

describe("TrustBundle SPIFFE JWKS", () => {
  test("toJwks writes one x509-svid key per authority with its certificate in x5c", SLOW, async () => {
    const bundle = await twoRootBundle();
    const doc = bundle.toJwks();
    assert.equal(doc.keys.length, 2);
    for (const [i, key] of doc.keys.entries()) {
      assert.equal(key.use, "x509-svid");
      assert.equal(key.x5c?.length, 1);
      const der = Uint8Array.from(atob(key.x5c![0]), (c) => c.charCodeAt(0));
      assert.deepEqual(der, bundle.x509Authorities()[i].der);
    }
  });

  test("toJwks writes the sequence and the refresh hint", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    assert.equal(doc.spiffe_sequence, 7);
    assert.equal(doc.spiffe_refresh_hint, 300);
  });

  test("toJwks leaves out a refresh hint that was never set", SLOW, async () => {
    const doc = new TrustBundle(TD, [(await rootCa()).certificatePem]).toJwks();
    assert.equal("spiffe_refresh_hint" in doc, false);
  });

  test("EC keys carry kty, crv, x and y", SLOW, async () => {
    const [key] = new TrustBundle(TD, [(await rootCa("ECDSA-P384")).certificatePem]).toJwks().keys;
    assert.equal(key.kty, "EC");
    assert.equal(key.crv, "P-384");
    assert.match(key.x!, /^[A-Za-z0-9_-]{64}$/);
    assert.match(key.y!, /^[A-Za-z0-9_-]{64}$/);
  });

  test("RSA keys carry kty, n and e", SLOW, async () => {
    const [key] = new TrustBundle(TD, [(await rootCa("RSA-2048")).certificatePem]).toJwks().keys;
    assert.equal(key.kty, "RSA");
    assert.equal(key.e, "AQAB");
    assert.match(key.n!, /^[A-Za-z0-9_-]{342}$/);
  });

  test("Ed25519 keys carry kty OKP, crv and x", SLOW, async () => {
    const [key] = new TrustBundle(TD, [(await rootCa("Ed25519")).certificatePem]).toJwks().keys;
    assert.equal(key.kty, "OKP");
    assert.equal(key.crv, "Ed25519");
    assert.match(key.x!, /^[A-Za-z0-9_-]{43}$/);
  });

  test("fromJwks(toJwks()) gives back the same authorities, sequence and refresh hint", SLOW, async () => {
    const bundle = await twoRootBundle();
    const again = TrustBundle.fromJwks(TD, bundle.toJwks());
    assert.deepEqual(again.x509Authorities().map((c) => c.der), bundle.x509Authorities().map((c) => c.der));
    assert.equal(again.sequence, 7);
    assert.equal(again.refreshHintSeconds, 300);
  });

  test("fromJwks reads JSON text", SLOW, async () => {
    const bundle = await twoRootBundle();
    const again = TrustBundle.fromJwks(TD, JSON.stringify(bundle.toJwks()));
    assert.equal(again.toPem(), bundle.toPem());
  });

  test("fromJwks accepts a key with only use and x5c", SLOW, async () => {
    const x5c = (await twoRootBundle()).toJwks().keys[0].x5c!;
    const bundle = TrustBundle.fromJwks(TD, { keys: [{ kty: "EC", use: "x509-svid", x5c }] });
    assert.equal(bundle.x509Authorities().length, 1);
    assert.equal(bundle.sequence, 0);
  });

  test("fromJwks keeps jwt-svid keys and writes them back", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    const jwtKey = { kty: "EC", use: "jwt-svid", kid: "k1", crv: "P-256", x: "AA", y: "AA" };
    doc.keys.push(jwtKey);
    const bundle = TrustBundle.fromJwks(TD, doc);
    assert.deepEqual(bundle.jwtAuthorities, [jwtKey]);
    assert.equal(bundle.x509Authorities().length, 2);
    assert.deepEqual(bundle.toJwks().keys.at(-1), jwtKey);
  });

  test("fromJwks refuses a key whose parameters do not match its x5c certificate", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    const other = new TrustBundle(TD, [(await rootCa("ECDSA-P256", "other.example")).certificatePem])
      .toJwks();
    doc.keys[0].x = other.keys[0].x;
    assert.throws(() => TrustBundle.fromJwks(TD, doc), { ...invalidBundle, message: /x does not match/ });
  });

  test("fromJwks refuses a key whose kty does not match its x5c certificate", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    doc.keys[0].kty = "RSA";
    assert.throws(() => TrustBundle.fromJwks(TD, doc), { ...invalidBundle, message: /kty/ });
  });

  test("fromJwks refuses an x509-svid key with two certificates in x5c", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    doc.keys[0].x5c = [doc.keys[0].x5c![0], doc.keys[1].x5c![0]];
    assert.throws(() => TrustBundle.fromJwks(TD, doc), { ...invalidBundle, message: /exactly one x5c/ });
  });

  test("fromJwks refuses an x509-svid key without x5c", () => {
    assert.throws(() => TrustBundle.fromJwks(TD, { keys: [{ kty: "EC", use: "x509-svid" }] }), invalidBundle);
  });

  test("fromJwks refuses an x5c that is not a certificate", () => {
    const doc = { keys: [{ kty: "EC", use: "x509-svid", x5c: ["MAA="] }] };
    assert.throws(() => TrustBundle.fromJwks(TD, doc), invalidBundle);
    const notBase64 = { keys: [{ kty: "EC", use: "x509-svid", x5c: ["not base64!"] }] };
    assert.throws(() => TrustBundle.fromJwks(TD, notBase64), invalidBundle);
  });

  test("fromJwks refuses malformed JSON with ERR_BUNDLE_INVALID", () => {
    assert.throws(() => TrustBundle.fromJwks(TD, '{"keys": ['), { ...invalidBundle, message: /JSON/ });
  });

  test("fromJwks refuses a document without a keys array", () => {
    for (const doc of ["{}", "null", "[]", '{"keys": {}}', "42"]) {
      assert.throws(() => TrustBundle.fromJwks(TD, doc), invalidBundle, doc);
    }
  });

  test("fromJwks refuses a key that is not a JWK", () => {
    const doc = { keys: [null, "x"] } as unknown as SpiffeBundleDocument;
    assert.throws(() => TrustBundle.fromJwks(TD, doc), invalidBundle);
  });

  test("fromJwks leaves out a key with an unknown use and keeps the others", SLOW, async () => {
    const doc = (await twoRootBundle()).toJwks();
    doc.keys[0].use = "sig";
    assert.equal(TrustBundle.fromJwks(TD, doc).x509Authorities().length, 1);
  });

  test("fromJwks refuses a negative or fractional sequence and refresh hint", () => {
    for (const extra of [{ spiffe_sequence: -1 }, { spiffe_sequence: 1.5 }, { spiffe_refresh_hint: -5 }]) {
      assert.throws(() => TrustBundle.fromJwks(TD, { keys: [], ...extra }), invalidBundle);
    }
    assert.throws(
      () => TrustBundle.fromJwks(TD, JSON.stringify({ keys: [], spiffe_sequence: "1" })),
      invalidBundle,
    );
  });
});

describe("TrustBundle options", () => {
  for (
    const [name, options] of [
      ["a negative sequence", { sequence: -1 }],
      ["a fractional sequence", { sequence: 1.5 }],
      ["a NaN refresh hint", { refreshHintSeconds: Number.NaN }],
      ["a negative refresh hint", { refreshHintSeconds: -30 }],
    ] as const
  ) {
    test(`refuse ${name}, which toJwks could not write`, () => {
      assert.throws(() => new TrustBundle(TD, [], options), { code: "ERR_INVALID_ARGUMENT" });
    });
  }
});

describe("TrustBundle authorities", () => {
  test("addAuthority adds a certificate and bumps the sequence", SLOW, async () => {
    const bundle = new TrustBundle(TD, [(await rootCa("ECDSA-P256")).certificatePem], { sequence: 1 });
    const added = await rootCa("Ed25519");
    bundle.addAuthority(added.certificatePem);
    assert.equal(bundle.sequence, 2);
    assert.ok(bundle.hasAuthority(added.certificate));
    assert.equal(bundle.x509Authorities().length, 2);
  });

  test("adding an authority already held changes nothing", SLOW, async () => {
    const pem = (await rootCa()).certificatePem;
    const bundle = new TrustBundle(TD, [pem], { sequence: 1 });
    bundle.addAuthority(pem);
    assert.equal(bundle.sequence, 1);
    assert.equal(bundle.x509Authorities().length, 1);
  });

  test("removeAuthority removes a certificate and bumps the sequence", SLOW, async () => {
    const bundle = await twoRootBundle();
    const removed = (await rootCa("RSA-2048")).certificate;
    bundle.removeAuthority(removed);
    assert.equal(bundle.sequence, 8);
    assert.ok(!bundle.hasAuthority(removed));
    assert.equal(bundle.x509Authorities().length, 1);
  });

  test("removing an authority not held changes nothing", SLOW, async () => {
    const bundle = await twoRootBundle();
    bundle.removeAuthority((await rootCa("Ed25519")).certificate);
    assert.equal(bundle.sequence, 7);
    assert.equal(bundle.x509Authorities().length, 2);
  });

  test("addAuthority refuses text that is not a certificate", () => {
    const bundle = new TrustBundle(TD);
    assert.throws(() => bundle.addAuthority("junk"), invalidBundle);
  });

  test("x509Authorities returns a copy", SLOW, async () => {
    const bundle = await twoRootBundle();
    bundle.x509Authorities().pop();
    assert.equal(bundle.x509Authorities().length, 2);
  });

  test("clone shares nothing mutable", SLOW, async () => {
    const bundle = await twoRootBundle();
    const copy = bundle.clone();
    copy.removeAuthority((await rootCa("RSA-2048")).certificate);
    assert.equal(bundle.x509Authorities().length, 2);
    assert.equal(bundle.sequence, 7);
    assert.equal(copy.sequence, 8);
  });

  test("the authorities PEM decodes to CERTIFICATE blocks", SLOW, async () => {
    const blocks = decodePem((await twoRootBundle()).toPem());
    assert.deepEqual(blocks.map((b) => b.label), ["CERTIFICATE", "CERTIFICATE"]);
  });
});

describe("BundleSet", () => {
  async function federation(): Promise<BundleSet> {
    return new BundleSet(
      (await rootCa("ECDSA-P256", TD)).bundle(),
      (await rootCa("ECDSA-P256", "partner.example")).bundle(),
    );
  }

  test("get finds a bundle by trust domain name or value", SLOW, async () => {
    const set = await federation();
    assert.equal(set.get("partner.example")?.trustDomain.name, "partner.example");
    assert.equal(set.get(TrustDomain.parse(TD))?.trustDomain.name, TD);
  });

  test("get accepts a trust domain ID", SLOW, async () => {
    assert.equal((await federation()).get("spiffe://partner.example")?.trustDomain.name, "partner.example");
  });

  test("get returns undefined for an unknown trust domain", SLOW, async () => {
    assert.equal((await federation()).get("unknown.example"), undefined);
  });

  test("remove deletes a trust domain's bundle and says whether it was there", SLOW, async () => {
    const set = await federation();
    assert.equal(set.remove("partner.example"), true);
    assert.equal(set.get("partner.example"), undefined);
    assert.equal(set.remove("partner.example"), false);
    assert.deepEqual(set.trustDomains().map((td) => td.name), [TD]);
  });

  test("add replaces the bundle of the same trust domain", SLOW, async () => {
    const set = await federation();
    const replacement = new TrustBundle(TD, [], { sequence: 42 });
    set.add(replacement);
    assert.equal(set.get(TD), replacement);
    assert.equal(set.bundles().length, 2);
  });

  test("trustDomains lists every trust domain held", SLOW, async () => {
    assert.deepEqual((await federation()).trustDomains().map((td) => td.name).sort(), [
      TD,
      "partner.example",
    ]);
  });
});

describe("TrustBundle hostile and future keys", () => {
  test("fromJwks ignores a key whose use it does not know (SPIFFE bundle spec 4.2.2)", SLOW, async () => {
    const root = await rootCa();
    const doc = root.bundle().toJwks();
    doc.keys.push({ kty: "EC", use: "some-future-svid", crv: "P-256", x: "AA", y: "AA" });
    const bundle = TrustBundle.fromJwks(TD, doc);
    assert.equal(bundle.x509Authorities().length, 1);
    assert.equal(bundle.jwtAuthorities.length, 0);
  });

  test("a certificate whose RSA key is not SEQUENCE { n, e } gives ERR_BUNDLE_INVALID, not a TypeError", async () => {
    const keys = await generateKeyPair();
    const ca = await keySigner(keys.privateKey, keys.publicKey);
    const name = encodeName([[OID.commonName, "bad rsa"]]);
    const spki = seq(seq(oid(OID.rsaEncryption), nullValue()), bitString(seq()));
    const tbs = seq(
      explicit(0, integer(2)),
      integer(5),
      ca.algorithmIdentifier,
      name,
      seq(time(new Date(Date.now() - 3600e3)), time(new Date(Date.now() + 3600e3))),
      name,
      spki,
    );
    const der = seq(tbs, ca.algorithmIdentifier, bitString(await ca.sign(tbs)));
    const x5c = btoa(String.fromCharCode(...der));
    assert.throws(
      () => TrustBundle.fromJwks(TD, { keys: [{ kty: "RSA", use: "x509-svid", x5c: [x5c] }] }),
      invalidBundle,
    );
    assert.throws(() => new TrustBundle(TD, [der]).toJwks(), invalidBundle);
  });

  test("a certificate whose EC key has no JWK form gives ERR_BUNDLE_INVALID, whatever its parameters", async () => {
    const keys = await generateKeyPair();
    const ca = await keySigner(keys.privateKey, keys.publicKey);
    const name = encodeName([[OID.commonName, "bad ec"]]);
    const point = ca.spki.subarray(ca.spki.length - 65);
    const keysWithoutJwk = {
      // RFC 5480 2.1.1: specifiedCurve MUST NOT be used; these were ERR_MALFORMED_INPUT.
      "explicit curve parameters": seq(oid(OID.ecPublicKey), seq(integer(1))),
      "NULL parameters": seq(oid(OID.ecPublicKey), nullValue()),
      "no parameters": seq(oid(OID.ecPublicKey)),
      "secp256k1": seq(oid(OID.ecPublicKey), oid("1.3.132.0.10")),
      "a P-256 point labelled P-384": seq(oid(OID.ecPublicKey), oid(OID.p384)),
    };
    for (const [what, algorithm] of Object.entries(keysWithoutJwk)) {
      const tbs = seq(
        explicit(0, integer(2)),
        integer(6),
        ca.algorithmIdentifier,
        name,
        seq(time(new Date(Date.now() - 3600e3)), time(new Date(Date.now() + 3600e3))),
        name,
        seq(algorithm, bitString(point)),
      );
      const der = seq(tbs, ca.algorithmIdentifier, bitString(await ca.sign(tbs)));
      const x5c = btoa(String.fromCharCode(...der));
      assert.throws(
        () => TrustBundle.fromJwks(TD, { keys: [{ kty: "EC", use: "x509-svid", x5c: [x5c] }] }),
        invalidBundle,
        what,
      );
      assert.throws(() => new TrustBundle(TD, [der]).toJwks(), invalidBundle, what);
    }
  });
});
