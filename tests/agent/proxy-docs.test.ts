// docs/proxy.md says what the proxy does; this keeps its non-TypeScript blocks honest (the
// TypeScript ones run in tests/docs): the agent.yaml example is a valid proxy: section with the
// values the text gives, the proxy.yaml of Sidecar mode loads as `meshauth proxy` reads it with the
// values the text gives, the policy example loads for a TCP listener, the refusals quoted for an
// HTTP field on a TCP listener and for a sidecar's listeners naming two workloads are the messages
// written, and the Metrics table lists every metric.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadProxyConfig, loadSidecarConfig, ProxyMetrics } from "../../agent/mod.ts";
import { ListenerPolicy } from "../../agent/proxy/policy-files.ts";
import { tempDir } from "./proxy-support.ts";

const doc = readFileSync(new URL("../../docs/proxy.md", import.meta.url), "utf8");
/** The fenced blocks of `language` (`""` for unlabelled ones), in order. */
function blocks(language: string): string[] {
  const found: string[] = [];
  let open: { language: string; lines: string[] } | undefined;
  for (const line of doc.split("\n")) {
    if (!line.startsWith("```")) {
      open?.lines.push(line);
    } else if (open) {
      if (open.language === language) found.push(`${open.lines.join("\n")}\n`);
      open = undefined;
    } else open = { language: line.slice(3).trim(), lines: [] };
  }
  return found;
}

let dir: string;

before(async () => {
  dir = (await tempDir()).path;
});

test("the agent.yaml block of docs/proxy.md is a valid proxy: section with the documented defaults and values", async () => {
  const block = blocks("yaml").find((b) => b.startsWith("# agent.yaml"));
  assert.ok(block, "docs/proxy.md has an agent.yaml block");
  await writeFile(join(dir, "agent.yaml"), block);
  const config = await loadProxyConfig({ path: join(dir, "agent.yaml") });
  assert.equal(config.auditLog, "/var/log/meshauth/proxy-audit.jsonl");
  assert.equal(config.outbound[0].service, "photo-backend");
  assert.deepEqual(config.inbound[0].forward, { host: "127.0.0.1", port: 8080 });
  assert.equal(config.inbound[0].protocol, "http");
  assert.equal(config.limits.idleTimeoutSeconds, 3600);
});

test("the policy block of docs/proxy.md loads for a TCP listener", async () => {
  const block = blocks("yaml").find((b) => b.startsWith("# policy for a tcp listener"));
  assert.ok(block);
  await writeFile(join(dir, "policy.yaml"), block);
  const policy = await ListenerPolicy.load({
    listener: "datastore",
    files: [join(dir, "policy.yaml")],
    protocol: "tcp",
    defaultAction: "DENY",
  });
  assert.deepEqual(policy.policyNames, [
    "backend-reads-datastore",
    "only-from-the-cluster-network",
    "would-refuse-the-batch-jobs",
  ]);
});

test("the refusal docs/proxy.md quotes is the one the proxy writes", async () => {
  const quoted = blocks("").find((b) => b.includes("is an HTTP\nfield"));
  assert.ok(quoted);
  const file = "/etc/meshauth/policies/datastore.yaml";
  const local = join(dir, "datastore.yaml");
  await writeFile(
    local,
    `policies:\n  - name: get-only\n    action: ALLOW\n    rules:\n      - to: [{ operation: { methods: ["GET"] } }]\n`,
  );
  await assert.rejects(
    ListenerPolicy.load({ listener: "datastore", files: [local], protocol: "tcp", defaultAction: "DENY" }),
    (err: Error) => {
      assert.equal(err.message.replace(local, file), quoted.replace(/\s+/g, " ").trim());
      return true;
    },
  );
});

test("the Unix socket listen block of docs/proxy.md is a valid listen address with its mode and group", async () => {
  const block = blocks("yaml").find((b) => b.startsWith("listen: { path:"));
  assert.ok(block);
  const listen = block.slice("listen: ".length).trim();
  await writeFile(
    join(dir, "unix-listen.yaml"),
    `proxy:\n  auditLog: audit.jsonl\n  outbound:\n    - name: photo-backend\n      workload: photo-frontend\n      listen: ${listen}\n      upstream: 10.0.0.12:15443\n      allowedIds: [spiffe://prod.example/ns/photo-ns/sa/photo-backend]\n`,
  );
  const config = await loadProxyConfig({ path: join(dir, "unix-listen.yaml") });
  assert.deepEqual(config.outbound[0].listen, {
    path: "/run/meshauth/photo-backend.sock",
    mode: 0o660,
    group: "photo",
  });
});

test("the proxy.yaml block of docs/proxy.md (Sidecar mode) loads as meshauth proxy reads it, with the values it gives", async () => {
  const block = blocks("yaml").find((b) => b.startsWith("# proxy.yaml"));
  assert.ok(block, "docs/proxy.md has a proxy.yaml block");
  const policy = join(dir, "policy.yaml");
  await writeFile(policy, "policies: []\n");
  await writeFile(join(dir, "proxy.yaml"), block.replace("/etc/meshauth-proxy/policy.yaml", policy));
  const config = await loadSidecarConfig({ path: join(dir, "proxy.yaml") });
  assert.deepEqual(config.credentials, { dir: "/var/run/secrets/meshauth", layout: "istio" });
  assert.equal(config.ca?.url, "https://meshauth-ca.meshauth-system.svc:8443");
  assert.deepEqual(config.refresh, { minSeconds: 5, maxSeconds: 300 });
  assert.deepEqual(config.listen, { host: "127.0.0.1", port: 15020 });
  assert.equal(config.proxy.auditLog, "/var/log/meshauth-proxy/audit.jsonl");
  assert.deepEqual(config.proxy.inbound[0].listen, { host: "0.0.0.0", port: 8443 });
  assert.deepEqual(config.proxy.outbound[0].allowedIds, [
    "spiffe://cluster.local/ns/datastore-ns/sa/datastore",
  ]);
  // The defaults the text gives: the layout, the ops port, the refresh bounds.
  await writeFile(
    join(dir, "minimal.yaml"),
    `credentials: { dir: creds }\nauditLog: audit.jsonl\ninbound: [{ name: a, workload: a, listen: 8443, forward: 8080 }]\n`,
  );
  const minimal = await loadSidecarConfig({ path: join(dir, "minimal.yaml") });
  assert.deepEqual(minimal.credentials, { dir: join(dir, "creds"), layout: "istio" });
  assert.deepEqual(minimal.listen, { host: "127.0.0.1", port: 15020 });
  assert.deepEqual(minimal.refresh, { minSeconds: 5, maxSeconds: 300 });
  assert.equal(minimal.ca, undefined);
});

test("the Metrics table of docs/proxy.md has a row for every metric of ProxyMetrics, a sidecar's CRL gauge too", () => {
  const metrics = new ProxyMetrics();
  metrics.followCrls(() => new Map());
  const names = [...metrics.render().matchAll(/^# HELP (\S+)/gm)].map((m) => m[1]);
  assert.ok(names.includes("meshauth_proxy_crl_next_update_seconds"), names.join(", "));
  const rows = doc.split("\n").filter((line) => line.startsWith("| `meshauth_proxy_"));
  assert.deepEqual(names.filter((name) => !rows.some((row) => row.startsWith(`| \`${name}\``))), []);
});

test("the refusal of listeners naming two workloads that Sidecar mode quotes is the loader's", async () => {
  const quoted = doc.match(/\(`ERR_CONFIG`:\s+`(workload: [^`]*?); \.\.\.`\)/);
  assert.ok(quoted, "docs/proxy.md quotes the refusal");
  await writeFile(
    join(dir, "two-workloads.yaml"),
    `credentials: { dir: creds }\nauditLog: audit.jsonl\n` +
      `inbound: [{ name: db, workload: db, listen: 8443, forward: 8080 }]\n` +
      `outbound: [{ name: orders, workload: web, listen: 127.0.0.1:15001, upstream: 127.0.0.1:15006, ` +
      `allowedIds: [spiffe://meshauth.local/demo/db] }]\n`,
  );
  await assert.rejects(loadSidecarConfig({ path: join(dir, "two-workloads.yaml") }), (err: Error) => {
    const problems = (err as Error & { problems?: string[] }).problems ?? [];
    assert.equal(problems.length, 1, String(problems));
    assert.ok(problems[0].startsWith(`${quoted[1].replace(/\s+/g, " ")}; `), problems[0]);
    return true;
  });
});
