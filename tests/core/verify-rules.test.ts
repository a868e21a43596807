import { test } from "node:test";
import assert from "node:assert/strict";
import { verifyChain } from "../../lib/verify/chain.ts";
import { VerificationError } from "../../lib/errors.ts";
import { contextTag } from "../../lib/asn1/der.ts";
import { bitString, integer, oid, seq, tlv } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { generateKeyPair } from "../../lib/keys.ts";
import { issue, type Issued } from "../support/cert-factory.ts";
import { parseCertificate } from "../../lib/x509/certificate.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { verifySvid } from "../../lib/svid/verify.ts";

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

const leafUnder = (issuer: Issued, name = "svc.example.com") =>
  issue({ name: "", sans: [dnsName(name)], issuer });
const policies = (...ids: string[]) => ({
  oid: OID.certificatePolicies,
  value: seq(...ids.map((id) => seq(oid(id)))),
});

test("verifyChain accepts a CA certificate as the target, as RFC 5280 6.1 does; verifySvid refuses it", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({
    name: "CA",
    ca: true,
    issuer: root,
    sans: [dnsName("ca.example.com"), uriName("spiffe://example.org/ca")],
  });
  const result = await verifyChain({ leaf: ca.pem, roots: root.pem, dnsName: "ca.example.com" });
  assert.equal(result.path.length, 2);
  const bundle = new TrustBundle("example.org", [root.der]);
  await rejects(verifySvid([ca.pem], bundle), "ERR_SVID_INVALID");
});

test("verifyChain refuses an RSA key whose rsaEncryption parameters are not NULL (RFC 3279 2.3.1)", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({
    name: "",
    sans: [dnsName("svc.example.com")],
    issuer: root,
    keyAlgorithm: "RSA-2048",
  });
  await verifyChain({ leaf: leaf.der, roots: [root.der] });
  // The same certificate with the key's NULL parameters retyped as an empty UTF8String, signed again.
  const tbs = parseCertificate(leaf.der).tbs.slice();
  const rsaWithNull = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
  const at = tbs.findIndex((_, i) => rsaWithNull.every((b, k) => tbs[i + k] === b));
  assert.ok(at > 0, "the leaf's key is rsaEncryption with NULL parameters");
  tbs[at + rsaWithNull.length - 2] = 0x0c;
  const retyped = seq(tbs, root.signer.algorithmIdentifier, bitString(await root.signer.sign(tbs)));
  await rejects(verifyChain({ leaf: retyped, roots: [root.der] }), "ERR_ALGORITHM_UNSUPPORTED");
});

test("verifyChain refuses a leaf without an authority key identifier", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root, omit: ["aki"] });
  await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_CERT_MALFORMED");
});

test("verifyChain refuses a CA without a subject key identifier", async () => {
  const root = await issue({ name: "Root", ca: true, omit: ["ski"] });
  await rejects(verifyChain({ leaf: (await leafUnder(root)).pem, roots: root.pem }), "ERR_CERT_MALFORMED");
});

test("verifyChain does not count a self-issued intermediate against pathLen or maxDepth", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ica = await issue({ name: "ICA", ca: true, issuer: root, pathLen: 0 });
  const rolled = await issue({ name: "ICA", ca: true, issuer: ica });
  const leaf = await leafUnder(rolled);
  const options = { leaf: leaf.pem, intermediates: [ica.pem, rolled.pem], roots: root.pem };
  const result = await verifyChain({ ...options, maxDepth: 1 });
  assert.equal(result.path.length, 4);
  await rejects(verifyChain({ ...options, maxDepth: 0 }), "ERR_CHAIN_TOO_LONG");
});

test("verifyChain gives up quickly on 100 look-alike intermediates that reach no anchor", async () => {
  const root = await issue({ name: "Root", ca: true });
  const keys = await generateKeyPair();
  const first = await issue({ name: "Loop CA", ca: true, keys });
  const intermediates: Issued[] = [first];
  for (let i = 1; i < 100; i++) {
    intermediates.push(
      await issue({ name: "Loop CA", ca: true, keys, issuer: intermediates[i - 1], omit: ["aki"] }),
    );
  }
  const leaf = await leafUnder(intermediates[99]);
  const started = Date.now();
  const err = await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediates.map((c) => c.pem), roots: root.pem }),
    "ERR_CERT_UNTRUSTED",
  );
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms: ${err.message}`);
});

test("verifyChain applies URI name constraints to the trust domain of a SPIFFE ID", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { permitted: [uriName("cluster.local")] },
  });
  const inside = await issue({ name: "", sans: [uriName("spiffe://cluster.local/ns/a/sa/b")], issuer: root });
  const outside = await issue({ name: "", sans: [uriName("spiffe://evil.example/ns/a/sa/b")], issuer: root });
  await verifyChain({ leaf: inside.pem, roots: root.pem });
  await rejects(verifyChain({ leaf: outside.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain refuses URI SANs whose host URL parsers read differently under a URI constraint", async () => {
  const root = await issue({ name: "Root", ca: true, nameConstraints: { excluded: [uriName("good.com")] } });
  for (
    const san of [
      "https://good.com\\@evil.com/x",
      "https://good.com./x",
      "https://good%2ecom/x",
      "https://[::1]/x",
    ]
  ) {
    const leaf = await issue({ name: "", sans: [uriName(san)], issuer: root });
    await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
  }
});

test("verifyChain reads the host of a URI SAN past its userinfo and port", async () => {
  const root = await issue({ name: "Root", ca: true, nameConstraints: { excluded: [uriName("good.com")] } });
  const excluded = await issue({
    name: "",
    sans: [uriName("https://evil.com@GOOD.com:8443/x")],
    issuer: root,
  });
  const elsewhere = await issue({
    name: "",
    sans: [uriName("https://good.com@evil.com:8443/x")],
    issuer: root,
  });
  await rejects(verifyChain({ leaf: excluded.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
  await verifyChain({ leaf: elsewhere.pem, roots: root.pem });
});

test("verifyChain refuses email SANs whose domain is not a DNS name under an email constraint", async () => {
  const email = (s: string) => tlv(contextTag(1, false), new TextEncoder().encode(s));
  const root = await issue({ name: "Root", ca: true, nameConstraints: { excluded: [email("good.com")] } });
  for (const san of ["a@good.com.", "a@good..com"]) {
    const leaf = await issue({ name: "", sans: [email(san)], issuer: root });
    await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
  }
  await verifyChain({
    leaf: (await issue({ name: "", sans: [email("a@evil.com")], issuer: root })).pem,
    roots: root.pem,
  });
});

test("verifyChain checks 500 DNS SANs against 500 permitted subtrees", async () => {
  const permitted = Array.from({ length: 500 }, (_, i) => dnsName(`zone${i}.example.com`));
  const root = await issue({ name: "Root", ca: true, nameConstraints: { permitted } });
  const sans = Array.from({ length: 500 }, (_, i) => dnsName(`host.ZONE${499 - i}.example.com`));
  await verifyChain({ leaf: (await issue({ name: "", sans, issuer: root })).pem, roots: root.pem });
  const outside = await issue({
    name: "",
    sans: [...sans.slice(1), dnsName("host.zone500.example.com")],
    issuer: root,
  });
  await rejects(verifyChain({ leaf: outside.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain bounds name constraint comparisons per verification, not per certificate", async () => {
  // 300 names x 512 subtrees is under the bound for each certificate, but not for both.
  const permitted = Array.from({ length: 512 }, (_, i) => dnsName(`zone${i}.example.com`));
  const root = await issue({ name: "Root", ca: true, nameConstraints: { permitted } });
  const sans = Array.from({ length: 300 }, (_, i) => dnsName(`host${i}.zone0.example.com`));
  const ica = await issue({ name: "ICA", ca: true, issuer: root, sans });
  const leaf = await issue({ name: "", sans, issuer: ica });
  const err = await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: ica.pem, roots: root.pem }),
    "ERR_NAME_CONSTRAINTS",
  );
  assert.match(err.message, /comparisons/);
});

test("verifyChain applies directory name constraints to the subject, by RDN prefix", async () => {
  const permitted = tlv(contextTag(4, true), encodeName([[OID.organizationName, "Mesh"]]));
  const root = await issue({ name: "Root", ca: true, nameConstraints: { permitted: [permitted] } });
  const subjectOf = (org: string) => encodeName([[OID.organizationName, org], [OID.commonName, "svc"]]);
  // The factory names subjects by CN only: "CN=x" lies outside O=Mesh, and a directoryName SAN
  // carries the organisation for the cases inside.
  const outsideSubject = await issue({ name: "x", sans: [dnsName("a.example.com")], issuer: root });
  const dnSan = (org: string) => tlv(contextTag(4, true), subjectOf(org));
  const good = await issue({ name: "", sans: [dnSan("MESH")], issuer: root });
  const bad = await issue({ name: "", sans: [dnSan("Other")], issuer: root });
  await verifyChain({ leaf: good.pem, roots: root.pem });
  await rejects(verifyChain({ leaf: bad.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
  await rejects(verifyChain({ leaf: outsideSubject.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain treats an email constraint's asterisk literally", async () => {
  const email = (s: string) => tlv(contextTag(1, false), new TextEncoder().encode(s));
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { permitted: [email("*@example.com")] },
  });
  const literal = await issue({ name: "", sans: [email("*@example.com")], issuer: root });
  const user = await issue({ name: "", sans: [email("user@example.com")], issuer: root });
  await verifyChain({ leaf: literal.pem, roots: root.pem });
  await rejects(verifyChain({ leaf: user.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain refuses a malformed DNS name constraint", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { permitted: [dnsName(".example.com")] },
  });
  await rejects(verifyChain({ leaf: (await leafUnder(root)).pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain refuses a path whose CA requires an explicit policy the leaf does not assert", async () => {
  const requireExplicit = {
    oid: OID.policyConstraints,
    critical: true,
    value: seq(tlv(contextTag(0, false), integer(0).subarray(2))),
  };
  const root = await issue({ name: "Root", ca: true });
  const ica = await issue({
    name: "ICA",
    ca: true,
    issuer: root,
    extensions: [requireExplicit, policies("2.5.29.32.0")],
  });
  const bare = await leafUnder(ica);
  const withPolicy = await issue({
    name: "",
    sans: [dnsName("svc.example.com")],
    issuer: ica,
    extensions: [policies("2.23.140.1.2.1")],
  });
  const options = { intermediates: ica.pem, roots: root.pem };
  await verifyChain({ ...options, leaf: withPolicy.pem });
  await rejects(verifyChain({ ...options, leaf: bare.pem }), "ERR_POLICY");
});

test("verifyChain refuses a non-critical policy constraints extension", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ica = await issue({
    name: "ICA",
    ca: true,
    issuer: root,
    extensions: [{ oid: OID.policyConstraints, value: seq(tlv(contextTag(0, false), new Uint8Array([3]))) }],
  });
  await rejects(
    verifyChain({ leaf: (await leafUnder(ica)).pem, intermediates: ica.pem, roots: root.pem }),
    "ERR_CERT_MALFORMED",
  );
});

test("verifyChain finds the direct path through mutually cross-signed CAs (CVE-2024-0567)", async () => {
  const rootA = await issue({ name: "Root A", ca: true });
  const selfB = await issue({ name: "Root B", ca: true });
  const selfC = await issue({ name: "Root C", ca: true });
  const cross = (subject: Issued, name: string, issuer: Issued) =>
    issue({ name, ca: true, keys: subject.keys, issuer });
  const a1 = await issue({ name: "Intermediate A1", ca: true, issuer: rootA });
  const mesh = [
    a1,
    await cross(rootA, "Root A", selfB),
    await cross(rootA, "Root A", selfC),
    await cross(selfB, "Root B", rootA),
    await cross(selfB, "Root B", selfC),
    await cross(selfC, "Root C", rootA),
    await cross(selfC, "Root C", selfB),
    await issue({ name: "Intermediate B1", ca: true, issuer: selfB }),
    await issue({ name: "Intermediate C1", ca: true, issuer: selfC }),
  ];
  const leaf = await leafUnder(a1, "cve-2024-0567.example.com");
  const result = await verifyChain({
    leaf: leaf.pem,
    intermediates: mesh.map((c) => c.pem),
    roots: rootA.pem,
    dnsName: "cve-2024-0567.example.com",
  });
  assert.deepEqual(result.path.map((c) => c.serialNumber), [leaf, a1, rootA].map((c) => c.cert.serialNumber));
});
