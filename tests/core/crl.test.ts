import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCrl } from "../../lib/x509/crl.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { MalformedInput, VerificationError } from "../../lib/errors.ts";
import { decodePem, encodePem } from "../../lib/pem.ts";
import { contextTag } from "../../lib/asn1/der.ts";
import { bool, explicit, seq, tlv } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { dnsName } from "../../lib/x509/general-name.ts";
import { issue, issueCrl, type Issued, threeLevelChain } from "../support/cert-factory.ts";

const HOUR = 3600_000;

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

const serialOf = (issued: Issued) => BigInt(`0x${issued.cert.serialNumber}`);

/** Root -> leaf, with the root's CRL built from `spec`. */
async function rootAndLeaf(leafSpec: { crlDistributionPoint?: string } = {}) {
  const root = await issue({ name: "CRL Root", ca: true });
  const leaf = await issue({ name: "", sans: [dnsName("svc.example.com")], issuer: root, ...leafSpec });
  return { root, leaf, options: { leaf: leaf.pem, roots: root.pem } };
}

test("parseCrl reads issuer, times, CRL number and revoked entries with reasons", async () => {
  const { root } = await rootAndLeaf();
  const thisUpdate = new Date(Math.floor(Date.now() / 1000) * 1000 - HOUR);
  const pem = await issueCrl(root, {
    thisUpdate,
    crlNumber: 42n,
    revoked: [{ serial: 0x1234n, reasonCode: 1 }, { serial: 0x99n }],
  });
  const crl = parseCrl(pem);
  assert.equal(crl.version, 2);
  assert.equal(crl.issuer.key, root.cert.subject.key);
  assert.equal(crl.thisUpdate.getTime(), thisUpdate.getTime());
  assert.ok(crl.nextUpdate && crl.nextUpdate > thisUpdate);
  assert.equal(crl.crlNumber, 42n);
  assert.deepEqual(crl.revoked.map((r) => [r.serialNumber, r.reason]), [["1234", "keyCompromise"], [
    "0099",
    undefined,
  ]]);
});

test("parseCrl accepts both the X509 CRL and the CRL PEM labels, and DER", async () => {
  const { root } = await rootAndLeaf();
  const der = decodePem(await issueCrl(root))[0].der;
  assert.equal(parseCrl(encodePem("CRL", der)).issuer.key, root.cert.subject.key);
  assert.equal(parseCrl(der).issuer.key, root.cert.subject.key);
});

test("parseCrl refuses trailing bytes and a certificate in place of a CRL", async () => {
  const { root } = await rootAndLeaf();
  const der = decodePem(await issueCrl(root))[0].der;
  assert.throws(() => parseCrl(new Uint8Array([...der, 0])), MalformedInput);
  assert.throws(() => parseCrl(root.pem), MalformedInput);
});

test("verifyChain rejects a leaf its issuer's CRL revokes", async () => {
  const { root, leaf, options } = await rootAndLeaf();
  const crl = await issueCrl(root, { revoked: [{ serial: serialOf(leaf) }] });
  const err = await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_CERT_REVOKED");
  assert.equal(err.certificateIndex, 0);
});

test("verifyChain counts a listed serial as revoked even with a future revocation date", async () => {
  const { root, leaf, options } = await rootAndLeaf();
  const crl = await issueCrl(root, {
    revoked: [{ serial: serialOf(leaf), date: new Date(Date.now() + HOUR) }],
  });
  await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_CERT_REVOKED");
});

test("verifyChain rejects a revoked intermediate", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const crls = [
    await issueCrl(root, { revoked: [{ serial: serialOf(intermediate) }] }),
    await issueCrl(intermediate),
  ];
  const err = await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem, crls }),
    "ERR_CERT_REVOKED",
  );
  assert.equal(err.certificateIndex, 1);
});

test("verifyChain accepts a leaf not on its issuer's CRL", async () => {
  const { root, options } = await rootAndLeaf();
  await verifyChain({ ...options, crls: [await issueCrl(root, { revoked: [{ serial: 7n }] })] });
});

test("verifyChain ignores a CRL of another issuer that lists the same serial", async () => {
  const { root, leaf, options } = await rootAndLeaf();
  const other = await issue({ name: "Other CA", ca: true });
  const crls = [await issueCrl(root), await issueCrl(other, { revoked: [{ serial: serialOf(leaf) }] })];
  await verifyChain({ ...options, crls });
});

test("verifyChain refuses a CRL whose signature does not verify", async () => {
  const { root, options } = await rootAndLeaf();
  const forger = await issue({ name: "Forger", ca: true });
  await rejects(
    verifyChain({ ...options, crls: [await issueCrl(root, { signer: forger.signer })] }),
    "ERR_CRL_INVALID",
  );
});

test("verifyChain leaves aside a CRL of another key of the same CA and uses the current key's CRL", async () => {
  const { root, leaf, options } = await rootAndLeaf();
  const oldKey = await issue({ name: "CRL Root", ca: true });
  const crls = [
    await issueCrl(oldKey, { revoked: [{ serial: serialOf(leaf) }] }),
    await issueCrl(root),
  ];
  await verifyChain({ ...options, crls });
  await rejects(
    verifyChain({
      ...options,
      crls: [await issueCrl(root, { revoked: [{ serial: serialOf(leaf) }] }), crls[0]],
    }),
    "ERR_CERT_REVOKED",
  );
});

test("verifyChain takes a CRL of another key of the same CA name alone as no CRL of the leaf's issuer", async () => {
  // A rotation to a key whose certificate kept the old one's subject: a verifier that holds
  // only the old key's CRL must not refuse every certificate of the new key as unknown.
  const { leaf, options } = await rootAndLeaf();
  const oldKey = await issue({ name: "CRL Root", ca: true });
  await verifyChain({
    ...options,
    crls: [await issueCrl(oldKey, { revoked: [{ serial: serialOf(leaf) }] })],
  });
});

test("verifyChain refuses a stale CRL and one not yet valid", async () => {
  const { root, options } = await rootAndLeaf();
  const stale = await issueCrl(root, {
    thisUpdate: new Date(Date.now() - 3 * HOUR),
    nextUpdate: new Date(Date.now() - HOUR),
  });
  await rejects(verifyChain({ ...options, crls: [stale] }), "ERR_CRL_INVALID");
  const future = await issueCrl(root, {
    thisUpdate: new Date(Date.now() + HOUR),
    nextUpdate: new Date(Date.now() + 3 * HOUR),
  });
  await rejects(verifyChain({ ...options, crls: [future] }), "ERR_CRL_INVALID");
});

test("verifyChain with acceptStaleCrls uses a stale CRL: the path verifies and names it, a listed certificate stays refused", async () => {
  const { root, leaf, options } = await rootAndLeaf();
  const times = { thisUpdate: new Date(Date.now() - 3 * HOUR), nextUpdate: new Date(Date.now() - HOUR) };
  const stale = parseCrl(await issueCrl(root, times));
  const verified = await verifyChain({ ...options, crls: [stale], acceptStaleCrls: true });
  assert.deepEqual(verified.staleCrls, [stale]);
  const listing = await issueCrl(root, { ...times, revoked: [{ serial: serialOf(leaf) }] });
  await rejects(verifyChain({ ...options, crls: [listing], acceptStaleCrls: true }), "ERR_CERT_REVOKED");
  // Only its age is forgiven: a stale CRL with a bad signature is refused as before.
  const forger = await issue({ name: "Forger", ca: true });
  await rejects(
    verifyChain({
      ...options,
      crls: [await issueCrl(root, { ...times, signer: forger.signer })],
      acceptStaleCrls: true,
    }),
    "ERR_CRL_INVALID",
  );
  const current = await verifyChain({ ...options, crls: [await issueCrl(root)], acceptStaleCrls: true });
  assert.deepEqual(current.staleCrls, []);
});

test("verifyChain refuses a CRL without nextUpdate", async () => {
  const { root, options } = await rootAndLeaf();
  await rejects(
    verifyChain({ ...options, crls: [await issueCrl(root, { nextUpdate: null })] }),
    "ERR_CRL_INVALID",
  );
});

test("verifyChain refuses a CRL without a CRL number or with a critical one", async () => {
  const { root, options } = await rootAndLeaf();
  await rejects(
    verifyChain({ ...options, crls: [await issueCrl(root, { crlNumber: null })] }),
    "ERR_CRL_INVALID",
  );
  await rejects(
    verifyChain({ ...options, crls: [await issueCrl(root, { crlNumberCritical: true })] }),
    "ERR_CRL_INVALID",
  );
});

test("verifyChain refuses delta CRLs", async () => {
  const { root, options } = await rootAndLeaf();
  const delta = await issueCrl(root, {
    extensions: [{ oid: OID.deltaCrlIndicator, critical: true, value: tlv(0x02, new Uint8Array([1])) }],
  });
  await rejects(verifyChain({ ...options, crls: [delta] }), "ERR_CRL_INVALID");
});

test("verifyChain refuses a CRL with an unknown critical extension and accepts an unknown non-critical one", async () => {
  const { root, options } = await rootAndLeaf();
  const value = new Uint8Array([5, 0]);
  const critical = await issueCrl(root, {
    extensions: [{ oid: "1.3.6.1.4.1.55738.666.1", critical: true, value }],
  });
  await rejects(verifyChain({ ...options, crls: [critical] }), "ERR_CRL_INVALID");
  const plain = await issueCrl(root, { extensions: [{ oid: "1.3.6.1.4.1.55738.666.1", value }] });
  await verifyChain({ ...options, crls: [plain] });
});

test("verifyChain refuses a CRL whose issuer's key usage lacks cRLSign", async () => {
  const root = await issue({ name: "No cRLSign", ca: true, keyUsage: ["keyCertSign"] });
  const leaf = await issue({ name: "", sans: [dnsName("svc.example.com")], issuer: root });
  await rejects(
    verifyChain({ leaf: leaf.pem, roots: root.pem, crls: [await issueCrl(root)] }),
    "ERR_CRL_INVALID",
  );
});

test("verifyChain refuses a CRL that lists a serial twice", async () => {
  const { root, options } = await rootAndLeaf();
  const crl = await issueCrl(root, { revoked: [{ serial: 5n }, { serial: 5n }] });
  await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_CRL_INVALID");
});

function idp(uri: string | undefined, flags: { onlyCa?: boolean } = {}) {
  const fields = [
    ...(uri
      ? [explicit(0, tlv(contextTag(0, true), tlv(contextTag(6, false), new TextEncoder().encode(uri))))]
      : []),
    ...(flags.onlyCa ? [tlv(contextTag(2, false), bool(true).subarray(2))] : []),
  ];
  return { oid: OID.issuingDistributionPoint, critical: true, value: seq(...fields) };
}

test("verifyChain uses a partitioned CRL whose distribution point names the leaf's", async () => {
  const uri = "http://crl.example.com/partition-1.crl";
  const { root, leaf, options } = await rootAndLeaf({ crlDistributionPoint: uri });
  const crl = await issueCrl(root, { revoked: [{ serial: serialOf(leaf) }], extensions: [idp(uri)] });
  await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_CERT_REVOKED");
});

test("verifyChain does not take a CRL for another partition as proof the leaf is not revoked", async () => {
  const { root, options } = await rootAndLeaf({
    crlDistributionPoint: "http://crl.example.com/partition-1.crl",
  });
  const crl = await issueCrl(root, { extensions: [idp("http://crl.example.com/partition-2.crl")] });
  await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_REVOCATION_UNKNOWN");
});

test("verifyChain does not take a CA-only CRL as covering an end entity", async () => {
  const { root, options } = await rootAndLeaf();
  const crl = await issueCrl(root, { extensions: [idp(undefined, { onlyCa: true })] });
  await rejects(verifyChain({ ...options, crls: [crl] }), "ERR_REVOCATION_UNKNOWN");
});

test("verifyChain turns an unparseable CRL into ERR_CRL_INVALID", async () => {
  const { options } = await rootAndLeaf();
  await rejects(verifyChain({ ...options, crls: [new Uint8Array([0x30, 0x00])] }), "ERR_CRL_INVALID");
});
