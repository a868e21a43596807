// OpenSSL 3 as the independent judge: what meshauth issues, OpenSSL verifies; what OpenSSL
// makes (keys, CSRs, roots), meshauth reads.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import {
  CertificateAuthority,
  createCsr,
  decodePem,
  encodePem,
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  importPrivateKeyPem,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type KeyPair,
  parseCertificate,
  parseCsr,
  SpiffeId,
} from "../../mod.ts";

const TD = "cluster.local";
const ID = SpiffeId.fromServiceAccount(TD, "default", "photos");
const HOUR = 3600;
const DAY = 24 * HOUR;

const dir = mkdtempSync(`${tmpdir()}/meshauth-openssl-`);
after(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
/** Writes `content` to a fresh file in the test directory and returns its path. */
function file(name: string, content: string | Uint8Array): string {
  const path = `${dir}/${++fileCount}-${name}`;
  writeFileSync(path, content);
  return path;
}

function openssl(...args: string[]): { ok: boolean; output: string } {
  const run = spawnSync("openssl", args, { encoding: "utf8" });
  if (run.error) throw run.error;
  return { ok: run.status === 0, output: `${run.stdout}${run.stderr}` };
}

function opensslOk(...args: string[]): string {
  const { ok, output } = openssl(...args);
  assert.ok(ok, `openssl ${args.join(" ")} failed:\n${output}`);
  return output;
}

// OpenSSL keys are made once per file and kind, like the WebCrypto ones below.
const opensslKeys = new Map<string, string>();
/** The path of a key `openssl genpkey <args>` made. */
function opensslKey(...args: string[]): string {
  const kind = args.join(" ");
  if (!opensslKeys.has(kind)) {
    const key = file("key.pem", "");
    opensslOk("genpkey", ...args, "-out", key);
    opensslKeys.set(kind, key);
  }
  return opensslKeys.get(kind)!;
}

// Each algorithm's key pair is made once per file (RSA-4096 takes seconds).
const generated = new Map<KeyAlgorithm, Promise<KeyPair>>();
function keysFor(algorithm: KeyAlgorithm): Promise<KeyPair> {
  if (!generated.has(algorithm)) generated.set(algorithm, generateKeyPair(algorithm));
  return generated.get(algorithm)!;
}

interface Chain {
  root: CertificateAuthority;
  intermediate: CertificateAuthority;
  rootPem: string;
  chainPem: string;
  leafPem: string;
}

const FAST_ALGORITHMS = ["ECDSA-P256", "ECDSA-P384", "RSA-2048", "Ed25519"] as const;

/**
 * root -> intermediate -> leaf. For the fast algorithms every key is of `algorithm`; the big
 * RSA keys are made once per file, so there only the leaf's key is (the CAs' are P-256, and
 * the big RSA keys sign as OpenSSL-made roots below).
 */
const chains = new Map<KeyAlgorithm, Promise<Chain>>();
function chainFor(algorithm: KeyAlgorithm): Promise<Chain> {
  if (!chains.has(algorithm)) {
    chains.set(
      algorithm,
      (async () => {
        const caAlgorithm = (FAST_ALGORITHMS as readonly string[]).includes(algorithm)
          ? algorithm
          : "ECDSA-P256";
        const root = await CertificateAuthority.createRoot({ trustDomain: TD, keyAlgorithm: caAlgorithm });
        const intermediate = await root.createIntermediate({
          ttlSeconds: 30 * DAY,
          keyAlgorithm: caAlgorithm,
        });
        const svid = await intermediate.issue(await createCsr({ keys: await keysFor(algorithm), id: ID }), {
          id: ID,
        });
        return {
          root,
          intermediate,
          rootPem: file("root.pem", root.bundle().toPem()),
          chainPem: file("chain.pem", svid.chainPem),
          leafPem: file("leaf.pem", svid.certificatePem),
        };
      })(),
    );
  }
  return chains.get(algorithm)!;
}

function verifyArgs(chain: Chain, ...extra: string[]): string[] {
  return ["verify", ...extra, "-CAfile", chain.rootPem, "-untrusted", chain.chainPem, chain.leafPem];
}

describe("openssl verify accepts what meshauth issues", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`a root -> intermediate -> leaf chain with a ${algorithm} leaf`, async () => {
      const chain = await chainFor(algorithm);
      assert.match(opensslOk(...verifyArgs(chain)), /: OK/);
    });
  }

  for (const algorithm of FAST_ALGORITHMS) {
    test(`a ${algorithm} chain passes -x509_strict for TLS server and client use`, async () => {
      const chain = await chainFor(algorithm);
      opensslOk(...verifyArgs(chain, "-x509_strict", "-purpose", "sslserver"));
      opensslOk(...verifyArgs(chain, "-x509_strict", "-purpose", "sslclient"));
    });
  }

  for (const algorithm of ["RSA-3072", "RSA-4096"] as const) {
    test(`an OpenSSL-made ${algorithm} root loaded with CertificateAuthority.load issues leaves OpenSSL verifies`, async () => {
      const keyPem = file("ca-key.pem", await exportPrivateKeyPem((await keysFor(algorithm)).privateKey));
      const rootPem = file("openssl-root.pem", "");
      opensslOk(
        "req",
        "-x509",
        "-new",
        "-key",
        keyPem,
        "-sha256",
        "-days",
        "30",
        "-subj",
        `/O=${TD}/CN=OpenSSL root`,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        `subjectAltName=URI:spiffe://${TD}`,
        "-out",
        rootPem,
      );
      const ca = await CertificateAuthority.load({
        certificateChainPem: readFileSync(rootPem, "utf8"),
        privateKeyPem: readFileSync(keyPem, "utf8"),
      });
      assert.equal(ca.trustDomain.name, TD);
      const svid = await ca.issue(await createCsr({ keys: await keysFor(algorithm), id: ID }));
      const leafPem = file("leaf.pem", svid.certificatePem);
      opensslOk("verify", "-x509_strict", "-CAfile", rootPem, leafPem);
    });
  }
});

describe("openssl x509 -text shows the X509-SVID profile", () => {
  async function leafText(algorithm: KeyAlgorithm): Promise<string> {
    return opensslOk("x509", "-noout", "-text", "-in", (await chainFor(algorithm)).leafPem);
  }

  test("CA:FALSE, marked critical", async () => {
    assert.match(await leafText("ECDSA-P256"), /X509v3 Basic Constraints: critical\s+CA:FALSE\n/);
  });

  test("Digital Signature only, marked critical, for an EC key", async () => {
    assert.match(await leafText("ECDSA-P256"), /X509v3 Key Usage: critical\s+Digital Signature\n/);
  });

  test("Digital Signature and Key Encipherment, marked critical, for an RSA key", async () => {
    assert.match(
      await leafText("RSA-2048"),
      /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n/,
    );
  });

  test("both TLS extended key usages", async () => {
    assert.match(
      await leafText("ECDSA-P256"),
      /X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
    );
  });

  test("the SPIFFE ID as the only subject alternative name", async () => {
    assert.match(
      await leafText("Ed25519"),
      new RegExp(`X509v3 Subject Alternative Name:\\s*\\n\\s+URI:${ID}\\n`),
    );
  });

  test("a subject key identifier and an authority key identifier equal to the issuer's", async () => {
    const chain = await chainFor("ECDSA-P384");
    const ski = (text: string) => /X509v3 Subject Key Identifier:\s*\n\s+([0-9A-F:]+)/.exec(text)?.[1];
    const aki = (text: string) =>
      /X509v3 Authority Key Identifier:\s*\n\s+(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
    const leaf = await leafText("ECDSA-P384");
    const issuer = opensslOk(
      "x509",
      "-noout",
      "-text",
      "-in",
      file("int.pem", chain.intermediate.certificatePem),
    );
    assert.ok(ski(leaf));
    assert.ok(ski(issuer));
    assert.equal(aki(leaf), ski(issuer));
  });

  test("a positive 128-bit serial number", async () => {
    const out = opensslOk("x509", "-noout", "-serial", "-in", (await chainFor("ECDSA-P256")).leafPem);
    const serial = BigInt(`0x${/serial=([0-9A-F]+)/.exec(out)![1]}`);
    // 16 random bytes with the sign bit cleared and a non-zero first byte.
    assert.ok(serial >= 1n << 120n && serial < 1n << 127n, serial.toString(16));
  });

  test("intermediates as CA:TRUE with pathlen 0, Certificate Sign and CRL Sign", async () => {
    const chain = await chainFor("ECDSA-P256");
    const text = opensslOk(
      "x509",
      "-noout",
      "-text",
      "-in",
      file("int.pem", chain.intermediate.certificatePem),
    );
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0\n/);
    assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    assert.match(text, new RegExp(`URI:spiffe://${TD}\\n`));
  });
});

describe("CSRs between meshauth and OpenSSL", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`openssl req -verify accepts a ${algorithm} CSR from createCsr`, async () => {
      const csr = file(
        "req.pem",
        await createCsr({ keys: await keysFor(algorithm), id: ID, dnsNames: ["a.example"] }),
      );
      assert.match(opensslOk("req", "-verify", "-noout", "-in", csr), /verify OK/);
      const text = opensslOk("req", "-noout", "-text", "-in", csr);
      assert.match(text, new RegExp(`URI:${ID}, DNS:a\\.example`));
    });
  }

  const OPENSSL_KEYS: Array<[KeyAlgorithm, string[]]> = [
    ["ECDSA-P256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]],
    ["ECDSA-P384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]],
    ["RSA-2048", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]],
    ["Ed25519", ["-algorithm", "ED25519"]],
  ];

  for (const [algorithm, genpkey] of OPENSSL_KEYS) {
    test(`parseCsr accepts an openssl req CSR with a ${algorithm} key, and the CA issues it`, async () => {
      const key = opensslKey(...genpkey);
      const csr = file("req.pem", "");
      opensslOk("req", "-new", "-key", key, "-subj", "/", "-addext", `subjectAltName=URI:${ID}`, "-out", csr);
      const request = await parseCsr(readFileSync(csr, "utf8"));
      assert.equal(request.id.toString(), ID.toString());
      assert.equal(request.keyAlgorithm, algorithm);
      const chain = await chainFor("ECDSA-P256");
      const svid = await chain.intermediate.issue(readFileSync(csr, "utf8"), { id: ID });
      const leafPem = file("leaf.pem", svid.certificatePem);
      opensslOk("verify", "-CAfile", chain.rootPem, "-untrusted", file("chain.pem", svid.chainPem), leafPem);
      assert.deepEqual(parseCertificate(svid.certificateDer).spki, request.spki);
    });
  }

  test("parseCsr accepts an openssl req CSR signed with RSA-PSS", async () => {
    const key = opensslKey("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048");
    const csr = file("req.pem", "");
    opensslOk(
      "req",
      "-new",
      "-key",
      key,
      "-subj",
      "/",
      "-addext",
      `subjectAltName=URI:${ID}`,
      "-sha256",
      "-sigopt",
      "rsa_padding_mode:pss",
      "-sigopt",
      "rsa_pss_saltlen:32",
      "-out",
      csr,
    );
    const request = await parseCsr(readFileSync(csr, "utf8"));
    assert.equal(request.keyAlgorithm, "RSA-2048");
    assert.equal(request.id.toString(), ID.toString());
  });

  test("parseCsr refuses an openssl req CSR with an RSA-PSS-only key as unsupported", async () => {
    const key = opensslKey("-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048");
    const csr = file("req.pem", "");
    opensslOk("req", "-new", "-key", key, "-subj", "/", "-addext", `subjectAltName=URI:${ID}`, "-out", csr);
    await assert.rejects(parseCsr(readFileSync(csr, "utf8")), {
      code: "ERR_CSR_INVALID",
      reason: "unsupported-algorithm",
    });
  });

  test("parseCsr rejects an openssl req CSR with a DNS name but no URI SAN", async () => {
    const key = opensslKey("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256");
    const csr = file("req.pem", "");
    opensslOk(
      "req",
      "-new",
      "-key",
      key,
      "-subj",
      "/CN=photos",
      "-addext",
      "subjectAltName=DNS:photos",
      "-out",
      csr,
    );
    await assert.rejects(parseCsr(readFileSync(csr, "utf8")), {
      code: "ERR_CSR_INVALID",
      reason: "no-uri-san",
    });
  });

  test("parseCsr rejects an openssl req CSR with a 1024-bit RSA key", async () => {
    const key = opensslKey("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024");
    const csr = file("req.pem", "");
    opensslOk("req", "-new", "-key", key, "-subj", "/", "-addext", `subjectAltName=URI:${ID}`, "-out", csr);
    await assert.rejects(parseCsr(readFileSync(csr, "utf8")), {
      code: "ERR_CSR_INVALID",
      reason: "weak-key",
    });
  });

  // `openssl ec -conv_form` writes a key's point compressed (0x02/0x03) or hybrid (0x06/0x07),
  // and req then puts it in the CSR and certificate as it is: RFC 5480 2.2 allows the first,
  // not the second, and meshauth reads neither (docs/runtimes.md).
  for (
    const [form, certificateCode, csrReason] of [
      ["compressed", "ERR_ALGORITHM_UNSUPPORTED", "unsupported-algorithm"],
      ["hybrid", "ERR_MALFORMED_INPUT", "malformed"],
    ] as const
  ) {
    test(`a certificate and a CSR openssl makes with a ${form} P-256 point are refused`, async () => {
      const key = file(`${form}.key`, "");
      opensslOk(
        "ec",
        "-in",
        opensslKey("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
        "-conv_form",
        form,
        "-out",
        key,
      );
      const cert = file(`${form}.pem`, "");
      opensslOk("req", "-x509", "-new", "-key", key, "-subj", "/CN=openssl", "-days", "1", "-out", cert);
      const der = decodePem(readFileSync(cert, "utf8"))[0].der;
      assert.throws(() => parseCertificate(der), { code: certificateCode });
      const csr = file(`${form}.csr`, "");
      opensslOk("req", "-new", "-key", key, "-subj", "/", "-addext", `subjectAltName=URI:${ID}`, "-out", csr);
      await assert.rejects(parseCsr(readFileSync(csr, "utf8")), {
        code: "ERR_CSR_INVALID",
        reason: csrReason,
      });
    });
  }
});

describe("CRLs", () => {
  async function revokedSetup() {
    const chain = await chainFor("ECDSA-P256");
    const revoked = await chain.intermediate.issue(
      await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }),
    );
    const good = await chain.intermediate.issue(
      await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }),
    );
    const crl = file(
      "crl.pem",
      await chain.intermediate.createCrl({
        revoked: [{ serialNumber: revoked.serialNumber, revokedAt: new Date(), reason: "keyCompromise" }],
        nextUpdateSeconds: HOUR,
      }),
    );
    return { chain, revoked, good, crl, intermediatePem: file("int.pem", chain.intermediate.certificatePem) };
  }

  test("openssl crl -verify accepts the CA's signature", async () => {
    const { crl, intermediatePem } = await revokedSetup();
    assert.match(opensslOk("crl", "-in", crl, "-CAfile", intermediatePem, "-noout", "-verify"), /verify OK/);
  });

  test("the CRL lists the revoked serial with its reason", async () => {
    const { crl, revoked } = await revokedSetup();
    const text = opensslOk("crl", "-in", crl, "-noout", "-text");
    assert.match(text, /Version 2/);
    assert.match(
      text,
      new RegExp(
        `Serial Number: ${revoked.serialNumber.toUpperCase()}\\s+Revocation Date:[^\\n]+\\n\\s+CRL entry extensions:\\s+X509v3 CRL Reason Code:\\s+Key Compromise`,
      ),
    );
  });

  test("the CRL carries the issuer's key identifier and a CRL number", async () => {
    const { crl, chain } = await revokedSetup();
    const text = opensslOk("crl", "-in", crl, "-noout", "-text");
    const ski = [...chain.intermediate.certificate.subjectKeyIdentifier!]
      .map((b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
    assert.match(text, new RegExp(`X509v3 Authority Key Identifier:\\s*\\n\\s+(keyid:)?${ski}`));
    assert.match(text, /X509v3 CRL Number:\s*\n\s+\d+/);
  });

  test("an unspecified reason is left out of the entry", async () => {
    const chain = await chainFor("ECDSA-P256");
    const crl = file(
      "crl.pem",
      await chain.intermediate.createCrl({
        revoked: [{ serialNumber: "0a0b0c", revokedAt: new Date(), reason: "unspecified" }],
        nextUpdateSeconds: HOUR,
      }),
    );
    const text = opensslOk("crl", "-in", crl, "-noout", "-text");
    assert.match(text, /Serial Number: 0A0B0C/);
    assert.doesNotMatch(text, /CRL Reason Code/);
  });

  test("an empty CRL has no revoked certificates", async () => {
    const chain = await chainFor("ECDSA-P256");
    const crl = file("crl.pem", await chain.intermediate.createCrl({ revoked: [], nextUpdateSeconds: HOUR }));
    assert.match(opensslOk("crl", "-in", crl, "-noout", "-text"), /No Revoked Certificates/);
  });

  test("openssl verify -crl_check rejects the revoked leaf", async () => {
    const { chain, revoked, crl } = await revokedSetup();
    const { ok, output } = openssl(
      "verify",
      "-crl_check",
      "-CRLfile",
      crl,
      "-CAfile",
      chain.rootPem,
      "-untrusted",
      file("chain.pem", revoked.chainPem),
      file("leaf.pem", revoked.certificatePem),
    );
    assert.equal(ok, false);
    assert.match(output, /certificate revoked/);
  });

  test("openssl verify -crl_check accepts a leaf the CRL does not list", async () => {
    const { chain, good, crl } = await revokedSetup();
    opensslOk(
      "verify",
      "-crl_check",
      "-CRLfile",
      crl,
      "-CAfile",
      chain.rootPem,
      "-untrusted",
      file("chain.pem", good.chainPem),
      file("leaf.pem", good.certificatePem),
    );
  });
});

describe("keys between meshauth and OpenSSL", () => {
  async function sameKey(keyPem: string, keys: KeyPair): Promise<void> {
    const spkiPem = opensslOk("pkey", "-in", keyPem, "-pubout");
    assert.deepEqual(await exportSpki(keys.publicKey), decodePem(spkiPem)[0].der);
  }

  const GENPKEY: Array<[KeyAlgorithm, string[]]> = [
    ["ECDSA-P256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]],
    ["ECDSA-P384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]],
    ["RSA-2048", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]],
    ["Ed25519", ["-algorithm", "ED25519"]],
  ];

  for (const [algorithm, args] of GENPKEY) {
    test(`importPrivateKeyPem reads an openssl genpkey ${algorithm} key (PKCS#8)`, async () => {
      const key = opensslKey(...args);
      const keys = await importPrivateKeyPem(readFileSync(key, "utf8"));
      assert.equal(keys.algorithm, algorithm);
      await sameKey(key, keys);
    });
  }

  for (const [curve, algorithm] of [["prime256v1", "ECDSA-P256"], ["secp384r1", "ECDSA-P384"]] as const) {
    test(`importPrivateKeyPem reads an openssl ecparam -genkey -noout ${curve} key (SEC 1)`, async () => {
      const pem = opensslOk("ecparam", "-genkey", "-noout", "-name", curve);
      assert.match(pem, /BEGIN EC PRIVATE KEY/);
      const keys = await importPrivateKeyPem(pem);
      assert.equal(keys.algorithm, algorithm);
      await sameKey(file("key.pem", pem), keys);
    });
  }

  test("importPrivateKeyPem reads openssl ecparam -genkey output with its EC PARAMETERS block", async () => {
    const pem = opensslOk("ecparam", "-genkey", "-name", "prime256v1");
    assert.match(pem, /BEGIN EC PARAMETERS/);
    const keys = await importPrivateKeyPem(pem);
    assert.equal(keys.algorithm, "ECDSA-P256");
    await sameKey(file("key.pem", pem), keys);
  });

  test("importPrivateKeyPem reads an RSA key openssl writes as PKCS#1 (-traditional)", async () => {
    const rsaKey = opensslKey("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048");
    const pem = opensslOk("rsa", "-in", rsaKey, "-traditional").replace(/^[^-]*/, "");
    assert.match(pem, /BEGIN RSA PRIVATE KEY/);
    const keys = await importPrivateKeyPem(pem);
    assert.equal(keys.algorithm, "RSA-2048");
    await sameKey(file("key.pem", pem), keys);
  });

  test("an imported OpenSSL key makes CSRs openssl req -verify accepts", async () => {
    const key = opensslKey("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384");
    const keys = await importPrivateKeyPem(readFileSync(key, "utf8"));
    const csr = file("req.pem", await createCsr({ keys, id: ID }));
    opensslOk("req", "-verify", "-noout", "-in", csr);
  });

  test("importPrivateKeyPem refuses a 1024-bit RSA key with ERR_ALGORITHM_UNSUPPORTED", async () => {
    const key = opensslKey("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024");
    await assert.rejects(importPrivateKeyPem(readFileSync(key, "utf8")), {
      code: "ERR_ALGORITHM_UNSUPPORTED",
    });
  });

  test("importPrivateKeyPem refuses a P-521 key with ERR_ALGORITHM_UNSUPPORTED", async () => {
    const key = opensslKey("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521");
    await assert.rejects(importPrivateKeyPem(readFileSync(key, "utf8")), {
      code: "ERR_ALGORITHM_UNSUPPORTED",
    });
  });

  for (const algorithm of KEY_ALGORITHMS) {
    test(`openssl pkey reads an exported ${algorithm} key`, async () => {
      const keys = await keysFor(algorithm);
      const key = file("key.pem", await exportPrivateKeyPem(keys.privateKey));
      await sameKey(key, keys);
    });
  }
});

describe("openssl verify rejects what it should", () => {
  const T0 = new Date("2026-06-01T00:00:00Z");
  const epoch = (date: Date) => String(Math.floor(date.getTime() / 1000));

  async function timedChain() {
    let clock = T0;
    const root = await CertificateAuthority.createRoot({
      trustDomain: TD,
      now: () => clock,
      ttlSeconds: 365 * DAY,
    });
    clock = new Date(T0.getTime() + DAY * 1000);
    const svid = await root.issue(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }), {
      ttlSeconds: HOUR,
    });
    return {
      rootPem: file("root.pem", root.bundle().toPem()),
      leafPem: file("leaf.pem", svid.certificatePem),
      svid,
    };
  }

  test("a leaf inside its validity passes with -attime (the control)", async () => {
    const { rootPem, leafPem, svid } = await timedChain();
    opensslOk(
      "verify",
      "-attime",
      epoch(new Date(svid.notBefore.getTime() + 60_000)),
      "-CAfile",
      rootPem,
      leafPem,
    );
  });

  test("an expired leaf is rejected", async () => {
    const { rootPem, leafPem, svid } = await timedChain();
    const { ok, output } = openssl(
      "verify",
      "-attime",
      epoch(new Date(svid.notAfter.getTime() + 60_000)),
      "-CAfile",
      rootPem,
      leafPem,
    );
    assert.equal(ok, false);
    assert.match(output, /certificate has expired/);
  });

  test("a not-yet-valid leaf is rejected", async () => {
    const { rootPem, leafPem, svid } = await timedChain();
    const { ok, output } = openssl(
      "verify",
      "-attime",
      epoch(new Date(svid.notBefore.getTime() - HOUR * 1000)),
      "-CAfile",
      rootPem,
      leafPem,
    );
    assert.equal(ok, false);
    assert.match(output, /certificate is not yet valid/);
  });

  test("a leaf with a tampered signature is rejected", async () => {
    const chain = await chainFor("ECDSA-P256");
    const der = decodePem(readFileSync(chain.leafPem, "utf8"))[0].der.slice();
    der[der.length - 1] ^= 0x01;
    const { ok, output } = openssl(
      "verify",
      "-CAfile",
      chain.rootPem,
      "-untrusted",
      chain.chainPem,
      file("leaf.pem", encodePem("CERTIFICATE", der)),
    );
    assert.equal(ok, false);
    assert.match(output, /signature failure/);
  });

  test("a leaf of another trust domain's CA is rejected against this root", async () => {
    const ours = await chainFor("ECDSA-P256");
    const foreign = await CertificateAuthority.createRoot({ trustDomain: "partner.example" });
    const id = SpiffeId.parse("spiffe://partner.example/ns/default/sa/photos");
    const svid = await foreign.issue(await createCsr({ keys: await keysFor("ECDSA-P256"), id }));
    const { ok, output } = openssl("verify", "-CAfile", ours.rootPem, file("leaf.pem", svid.certificatePem));
    assert.equal(ok, false);
    assert.match(output, /unable to get local issuer certificate/);
  });
});
