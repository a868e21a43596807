// The proxy: section of agent.yaml, read by the agent's shared FieldReader: defaults, every
// problem reported by path at once, misspelt keys refused, relative paths from the file's
// directory, and the checks that keep a configuration from opening a hole (a plain-text
// outbound listener off loopback, a service with no allowed identity).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "../../internal/mod.ts";
import { loadProxyConfig, MeshProxy } from "../../agent/mod.ts";
import { IDS, tempDir } from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };

before(async () => {
  dir = await tempDir();
});

after(() => dir?.remove());

async function load(yaml: string, name = "agent.yaml") {
  const path = join(dir.path, name);
  await writeFile(path, yaml);
  return loadProxyConfig({ path });
}

async function problems(yaml: string): Promise<string[]> {
  try {
    await load(yaml);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail("the configuration was accepted");
}

test("a proxy section with one listener each way gets the documented defaults", async () => {
  const config = await load(`trustDomain: mesh.test
stateDir: state
proxy:
  outbound:
    - name: datastore
      workload: photo-backend
      listen: 15002
      upstream: 10.0.0.7:16003
      allowedIds: ["${IDS.datastore}"]
  inbound:
    - name: photo-backend
      workload: photo-backend
      listen: 16002
      forward: 8080
      policies: [policies/backend.yaml]
`);
  assert.deepEqual(config.outbound, [{
    name: "datastore",
    service: "datastore",
    workload: "photo-backend",
    listen: { host: "127.0.0.1", port: 15002 },
    upstream: { host: "10.0.0.7", port: 16003 },
    allowedIds: [IDS.datastore],
  }]);
  assert.deepEqual(config.inbound, [{
    name: "photo-backend",
    workload: "photo-backend",
    listen: { host: "0.0.0.0", port: 16002 },
    forward: { host: "127.0.0.1", port: 8080 },
    mode: "STRICT",
    protocol: "tcp",
    policies: [join(dir.path, "policies/backend.yaml")],
    defaultAction: "DENY",
  }]);
  assert.equal(config.mode, "STRICT");
  assert.equal(config.auditLog, join(dir.path, "state/proxy-audit.jsonl"));
  assert.equal(config.auditLogMaxBytes, 64 * 1024 * 1024);
  assert.equal(config.auditLogMaxFiles, 4);
  assert.equal(config.auditUnverifiedIntervalSeconds, 10);
  assert.deepEqual(config.tls, { groups: undefined, sessionResumption: true, sessionTimeoutSeconds: 300 });
  assert.deepEqual(config.limits, {
    maxConnections: 10_000,
    handshakeTimeoutSeconds: 10,
    connectTimeoutSeconds: 5,
    responseIdleTimeoutSeconds: 300,
    idleTimeoutSeconds: 3600,
    revalidateIntervalSeconds: 60,
    maxHeaderBytes: 16_384,
    headersTimeoutSeconds: 30,
  });
});

test("addresses: host:port, [v6]:port, unix: paths (relative to the file), and mappings", async () => {
  await mkdir(join(dir.path, "run"), { recursive: true });
  const config = await load(`proxy:
  mode: PERMISSIVE
  auditLog: /var/log/meshauth/audit.jsonl
  outbound:
    - { name: a, workload: w, listen: "unix:run/a.sock", upstream: "[fd00::7]:443", allowedIds: ["${IDS.backend}"] }
    - { name: b, workload: w, listen: { host: "::1", port: 1500 }, upstream: { host: b.internal, port: 443 }, allowedIds: ["${IDS.backend}"] }
  inbound:
    - { name: c, workload: w, listen: { path: /tmp/c.sock }, forward: "unix:/run/redis.sock", mode: STRICT, protocol: http }
`);
  assert.deepEqual(config.outbound.map((o) => [o.listen, o.upstream]), [
    [{ path: join(dir.path, "run/a.sock") }, { host: "fd00::7", port: 443 }],
    [{ host: "::1", port: 1500 }, { host: "b.internal", port: 443 }],
  ]);
  assert.deepEqual(config.inbound[0].listen, { path: "/tmp/c.sock" });
  assert.deepEqual(config.inbound[0].forward, { path: "/run/redis.sock" });
  assert.equal(config.inbound[0].mode, "STRICT");
  assert.equal(config.inbound[0].protocol, "http");
});

test("every problem is reported by path, all at once", async () => {
  const found = await problems(`proxy:
  mode: LENIENT
  limts: {}
  limits: { maxConnections: 0, idleTimeoutSeconds: "soon" }
  tls: { groups: [], sessionResumption: maybe }
  outbound:
    - name: datastore
      workload: photo-backend
      listen: 0.0.0.0:15002
      upstream: "unix:/x.sock"
      allowedIds: ["spiffe://mesh.test/a b"]
      serverName: "not a name"
    - name: datastore
      workload: w
      listen: 15003
      upstream: 10.0.0.7:99999
  inbound:
    - name: bad name
      listen: nowhere
      forward: 10.0.0.1:0
      mode: strict
      protocol: grpc
      defaultAction: allow
      polices: [x.yaml]
`);
  const expected = [
    "proxy.limts: unknown field",
    "proxy.mode: expected one of STRICT, PERMISSIVE",
    "proxy.limits.maxConnections: expected a whole number from 1",
    "proxy.limits.idleTimeoutSeconds: expected a whole number",
    "proxy.tls.groups: expected a non-empty list",
    "proxy.tls.sessionResumption: expected true or false",
    "proxy.outbound[0].listen: an outbound listener accepts plain text",
    "proxy.outbound[0].upstream: expected host:port",
    "proxy.outbound[0].allowedIds[0]:",
    "proxy.outbound[0].serverName: expected a DNS name",
    'proxy.outbound[1].name: "datastore" names another listener too',
    "proxy.outbound[1].upstream: port: expected a whole number from 0 to 65535",
    "proxy.outbound[1].allowedIds: list the SPIFFE IDs allowed to serve datastore",
    "proxy.inbound[0].polices: unknown field",
    "proxy.inbound[0].name: letters, digits",
    "proxy.inbound[0].workload: required",
    "proxy.inbound[0].listen: expected host:port",
    "proxy.inbound[0].forward: port 0 is not a destination",
    "proxy.inbound[0].mode: expected one of STRICT, PERMISSIVE",
    "proxy.inbound[0].protocol: expected one of tcp, http",
    "proxy.inbound[0].defaultAction: expected one of ALLOW, DENY",
  ];
  for (const prefix of expected) {
    assert.ok(found.some((p) => p.startsWith(prefix)), `missing "${prefix}" in:\n${found.join("\n")}`);
  }
});

test("one service's allowed identities are said once: two outbound listeners that disagree are refused", async () => {
  const found = await problems(`proxy:
  outbound:
    - { name: a, service: datastore, workload: w1, listen: 1, upstream: "h:1", allowedIds: ["${IDS.datastore}"] }
    - { name: b, service: datastore, workload: w2, listen: 2, upstream: "h:1", allowedIds: ["${IDS.backend}"] }
`);
  assert.ok(
    found.some((p) => p.startsWith("proxy.outbound[1].allowedIds: service datastore is listed")),
    found.join("\n"),
  );
});

test("listeners without an audit log or a state directory are refused", async () => {
  const found = await problems(`proxy:
  inbound: [{ name: a, workload: w, listen: 1, forward: 2 }]
`);
  assert.ok(found.some((p) => p.startsWith("proxy.auditLog: required")), found.join("\n"));
});

test("without a proxy section there are no listeners", async () => {
  const config = await load("trustDomain: mesh.test\n");
  assert.deepEqual([config.outbound, config.inbound], [[], []]);
});

test("MeshProxy itself refuses an outbound listener off loopback, from a configuration made in code", async () => {
  const config = await load(`proxy:
  auditLog: audit.jsonl
  outbound:
    - name: photo-backend
      workload: photo-frontend
      listen: 127.0.0.1:0
      upstream: 10.0.0.12:15443
      allowedIds: ["${IDS.backend}"]
`);
  for (const host of ["0.0.0.0", "10.0.0.7", "::"]) {
    const offLoopback = { ...config, outbound: [{ ...config.outbound[0], listen: { host, port: 0 } }] };
    assert.throws(() => new MeshProxy({ config: offLoopback }), (err: Error) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(
        err.problems[0],
        /outbound photo-backend: listen must be a loopback address or a Unix socket/,
      );
      return true;
    });
  }
  for (const listen of [{ host: "::1", port: 0 }, { path: join(dir.path, "out.sock") }]) {
    assert.doesNotThrow(() =>
      new MeshProxy({ config: { ...config, outbound: [{ ...config.outbound[0], listen }] } })
    );
  }
});
