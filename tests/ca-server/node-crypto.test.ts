// The node:crypto provider must give exactly the WebCrypto provider's answers: the CA server
// checks CSRs with it, and a difference would let a CSR through on one and not the other.
// Every form it can hand a key over in (PEM, DER, P-256 as JWK) is held to them, on every
// runtime, whichever of them the runtime's own nodeCryptoProvider uses.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  CertificateAuthority,
  createCsr,
  type CryptoProvider,
  type CsrRejection,
  generateKeyPair,
  type HashAlgorithm,
  InvalidCsr,
  type KeyAlgorithm,
  parseCsr,
  type SignatureCheck,
  type SignatureScheme,
  SpiffeId,
  verifySvid,
} from "../../mod.ts";
import { webCryptoProvider } from "../../internal/mod.ts";
import { nodeCryptoProvider, nodeSigner } from "../../ca-server/mod.ts";
import { createNodeCryptoProvider, type KeyImportForm } from "../../ca-server/keys/node-crypto.ts";
import { buildCsr, fakeSpki, keySigner } from "../support/csr-builder.ts";
import { NIST_CURVES, smallPoint, uncompressedPoint } from "../support/ec-points.ts";

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

const FORMS: KeyImportForm[] = ["pem", "der", "p256-jwk"];
const byForm = FORMS.map((form) => [form, createNodeCryptoProvider(form)] as const);

/** WebCrypto's answer and node:crypto's, which must be the same in every key form. */
async function both(check: SignatureCheck): Promise<[boolean | string, boolean | string]> {
  const outcome = (p: Promise<boolean>) => p.catch((err: { code?: string }) => err.code ?? "threw");
  const node = await outcome(nodeCryptoProvider.verify(check));
  for (const [form, provider] of byForm) {
    assert.equal(await outcome(provider.verify(check)), node, `key form ${form}`);
  }
  return [await outcome(webCryptoProvider.verify(check)), node];
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

describe("nodeCryptoProvider, EC keys it must refuse", () => {
  const EC = "1.2.840.10045.2.1";
  const CURVE_OID = { "P-256": "1.2.840.10045.3.1.7", "P-384": "1.3.132.0.34" } as const;
  const ID = "spiffe://example.org/web";

  async function ecSigner(curve: "P-256" | "P-384") {
    const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: curve }, true, [
      "sign",
      "verify",
    ]);
    return await keySigner(keys.privateKey, keys.publicKey);
  }

  /** The signer's own point with the last bit of y flipped: the right size, no longer on the curve. */
  function offCurveSpki(curve: "P-256" | "P-384", spki: Uint8Array): Uint8Array {
    const size = curve === "P-256" ? 32 : 48;
    const point = spki.slice(spki.length - 1 - 2 * size);
    point[point.length - 1] ^= 1;
    return fakeSpki(EC, CURVE_OID[curve], point);
  }

  function rejection(reason: CsrRejection) {
    return (err: unknown) => {
      assert.ok(err instanceof InvalidCsr, `expected InvalidCsr, got ${err}`);
      assert.equal(err.reason, reason, err.message);
      return true;
    };
  }

  const providers: [string, CryptoProvider][] = [
    ["webcrypto", webCryptoProvider],
    ["node:crypto", nodeCryptoProvider],
    ...byForm.map(([form, provider]) => [`node:crypto (${form})`, provider] as [string, CryptoProvider]),
  ];

  it("imports a P-256 key through its JWK, and refuses the JWK of a point off the curve", async () => {
    const signer = await ecSigner("P-256");
    const data = new TextEncoder().encode("a CertificationRequestInfo");
    const check = {
      scheme: { name: "ECDSA", hash: "SHA-256", namedCurve: "P-256" } as const,
      spki: signer.spki,
      data,
      signature: await signer.sign(data),
    };
    const jwk = createNodeCryptoProvider("p256-jwk");
    assert.equal(await jwk.verify(check), true);
    await assert.rejects(jwk.verify({ ...check, spki: offCurveSpki("P-256", signer.spki) }), {
      code: "ERR_MALFORMED_INPUT",
      // Names the JWK: the refusal came from the JWK path, not a fallback to PEM.
      reason: "node:crypto could not import it from its JWK",
    });
  });

  for (const curve of ["P-256", "P-384"] as const) {
    it(`refuses a ${curve} point off the curve with every provider and key form`, async () => {
      const signer = await ecSigner(curve);
      const csr = await buildCsr({ signer, spki: offCurveSpki(curve, signer.spki), uris: [ID] });
      for (const [name, crypto] of providers) {
        await assert.rejects(parseCsr(csr, { crypto }), rejection("malformed"), name);
      }
    });

    it(`refuses a ${curve} point whose x is not below p with every provider and key form`, async () => {
      // x + p encodes the same point mod p, which Deno's WebCrypto imports; the signature then
      // fails, so a provider that let it through would answer 'signature', not 'malformed'.
      const signer = await ecSigner(curve);
      const { x, y } = smallPoint(curve);
      const spki = fakeSpki(EC, CURVE_OID[curve], uncompressedPoint(curve, x + NIST_CURVES[curve].p, y));
      const csr = await buildCsr({ signer, spki, uris: [ID] });
      for (const [name, crypto] of providers) {
        await assert.rejects(parseCsr(csr, { crypto }), rejection("malformed"), name);
      }
    });
  }

  it("the WebCrypto provider says why it refuses a point off the curve, on every runtime", async () => {
    const signer = await ecSigner("P-256");
    const data = new TextEncoder().encode("a CertificationRequestInfo");
    const { x, y } = smallPoint("P-256");
    const check = {
      scheme: { name: "ECDSA", hash: "SHA-256", namedCurve: "P-256" } as const,
      data,
      signature: await signer.sign(data),
    };
    for (
      const spki of [
        offCurveSpki("P-256", signer.spki),
        fakeSpki(EC, CURVE_OID["P-256"], uncompressedPoint("P-256", x + NIST_CURVES["P-256"].p, y)),
      ]
    ) {
      await assert.rejects(webCryptoProvider.verify({ ...check, spki }), {
        code: "ERR_MALFORMED_INPUT",
        reason: "the EC point is not on the curve",
      });
    }
  });

  it("refuses a compressed point, a malformed point and an unknown curve, with every provider", async () => {
    const signer = await ecSigner("P-256");
    const point = signer.spki.subarray(signer.spki.length - 65);
    // The form and length of a point are the parser's (checkEcPoint): malformed, whichever
    // provider would have imported it; a compressed point and an unknown curve are unsupported.
    const keys = {
      compressed: [
        fakeSpki(EC, CURVE_OID["P-256"], new Uint8Array([0x02 | (point[64] & 1), ...point.subarray(1, 33)])),
        "unsupported-algorithm",
      ],
      "one byte short": [fakeSpki(EC, CURVE_OID["P-256"], point.subarray(0, 64)), "malformed"],
      "hybrid": [
        fakeSpki(EC, CURVE_OID["P-256"], new Uint8Array([0x06 | (point[64] & 1), ...point.subarray(1)])),
        "malformed",
      ],
      "a P-256 point labelled P-384": [fakeSpki(EC, CURVE_OID["P-384"], point), "malformed"],
      "on secp256k1": [fakeSpki(EC, "1.3.132.0.10", point), "unsupported-algorithm"],
    } as const;
    for (const [what, [spki, reason]] of Object.entries(keys)) {
      const csr = await buildCsr({ signer, spki, uris: [ID] });
      for (const [name, crypto] of providers) {
        await assert.rejects(parseCsr(csr, { crypto }), rejection(reason), `${what}, ${name}`);
      }
    }
  });
});
