import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { InvalidSpiffeId, InvalidTrustDomain, MeshAuthError, SpiffeId, TrustDomain } from "../../mod.ts";

const invalidId = { name: "InvalidSpiffeId", code: "ERR_SPIFFE_ID_INVALID" };
const invalidTrustDomain = { name: "InvalidTrustDomain", code: "ERR_TRUST_DOMAIN_INVALID" };

describe("SpiffeId.parse", () => {
  test("parses the trust domain and path of a workload ID", () => {
    const id = SpiffeId.parse("spiffe://example.org/ns/default/sa/photos");
    assert.equal(id.trustDomain.name, "example.org");
    assert.equal(id.path, "/ns/default/sa/photos");
    assert.equal(id.toString(), "spiffe://example.org/ns/default/sa/photos");
  });

  test("accepts a trust domain ID with no path", () => {
    const id = SpiffeId.parse("spiffe://example.org");
    assert.equal(id.path, "");
    assert.equal(id.toString(), "spiffe://example.org");
  });

  test("accepts every character the spec allows in the trust domain", () => {
    const id = SpiffeId.parse("spiffe://abc-xyz_0.9/x");
    assert.equal(id.trustDomain.name, "abc-xyz_0.9");
  });

  test("accepts every character the spec allows in a path segment", () => {
    const path = "/ABCxyz-0_9.Z/...";
    assert.equal(SpiffeId.parse(`spiffe://example.org${path}`).path, path);
  });

  test("rejects an uppercase letter in the trust domain", () => {
    assert.throws(() => SpiffeId.parse("spiffe://Example.org/x"), { ...invalidId, message: /lowercase/ });
  });

  for (const ch of ["!", "$", "&", "'", "(", "*", "+", ",", ";", "=", "~", " ", "é"]) {
    test(`rejects ${JSON.stringify(ch)} in the trust domain`, () => {
      assert.throws(() => SpiffeId.parse(`spiffe://exam${ch}ple.org/x`), invalidId);
    });
    test(`rejects ${JSON.stringify(ch)} in a path segment`, () => {
      assert.throws(() => SpiffeId.parse(`spiffe://example.org/a${ch}b`), invalidId);
    });
  }

  test("rejects a missing trust domain", () => {
    assert.throws(() => SpiffeId.parse("spiffe:///path"), {
      ...invalidId,
      message: /trust domain is missing/,
    });
    assert.throws(() => SpiffeId.parse("spiffe://"), invalidId);
  });

  test("rejects an empty string", () => {
    assert.throws(() => SpiffeId.parse(""), invalidId);
  });

  test("rejects a value that is not a string", () => {
    assert.throws(() => SpiffeId.parse(42 as unknown as string), invalidId);
  });

  test("rejects an empty path segment", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org//x"), { ...invalidId, message: /empty/ });
  });

  test("rejects a trailing slash", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org/"), invalidId);
    assert.throws(() => SpiffeId.parse("spiffe://example.org/ns/"), invalidId);
  });

  test("rejects . and .. segments", () => {
    for (const path of ["/.", "/..", "/a/./b", "/a/../b", "/a/.."]) {
      assert.throws(() => SpiffeId.parse(`spiffe://example.org${path}`), { ...invalidId, message: /dot/ });
    }
  });

  test("rejects a query", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org/x?a=b"), { ...invalidId, message: /query/ });
    assert.throws(() => SpiffeId.parse("spiffe://example.org?a=b"), invalidId);
  });

  test("rejects a fragment", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org/x#frag"), { ...invalidId, message: /fragment/ });
  });

  test("rejects a port", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org:8443/x"), { ...invalidId, message: /port/ });
  });

  test("rejects userinfo", () => {
    assert.throws(() => SpiffeId.parse("spiffe://user@example.org/x"), { ...invalidId, message: /userinfo/ });
    assert.throws(() => SpiffeId.parse("spiffe://user:pw@example.org/x"), invalidId);
  });

  test("rejects percent-encoding", () => {
    assert.throws(() => SpiffeId.parse("spiffe://example.org/a%2Fb"), { ...invalidId, message: /percent/ });
    assert.throws(() => SpiffeId.parse("spiffe://exa%6dple.org/x"), invalidId);
  });

  test("rejects a scheme other than spiffe", () => {
    for (
      const s of ["https://example.org/x", "example.org/x", "spiffe:example.org/x", "spiffe:/example.org/x"]
    ) {
      assert.throws(() => SpiffeId.parse(s), { ...invalidId, message: /scheme/ });
    }
  });

  test("rejects an uppercase scheme", () => {
    for (const s of ["SPIFFE://example.org/x", "Spiffe://example.org/x"]) {
      assert.throws(() => SpiffeId.parse(s), { ...invalidId, message: /lowercase/ });
    }
  });

  test("rejects surrounding whitespace", () => {
    assert.throws(() => SpiffeId.parse(" spiffe://example.org/x"), invalidId);
    assert.throws(() => SpiffeId.parse("spiffe://example.org/x\n"), invalidId);
  });

  test("accepts an ID of exactly 2048 bytes", () => {
    const prefix = "spiffe://example.org/";
    const id = prefix + "a".repeat(2048 - prefix.length);
    assert.equal(SpiffeId.parse(id).toString().length, 2048);
  });

  test("rejects an ID of 2049 bytes", () => {
    const prefix = "spiffe://example.org/";
    assert.throws(() => SpiffeId.parse(prefix + "a".repeat(2049 - prefix.length)), {
      ...invalidId,
      message: /2048 bytes/,
    });
  });

  test("rejects a trust domain longer than 255 bytes", () => {
    assert.equal(SpiffeId.parse(`spiffe://${"a".repeat(255)}/x`).trustDomain.name.length, 255);
    assert.throws(() => SpiffeId.parse(`spiffe://${"a".repeat(256)}/x`), invalidId);
  });

  test("throws errors that are MeshAuthErrors naming the input", () => {
    const err = (() => {
      try {
        SpiffeId.parse("spiffe://example.org//x");
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof InvalidSpiffeId);
    assert.ok(err instanceof MeshAuthError);
    assert.equal(err.input, "spiffe://example.org//x");
    assert.match(err.message, /spiffe:\/\/example\.org\/\/x/);
  });
});

describe("TrustDomain", () => {
  test("parse accepts a name", () => {
    const td = TrustDomain.parse("example.org");
    assert.equal(td.name, "example.org");
    assert.equal(td.toString(), "example.org");
  });

  test("parse accepts a trust domain ID", () => {
    assert.equal(TrustDomain.parse("spiffe://example.org").name, "example.org");
  });

  test("parse rejects an invalid trust domain ID with ERR_TRUST_DOMAIN_INVALID", () => {
    for (const s of ["spiffe://Example.org", "spiffe://example.org:443", "spiffe://", "spiffe://a@b"]) {
      assert.throws(() => TrustDomain.parse(s), invalidTrustDomain, s);
    }
  });

  test("parse rejects a trust domain ID with a path", () => {
    assert.throws(() => TrustDomain.parse("spiffe://example.org/x"), invalidTrustDomain);
  });

  test("parse rejects uppercase letters", () => {
    assert.throws(() => TrustDomain.parse("Example.org"), invalidTrustDomain);
  });

  test("parse rejects an empty name", () => {
    assert.throws(() => TrustDomain.parse(""), InvalidTrustDomain);
    assert.throws(() => TrustDomain.parse(""), invalidTrustDomain);
  });

  test("parse rejects a port, userinfo and a slash", () => {
    for (const s of ["example.org:443", "user@example.org", "example.org/x"]) {
      assert.throws(() => TrustDomain.parse(s), invalidTrustDomain);
    }
  });

  test("parse rejects another scheme", () => {
    assert.throws(() => TrustDomain.parse("https://example.org"), {
      ...invalidTrustDomain,
      message: /scheme/,
    });
  });

  test("id() is the trust domain's own SPIFFE ID", () => {
    const id = TrustDomain.parse("example.org").id();
    assert.ok(id instanceof SpiffeId);
    assert.equal(id.toString(), "spiffe://example.org");
    assert.equal(id.path, "");
  });

  test("equals compares names", () => {
    assert.ok(TrustDomain.parse("example.org").equals(TrustDomain.parse("spiffe://example.org")));
    assert.ok(!TrustDomain.parse("example.org").equals(TrustDomain.parse("example.com")));
  });

  test("serialises to JSON as its name", () => {
    assert.equal(JSON.stringify({ td: TrustDomain.parse("example.org") }), '{"td":"example.org"}');
  });
});

describe("SpiffeId.fromServiceAccount", () => {
  test("builds spiffe://<td>/ns/<ns>/sa/<sa>", () => {
    const id = SpiffeId.fromServiceAccount("cluster.local", "default", "photos");
    assert.equal(id.toString(), "spiffe://cluster.local/ns/default/sa/photos");
  });

  test("accepts a TrustDomain value", () => {
    const id = SpiffeId.fromServiceAccount(TrustDomain.parse("cluster.local"), "web", "frontend");
    assert.equal(id.toString(), "spiffe://cluster.local/ns/web/sa/frontend");
  });

  test("rejects an invalid trust domain", () => {
    assert.throws(
      () => SpiffeId.fromServiceAccount("Cluster.local", "default", "photos"),
      invalidTrustDomain,
    );
  });

  test("rejects an empty namespace or service account", () => {
    assert.throws(() => SpiffeId.fromServiceAccount("cluster.local", "", "photos"), invalidId);
    assert.throws(() => SpiffeId.fromServiceAccount("cluster.local", "default", ""), invalidId);
  });

  test("rejects a namespace or service account holding a slash", () => {
    assert.throws(
      () => SpiffeId.fromServiceAccount("cluster.local", "default/sa/admin/ns/x", "y"),
      invalidId,
    );
    assert.throws(() => SpiffeId.fromServiceAccount("cluster.local", "default", "photos/extra"), invalidId);
  });

  test("rejects a dot segment", () => {
    assert.throws(() => SpiffeId.fromServiceAccount("cluster.local", "..", "photos"), invalidId);
  });

  test("rejects an ID longer than 2048 bytes", () => {
    assert.throws(() => SpiffeId.fromServiceAccount("cluster.local", "default", "a".repeat(2048)), {
      ...invalidId,
      message: /2048 bytes/,
    });
  });
});

describe("SpiffeId methods", () => {
  test("serviceAccount() returns the namespace and name of an Istio identity", () => {
    const id = SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/billing");
    assert.deepEqual(id.serviceAccount(), { namespace: "prod", name: "billing" });
  });

  test("serviceAccount() is undefined for other paths", () => {
    for (
      const s of [
        "spiffe://cluster.local",
        "spiffe://cluster.local/ns/prod",
        "spiffe://cluster.local/ns/a/sa/b/c",
      ]
    ) {
      assert.equal(SpiffeId.parse(s).serviceAccount(), undefined);
    }
  });

  test("equals is true for the same ID, given as a value or a string", () => {
    const id = SpiffeId.parse("spiffe://example.org/a");
    assert.ok(id.equals(SpiffeId.parse("spiffe://example.org/a")));
    assert.ok(id.equals("spiffe://example.org/a"));
  });

  test("equals is false for another path, another trust domain, or an invalid string", () => {
    const id = SpiffeId.parse("spiffe://example.org/a");
    assert.ok(!id.equals(SpiffeId.parse("spiffe://example.org/b")));
    assert.ok(!id.equals(SpiffeId.parse("spiffe://example.com/a")));
    assert.ok(!id.equals("spiffe://example.org/a/"));
  });

  test("equals is case-sensitive in the path", () => {
    assert.ok(!SpiffeId.parse("spiffe://example.org/A").equals("spiffe://example.org/a"));
  });

  test("memberOf is true for the ID's own trust domain only", () => {
    const id = SpiffeId.parse("spiffe://example.org/a");
    assert.ok(id.memberOf("example.org"));
    assert.ok(id.memberOf(TrustDomain.parse("example.org")));
    assert.ok(!id.memberOf("example.com"));
    assert.ok(!id.memberOf("org"));
  });

  test("serialises to JSON as its URI", () => {
    assert.equal(JSON.stringify(SpiffeId.parse("spiffe://example.org/a")), '"spiffe://example.org/a"');
  });
});
