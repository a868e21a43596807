import { test } from "node:test";
import assert from "node:assert/strict";
import { parsePolicy, PolicyDenied, PolicyEngine, SpiffeId } from "../../mod.ts";

const frontend = SpiffeId.parse("spiffe://cluster.local/ns/web/sa/frontend");
const batch = SpiffeId.parse("spiffe://cluster.local/ns/jobs/sa/batch");
const partner = SpiffeId.parse("spiffe://partner.example/ns/web/sa/frontend");

const policies = [
  { name: "no-admin", action: "DENY", rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }] },
  {
    name: "frontend-reads",
    action: "ALLOW",
    rules: [{
      from: [{ source: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] } }],
      to: [{ operation: { methods: ["GET"], paths: ["/photos/*"] } }],
    }],
  },
  {
    name: "jobs-namespace-writes",
    action: "ALLOW",
    rules: [{
      from: [{ source: { namespaces: ["jobs"], trustDomains: ["cluster.local"] } }],
      to: [{ operation: { methods: ["POST", "PUT"], ports: [8080] } }],
      when: [{ key: "request.headers[x-env]", values: ["prod", "staging"] }],
    }],
  },
];
const engine = new PolicyEngine(policies);

test("an ALLOW rule matching principal, method and path prefix allows and names the policy", () => {
  assert.deepEqual(engine.evaluate({ peerId: frontend, method: "GET", path: "/photos/1" }), {
    allowed: true,
    reason: "allowed",
    policy: "frontend-reads",
    ruleIndex: 0,
  });
});

test("a DENY policy wins over an ALLOW policy that also matches", () => {
  const both = new PolicyEngine([
    {
      name: "allow-all-frontend",
      action: "ALLOW",
      rules: [{ from: [{ source: { principals: [frontend.toString()] } }] }],
    },
    { name: "deny-delete", action: "DENY", rules: [{ to: [{ operation: { methods: ["DELETE"] } }] }] },
  ]);
  const decision = both.evaluate({ peerId: frontend, method: "DELETE", path: "/photos/1" });
  assert.equal(decision.allowed, false);
  assert.equal(decision.policy, "deny-delete");
});

test("a request no ALLOW policy matches is denied", () => {
  const decision = engine.evaluate({ peerId: frontend, method: "DELETE", path: "/photos/1" });
  assert.deepEqual(decision, { allowed: false, reason: "no-allow-policy-matched" });
});

test("with no policies at all the engine denies by default", () => {
  assert.equal(new PolicyEngine([]).evaluate({ peerId: frontend }).allowed, false);
  assert.equal(new PolicyEngine([], { defaultAction: "ALLOW" }).evaluate({ peerId: frontend }).allowed, true);
});

test("a peer from another trust domain with the same path does not match a principal rule", () => {
  assert.equal(engine.evaluate({ peerId: partner, method: "GET", path: "/photos/1" }).allowed, false);
});

test("namespace, trust domain, port and a when condition must all match", () => {
  const request = {
    peerId: batch,
    method: "POST",
    path: "/upload",
    port: 8080,
    attributes: { "request.headers[x-env]": "prod" },
  };
  assert.equal(engine.evaluate(request).allowed, true);
  assert.equal(engine.evaluate({ ...request, port: 9090 }).allowed, false);
  assert.equal(
    engine.evaluate({ ...request, attributes: { "request.headers[x-env]": "dev" } }).allowed,
    false,
  );
  assert.equal(engine.evaluate({ ...request, attributes: {} }).allowed, false);
});

test("an unauthenticated request matches no principal and is caught by notPrincipals *", () => {
  const requireIdentity = new PolicyEngine([
    { name: "require-mtls", action: "DENY", rules: [{ from: [{ source: { notPrincipals: ["*"] } }] }] },
    { name: "anyone-authenticated", action: "ALLOW", rules: [{ from: [{ source: { principals: ["*"] } }] }] },
  ]);
  assert.equal(requireIdentity.evaluate({ path: "/" }).policy, "require-mtls");
  assert.equal(requireIdentity.evaluate({ peerId: batch, path: "/" }).allowed, true);
});

test("suffix patterns and case-insensitive hosts match", () => {
  const hosts = new PolicyEngine([
    {
      name: "svc",
      action: "ALLOW",
      rules: [{ to: [{ operation: { hosts: ["*.svc.cluster.local"], paths: ["*.jpg"] } }] }],
    },
  ]);
  assert.equal(hosts.evaluate({ host: "Photos.default.SVC.cluster.local", path: "/a/b.jpg" }).allowed, true);
  assert.equal(hosts.evaluate({ host: "photos.example.com", path: "/a/b.jpg" }).allowed, false);
});

test("check throws PolicyDenied with the deciding policy", () => {
  assert.throws(
    () => engine.check({ peerId: frontend, method: "GET", path: "/admin/users" }),
    (err: unknown) =>
      err instanceof PolicyDenied && err.code === "ERR_POLICY_DENIED" && err.policy === "no-admin",
  );
});

test("parsePolicy refuses unknown fields, a bad action and non-string values", () => {
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return (err as { code?: string }).code;
    }
    return "no error";
  };
  assert.equal(
    code(() =>
      parsePolicy({ name: "x", action: "ALLOW", rules: [{ from: [{ source: { notPrincipal: ["a"] } }] }] })
    ),
    "ERR_INVALID_ARGUMENT",
  );
  assert.equal(code(() => parsePolicy({ name: "x", action: "AUDIT" })), "ERR_INVALID_ARGUMENT");
  assert.equal(
    code(() => parsePolicy({ name: "x", action: "DENY", rules: [{ to: [{ operation: { paths: [1] } }] }] })),
    "ERR_INVALID_ARGUMENT",
  );
  assert.equal(code(() => parsePolicy(null)), "ERR_INVALID_ARGUMENT");
  assert.equal(code(() => new PolicyEngine([{ name: "", action: "ALLOW" }])), "ERR_INVALID_ARGUMENT");
});
