// `meshauth agent` as a process, against a real CA on 127.0.0.1: JSON logs, the status port,
// SIGTERM, SIGKILL at random moments (every workload directory keeps a matching key and
// certificate), a restart that serves the stored certificates with the CA down, and a spent
// join token reported in one line.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { NODE, ROOT } from "../ca-server/helpers.ts";
import {
  keyMatches,
  readOneGeneration,
  startTestCa,
  tempDir,
  type TestCa,
  TRUST_DOMAIN,
  waitFor,
} from "./helpers.ts";

interface AgentProcess {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  stdout: string[];
  stderr: string[];
  /** The exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  signal?: string | null;
  statusUrl(): string;
}

function startAgentProcess(configPath: string): AgentProcess {
  const child = spawn(NODE, ["--import", "tsx", "cli/main.ts", "agent", "--config", configPath], {
    cwd: ROOT,
    env: { ...process.env, MESHAUTH_JOIN_TOKEN: "" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  let buffered = "";
  child.stdout!.on("data", (d) => {
    buffered += d;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) {
      stdout.push(line);
      try {
        logs.push(JSON.parse(line));
      } catch {
        // asserted below: every line is JSON
      }
    }
  });
  child.stderr!.on("data", (d) => stderr.push(String(d)));
  const agent: Partial<AgentProcess> = {};
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code, signal) => {
      agent.signal = signal;
      resolve(code);
    })
  );
  return Object.assign(agent, {
    child,
    logs,
    stdout,
    stderr,
    exited,
    statusUrl: () => String(logs.find((l) => l.msg === "listening")?.url),
  });
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** SIGTERM, then a clean stop: the "stopped" line and exit code 0. */
async function terminate(agent: AgentProcess): Promise<void> {
  agent.child.kill("SIGTERM");
  const code = await agent.exited;
  assert.ok(agent.logs.some((l) => l.msg === "stopped"), "it logged its clean stop");
  // Deno 2.9's child_process reports a child that handles SIGTERM and exits 0 as killed by the
  // signal (code null); Node reports the exit code. The "stopped" line above is the same proof.
  if (isDeno && code === null) assert.equal(agent.signal, "SIGTERM");
  else assert.equal(code, 0);
}

async function stopProcess(agent: AgentProcess | undefined): Promise<void> {
  if (!agent || agent.child.exitCode !== null || agent.child.signalCode !== null) return;
  agent.child.kill("SIGKILL");
  await agent.exited;
}

const names = ["web", "db", "cache"];

describe("meshauth agent", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let configPath: string;
  let running: AgentProcess | undefined;
  const directoryOf = (name: string) => join(dir.path, "pods", name);

  before(async () => {
    ca = await startTestCa({ "node-a": names.map((n) => `spiffe://${TRUST_DOMAIN}/${n}`) });
    dir = await tempDir();
    await writeFile(join(dir.path, "node.token"), `${await ca.nodeToken("node-a")}\n`);
    await mkdir(join(dir.path, "workloads.d"));
    await writeFile(
      join(dir.path, "workloads.d", "cache.yaml"),
      `spiffeId: spiffe://${TRUST_DOMAIN}/cache\ndirectory: ../pods/cache\nttlSeconds: 35\ncombinedFile: tls.pem\n`,
    );
    configPath = join(dir.path, "agent.yaml");
    await writeFile(
      configPath,
      `trustDomain: ${TRUST_DOMAIN}
ca: { url: "${ca.url}", trustBundleFile: ${ca.bundlePath} }
node: { name: node-a, joinTokenFile: node.token }
stateDir: state
workloadsDir: workloads.d
workloadDefaults: { ttlSeconds: 35, combinedFile: tls.pem }
workloads:
  - { name: web, spiffeId: "spiffe://${TRUST_DOMAIN}/web", directory: pods/web }
  - { name: db, spiffeId: "spiffe://${TRUST_DOMAIN}/db", directory: pods/db, layout: istio }
renewal: { retryInitialSeconds: 1, retryMaxSeconds: 2 }
refresh: { minSeconds: 1, maxSeconds: 2 }
listen: { port: 0 }
`,
    );
  });
  after(async () => {
    await stopProcess(running);
    await ca?.remove();
    await dir?.remove();
  });

  async function assertEveryDirectoryMatches(): Promise<void> {
    for (const name of names) {
      const files = await readOneGeneration(directoryOf(name));
      assert.ok(
        keyMatches(files.keyPem, files.chainPem),
        `${name}: ${files.generation} holds a matching pair`,
      );
      const combined = await readFile(join(directoryOf(name), "tls.pem"), "utf8");
      const cut = combined.indexOf("-----BEGIN PRIVATE KEY-----");
      assert.ok(keyMatches(combined.slice(cut), combined.slice(0, cut)), `${name}: tls.pem`);
    }
  }

  test("bootstraps with the join token file, delivers every workload, and answers on its status port", async () => {
    running = startAgentProcess(configPath);
    await waitFor("ready", () => running!.logs.some((l) => l.msg === "ready"), 30_000);
    assert.ok(running.stdout.every((line) => line.startsWith("{")), "every log line is JSON");
    const url = running.statusUrl();
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`${url}/readyz`);
    assert.deepEqual([ready.status, await ready.json()], [200, { status: "ready" }]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^meshauth_agent_certificates 3$/m);
    assert.match(metrics, /^meshauth_agent_node_certificate_expiry_seconds \d+$/m);
    assert.equal((await fetch(`${url}/readyz`, { method: "POST" })).status, 405);
    await assertEveryDirectoryMatches();
  });

  test("SIGTERM stops it cleanly: exit code 0, files in place", async () => {
    await terminate(running!);
    assert.deepEqual(running!.stderr, []);
    await assertEveryDirectoryMatches();
  });

  test("SIGKILL at any moment leaves every directory with a matching key and certificate", async () => {
    for (let i = 0; i < 4; i++) {
      running = startAgentProcess(configPath);
      await waitFor("start", () => running!.logs.some((l) => l.msg === "listening"), 30_000);
      // Anywhere in the start-up, a renewal or a bundle refresh (certificates renew every ~3.5 s).
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 2000)));
      running.child.kill("SIGKILL");
      await running.exited;
      await assertEveryDirectoryMatches();
    }
  });

  test("a restart with the CA down serves the stored certificates at once and issues none", async () => {
    await ca.stop();
    try {
      running = startAgentProcess(configPath);
      await waitFor("ready", () => running!.logs.some((l) => l.msg === "ready"), 30_000);
      const restored = running.logs.filter((l) => l.msg === "certificate restored from the state directory");
      assert.equal(restored.length, 3);
      assert.ok(running.logs.some((l) => l.msg === "node identity restored"));
      const ready = await fetch(`${running.statusUrl()}/readyz`);
      assert.equal(ready.status, 200);
      const metrics = await (await fetch(`${running.statusUrl()}/metrics`)).text();
      assert.doesNotMatch(
        metrics,
        /meshauth_agent_renewals_total\{kind="(workload|node)",reason="initial"\}/,
      );
      await assertEveryDirectoryMatches();
      await terminate(running);
    } finally {
      await ca.start();
    }
  });

  test("without a node identity, a spent join token is one clear line and exit code 1", async () => {
    const fresh = join(dir.path, "fresh.yaml");
    await writeFile(
      fresh,
      (await readFile(configPath, "utf8")).replace("stateDir: state", "stateDir: fresh-state"),
    );
    running = startAgentProcess(fresh);
    assert.equal(await running.exited, 1);
    const message = running.stderr.join("");
    assert.equal(message.trim().split("\n").length, 1, message);
    assert.match(
      message,
      /^meshauth: cannot obtain the node identity spiffe:\/\/agent\.test\/node\/node-a: .*ERR_TOKEN_USED/,
    );
  });
});
