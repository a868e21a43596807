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

/** The `argument` of the InvalidArgument that `build` throws, or "no error". */
function refusedField(build: () => unknown): string {
  try {
    build();
  } catch (err) {
    assert.equal((err as { code?: string }).code, "ERR_INVALID_ARGUMENT");
    return (err as { argument: string }).argument;
  }
  return "no error";
}

const allowRule = (rule: unknown) => ({ name: "p", action: "ALLOW", rules: [rule] });

test("parsePolicy refuses empty from, to and when lists", () => {
  assert.equal(refusedField(() => parsePolicy(allowRule({ from: [] }))), "policy p rules[0].from");
  assert.equal(refusedField(() => parsePolicy(allowRule({ to: [] }))), "policy p rules[0].to");
  assert.equal(refusedField(() => parsePolicy(allowRule({ when: [] }))), "policy p rules[0].when");
});

test("parsePolicy refuses an empty source, which would allow unauthenticated callers", () => {
  assert.equal(
    refusedField(() => new PolicyEngine([allowRule({ from: [{ source: {} }] })])),
    "policy p rules[0].from[0].source",
  );
});

test("parsePolicy refuses an empty operation, which would match every request", () => {
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ to: [{ operation: {} }] }))),
    "policy p rules[0].to[0].operation",
  );
});

test("parsePolicy refuses empty pattern lists", () => {
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ from: [{ source: { principals: [] } }] }))),
    "policy p rules[0].from[0].source.principals",
  );
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ to: [{ operation: { notPaths: [] } }] }))),
    "policy p rules[0].to[0].operation.notPaths",
  );
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ when: [{ key: "source.ip", values: [] }] }))),
    "policy p rules[0].when[0].values",
  );
});

test("parsePolicy refuses a when condition with only a key", () => {
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ when: [{ key: "request.headers[x-env]" }] }))),
    "policy p rules[0].when[0]",
  );
});

test("parsePolicy refuses an empty pattern, which would match an absent identity", () => {
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ from: [{ source: { principals: [""] } }] }))),
    "policy p rules[0].from[0].source.principals[0]",
  );
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ when: [{ key: "k", notValues: ["a", ""] }] }))),
    "policy p rules[0].when[0].notValues[1]",
  );
});

test("parsePolicy refuses * other than alone, as a prefix or as a suffix, naming the field", () => {
  for (const pattern of ["*admin*", "/api/*/admin", "**"]) {
    assert.equal(
      refusedField(() => parsePolicy(allowRule({ to: [{ operation: { paths: ["/ok", pattern] } }] }))),
      "policy p rules[0].to[0].operation.paths[1]",
      pattern,
    );
  }
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ from: [{ source: { notNamespaces: ["a*b"] } }] }))),
    "policy p rules[0].from[0].source.notNamespaces[0]",
  );
  for (const pattern of ["*", "/admin*", "*.jpg"]) {
    assert.equal(
      refusedField(() => parsePolicy(allowRule({ to: [{ operation: { paths: [pattern] } }] }))),
      "no error",
    );
  }
});

test("parsePolicy refuses a path pattern with a query string, which no request path carries", () => {
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ to: [{ operation: { paths: ["/search?q=*"] } }] }))),
    "policy p rules[0].to[0].operation.paths[0]",
  );
});

test("parsePolicy refuses method names that are not upper-case tokens", () => {
  for (const method of ["get", "GET POST", "Delete*"]) {
    assert.equal(
      refusedField(() => parsePolicy(allowRule({ to: [{ operation: { methods: [method] } }] }))),
      "policy p rules[0].to[0].operation.methods[0]",
      method,
    );
  }
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ to: [{ operation: { notMethods: ["*", "GET", "P*"] } }] }))),
    "no error",
  );
});

test("parsePolicy refuses ports that are not integers from 1 to 65535", () => {
  for (const port of [0, 65536, 80.5, -1, "http", "08080", "*", "80-90"]) {
    assert.equal(
      refusedField(() => parsePolicy(allowRule({ to: [{ operation: { ports: [port] } }] }))),
      "policy p rules[0].to[0].operation.ports[0]",
      String(port),
    );
  }
  assert.equal(
    refusedField(() => parsePolicy(allowRule({ to: [{ operation: { notPorts: [1, "65535"] } }] }))),
    "no error",
  );
});

test("ports given as numbers and as decimal strings match each other", () => {
  const byPort = new PolicyEngine([allowRule({ to: [{ operation: { ports: ["8080", 9090] } }] })]);
  assert.equal(byPort.evaluate({ port: 8080 }).allowed, true);
  assert.equal(byPort.evaluate({ port: "9090" }).allowed, true);
  assert.equal(byPort.evaluate({ port: 8443 }).allowed, false);
});

test("parsePolicy returns a frozen copy: changing the document afterwards changes no decision", () => {
  const document = {
    name: "no-admin",
    action: "DENY",
    rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }],
  };
  const guarded = new PolicyEngine([document, { name: "all", action: "ALLOW", rules: [{}] }]);
  document.rules[0].to[0].operation.paths[0] = "/nothing";
  document.rules.length = 0;
  assert.equal(guarded.evaluate({ path: "/admin/users" }).policy, "no-admin");

  const parsed = parsePolicy({
    name: "p",
    action: "ALLOW",
    rules: [{ from: [{ source: { principals: ["*"] } }] }],
  });
  assert.equal(Object.isFrozen(parsed), true);
  assert.equal(Object.isFrozen(parsed.rules), true);
  assert.equal(Object.isFrozen(parsed.rules![0].from![0].source.principals), true);
});

test("absent facts match no positive pattern and no negative one", () => {
  const deny = (operation: Record<string, unknown>) =>
    new PolicyEngine([
      { name: "deny", action: "DENY", rules: [{ to: [{ operation }] }] },
      { name: "all", action: "ALLOW", rules: [{}] },
    ]);
  // A request without a path, method, host or port is none of the listed values...
  assert.equal(deny({ notPaths: ["/public*"] }).evaluate({}).policy, "deny");
  assert.equal(deny({ notMethods: ["GET"] }).evaluate({}).policy, "deny");
  assert.equal(deny({ notHosts: ["*"] }).evaluate({ host: "" }).policy, "deny");
  // ...and matches no positive pattern, not even the presence pattern.
  assert.equal(deny({ paths: ["*"] }).evaluate({}).policy, "all");
  assert.equal(deny({ ports: [8080] }).evaluate({}).policy, "all");
  const someone = new PolicyEngine([allowRule({ from: [{ source: { namespaces: ["*"] } }] })]);
  assert.equal(
    someone.evaluate({ peerId: SpiffeId.parse("spiffe://cluster.local/workload") }).allowed,
    false,
  );
  assert.equal(someone.evaluate({ peerId: batch }).allowed, true);
});

test("a when condition on an absent attribute fails values and passes notValues", () => {
  const onValues = new PolicyEngine([allowRule({ when: [{ key: "source.ip", values: ["*"] }] })]);
  assert.equal(onValues.evaluate({ attributes: { "source.ip": [] } }).allowed, false);
  assert.equal(onValues.evaluate({}).allowed, false);
  const onNotValues = new PolicyEngine([allowRule({ when: [{ key: "source.ip", notValues: ["10.*"] }] })]);
  assert.equal(onNotValues.evaluate({}).allowed, true);
  assert.equal(
    onNotValues.evaluate({ attributes: { "source.ip": ["192.0.2.1", "10.0.0.1"] } }).allowed,
    false,
  );
});

test("when keys named like Object.prototype members are looked up on the attributes only", () => {
  for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    const byKey = new PolicyEngine([allowRule({ when: [{ key, values: ["x"] }] })]);
    assert.equal(byKey.evaluate({ attributes: {} }).allowed, false, key);
    assert.equal(byKey.evaluate({ attributes: JSON.parse(`{"${key}":"x"}`) }).allowed, true, key);
  }
});
