import { test } from "node:test";
import assert from "node:assert/strict";
import { dnsNameMatches, isDnsName } from "../../lib/verify/peer-name.ts";

test("isDnsName accepts LDH names and A-labels and refuses underscores, empty labels and bare addresses", () => {
  for (const name of ["example.com", "a-b.example.com", "xn--n3h.com", "localhost"]) {
    assert.ok(isDnsName(name), name);
  }
  for (
    const name of ["foo_bar.example.com", "example..com", ".example.com", "-a.com", "8.8.8.8", "", "😜.com"]
  ) {
    assert.ok(!isDnsName(name), name);
  }
});

test("isDnsName accepts a leftmost wildcard label only when asked to", () => {
  assert.ok(isDnsName("*.example.com", true));
  assert.ok(!isDnsName("*.example.com"));
  assert.ok(!isDnsName("foo.*.example.com", true));
  assert.ok(!isDnsName("ba*.example.com", true));
});

test("dnsNameMatches compares case-insensitively and label by label", () => {
  assert.ok(dnsNameMatches("Example.COM", "example.com"));
  assert.ok(!dnsNameMatches("example.com", "abc.example.com"));
  assert.ok(!dnsNameMatches("abc.example.com", "example.com"));
});

test("dnsNameMatches lets a wildcard stand for exactly one label of at least a two-label base", () => {
  assert.ok(dnsNameMatches("*.example.com", "foo.example.com"));
  assert.ok(!dnsNameMatches("*.example.com", "foo.bar.example.com"));
  assert.ok(!dnsNameMatches("*.example.com", "example.com"));
  assert.ok(!dnsNameMatches("*.com", "example.com"));
  assert.ok(!dnsNameMatches("*", "com"));
  assert.ok(!dnsNameMatches("xn--*-1b3c148a.example.com", "xn--bliss-1b3c148a.example.com"));
});
