import { test } from "node:test";
import assert from "node:assert/strict";
import { verifyChain } from "../../lib/verify/chain.ts";
import { SignatureCache } from "../../lib/verify/signatures.ts";
import { VerificationError } from "../../lib/errors.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { dnsName, ipName, parseIp } from "../../lib/x509/general-name.ts";
import { issue, tamper, threeLevelChain } from "../support/cert-factory.ts";

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

test("verifyChain accepts root -> intermediate -> leaf and returns the path leaf first", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const result = await verifyChain({ leaf: leaf.pem, intermediates: [intermediate.pem], roots: root.pem });
  assert.deepEqual(
    result.path.map((c) => c.serialNumber),
    [leaf, intermediate, root].map((c) => c.cert.serialNumber),
  );
  assert.equal(result.root.serialNumber, root.cert.serialNumber);
  assert.equal(
    result.notAfter.getTime(),
    Math.min(...[root, intermediate, leaf].map((c) => c.cert.notAfter.getTime())),
  );
});

test("verifyChain takes DER bytes and parsed certificates as well as PEM", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const result = await verifyChain({ leaf: leaf.der, intermediates: intermediate.cert, roots: [root.cert] });
  assert.equal(result.path.length, 3);
});

test("verifyChain treats PEM blocks after the leaf as intermediates", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const result = await verifyChain({ leaf: leaf.pem + intermediate.pem, roots: root.pem });
  assert.equal(result.path.length, 3);
});

test("verifyChain rejects a chain whose root is not trusted", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const other = await issue({ name: "Other Root", ca: true });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: [intermediate.pem, root.pem], roots: other.pem }),
    "ERR_CERT_UNTRUSTED",
  );
});

test("verifyChain rejects a missing intermediate as untrusted", async () => {
  const { root, leaf } = await threeLevelChain();
  await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_CERT_UNTRUSTED");
});

test("verifyChain rejects an expired leaf", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({
    notAfter: new Date(Date.now() - HOUR),
    notBefore: new Date(Date.now() - 2 * HOUR),
  });
  const err = await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
    "ERR_CERT_EXPIRED",
  );
  assert.equal(err.certificateIndex, 0);
});

test("verifyChain rejects a leaf that is not yet valid", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({ notBefore: new Date(Date.now() + HOUR) });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
    "ERR_CERT_NOT_YET_VALID",
  );
});

test("verifyChain compares validity at whole seconds, notAfter inclusive", async () => {
  const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 10 * HOUR);
  const { root, intermediate, leaf } = await threeLevelChain({ notAfter });
  const options = { leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem };
  await verifyChain({ ...options, at: new Date(notAfter.getTime() + 999) });
  await rejects(verifyChain({ ...options, at: new Date(notAfter.getTime() + 1000) }), "ERR_CERT_EXPIRED");
});

test("verifyChain rejects a leaf whose signature was tampered with", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  await rejects(
    verifyChain({ leaf: tamper(leaf), intermediates: intermediate.pem, roots: root.pem }),
    "ERR_CERT_SIGNATURE_INVALID",
  );
});

test("verifyChain rejects an intermediate that is not a CA", async () => {
  const root = await issue({ name: "Root", ca: true });
  const notCa = await issue({ name: "Not a CA", issuer: root, keyUsage: ["digitalSignature"] });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: notCa });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: notCa.pem, roots: root.pem }),
    "ERR_CERT_NOT_CA",
  );
});

test("verifyChain enforces pathLenConstraint", async () => {
  const root = await issue({ name: "Root", ca: true, pathLen: 0 });
  const intermediate = await issue({ name: "Intermediate", ca: true, issuer: root });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: intermediate });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
    "ERR_PATH_LENGTH_EXCEEDED",
  );
});

test("verifyChain enforces maxDepth on intermediates", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem, maxDepth: 0 }),
    "ERR_CHAIN_TOO_LONG",
  );
});

test("verifyChain rejects an unknown critical extension on the leaf", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({
    extensions: [{ oid: "1.3.6.1.4.1.55738.666.1", critical: true, value: new Uint8Array([5, 0]) }],
  });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem }),
    "ERR_UNHANDLED_CRITICAL_EXTENSION",
  );
});

test("verifyChain ignores an unknown critical extension on an intermediate it does not use", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  // Same subject and key as the real intermediate, so it is a candidate issuer of the leaf
  // (its signature on the leaf verifies), but it carries an unknown critical extension.
  const twin = await issue({
    name: "Test Intermediate",
    ca: true,
    issuer: root,
    keys: intermediate.keys,
    extensions: [{ oid: "1.3.6.1.4.1.55738.666.1", critical: true, value: new Uint8Array([5, 0]) }],
  });
  // On its own the twin is tried and refused for the extension: it is a real candidate.
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: [twin.pem], roots: root.pem }),
    "ERR_UNHANDLED_CRITICAL_EXTENSION",
  );
  // Offered first, it is tried, refused, and the path through the good intermediate wins.
  const result = await verifyChain({
    leaf: leaf.pem,
    intermediates: [twin.pem, intermediate.pem],
    roots: root.pem,
  });
  assert.equal(result.path[1].serialNumber, intermediate.cert.serialNumber);
});

test("verifyChain requires the leaf's EKU to allow the purpose", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({ extendedKeyUsage: [OID.clientAuth] });
  const options = { leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem };
  await verifyChain({ ...options, purpose: "clientAuth" });
  await rejects(verifyChain({ ...options, purpose: "serverAuth" }), "ERR_EXTENDED_KEY_USAGE");
});

test("verifyChain applies an intermediate's EKU to the purpose, as Go does", async () => {
  const root = await issue({ name: "Root", ca: true });
  const intermediate = await issue({
    name: "Int",
    ca: true,
    issuer: root,
    extendedKeyUsage: [OID.clientAuth],
  });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: intermediate });
  await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem, purpose: "serverAuth" }),
    "ERR_EXTENDED_KEY_USAGE",
  );
});

test("verifyChain accepts a leaf without EKU for any purpose", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  await verifyChain({
    leaf: leaf.pem,
    intermediates: intermediate.pem,
    roots: root.pem,
    purpose: "serverAuth",
  });
});

test("verifyChain rejects a name outside a permitted DNS subtree", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { permitted: [dnsName("example.com")] },
  });
  const good = await issue({ name: "", sans: [dnsName("api.example.com")], issuer: root });
  const bad = await issue({ name: "", sans: [dnsName("api.example.net")], issuer: root });
  await verifyChain({ leaf: good.pem, roots: root.pem });
  await rejects(verifyChain({ leaf: bad.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain rejects a wildcard SAN that could name an excluded host", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { excluded: [dnsName("admin.example.com")] },
  });
  const leaf = await issue({ name: "", sans: [dnsName("*.example.com")], issuer: root });
  await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain enforces excluded IP subtrees", async () => {
  const net = new Uint8Array([10, 0, 0, 0, 255, 0, 0, 0]);
  const root = await issue({ name: "Root", ca: true, nameConstraints: { excluded: [ipName(net)] } });
  const leaf = await issue({ name: "", sans: [ipName(parseIp("10.1.2.3")!)], issuer: root });
  await rejects(verifyChain({ leaf: leaf.pem, roots: root.pem }), "ERR_NAME_CONSTRAINTS");
});

test("verifyChain matches a DNS peer name, with a wildcard covering one label only", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({ sans: [dnsName("*.example.com")] });
  const options = { leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem };
  await verifyChain({ ...options, dnsName: "API.example.com" });
  await rejects(verifyChain({ ...options, dnsName: "a.b.example.com" }), "ERR_PEER_NAME_MISMATCH");
  await rejects(verifyChain({ ...options, dnsName: "example.com" }), "ERR_PEER_NAME_MISMATCH");
});

test("verifyChain matches an IP peer name only against IP SANs", async () => {
  const { root, intermediate, leaf } = await threeLevelChain({
    sans: [ipName(parseIp("2001:db8::1")!), dnsName("10.0.0.1.example.com")],
  });
  const options = { leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem };
  await verifyChain({ ...options, ipAddress: "2001:DB8:0:0::1" });
  await rejects(verifyChain({ ...options, ipAddress: "10.0.0.1" }), "ERR_PEER_NAME_MISMATCH");
});

test("verifyChain finds the good path when one candidate issuer is expired", async () => {
  const root = await issue({ name: "Root", ca: true });
  const keys = (await issue({ name: "Int", ca: true, issuer: root })).keys;
  const expired = await issue({
    name: "Int",
    ca: true,
    issuer: root,
    keys,
    notBefore: new Date(Date.now() - 48 * HOUR),
    notAfter: new Date(Date.now() - 24 * HOUR),
  });
  const current = await issue({ name: "Int", ca: true, issuer: root, keys });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: current });
  const result = await verifyChain({
    leaf: leaf.pem,
    intermediates: [expired.pem, current.pem],
    roots: root.pem,
  });
  assert.equal(result.path[1].serialNumber, current.cert.serialNumber);
});

test("verifyChain turns garbage input into ERR_CERT_MALFORMED", async () => {
  const { root } = await threeLevelChain();
  await rejects(
    verifyChain({ leaf: new Uint8Array([0x30, 0x03, 1, 2]), roots: root.pem }),
    "ERR_CERT_MALFORMED",
  );
  await rejects(verifyChain({ leaf: "not a certificate", roots: root.pem }), "ERR_CERT_MALFORMED");
});

test("verifyChain with a SignatureCache remembers the intermediate's signature, not the leaf's", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const cache = new SignatureCache();
  await verifyChain({ leaf: leaf.pem, intermediates: intermediate.pem, roots: root.pem, cache });
  assert.equal(cache.size, 1);
  assert.ok(cache.has(intermediate.cert, root.cert));
  assert.ok(!cache.has(leaf.cert, intermediate.cert));
});

test("verifyChain answers a missing leaf with ERR_CERT_MALFORMED and no options with ERR_INVALID_ARGUMENT", async () => {
  const { root } = await threeLevelChain();
  await assert.rejects(verifyChain(undefined as never), { code: "ERR_INVALID_ARGUMENT" });
  await rejects(verifyChain({ leaf: undefined as never, roots: root.pem }), "ERR_CERT_MALFORMED");
  await rejects(verifyChain({ leaf: 42 as never, roots: root.pem }), "ERR_CERT_MALFORMED");
});

test("verifyChain names intermediates it could not parse when no path is found", async () => {
  const { root, leaf } = await threeLevelChain();
  const err = await rejects(
    verifyChain({ leaf: leaf.pem, intermediates: [new Uint8Array([0x30, 0x01, 0x00])], roots: root.pem }),
    "ERR_CERT_UNTRUSTED",
  );
  assert.match(err.message, /could not be parsed/);
});

test("verifyChain refuses 1 MiB of PEM BEGIN lines as a leaf and ignores them among intermediates", async () => {
  const { root, intermediate, leaf } = await threeLevelChain();
  const beginLines = "-----BEGIN CERTIFICATE-----\n".repeat((1 << 20) / 28);
  await rejects(verifyChain({ leaf: beginLines, roots: root.pem }), "ERR_CERT_MALFORMED");
  const result = await verifyChain({
    leaf: leaf.pem,
    intermediates: [beginLines, `${intermediate.pem}${root.pem}${beginLines}`],
    roots: root.pem,
  });
  assert.equal(result.path.length, 3);
});
