// Wrong argument types from JavaScript callers: each public entry point answers a MeshAuthError
// with a stable code, never a TypeError from deep inside or, worse, a result built from junk.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  authorizeId,
  authorizeMemberOf,
  CertificateAuthority,
  createCsr,
  decodePem,
  encodePem,
  generateKeyPair,
  MeshAuthError,
  parseCertificate,
  parseCertificates,
  parseCrl,
  PolicyEngine,
  renewalTime,
  SecureNaming,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../../mod.ts";

// deno-lint-ignore no-explicit-any
const junk = (value: unknown): any => value;

async function refusedWith(what: string, call: () => unknown, code: string): Promise<void> {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof MeshAuthError, `${what}: expected a MeshAuthError, got ${err}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return;
  }
  assert.fail(`${what}: expected ${code}, but it succeeded`);
}

test("a trust domain that is neither a name nor a TrustDomain is refused everywhere", async () => {
  for (const value of [42, undefined, { name: "EVIL..COM/x" }]) {
    const label = JSON.stringify(value) ?? "undefined";
    await refusedWith(
      `fromServiceAccount(${label})`,
      () => SpiffeId.fromServiceAccount(junk(value), "default", "web"),
      "ERR_TRUST_DOMAIN_INVALID",
    );
    await refusedWith(
      `fromSegments(${label})`,
      () => SpiffeId.fromSegments(junk(value), "a"),
      "ERR_TRUST_DOMAIN_INVALID",
    );
    await refusedWith(
      `TrustBundle.fromPem(${label})`,
      () => TrustBundle.fromPem(junk(value), ""),
      "ERR_TRUST_DOMAIN_INVALID",
    );
    await refusedWith(
      `authorizeMemberOf(${label})`,
      () => authorizeMemberOf(junk(value)),
      "ERR_TRUST_DOMAIN_INVALID",
    );
    await refusedWith(
      `createRoot({ trustDomain: ${label} })`,
      () => CertificateAuthority.createRoot({ trustDomain: junk(value) }),
      "ERR_TRUST_DOMAIN_INVALID",
    );
  }
  assert.equal(SpiffeId.fromSegments("cluster.local", "a").toString(), "spiffe://cluster.local/a");
});

test("a missing or non-object options argument is ERR_INVALID_ARGUMENT", async () => {
  const root = await CertificateAuthority.createRoot({ trustDomain: "args.example" });
  const keys = await generateKeyPair();
  const csr = await createCsr({ keys, id: "spiffe://args.example/a" });
  const calls: [string, () => unknown][] = [
    ["createCsr(undefined)", () => createCsr(junk(undefined))],
    ["createCsr without keys", () => createCsr(junk({ id: "spiffe://args.example/a" }))],
    ["createRoot(undefined)", () => CertificateAuthority.createRoot(junk(undefined))],
    ["load(undefined)", () => CertificateAuthority.load(junk(undefined))],
    ["fromSigner(5)", () => CertificateAuthority.fromSigner(junk(5))],
    ["issue(csr, null)", () => root.issue(csr, junk(null))],
    ["createCrl(undefined)", () => root.createCrl(junk(undefined))],
    ["createCrl({ revoked: 'x' })", () => root.createCrl(junk({ revoked: "x", nextUpdateSeconds: 60 }))],
    ["createIntermediate(undefined)", () => root.createIntermediate(junk(undefined))],
    ["new PolicyEngine(5)", () => new PolicyEngine(junk(5))],
    ["renewalTime(undefined)", () => renewalTime(junk(undefined))],
    ["encodePem('X', 'text')", () => encodePem("X", junk("text"))],
    ["encodePem(label with dashes)", () => encodePem("-----", new Uint8Array(1))],
    ["verifySvid(..., null)", () => verifySvid(root.certificatePem, root.bundle(), junk(null))],
  ];
  for (const [what, call] of calls) await refusedWith(what, call, "ERR_INVALID_ARGUMENT");
});

test("a CRL entry whose serial number is not hex text is refused, not signed into a broken CRL", async () => {
  const root = await CertificateAuthority.createRoot({ trustDomain: "args.example" });
  for (const serialNumber of [1234, undefined, "0x12", "abc"]) {
    await refusedWith(
      `serialNumber ${JSON.stringify(serialNumber)}`,
      () =>
        root.createCrl({
          revoked: [{ serialNumber: junk(serialNumber), revokedAt: new Date() }],
          nextUpdateSeconds: 60,
        }),
      "ERR_ISSUANCE_REFUSED",
    );
  }
  const crl = await root.createCrl({
    revoked: [{ serialNumber: "04d2", revokedAt: new Date() }],
    nextUpdateSeconds: 60,
  });
  assert.equal(parseCrl(crl).revoked.length, 1);
});

test("bad verification options are the caller's mistake, not a bad certificate", async () => {
  const root = await CertificateAuthority.createRoot({ trustDomain: "args.example" });
  const keys = await generateKeyPair();
  const svid = await root.issue(await createCsr({ keys, id: "spiffe://args.example/a" }));
  for (
    const [what, options] of [
      ["crls: 'x'", { crls: "x" }],
      ["crls: [undefined]", { crls: [undefined] }],
      ["crls: [{}]", { crls: [{}] }],
      ["at: Invalid Date", { at: new Date("x") }],
      ["purpose: codeSigning", { purpose: "codeSigning" }],
    ] as const
  ) {
    await refusedWith(
      what,
      () => verifySvid(svid.chainPem, root.bundle(), junk(options)),
      "ERR_INVALID_ARGUMENT",
    );
  }
  const verified = await verifySvid(svid.chainPem, root.bundle(), { crls: [] });
  assert.equal(verified.id.toString(), "spiffe://args.example/a");
});

test("identities of the wrong type are refused with their own code, PEM of the wrong type as an argument", async () => {
  const naming = new SecureNaming({ web: ["spiffe://args.example/web"] });
  await refusedWith(
    "SecureNaming.check(s, undefined)",
    () => naming.check("web", junk(undefined)),
    "ERR_SPIFFE_ID_INVALID",
  );
  await refusedWith(
    "authorizeId(x)(undefined)",
    () => authorizeId("spiffe://args.example/web")(junk(undefined)),
    "ERR_SPIFFE_ID_INVALID",
  );
  for (const value of [undefined, 42, {}]) {
    await refusedWith(
      `decodePem(${JSON.stringify(value)})`,
      () => decodePem(junk(value)),
      "ERR_INVALID_ARGUMENT",
    );
  }
});

test("an ID or trust domain from another copy of meshauth is taken after validating it again", async () => {
  // What an instance from a second installed copy (or the edge bundle) looks like from here.
  const foreignTd = { name: "args.example", toString: () => "args.example" };
  const foreignId = { trustDomain: foreignTd, path: "/web", toString: () => "spiffe://args.example/web" };
  const id = SpiffeId.from(junk(foreignId));
  assert.ok(id instanceof SpiffeId);
  assert.equal(id.toString(), "spiffe://args.example/web");
  assert.ok(id.equals(junk(foreignId)));
  assert.ok(id.trustDomain.equals(junk(foreignTd)));
  authorizeId(junk(foreignId))(id);
  authorizeMemberOf(junk(foreignTd))(junk(foreignId));
  assert.equal(
    SpiffeId.fromServiceAccount(junk(foreignTd), "ns", "sa").toString(),
    "spiffe://args.example/ns/ns/sa/sa",
  );
  // Still validated: a forged one is refused as a bad ID would be.
  const forged = { trustDomain: { name: "x" }, path: "/a", toString: () => "spiffe://EVIL..COM/a" };
  await refusedWith("forged SpiffeId", () => SpiffeId.from(junk(forged)), "ERR_SPIFFE_ID_INVALID");
});

test("certificate inputs take the forms the docs promise, and anything else is ERR_INVALID_ARGUMENT", async () => {
  const root = await CertificateAuthority.createRoot({ trustDomain: "args.example" });
  const der = root.certificate.der;
  // The forms promised: DER in a Uint8Array (a Node Buffer is one), PEM text, parsed certificates.
  assert.equal(parseCertificate(der.slice()).serialNumber, root.certificate.serialNumber);
  assert.equal(parseCertificates(root.certificatePem)[0].serialNumber, root.certificate.serialNumber);
  const bundle = new TrustBundle("args.example", [der, root.certificatePem, root.certificate]);
  assert.equal(bundle.x509Authorities().length, 1);
  assert.equal(bundle.toJwks().keys.length, 1);
  const wrong: Array<[string, () => unknown]> = [
    ["parseCertificate(Array.from(der))", () => parseCertificate(junk(Array.from(der)))],
    ["parseCertificate(ArrayBuffer)", () => parseCertificate(junk(new ArrayBuffer(10)))],
    ["parseCertificate(der.buffer)", () => parseCertificate(junk(der.slice().buffer))],
    ["parseCertificate(DataView)", () => parseCertificate(junk(new DataView(der.slice().buffer)))],
    ["parseCertificate(PEM text)", () => parseCertificate(junk(root.certificatePem))],
    ["parseCertificate(undefined)", () => parseCertificate(junk(undefined))],
    ["parseCertificates(5)", () => parseCertificates(junk(5))],
    ["parseCertificates([der])", () => parseCertificates(junk([der]))],
    ["parseCrl(5)", () => parseCrl(junk(5))],
    ['new TrustBundle("td", 5)', () => new TrustBundle("args.example", junk(5))],
    ['new TrustBundle("td", pem)', () => new TrustBundle("args.example", junk(root.certificatePem))],
    ['new TrustBundle("td", [null])', () => new TrustBundle("args.example", junk([null]))],
    ['new TrustBundle("td", [{}])', () => new TrustBundle("args.example", junk([{}]))],
    ['new TrustBundle("td", [{ der }])', () => new TrustBundle("args.example", junk([{ der }]))],
    ['new TrustBundle("td", [der], 5)', () => new TrustBundle("args.example", [der], junk(5))],
    ["bundle.addAuthority(null)", () => bundle.addAuthority(junk(null))],
    ["bundle.hasAuthority(5)", () => bundle.hasAuthority(junk(5))],
    ["bundle.removeAuthority([der])", () => bundle.removeAuthority(junk([der]))],
    ['TrustBundle.fromPem("td", der)', () => TrustBundle.fromPem("args.example", junk(der))],
  ];
  for (const [what, call] of wrong) await refusedWith(what, call, "ERR_INVALID_ARGUMENT");
  assert.equal(bundle.x509Authorities().length, 1, "nothing was added by a refused call");
});
