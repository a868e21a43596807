// RFC 5480 2.2: an EC key's point is 0x04 and two coordinates, or 0x02/0x03 and one, and a
// key with any other first octet MUST be rejected. Left to WebCrypto the runtimes disagree:
// Node's WebCrypto imports the hybrid 0x06/0x07, Deno's a 0x05 followed by x, Bun's neither.
// The core decides once, in parseSubjectPublicKeyInfo (checkEcPoint), for certificates, CSRs,
// bundles and chains; this file runs in the Node 20, Node 24, Deno, Bun and workerd steps,
// which must all give the same answers.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { OID } from "../../lib/asn1/oids.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { parseCsr } from "../../lib/csr.ts";
import {
  InvalidBundle,
  InvalidCsr,
  MalformedInput,
  UnsupportedAlgorithm,
  VerificationError,
} from "../../lib/errors.ts";
import { parseCertificate, parseSubjectPublicKeyInfo } from "../../lib/x509/certificate.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import { verifySvid } from "../../lib/svid/verify.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { generateKeyPair, type KeyPair } from "../../lib/keys.ts";
import { keySigner } from "../../lib/x509/signature.ts";
import { type CertSpec, issue, issueUnparsed } from "../support/cert-factory.ts";
import { buildCsr, fakeSpki } from "../support/csr-builder.ts";

const ID = "spiffe://cluster.local/ns/default/sa/photos";
const CURVES = [
  { name: "P-256", algorithm: "ECDSA-P256", oid: OID.p256, size: 32 },
  { name: "P-384", algorithm: "ECDSA-P384", oid: OID.p384, size: 48 },
] as const;

const bytes = (...parts: Array<Uint8Array | number[]>) => new Uint8Array(parts.flatMap((p) => [...p]));
const hexOctet = (n: number) => `0x${n.toString(16).padStart(2, "0")}`;

/** The point of a key pair, 0x04 || x || y, as its SubjectPublicKeyInfo carries it. */
async function pointOf(keys: KeyPair): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
}

/** Every encoding of `point` (0x04 || x || y) that RFC 5480 2.2 and SEC 1 2.3.3 do not allow. */
function malformedForms(point: Uint8Array, size: number): Record<string, Uint8Array> {
  const x = point.subarray(1, 1 + size);
  const y = point.subarray(1 + size);
  const compressed = 0x02 | (y[size - 1] & 1);
  return {
    "0x00 alone (the point at infinity)": bytes([0x00]),
    "0x00, x and y": bytes([0x00], x, y),
    "0x05 and x (the form Deno's WebCrypto imported)": bytes([0x05], x),
    "0x05, x and y": bytes([0x05], x, y),
    "0x06, x and y (hybrid)": bytes([0x06], x, y),
    "0x07, x and y (hybrid)": bytes([0x07], x, y),
    "0x01, x and y": bytes([0x01], x, y),
    "0xff, x and y": bytes([0xff], x, y),
    "0x04, one octet short": point.subarray(0, point.length - 1),
    "0x04, one octet long": bytes(point, [0]),
    "0x04 and x alone": bytes([0x04], x),
    [`${hexOctet(compressed)}, x and y`]: bytes([compressed], x, y),
    [`${hexOctet(compressed)}, x one octet short`]: bytes([compressed], x.subarray(1)),
    "empty": new Uint8Array(),
  };
}

/** The compressed form of `point`: 0x02 or 0x03 (y's parity), then x. */
function compressedForm(point: Uint8Array, size: number): Uint8Array {
  return bytes([0x02 | (point[2 * size] & 1)], point.subarray(1, 1 + size));
}

function isMalformed(first: number | undefined) {
  return (err: unknown) => {
    assert.ok(err instanceof MalformedInput, `expected MalformedInput, got ${err}`);
    assert.equal(err.code, "ERR_MALFORMED_INPUT");
    // One line, naming the octet that was wrong.
    assert.ok(!err.message.includes("\n"), err.message);
    if (first !== undefined) assert.ok(err.message.includes(hexOctet(first)), err.message);
    return true;
  };
}

function isCompressedRefused(err: unknown): boolean {
  assert.ok(err instanceof UnsupportedAlgorithm, `expected UnsupportedAlgorithm, got ${err}`);
  assert.equal(err.code, "ERR_ALGORITHM_UNSUPPORTED");
  assert.match(err.message, /compressed EC points \(0x0[23]\)/);
  return true;
}

function csrRefused(reason: "malformed" | "unsupported-algorithm", causeCode: string) {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidCsr, `expected InvalidCsr, got ${err}`);
    assert.equal(err.reason, reason, err.message);
    assert.equal((err.cause as { code?: string } | undefined)?.code, causeCode, err.message);
    return true;
  };
}

async function verificationRefused(promise: Promise<unknown>, code: string): Promise<VerificationError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but verification succeeded`);
}

for (const curve of CURVES) {
  describe(`${curve.name} keys whose point is not 0x04 and two coordinates`, () => {
    test("parseSubjectPublicKeyInfo refuses each malformed form as ERR_MALFORMED_INPUT, naming the octet", async () => {
      const point = await pointOf(await generateKeyPair(curve.algorithm));
      for (const [what, form] of Object.entries(malformedForms(point, curve.size))) {
        assert.throws(
          () => parseSubjectPublicKeyInfo(fakeSpki(OID.ecPublicKey, curve.oid, form)),
          isMalformed(form[0]),
          what,
        );
      }
      assert.equal(
        parseSubjectPublicKeyInfo(fakeSpki(OID.ecPublicKey, curve.oid, point)).publicKey.length,
        point.length,
      );
    });

    test("a certificate whose key has a malformed point does not parse (ERR_MALFORMED_INPUT)", async () => {
      const keys = await generateKeyPair(curve.algorithm);
      const point = await pointOf(keys);
      for (const [what, form] of Object.entries(malformedForms(point, curve.size))) {
        const { der } = await issueUnparsed({
          name: "bad key",
          keys,
          raw: { spki: fakeSpki(OID.ecPublicKey, curve.oid, form) },
        });
        assert.throws(() => parseCertificate(der), isMalformed(form[0]), what);
      }
    });

    test("a CSR whose key has a malformed point is refused as 'malformed' (ERR_MALFORMED_INPUT)", async () => {
      const keys = await generateKeyPair(curve.algorithm);
      const signer = await keySigner(keys.privateKey, keys.publicKey);
      const point = await pointOf(keys);
      for (const [what, form] of Object.entries(malformedForms(point, curve.size))) {
        const csr = await buildCsr({ signer, spki: fakeSpki(OID.ecPublicKey, curve.oid, form), uris: [ID] });
        await assert.rejects(parseCsr(csr), csrRefused("malformed", "ERR_MALFORMED_INPUT"), what);
      }
    });

    test("a compressed point is refused as unsupported, in a certificate and in a CSR", async () => {
      // Every runtime's WebCrypto imports a valid one, but Deno's also one whose x is not below
      // p or has no point on the curve: meshauth reads uncompressed points only.
      const keys = await generateKeyPair(curve.algorithm);
      const signer = await keySigner(keys.privateKey, keys.publicKey);
      const spki = fakeSpki(OID.ecPublicKey, curve.oid, compressedForm(await pointOf(keys), curve.size));
      assert.throws(() => parseSubjectPublicKeyInfo(spki), isCompressedRefused);
      const { der } = await issueUnparsed({ name: "compressed key", keys, raw: { spki } });
      assert.throws(() => parseCertificate(der), isCompressedRefused);
      await assert.rejects(
        parseCsr(await buildCsr({ signer, spki, uris: [ID] })),
        csrRefused("unsupported-algorithm", "ERR_ALGORITHM_UNSUPPORTED"),
      );
    });
  });
}

test("on a curve meshauth does not know, the first octet is still checked", () => {
  const secp256k1 = "1.3.132.0.10";
  assert.throws(
    () => parseSubjectPublicKeyInfo(fakeSpki(OID.ecPublicKey, secp256k1, bytes([0x06], new Uint8Array(64)))),
    isMalformed(0x06),
  );
  // Its length cannot be checked without the curve; such a key is refused where it is used.
  const unknown = parseSubjectPublicKeyInfo(
    fakeSpki(OID.ecPublicKey, secp256k1, bytes([0x04], new Uint8Array(64))),
  );
  assert.equal(unknown.publicKey.length, 65);
});

describe("chain verification with a key whose point is malformed", () => {
  /**
   * Root -> intermediate -> SVID leaf, where one certificate carries its own key's point in
   * another form: each is signed, and signs, as it would be with the uncompressed point, so
   * only the form is wrong. Node's WebCrypto imports the hybrid form of an intermediate's key
   * and verifies the leaf under it, where Deno's and Bun's refuse it; path validation never
   * imports a leaf's key, so only the parser refuses one.
   */
  async function chainWith(where: "leaf" | "intermediate", form: (point: Uint8Array) => Uint8Array) {
    const root = await issue({ name: "Root", ca: true });
    const intermediateKeys = await generateKeyPair("ECDSA-P256");
    const leafKeys = await generateKeyPair("ECDSA-P256");
    const spkiOf = async (keys: KeyPair) => fakeSpki(OID.ecPublicKey, OID.p256, form(await pointOf(keys)));
    const intermediate = await issueUnparsed({
      name: "Intermediate",
      ca: true,
      issuer: root,
      keys: intermediateKeys,
      ...(where === "intermediate" ? { raw: { spki: await spkiOf(intermediateKeys) } } : {}),
    });
    const leafSpec: CertSpec = { name: "", sans: [uriName(ID)], issuer: intermediate, keys: leafKeys };
    if (where === "leaf") leafSpec.raw = { spki: await spkiOf(leafKeys) };
    const leaf = await issueUnparsed(leafSpec);
    return { root, intermediate, leaf };
  }

  const forms: Record<string, (point: Uint8Array) => Uint8Array> = {
    "hybrid (0x06 or 0x07 by y's parity)": (p) => bytes([0x06 | (p[64] & 1)], p.subarray(1)),
    "0x05 and x": (p) => bytes([0x05], p.subarray(1, 33)),
    "uncompressed, one octet long": (p) => bytes(p, [0]),
    "compressed": (p) => compressedForm(p, 32),
  };

  test("the chain verifies with the keys' uncompressed points", async () => {
    const { root, intermediate, leaf } = await chainWith("leaf", (p) => p);
    await verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem });
    await verifySvid(leaf.pem + intermediate.pem, new TrustBundle("cluster.local", [root.pem]));
  });

  for (const [what, form] of Object.entries(forms)) {
    const causeCode = what === "compressed" ? "ERR_ALGORITHM_UNSUPPORTED" : "ERR_MALFORMED_INPUT";

    test(`a leaf whose key is ${what}: ERR_CERT_MALFORMED from verifyChain and verifySvid`, async () => {
      const { root, intermediate, leaf } = await chainWith("leaf", form);
      const err = await verificationRefused(
        verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
        "ERR_CERT_MALFORMED",
      );
      assert.equal(err.certificateIndex, 0);
      assert.equal((err.cause as { code?: string }).code, causeCode);
      await verificationRefused(
        verifySvid(leaf.pem + intermediate.pem, new TrustBundle("cluster.local", [root.pem])),
        "ERR_CERT_MALFORMED",
      );
    });

    test(`an intermediate whose key is ${what}: no path from verifyChain, ERR_CERT_MALFORMED from verifySvid`, async () => {
      const { root, intermediate, leaf } = await chainWith("intermediate", form);
      // Left out as a certificate that does not parse, which the error names.
      const err = await verificationRefused(
        verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
        "ERR_CERT_UNTRUSTED",
      );
      assert.match(err.message, /could not be parsed and were left out: .*EC point/);
      await verificationRefused(
        verifySvid(leaf.pem + intermediate.pem, new TrustBundle("cluster.local", [root.pem])),
        "ERR_CERT_MALFORMED",
      );
    });

    test(`a trust bundle whose root's key is ${what} is refused (ERR_BUNDLE_INVALID)`, async () => {
      const keys = await generateKeyPair("ECDSA-P256");
      const spki = fakeSpki(OID.ecPublicKey, OID.p256, form(await pointOf(keys)));
      const root = await issueUnparsed({ name: "Root", ca: true, keys, raw: { spki } });
      assert.throws(() => new TrustBundle("cluster.local", [root.pem]), (err: unknown) => {
        assert.ok(err instanceof InvalidBundle, `expected InvalidBundle, got ${err}`);
        assert.equal((err.cause as { code?: string }).code, causeCode);
        return true;
      });
    });
  }
});
