// What each runtime's WebCrypto does for the core, checked through the public API on Node,
// Deno, Bun and workerd: a CA of every key algorithm issues an SVID that verifies, and
// chains OpenSSL signed with the algorithms an operator's own CA may use (ECDSA P-384 and
// P-521, Ed25519, RSA-4096, RSASSA-PSS) verify; what the core cannot verify is refused with a
// MeshAuthError rather than an obscure runtime error.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  KEY_ALGORITHMS,
  MeshAuthError,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../../mod.ts";
import { ALGORITHM_FIXTURES } from "./algorithm-fixtures.ts";

const FIXTURE_TIME = new Date("2027-01-01T00:00:00Z");
const FIXTURE_ID = "spiffe://algs.test/ns/default/sa/web";

// Refused on every runtime: Ed448 is no algorithm of the core (and Deno, Bun and workerd lack
// it); an id-RSASSA-PSS SubjectPublicKeyInfo is one WebCrypto's spki import rejects (it takes
// RSA keys only under rsaEncryption).
const UNSUPPORTED = new Map([
  ["Ed448", "not a core algorithm"],
  ["RSASSA-PSS (id-RSASSA-PSS key, SHA-256, salt 32)", "WebCrypto imports no id-RSASSA-PSS key"],
]);

describe("a CA of each key algorithm issues SVIDs that verify", () => {
  for (const keyAlgorithm of KEY_ALGORITHMS) {
    test(`${keyAlgorithm} CA`, { timeout: 120_000 }, async () => {
      const ca = await CertificateAuthority.createRoot({ trustDomain: "example.org", keyAlgorithm });
      const id = SpiffeId.fromServiceAccount("example.org", "default", "web");
      const keys = await generateKeyPair("ECDSA-P256");
      const svid = await ca.issue(await createCsr({ keys, id }), { id });
      const verified = await verifySvid(svid.chainPem, ca.bundle());
      assert.equal(verified.id.toString(), id.toString());
    });
  }
});

describe("chains signed by OpenSSL verify", () => {
  for (const fixture of ALGORITHM_FIXTURES.filter((f) => !UNSUPPORTED.has(f.signature))) {
    test(`a leaf signed with ${fixture.signature}`, async () => {
      const bundle = TrustBundle.fromPem("algs.test", fixture.rootPem);
      const verified = await verifySvid(fixture.leafPem, bundle, { at: FIXTURE_TIME });
      assert.equal(verified.id.toString(), FIXTURE_ID);
    });
  }
});

describe("what the core cannot verify fails with a MeshAuthError", () => {
  for (const fixture of ALGORITHM_FIXTURES.filter((f) => UNSUPPORTED.has(f.signature))) {
    test(`a root of ${fixture.signature}: ${UNSUPPORTED.get(fixture.signature)}`, async () => {
      const bundle = TrustBundle.fromPem("algs.test", fixture.rootPem);
      await assert.rejects(verifySvid(fixture.leafPem, bundle, { at: FIXTURE_TIME }), MeshAuthError);
    });
  }
});
