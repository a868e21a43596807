/**
 * A VerificationError says which check refused a path (`rule`), which certificate it was
 * about, and the values the check compared: one test per rule, on real certificates.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { verifyChain } from "../../lib/verify/chain.ts";
import { verifySvid } from "../../lib/svid/verify.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { VerificationError, type VerificationRule } from "../../lib/errors.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { dnsName, ipName, uriName } from "../../lib/x509/general-name.ts";
import { contextTag } from "../../lib/asn1/der.ts";
import { bitString, integer, oid, seq, tlv } from "../../lib/asn1/der-writer.ts";
import { issue, issueCrl, tamper } from "../support/cert-factory.ts";

const HOUR = 3_600_000;

async function refusal(
  promise: Promise<unknown>,
  code: string,
  rule: VerificationRule,
): Promise<VerificationError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${err}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.rule, rule, err.message);
    return err;
  }
  assert.fail(`expected ${code} (${rule}), but verification succeeded`);
}

async function rootAndLeaf(leafSpec: Partial<Parameters<typeof issue>[0]> = {}) {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({ name: "leaf", sans: [dnsName("svc.example.com")], issuer: root, ...leafSpec });
  return { root, leaf };
}

test("validity: an expired leaf names itself, its notAfter and the validation time", async () => {
  const { root, leaf } = await rootAndLeaf();
  const at = new Date(leaf.cert.notAfter.getTime() + 2 * HOUR);
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, at }),
    "ERR_CERT_EXPIRED",
    "validity",
  );
  assert.equal(err.certificateIndex, 0);
  assert.deepEqual(err.certificate, { subject: "CN=leaf", serialNumber: leaf.cert.serialNumber });
  assert.equal(err.notAfter?.getTime(), leaf.cert.notAfter.getTime());
  assert.equal(err.notBefore?.getTime(), leaf.cert.notBefore.getTime());
  assert.equal(err.validationTime?.getTime(), Math.floor(at.getTime() / 1000) * 1000);
  // The message is the one it always was.
  assert.match(err.message, /^certificate "CN=leaf" \(serial \w+\) expired at /);
});

test("validity: a leaf that is not valid yet carries its notBefore", async () => {
  const { root, leaf } = await rootAndLeaf({ notBefore: new Date(Date.now() + HOUR) });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_CERT_NOT_YET_VALID",
    "validity",
  );
  assert.equal(err.notBefore?.getTime(), leaf.cert.notBefore.getTime());
  assert.ok(err.validationTime! < err.notBefore!);
});

test("signature: a tampered leaf names itself and the issuer whose key was tried", async () => {
  const { root, leaf } = await rootAndLeaf();
  const err = await refusal(
    verifyChain({ leaf: tamper(leaf), roots: root.pem }),
    "ERR_CERT_SIGNATURE_INVALID",
    "signature",
  );
  assert.equal(err.certificateIndex, 0);
  assert.equal(err.certificate?.serialNumber, leaf.cert.serialNumber);
  assert.deepEqual(err.issuer, { subject: "CN=Root", serialNumber: root.cert.serialNumber });
});

test("trust-anchor: a leaf no root issued names the leaf", async () => {
  const { leaf } = await rootAndLeaf();
  const other = await issue({ name: "Other Root", ca: true });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: other.pem }),
    "ERR_CERT_UNTRUSTED",
    "trust-anchor",
  );
  assert.equal(err.certificate?.subject, "CN=leaf");
});

test("basic-constraints: an issuer that is not a CA is named", async () => {
  const root = await issue({ name: "Root", ca: true });
  const notCa = await issue({ name: "Not A CA", issuer: root, keyUsage: ["digitalSignature"] });
  const leaf = await issue({ name: "leaf", sans: [dnsName("svc.example.com")], issuer: notCa });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, intermediates: notCa.pem, roots: root.pem }),
    "ERR_CERT_NOT_CA",
    "basic-constraints",
  );
  assert.equal(err.certificateIndex, 1);
  assert.equal(err.certificate?.subject, "CN=Not A CA");
});

test("path-length: the CA's limit and the intermediates below it", async () => {
  const root = await issue({ name: "Root", ca: true, pathLen: 0 });
  const ica = await issue({ name: "ICA", ca: true, issuer: root });
  const leaf = await issue({ name: "leaf", sans: [dnsName("svc.example.com")], issuer: ica });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, intermediates: ica.pem, roots: root.pem }),
    "ERR_PATH_LENGTH_EXCEEDED",
    "path-length",
  );
  assert.equal(err.certificateIndex, 2);
  assert.equal(err.certificate?.subject, "CN=Root");
  assert.equal(err.limit, 0);
  assert.equal(err.count, 1);
});

test("max-depth: maxDepth and the intermediates the path needs", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ica = await issue({ name: "ICA", ca: true, issuer: root });
  const leaf = await issue({ name: "leaf", sans: [dnsName("svc.example.com")], issuer: ica });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, intermediates: ica.pem, roots: root.pem, maxDepth: 0 }),
    "ERR_CHAIN_TOO_LONG",
    "max-depth",
  );
  assert.equal(err.limit, 0);
  assert.equal(err.count, 1);
});

test("key-usage: the usages the purpose accepts against those the leaf has", async () => {
  const { root, leaf } = await rootAndLeaf({ keyUsage: ["cRLSign"] });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, purpose: "clientAuth" }),
    "ERR_KEY_USAGE",
    "key-usage",
  );
  assert.deepEqual(err.required, ["digitalSignature", "keyAgreement"]);
  assert.deepEqual(err.present, ["cRLSign"]);
});

test("extended-key-usage: the required purpose against what the certificate allows", async () => {
  const { root, leaf } = await rootAndLeaf({ extendedKeyUsage: [OID.clientAuth, "1.2.3.4"] });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, purpose: "serverAuth" }),
    "ERR_EXTENDED_KEY_USAGE",
    "extended-key-usage",
  );
  assert.equal(err.certificateIndex, 0);
  assert.deepEqual(err.required, ["serverAuth"]);
  assert.deepEqual(err.present, ["clientAuth", "1.2.3.4"]);
});

test("name-constraints: the name, the excluded subtree and the CA that set it", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { excluded: [dnsName("evil.example")] },
  });
  const leaf = await issue({ name: "leaf", sans: [dnsName("www.evil.example")], issuer: root });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_NAME_CONSTRAINTS",
    "name-constraints",
  );
  assert.equal(err.certificateIndex, 0);
  assert.equal(err.certificate?.subject, "CN=leaf");
  assert.equal(err.issuer?.subject, "CN=Root");
  assert.equal(err.constrainedName, "DNS:www.evil.example");
  assert.equal(err.constraint, "excluded DNS:evil.example");
});

test("name-constraints: a name outside the permitted subtrees lists them", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: {
      permitted: [dnsName("a.example"), dnsName("b.example"), uriName("td.example")],
      excluded: [dnsName("x.a.example")],
    },
  });
  const leaf = await issue({ name: "", sans: [dnsName("c.example")], issuer: root });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_NAME_CONSTRAINTS",
    "name-constraints",
  );
  assert.equal(err.constrainedName, "DNS:c.example");
  assert.equal(err.constraint, "permitted DNS:a.example, DNS:b.example");
});

test("name-constraints: an IP constraint reads as an address and a prefix length", async () => {
  const net = new Uint8Array([10, 0, 0, 0, 255, 0, 0, 0]);
  const root = await issue({ name: "Root", ca: true, nameConstraints: { permitted: [ipName(net)] } });
  const leaf = await issue({ name: "", sans: [ipName(new Uint8Array([192, 168, 1, 2]))], issuer: root });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_NAME_CONSTRAINTS",
    "name-constraints",
  );
  assert.equal(err.constrainedName, "IP:192.168.1.2");
  assert.equal(err.constraint, "permitted IP:10.0.0.0/8");
});

test("peer-name: the name asked for against the names the leaf carries", async () => {
  const { root, leaf } = await rootAndLeaf({ sans: [dnsName("a.example.com"), dnsName("b.example.com")] });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, dnsName: "C.example.com." }),
    "ERR_PEER_NAME_MISMATCH",
    "peer-name",
  );
  assert.deepEqual(err.required, ["c.example.com"]);
  assert.deepEqual(err.present, ["a.example.com", "b.example.com"]);
});

test("revocation: the revoked certificate, when and why, and the CRL's issuer", async () => {
  const { root, leaf } = await rootAndLeaf();
  const date = new Date(Math.floor((Date.now() - 2 * HOUR) / 1000) * 1000);
  const crl = await issueCrl(root, {
    revoked: [{ serial: BigInt(`0x${leaf.cert.serialNumber}`), date, reasonCode: 1 }],
  });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, crls: [crl] }),
    "ERR_CERT_REVOKED",
    "revocation",
  );
  assert.equal(err.certificate?.serialNumber, leaf.cert.serialNumber);
  assert.equal(err.issuer?.subject, "CN=Root");
  assert.equal(err.revocationDate?.getTime(), date.getTime());
  assert.equal(err.revocationReason, "keyCompromise");
});

test("crl: a stale CRL carries its thisUpdate, nextUpdate and the validation time", async () => {
  const { root, leaf } = await rootAndLeaf();
  const nextUpdate = new Date(Math.floor((Date.now() - HOUR) / 1000) * 1000);
  const crl = await issueCrl(root, { thisUpdate: new Date(Date.now() - 3 * HOUR), nextUpdate });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem, crls: [crl] }),
    "ERR_CRL_INVALID",
    "crl",
  );
  assert.equal(err.issuer?.subject, "CN=Root");
  assert.equal(err.notAfter?.getTime(), nextUpdate.getTime());
  assert.ok(err.validationTime! > err.notAfter!);
});

test("critical-extension: the OID of the extension the validator does not process", async () => {
  const { root, leaf } = await rootAndLeaf({
    extensions: [{ oid: "1.2.3.4.5", critical: true, value: new Uint8Array([0x05, 0x00]) }],
  });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_UNHANDLED_CRITICAL_EXTENSION",
    "critical-extension",
  );
  assert.equal(err.extension, "1.2.3.4.5");
  assert.equal(err.certificateIndex, 0);
});

test("profile: an RFC 5280 encoding rule names the certificate", async () => {
  const { root, leaf } = await rootAndLeaf({ omit: ["aki"] });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: root.pem }),
    "ERR_CERT_MALFORMED",
    "profile",
  );
  assert.equal(err.certificate?.subject, "CN=leaf");
});

test("public-key: a refused key names its algorithm", async () => {
  const { root, leaf } = await rootAndLeaf({ keyAlgorithm: "RSA-2048" });
  // The leaf with its key's NULL parameters retyped as an empty UTF8String, signed again: a
  // second encoding of the key that RFC 3279 2.3.1 forbids.
  const tbs = leaf.cert.tbs.slice();
  const rsaWithNull = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
  const at = tbs.findIndex((_, i) => rsaWithNull.every((byte, k) => tbs[i + k] === byte));
  tbs[at + rsaWithNull.length - 2] = 0x0c;
  const retyped = seq(tbs, root.signer.algorithmIdentifier, bitString(await root.signer.sign(tbs)));
  const err = await refusal(
    verifyChain({ leaf: retyped, roots: root.pem }),
    "ERR_ALGORITHM_UNSUPPORTED",
    "public-key",
  );
  assert.equal(err.algorithm, OID.rsaEncryption);
  assert.equal(err.certificateIndex, 0);
});

test("parse: a leaf that is not DER is refused as such", async () => {
  const { root } = await rootAndLeaf();
  const err = await refusal(
    verifyChain({ leaf: new Uint8Array([0x30, 0x03, 0x02, 0x01]), roots: root.pem }),
    "ERR_CERT_MALFORMED",
    "parse",
  );
  assert.equal(err.certificateIndex, 0);
});

test("path-building: the signature-check budget and the checks spent", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({ name: "leaf", sans: [dnsName("svc.example.com")], issuer: root });
  // 120 look-alike roots with the leaf's issuer name, none holding its key: each costs a check.
  const lookAlikes = await Promise.all(
    Array.from({ length: 120 }, () => issue({ name: "Root", ca: true, omit: ["ski"] })),
  );
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, roots: lookAlikes.map((r) => r.der) }),
    "ERR_PATH_BUILDING_LIMIT",
    "path-building",
  );
  assert.equal(err.limit, 100);
  assert.equal(err.count, 101);
});

test("certificate-policies: the policies the leaf asserts when the path requires an explicit one", async () => {
  const requireExplicit = {
    oid: OID.policyConstraints,
    critical: true,
    value: seq(tlv(contextTag(0, false), integer(0).subarray(2))),
  };
  const policies = (...ids: string[]) => ({
    oid: OID.certificatePolicies,
    value: seq(...ids.map((id) => seq(oid(id)))),
  });
  const root = await issue({ name: "Root", ca: true });
  const ica = await issue({
    name: "ICA",
    ca: true,
    issuer: root,
    extensions: [requireExplicit, policies("1.2.3")],
  });
  const leaf = await issue({
    name: "leaf",
    sans: [dnsName("svc.example.com")],
    issuer: ica,
    extensions: [policies("1.2.4")],
  });
  const err = await refusal(
    verifyChain({ leaf: leaf.pem, intermediates: ica.pem, roots: root.pem }),
    "ERR_POLICY",
    "certificate-policies",
  );
  assert.equal(err.certificateIndex, 0);
  assert.deepEqual(err.present, ["1.2.4"]);
});

test("svid-profile and trust-domain: verifySvid names the leaf, its URI SANs and the trust domain", async () => {
  const root = await issue({ name: "Root", ca: true });
  const bundle = new TrustBundle("td.example", [root.der]);
  const twoIds = await issue({
    name: "",
    sans: [uriName("spiffe://td.example/a"), uriName("spiffe://td.example/b")],
    issuer: root,
  });
  const err = await refusal(verifySvid(twoIds.pem, bundle), "ERR_SVID_INVALID", "svid-profile");
  assert.equal(err.certificateIndex, 0);
  assert.deepEqual(err.present, ["spiffe://td.example/a", "spiffe://td.example/b"]);
  const elsewhere = await issue({ name: "", sans: [uriName("spiffe://other.example/a")], issuer: root });
  const unknown = await refusal(
    verifySvid(elsewhere.pem, bundle),
    "ERR_TRUST_DOMAIN_UNKNOWN",
    "trust-domain",
  );
  assert.equal(unknown.trustDomain, "other.example");
});

test("a VerificationError shows only the details its rule set, and keeps its cause", () => {
  const cause = new Error("inner");
  const err = new VerificationError("ERR_CERT_EXPIRED", "expired", 2, {
    rule: "validity",
    limit: undefined,
    cause,
  });
  assert.equal(err.code, "ERR_CERT_EXPIRED");
  assert.equal(err.name, "VerificationError");
  assert.equal(err.certificateIndex, 2);
  assert.equal(err.cause, cause);
  assert.ok(!("limit" in err));
  assert.deepEqual(Object.keys(err).sort(), ["certificateIndex", "code", "name", "rule"]);
  // The constructor the agent and older callers use still works unchanged.
  assert.equal(new VerificationError("ERR_CERT_MALFORMED", "m").rule, undefined);
});
