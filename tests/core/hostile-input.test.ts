import { test } from "node:test";
import assert from "node:assert/strict";
import { contextTag, parseDer, readBigInt, readSmallInt } from "../../lib/asn1/der.ts";
import { explicit, integer, oid, seq, tlv } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { MalformedInput, MeshAuthError, VerificationError } from "../../lib/errors.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { verifySvid } from "../../lib/svid/verify.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import type { Certificate } from "../../lib/x509/certificate.ts";
import { issue, type Issued } from "../support/cert-factory.ts";

async function refusal(promise: Promise<unknown>): Promise<VerificationError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${err}`);
    return err;
  }
  assert.fail("expected a refusal, but verification succeeded");
}

const sha256 = seq(oid(OID.sha256));
const mgf1 = seq(oid(OID.mgf1), sha256);

/** A leaf claiming an RSASSA-PSS signature with these parameter fields, under an RSA root. */
async function pssLeaf(...fields: Uint8Array[]): Promise<{ root: Issued; leaf: Issued }> {
  const root = await issue({ name: "PSS Root", ca: true, keyAlgorithm: "RSA-2048" });
  const algorithmIdentifier = seq(oid(OID.rsassaPss), seq(...fields));
  const issuer = {
    ...root,
    signer: { ...root.signer, algorithmIdentifier, sign: () => Promise.resolve(new Uint8Array(256)) },
  };
  const leaf = await issue({ name: "", sans: [uriName("spiffe://example.org/w")], issuer });
  return { root, leaf };
}

test("DER integer readers report a missing node as MalformedInput, not a TypeError", () => {
  const [absent] = [] as ReturnType<typeof parseDer>[];
  assert.throws(
    () => readBigInt(absent, "serial", 21),
    (err) => err instanceof MalformedInput && /missing/.test(err.message),
  );
  assert.throws(() => readSmallInt(absent, "pathLen"), MalformedInput);
});

test("verifyChain refuses RSASSA-PSS parameters with an empty saltLength", async () => {
  const { root, leaf } = await pssLeaf(explicit(0, sha256), explicit(1, mgf1), tlv(contextTag(2, true)));
  const err = await refusal(verifyChain({ leaf: leaf.der, roots: [root.der] }));
  assert.equal(err.code, "ERR_ALGORITHM_UNSUPPORTED", err.message);
});

test("verifyChain refuses RSASSA-PSS parameters with a duplicate field", async () => {
  const { root, leaf } = await pssLeaf(explicit(0, sha256), explicit(0, sha256), explicit(1, mgf1));
  const err = await refusal(verifyChain({ leaf: leaf.der, roots: [root.der] }));
  assert.match(err.message, /PSS parameters: unexpected field/);
});

test("verifyChain refuses RSASSA-PSS parameters out of order", async () => {
  const { root, leaf } = await pssLeaf(explicit(1, mgf1), explicit(0, sha256), explicit(2, integer(32)));
  const err = await refusal(verifyChain({ leaf: leaf.der, roots: [root.der] }));
  assert.match(err.message, /PSS parameters: unexpected field/);
});

test("verifySvid refuses a peer's PSS leaf with an empty saltLength under a look-alike CA", async () => {
  const trusted = await issue({ name: "Trusted", ca: true, sans: [uriName("spiffe://example.org")] });
  const { root: fakeCa, leaf } = await pssLeaf(
    explicit(0, sha256),
    explicit(1, mgf1),
    tlv(contextTag(2, true)),
  );
  const bundle = new TrustBundle("example.org", [trusted.der]);
  const err = await refusal(verifySvid([leaf.pem, fakeCa.pem], bundle));
  assert.match(err.message, /PSS parameters/);
});

test("verifyChain reports an unexpected internal error as ERR_CERT_MALFORMED", async () => {
  // A "parsed certificate" missing its fields reaches code that assumes a real one.
  const hollow = { der: new Uint8Array([0x30, 0x00]) } as unknown as Certificate;
  const err = await refusal(verifyChain({ leaf: hollow, roots: [hollow] }));
  assert.equal(err.code, "ERR_CERT_MALFORMED");
  assert.ok(!(err.cause instanceof MeshAuthError));
});
