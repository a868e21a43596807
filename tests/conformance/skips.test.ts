// The x509-limbo skip list (scripts/conformance-skips.ts) skips exactly what it names: a case
// the suite may add that expects FAILURE for another reason is never hidden because its leaf
// happens to hold a property one of the skipped Web PKI rules is about.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type SkippableCase, skipReasonOf } from "../../scripts/conformance-skips.ts";
import { dnsName } from "../../lib/x509/general-name.ts";
import { issue } from "../support/cert-factory.ts";

const limboCase = (id: string, peer_certificate: string): SkippableCase => ({
  id,
  peer_certificate,
  expected_peer_name: null,
  features: null,
});

test("a webpki case is not skipped for a CA leaf or a critical SAN unless it is the case listed", async () => {
  const root = await issue({ name: "Root", ca: true });
  const caLeaf = await issue({ name: "Target", ca: true, issuer: root });
  const criticalSan = await issue({
    name: "Target",
    sans: [dnsName("a.example.com")],
    sanCritical: true,
    issuer: root,
  });
  for (const leaf of [caLeaf, criticalSan]) {
    assert.equal(skipReasonOf(limboCase("webpki::held-back::some-other-rule", leaf.pem)), undefined);
    assert.equal(skipReasonOf(limboCase("rfc5280::some-rule", leaf.pem)), undefined);
  }
  assert.match(
    skipReasonOf(limboCase("webpki::ee-basicconstraints-ca", caLeaf.pem)) ?? "",
    /CABF 7\.1\.2\.7\.8/,
  );
  assert.match(
    skipReasonOf(limboCase("webpki::san::san-critical-with-nonempty-subject", criticalSan.pem)) ?? "",
    /CABF 7\.1\.2\.7\.12/,
  );
});

test("a case skipped by id whose leaf no longer has the property fails the run", async () => {
  const root = await issue({ name: "Root", ca: true });
  const plain = await issue({ name: "Target", sans: [dnsName("a.example.com")], issuer: root });
  assert.throws(
    () => skipReasonOf(limboCase("webpki::ee-basicconstraints-ca", plain.pem)),
    /review the skip/,
  );
});

test("feature tags, id groups and peer-name kinds still skip what they name", () => {
  assert.match(
    skipReasonOf({ ...limboCase("webpki::eku::x", ""), features: ["pedantic-webpki-eku"] }) ?? "",
    /pedantic-webpki-eku/,
  );
  assert.match(skipReasonOf(limboCase("webpki::cn::x", "")) ?? "", /common-name/);
  assert.match(
    skipReasonOf({ ...limboCase("rfc5280::x", ""), expected_peer_name: { kind: "RFC822", value: "a@b" } }) ??
      "",
    /S\/MIME/,
  );
});
