import { test } from "node:test";
import assert from "node:assert/strict";
import { verifySvid } from "../../lib/svid/verify.ts";
import { BundleSet, TrustBundle } from "../../lib/bundle.ts";
import { VerificationError } from "../../lib/errors.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { type CertSpec, issue, issueCrl, tamper, threeLevelChain } from "../support/cert-factory.ts";

const HOUR = 3600_000;
const ID = "spiffe://cluster.local/ns/default/sa/photos";

async function rejects(promise: Promise<unknown>, code: string): Promise<VerificationError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but verification succeeded`);
}

async function svid(leaf: Partial<CertSpec> = {}) {
  const chain = await threeLevelChain({ sans: [uriName(ID)], ...leaf });
  const bundle = new TrustBundle("cluster.local", [chain.root.pem]);
  return { ...chain, bundle, chainPem: chain.leaf.pem + chain.intermediate.pem };
}

test("verifySvid returns the SPIFFE ID, the path and the earliest notAfter", async () => {
  const { bundle, chainPem, root, leaf } = await svid();
  const result = await verifySvid(chainPem, bundle);
  assert.equal(result.id.toString(), ID);
  assert.equal(result.chain.length, 3);
  assert.equal(result.chain[2].serialNumber, root.cert.serialNumber);
  assert.ok(result.notAfter.getTime() <= leaf.cert.notAfter.getTime());
});

test("verifySvid picks the bundle of the leaf's trust domain from a BundleSet", async () => {
  const { bundle, chainPem } = await svid();
  const other = await issue({ name: "Partner Root", ca: true });
  const set = new BundleSet(new TrustBundle("partner.example", [other.pem]), bundle);
  assert.equal((await verifySvid(chainPem, set)).id.toString(), ID);
});

test("verifySvid rejects an SVID of a trust domain it holds no bundle for", async () => {
  const { chainPem, root } = await svid();
  await rejects(
    verifySvid(chainPem, new TrustBundle("other.example", [root.pem])),
    "ERR_TRUST_DOMAIN_UNKNOWN",
  );
  await rejects(verifySvid(chainPem, new BundleSet()), "ERR_TRUST_DOMAIN_UNKNOWN");
});

test("verifySvid answers missing bundles with ERR_TRUST_DOMAIN_UNKNOWN, not a TypeError", async () => {
  const { chainPem } = await svid();
  await rejects(verifySvid(chainPem, undefined as never), "ERR_TRUST_DOMAIN_UNKNOWN");
});

test("verifySvid does not accept roots of another trust domain for this one", async () => {
  const { chainPem } = await svid();
  const stranger = await issue({ name: "Stranger Root", ca: true });
  await rejects(verifySvid(chainPem, new TrustBundle("cluster.local", [stranger.pem])), "ERR_CERT_UNTRUSTED");
});

test("verifySvid rejects a leaf with two URI SANs", async () => {
  const { bundle, chainPem } = await svid({ sans: [uriName(ID), uriName("spiffe://cluster.local/other")] });
  await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects a leaf without a URI SAN", async () => {
  const { bundle, chainPem } = await svid({ sans: [dnsName("photos.example.com")] });
  await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects a URI SAN that is not a SPIFFE ID", async () => {
  const { bundle, chainPem } = await svid({ sans: [uriName("https://cluster.local/ns/default")] });
  await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects a leaf whose SPIFFE ID is the trust domain itself", async () => {
  const { bundle, chainPem } = await svid({ sans: [uriName("spiffe://cluster.local")] });
  await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects an intermediate without the keyCertSign key usage", async () => {
  const root = await issue({ name: "Root", ca: true });
  const intermediate = await issue({ name: "Int", ca: true, issuer: root, omit: ["keyUsage"] });
  const leaf = await issue({ name: "", sans: [uriName(ID)], issuer: intermediate });
  const bundle = new TrustBundle("cluster.local", [root.pem]);
  await rejects(verifySvid([leaf.der, intermediate.der], bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects a CA certificate as the leaf, with or without keyCertSign", async () => {
  // verifyChain accepts both as a target (RFC 5280 6.1 has no rule on it); X509-SVID 4.1 does.
  for (const spec of [{ ca: true }, { ca: true, keyUsage: ["digitalSignature" as const] }]) {
    const { bundle, chainPem } = await svid(spec);
    await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
  }
});

test("verifySvid rejects a leaf without the digitalSignature key usage", async () => {
  const { bundle, chainPem } = await svid({ keyUsage: ["keyEncipherment"] });
  await rejects(verifySvid(chainPem, bundle), "ERR_SVID_INVALID");
});

test("verifySvid rejects an expired SVID", async () => {
  const { bundle, chainPem } = await svid({
    notBefore: new Date(Date.now() - 2 * HOUR),
    notAfter: new Date(Date.now() - HOUR),
  });
  await rejects(verifySvid(chainPem, bundle), "ERR_CERT_EXPIRED");
});

test("verifySvid rejects an SVID that is not yet valid", async () => {
  const { bundle, chainPem } = await svid({ notBefore: new Date(Date.now() + HOUR) });
  await rejects(verifySvid(chainPem, bundle), "ERR_CERT_NOT_YET_VALID");
});

test("verifySvid rejects a tampered leaf", async () => {
  const { bundle, leaf, intermediate } = await svid();
  await rejects(verifySvid([tamper(leaf), intermediate.der], bundle), "ERR_CERT_SIGNATURE_INVALID");
});

test("verifySvid rejects an SVID revoked by its issuer's CRL", async () => {
  const { bundle, chainPem, root, intermediate, leaf } = await svid();
  const crls = [
    await issueCrl(root),
    await issueCrl(intermediate, { revoked: [{ serial: BigInt(`0x${leaf.cert.serialNumber}`) }] }),
  ];
  await rejects(verifySvid(chainPem, bundle, { crls }), "ERR_CERT_REVOKED");
});

test("verifySvid accepts an SVID its issuer's CRL does not list", async () => {
  const { bundle, chainPem, root, intermediate } = await svid();
  const crls = [await issueCrl(root), await issueCrl(intermediate, { revoked: [{ serial: 12345n }] })];
  await verifySvid(chainPem, bundle, { crls });
});

test("verifySvid applies the purpose to the leaf's EKU when one is asked for", async () => {
  const { bundle, chainPem } = await svid({ extendedKeyUsage: ["1.3.6.1.5.5.7.3.2"] });
  await verifySvid(chainPem, bundle);
  await verifySvid(chainPem, bundle, { purpose: "clientAuth" });
  await rejects(verifySvid(chainPem, bundle, { purpose: "serverAuth" }), "ERR_EXTENDED_KEY_USAGE");
});

test("verifySvid turns an unparseable chain into ERR_CERT_MALFORMED", async () => {
  const { bundle } = await svid();
  await rejects(
    verifySvid("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", bundle),
    "ERR_CERT_MALFORMED",
  );
  await rejects(verifySvid([], bundle), "ERR_CERT_MALFORMED");
});

/** Bytes inside a larger pool whose slice() is a view, as Node's Buffer.slice() is. */
class PooledBytes extends Uint8Array {
  override slice(start?: number, end?: number): PooledBytes {
    return this.subarray(start, end) as PooledBytes;
  }
}

/** `der` as a view into the middle of a larger PooledBytes. */
function pooledView(der: Uint8Array): PooledBytes {
  const pool = new PooledBytes(der.length + 64);
  pool.set(der, 32);
  return pool.subarray(32, 32 + der.length) as PooledBytes;
}

test("verifySvid checks DER given as views into a larger buffer whose slice() shares it (Node's Buffer)", async () => {
  const { bundle, leaf, intermediate } = await svid();
  const verified = await verifySvid([pooledView(leaf.der), pooledView(intermediate.der)], bundle);
  assert.equal(verified.id.toString(), ID);
});
