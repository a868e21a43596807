import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  decodePem,
  encodePem,
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  importPrivateKeyPem,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  keyAlgorithmOf,
  type KeyPair,
} from "../../mod.ts";

// Big RSA keys take seconds to make (more on a busy machine): above Bun's 5 s default.
const SLOW = { timeout: 120_000 };

// Key generation is slow for large RSA keys: each algorithm's pair is made once per file.
const generated = new Map<KeyAlgorithm, Promise<KeyPair>>();
function keysFor(algorithm: KeyAlgorithm): Promise<KeyPair> {
  if (!generated.has(algorithm)) generated.set(algorithm, generateKeyPair(algorithm));
  return generated.get(algorithm)!;
}

const SIGN_PARAMS: Record<KeyAlgorithm, AlgorithmIdentifier | EcdsaParams> = {
  "ECDSA-P256": { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
  "ECDSA-P384": { name: "ECDSA", hash: "SHA-384" } as EcdsaParams,
  "RSA-2048": { name: "RSASSA-PKCS1-v1_5" },
  "RSA-3072": { name: "RSASSA-PKCS1-v1_5" },
  "RSA-4096": { name: "RSASSA-PKCS1-v1_5" },
  "Ed25519": { name: "Ed25519" },
};

const malformed = { name: "MalformedInput", code: "ERR_MALFORMED_INPUT" };
const invalidKey = { name: "InvalidKey", code: "ERR_KEY_INVALID" };

describe("generateKeyPair", () => {
  test("makes ECDSA P-256 keys by default", SLOW, async () => {
    const keys = await generateKeyPair();
    assert.equal(keys.algorithm, "ECDSA-P256");
    assert.equal(keyAlgorithmOf(keys.privateKey), "ECDSA-P256");
  });

  for (const algorithm of KEY_ALGORITHMS) {
    test(`makes a ${algorithm} pair whose private key signs and public key verifies`, SLOW, async () => {
      const keys = await keysFor(algorithm);
      assert.equal(keys.algorithm, algorithm);
      assert.equal(keyAlgorithmOf(keys.privateKey), algorithm);
      assert.equal(keyAlgorithmOf(keys.publicKey), algorithm);
      const data = new TextEncoder().encode("meshauth");
      const signature = await crypto.subtle.sign(SIGN_PARAMS[algorithm], keys.privateKey, data);
      assert.ok(await crypto.subtle.verify(SIGN_PARAMS[algorithm], keys.publicKey, signature, data));
    });
  }

  test("refuses an unknown algorithm with ERR_ALGORITHM_UNSUPPORTED", SLOW, async () => {
    await assert.rejects(generateKeyPair("DSA-1024" as KeyAlgorithm), {
      name: "UnsupportedAlgorithm",
      code: "ERR_ALGORITHM_UNSUPPORTED",
    });
  });

  test("keeps the private key inside WebCrypto when asked", SLOW, async () => {
    const keys = await generateKeyPair("ECDSA-P256", { extractable: false });
    assert.equal(keys.privateKey.extractable, false);
    await assert.rejects(exportPrivateKeyPem(keys.privateKey), { ...invalidKey, message: /not extractable/ });
  });
});

describe("keyAlgorithmOf", () => {
  async function rsaKeyAs(params: RsaHashedImportParams): Promise<CryptoKey> {
    const [block] = decodePem(await exportPrivateKeyPem((await keysFor("RSA-2048")).privateKey));
    return await crypto.subtle.importKey("pkcs8", block.der.slice(), params, true, ["sign"]);
  }

  test("names an RSA key bound to PKCS#1 v1.5 and SHA-256 by its size", SLOW, async () => {
    const key = await rsaKeyAs({ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" });
    assert.equal(keyAlgorithmOf(key), "RSA-2048");
  });

  test(
    "refuses an RSA key bound to SHA-384, which meshauth would sign with the wrong hash",
    SLOW,
    async () => {
      const key = await rsaKeyAs({ name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" });
      assert.throws(() => keyAlgorithmOf(key), { code: "ERR_ALGORITHM_UNSUPPORTED" });
    },
  );

  test("refuses an RSA-PSS key", SLOW, async () => {
    const key = await rsaKeyAs({ name: "RSA-PSS", hash: "SHA-256" });
    assert.throws(() => keyAlgorithmOf(key), { code: "ERR_ALGORITHM_UNSUPPORTED" });
  });
});

describe("exportPrivateKeyPem and importPrivateKeyPem", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`round-trips a ${algorithm} key through PKCS#8 PEM`, SLOW, async () => {
      const keys = await keysFor(algorithm);
      const pem = await exportPrivateKeyPem(keys.privateKey);
      const [block, extra] = decodePem(pem);
      assert.equal(block.label, "PRIVATE KEY");
      assert.equal(extra, undefined);
      const imported = await importPrivateKeyPem(pem);
      assert.equal(imported.algorithm, algorithm);
      assert.deepEqual(await exportSpki(imported.publicKey), await exportSpki(keys.publicKey));
      const data = new TextEncoder().encode("round trip");
      const signature = await crypto.subtle.sign(SIGN_PARAMS[algorithm], imported.privateKey, data);
      assert.ok(await crypto.subtle.verify(SIGN_PARAMS[algorithm], keys.publicKey, signature, data));
    });
  }

  test("imports a non-extractable key when asked", SLOW, async () => {
    const pem = await exportPrivateKeyPem((await keysFor("ECDSA-P256")).privateKey);
    const imported = await importPrivateKeyPem(pem, { extractable: false });
    assert.equal(imported.privateKey.extractable, false);
  });

  test("export refuses a public key", SLOW, async () => {
    await assert.rejects(exportPrivateKeyPem((await keysFor("ECDSA-P256")).publicKey), invalidKey);
  });

  test("import refuses an empty string", SLOW, async () => {
    await assert.rejects(importPrivateKeyPem(""), { ...malformed, message: /no PEM block/ });
  });

  test("import refuses text with no PEM block", SLOW, async () => {
    await assert.rejects(importPrivateKeyPem("not a key"), malformed);
  });

  test("import refuses a PEM body that is not base64", SLOW, async () => {
    const pem = "-----BEGIN PRIVATE KEY-----\nnot*base64!\n-----END PRIVATE KEY-----\n";
    await assert.rejects(importPrivateKeyPem(pem), malformed);
  });

  test("import refuses mismatched BEGIN and END labels", SLOW, async () => {
    const pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END CERTIFICATE-----\n";
    await assert.rejects(importPrivateKeyPem(pem), malformed);
  });

  test("import refuses a PEM block of another kind", SLOW, async () => {
    const pem = encodePem("CERTIFICATE", new Uint8Array([0x30, 0x00]));
    await assert.rejects(importPrivateKeyPem(pem), { ...malformed, message: /CERTIFICATE/ });
  });

  test("import refuses an encrypted private key", SLOW, async () => {
    const pem = encodePem("ENCRYPTED PRIVATE KEY", new Uint8Array([0x30, 0x00]));
    await assert.rejects(importPrivateKeyPem(pem), malformed);
  });

  test("import refuses two keys in one PEM", SLOW, async () => {
    const one = await exportPrivateKeyPem((await keysFor("ECDSA-P256")).privateKey);
    await assert.rejects(importPrivateKeyPem(one + one), { ...malformed, message: /one PEM block/ });
  });

  test("import refuses bytes that are not DER", SLOW, async () => {
    const pem = encodePem("PRIVATE KEY", new TextEncoder().encode("hello, world"));
    await assert.rejects(importPrivateKeyPem(pem), invalidKey);
  });

  test("import refuses a truncated PKCS#8 key", SLOW, async () => {
    const [block] = decodePem(await exportPrivateKeyPem((await keysFor("ECDSA-P256")).privateKey));
    const pem = encodePem("PRIVATE KEY", block.der.subarray(0, block.der.length - 10));
    await assert.rejects(importPrivateKeyPem(pem), invalidKey);
  });

  test("import refuses an EC key whose private scalar is zero", SLOW, async () => {
    const [block] = decodePem(await exportPrivateKeyPem((await keysFor("ECDSA-P256")).privateKey));
    const der = block.der.slice();
    // ECPrivateKey { version 1, privateKey OCTET STRING (32) ... }: zero the scalar.
    const at = der.findIndex((_, i) =>
      der[i] === 0x02 && der[i + 1] === 0x01 && der[i + 2] === 0x01 && der[i + 3] === 0x04 &&
      der[i + 4] === 0x20
    );
    assert.ok(at > 0);
    der.fill(0, at + 5, at + 5 + 32);
    await assert.rejects(importPrivateKeyPem(encodePem("PRIVATE KEY", der)), invalidKey);
  });

  test("import refuses an SEC 1 key that is not SEC 1", SLOW, async () => {
    const pem = encodePem("EC PRIVATE KEY", new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]));
    await assert.rejects(importPrivateKeyPem(pem), invalidKey);
  });

  test("import refuses a PKCS#1 key that is not PKCS#1", SLOW, async () => {
    const pem = encodePem("RSA PRIVATE KEY", new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]));
    await assert.rejects(importPrivateKeyPem(pem), invalidKey);
  });

  test("import refuses a key of an unsupported algorithm", SLOW, async () => {
    // PKCS#8 with the X25519 OID (1.3.101.110): a key meshauth does not sign with.
    const der = new Uint8Array([
      0x30,
      0x2e,
      0x02,
      0x01,
      0x00,
      0x30,
      0x05,
      0x06,
      0x03,
      0x2b,
      0x65,
      0x6e,
      0x04,
      0x22,
      0x04,
      0x20,
      ...new Uint8Array(32).fill(7),
    ]);
    await assert.rejects(importPrivateKeyPem(encodePem("PRIVATE KEY", der)), {
      name: "UnsupportedAlgorithm",
      code: "ERR_ALGORITHM_UNSUPPORTED",
    });
  });
});
