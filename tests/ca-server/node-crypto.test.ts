// The node:crypto provider must give exactly the WebCrypto provider's answers: the CA server
// checks CSRs with it, and a difference would let a CSR through on one and not the other.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  type HashAlgorithm,
  type KeyAlgorithm,
  type SignatureCheck,
  type SignatureScheme,
  SpiffeId,
  verifySvid,
} from "../../mod.ts";
import { webCryptoProvider } from "../../internal/mod.ts";
import { nodeCryptoProvider, nodeSigner } from "../../ca-server/mod.ts";

const DATA = new TextEncoder().encode("a TBSCertificate, more or less");

interface Case {
  algorithm: KeyAlgorithm | "RSA-PSS";
  scheme: SignatureScheme;
  keys: () => Promise<CryptoKeyPair>;
  sign: (key: CryptoKey) => Promise<Uint8Array>;
}

/** WebCrypto's r||s as DER Ecdsa-Sig-Value, minimal INTEGERs. */
function ecdsaDer(raw: Uint8Array): Uint8Array {
  const int = (v: Uint8Array) => {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0) i++;
    const body = v[i] & 0x80 ? [0, ...v.subarray(i)] : [...v.subarray(i)];
    return [0x02, body.length, ...body];
  };
  const half = raw.length / 2;
  const body = [...int(raw.subarray(0, half)), ...int(raw.subarray(half))];
  return new Uint8Array([0x30, body.length, ...body]);
}

const CASES: Case[] = [
  {
    algorithm: "ECDSA-P256",
    scheme: { name: "ECDSA", hash: "SHA-256", namedCurve: "P-256" },
    keys: () => crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]),
    sign: async (k) =>
      ecdsaDer(new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, k, DATA))),
  },
  {
    algorithm: "ECDSA-P384",
    scheme: { name: "ECDSA", hash: "SHA-384", namedCurve: "P-384" },
    keys: () => crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, ["sign", "verify"]),
    sign: async (k) =>
      ecdsaDer(new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-384" }, k, DATA))),
  },
  {
    algorithm: "Ed25519",
    scheme: { name: "Ed25519" },
    keys: () =>
      crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as Promise<CryptoKeyPair>,
    sign: async (k) => new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, k, DATA)),
  },
  {
    algorithm: "RSA-2048",
    scheme: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    keys: () =>
      crypto.subtle.generateKey(
        {
          name: "RSASSA-PKCS1-v1_5",
          modulusLength: 2048,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: "SHA-256",
        },
        true,
        ["sign", "verify"],
      ),
    sign: async (k) => new Uint8Array(await crypto.subtle.sign({ name: "RSASSA-PKCS1-v1_5" }, k, DATA)),
  },
  {
    algorithm: "RSA-PSS",
    scheme: { name: "RSA-PSS", hash: "SHA-256", saltLength: 32 },
    keys: () =>
      crypto.subtle.generateKey(
        { name: "RSA-PSS", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
        true,
        ["sign", "verify"],
      ),
    sign: async (k) => new Uint8Array(await crypto.subtle.sign({ name: "RSA-PSS", saltLength: 32 }, k, DATA)),
  },
];

async function both(check: SignatureCheck): Promise<[boolean | string, boolean | string]> {
  const outcome = (p: Promise<boolean>) => p.catch((err: { code?: string }) => err.code ?? "threw");
  return [await outcome(webCryptoProvider.verify(check)), await outcome(nodeCryptoProvider.verify(check))];
}

describe("nodeCryptoProvider", () => {
  for (const c of CASES) {
    it(`agrees with WebCrypto on ${c.algorithm} signatures, good and bad`, async () => {
      const keys = await c.keys();
      const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
      const signature = await c.sign(keys.privateKey);
      const base = { scheme: c.scheme, spki, data: DATA, signature };
      assert.deepEqual(await both(base), [true, true]);
      assert.deepEqual(await both({ ...base, isKeyReused: true }), [true, true]);

      const flipped = signature.slice();
      flipped[flipped.length - 1] ^= 1;
      assert.deepEqual(await both({ ...base, signature: flipped }), [false, false]);
      assert.deepEqual(await both({ ...base, data: DATA.subarray(1) }), [false, false]);
      // Trailing bytes after the signature, and an empty one.
      assert.deepEqual(await both({ ...base, signature: new Uint8Array([...signature, 0]) }), [false, false]);
      assert.deepEqual(await both({ ...base, signature: new Uint8Array(0) }), [false, false]);
      // Not a key at all.
      assert.deepEqual(await both({ ...base, spki: spki.subarray(0, 20) }), [
        "ERR_MALFORMED_INPUT",
        "ERR_MALFORMED_INPUT",
      ]);
    });
  }

  it("refuses a non-minimal DER ECDSA signature, as WebCrypto's provider does", async () => {
    const c = CASES[0];
    const keys = await c.keys();
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
    const der = await c.sign(keys.privateKey);
    // The same r and s with a redundant leading zero on r: BER, not DER.
    const rLength = der[3];
    const padded = new Uint8Array([
      0x30,
      der[1] + 1,
      0x02,
      rLength + 1,
      0,
      ...der.subarray(4),
    ]);
    assert.deepEqual(await both({ scheme: c.scheme, spki, data: DATA, signature: padded }), [false, false]);
  });

  it("refuses a key of another kind than the scheme names", async () => {
    const ed = await CASES[2].keys();
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", ed.publicKey));
    const check = {
      scheme: CASES[0].scheme,
      spki,
      data: DATA,
      signature: await CASES[2].sign(ed.privateKey),
    };
    const [web, node] = await both(check);
    assert.equal(node, "ERR_MALFORMED_INPUT");
    assert.notEqual(web, true);
  });

  it("hashes as WebCrypto does", async () => {
    for (const algorithm of ["SHA-1", "SHA-256", "SHA-384", "SHA-512"] as HashAlgorithm[]) {
      assert.deepEqual(
        await nodeCryptoProvider.digest(algorithm, DATA),
        await webCryptoProvider.digest(algorithm, DATA),
      );
    }
  });

  it("lets a CA with a node:crypto signer issue SVIDs that verify, and refuse a forged CSR", async () => {
    const root = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
    const ca = await CertificateAuthority.fromSigner({
      certificateChainPem: root.certificatePem,
      signer: await nodeSigner((await root.exportPem()).privateKeyPem),
      crypto: nodeCryptoProvider,
    });
    const id = SpiffeId.parse("spiffe://example.org/ns/default/sa/photos");
    const csr = await createCsr({ keys: await generateKeyPair(), id });
    const svid = await ca.issue(csr, { id });
    assert.equal((await verifySvid(svid.chainPem, root.bundle())).id.toString(), id.toString());

    // The last byte of the signature's s changed: still DER, no longer a proof of possession.
    const forged = Uint8Array.from(atob(csr.replace(/-----[^-]+-----|\s/g, "")), (ch) => ch.charCodeAt(0));
    forged[forged.length - 1] ^= 1;
    await assert.rejects(ca.issue(forged, { id }), { code: "ERR_CSR_INVALID", reason: "signature" });
  });
});
