// `meshauth agent` as a process, against a real CA on 127.0.0.1: JSON logs, the status port,
// SIGTERM, SIGKILL in the middle of a wave of writes (every workload directory keeps a
// complete generation behind ..data, visible links through it, and only leftovers the next
// start sweeps), a restart that serves the stored certificates with the CA down, and a spent
// join token reported in one line.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { lstat, mkdir, readdir, readFile, readlink, stat, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { NODE, ROOT } from "../ca-server/helpers.ts";
import { hasExited, killGroup, killStartedProcesses, spawnInGroup, within } from "../support/processes.ts";
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

/** How long an agent may take to start, stop or exit: generous, for a machine under load. */
const START_MS = 60_000;
const STOP_MS = 30_000;
/**
 * A test's own bound, beyond the bounds of its waits: a test that ends by it (on Deno too, which
 * has no global one) fails with its name rather than holding the run.
 */
const TEST_MS = 2 * START_MS + STOP_MS;

function startAgentProcess(configPath: string): AgentProcess {
  const child = spawnInGroup(NODE, ["--import", "tsx", "cli/main.ts", "agent", "--config", configPath], {
    cwd: ROOT,
    env: { ...process.env, MESHAUTH_JOIN_TOKEN: "" },
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

/** What the agent said last: for a failure's message. */
function lastWords(agent: AgentProcess): string {
  return `\nlast log lines:\n${agent.stdout.slice(-8).join("\n")}\nstderr:\n${agent.stderr.join("")}`;
}

/** Waits (at most `timeoutMs`) until the agent has logged `msg`. */
async function waitForLog(agent: AgentProcess, msg: string, timeoutMs = START_MS): Promise<void> {
  try {
    await waitFor(`the agent's "${msg}" line`, () => agent.logs.some((l) => l.msg === msg), timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}${lastWords(agent)}`);
  }
}

/** The agent's exit code, once it has exited by itself (at most `timeoutMs`); `what` names why it should. */
async function exitCodeOf(agent: AgentProcess, what: string, timeoutMs = START_MS): Promise<number | null> {
  try {
    return await within(agent.exited, timeoutMs, `the agent to exit (${what})`);
  } catch (err) {
    throw new Error(`${(err as Error).message}${lastWords(agent)}`);
  }
}

/** A GET on the agent's status port, bounded. */
function statusGet(agent: AgentProcess, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${agent.statusUrl()}${path}`, { ...init, signal: AbortSignal.timeout(10_000) });
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** SIGTERM, then a clean stop: the "stopped" line and exit code 0. */
async function terminate(agent: AgentProcess): Promise<void> {
  agent.child.kill("SIGTERM");
  const code = await exitCodeOf(agent, "SIGTERM", STOP_MS);
  assert.ok(agent.logs.some((l) => l.msg === "stopped"), "it logged its clean stop");
  // Deno 2.9's child_process reports a child that handles SIGTERM and exits 0 as killed by the
  // signal (code null); Node reports the exit code. The "stopped" line above is the same proof.
  if (isDeno && code === null) assert.equal(agent.signal, "SIGTERM");
  else assert.equal(code, 0);
}

/** SIGKILL to the agent's process group, and its exit (bounded). */
async function killAgent(agent: AgentProcess | undefined): Promise<void> {
  if (!agent || hasExited(agent.child)) return;
  killGroup(agent.child);
  await exitCodeOf(agent, "SIGKILL", STOP_MS);
}

// An hour: the restart with the CA down must find every stored certificate still valid, however
// long the starts before it took on a loaded machine (35 s certificates expired under load 16).
const TTL_SECONDS = 3600;

/** Two static workloads, and drop-ins: enough that a start's writes take a while to finish. */
const dropIns = ["cache", ...Array.from({ length: 21 }, (_, i) => `w${String(i).padStart(2, "0")}`)];
const names = ["web", "db", ...dropIns];
const visibleNames = ["cert-chain.pem", "key.pem", "root-cert.pem", "tls.pem"];

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
    for (const name of dropIns) {
      await writeFile(
        join(dir.path, "workloads.d", `${name}.yaml`),
        `spiffeId: spiffe://${TRUST_DOMAIN}/${name}\ndirectory: ../pods/${name}\nttlSeconds: ${TTL_SECONDS}\ncombinedFile: tls.pem\n`,
      );
    }
    configPath = join(dir.path, "agent.yaml");
    await writeConfig("0600");
  });

  /** The configuration, with the key mode of every workload: a change re-writes them all at the next start. */
  async function writeConfig(keyFileMode: string): Promise<void> {
    await writeFile(
      configPath,
      `trustDomain: ${TRUST_DOMAIN}
ca: { url: "${ca.url}", trustBundleFile: ${ca.bundlePath} }
node: { name: node-a, joinTokenFile: node.token }
stateDir: state
workloadsDir: workloads.d
workloadDefaults: { ttlSeconds: ${TTL_SECONDS}, combinedFile: tls.pem, keyFileMode: "${keyFileMode}" }
workloads:
  - { name: web, spiffeId: "spiffe://${TRUST_DOMAIN}/web", directory: pods/web }
  - { name: db, spiffeId: "spiffe://${TRUST_DOMAIN}/db", directory: pods/db, layout: istio }
delivery: { roots: [pods] }
renewal: { retryInitialSeconds: 1, retryMaxSeconds: 2 }
refresh: { minSeconds: 1, maxSeconds: 2 }
listen: { port: 0 }
`,
    );
  }
  /**
   * Starts an agent on `path`, after killing one a failed test left running: two agents never
   * share the state directory, and none is left behind to hold this file open.
   */
  async function startAgent(path: string): Promise<AgentProcess> {
    await killAgent(running);
    running = startAgentProcess(path);
    return running;
  }

  after(async () => {
    await killStartedProcesses();
    await ca?.remove();
    await dir?.remove();
  });

  /**
   * Every directory: ..data on a whole generation whose key matches its certificate (and the
   * combined file likewise), every visible name a link through ..data. Answers the key modes
   * found and how many leftovers of an interrupted write (another generation, ..data_tmp, a
   * temporary link) there are.
   */
  async function assertEveryDirectoryMatches(): Promise<{ modes: Set<number>; leftovers: number }> {
    const modes = new Set<number>();
    let leftovers = 0;
    for (const name of names) {
      const directory = directoryOf(name);
      const files = await readOneGeneration(directory);
      assert.ok(
        keyMatches(files.keyPem, files.chainPem),
        `${name}: ${files.generation} holds a matching pair`,
      );
      const combined = await readFile(join(directory, files.generation, "tls.pem"), "utf8");
      const cut = combined.indexOf("-----BEGIN PRIVATE KEY-----");
      assert.ok(keyMatches(combined.slice(cut), combined.slice(0, cut)), `${name}: tls.pem`);
      for (const visible of visibleNames) {
        assert.ok((await lstat(join(directory, visible))).isSymbolicLink(), `${name}/${visible} is a link`);
        assert.equal(await readlink(join(directory, visible)), `..data/${visible}`);
      }
      assert.deepEqual(
        (await readdir(directory)).filter((n) => !n.startsWith("..")).sort(),
        visibleNames.sort(),
      );
      leftovers += (await readdir(directory)).filter((n) =>
        n.startsWith("..") && n !== "..data" && n !== files.generation
      )
        .length;
      modes.add((await stat(join(directory, "key.pem"))).mode & 0o777);
    }
    return { modes, leftovers };
  }

  test("bootstraps with the join token file, delivers every workload, and answers on its status port", {
    timeout: TEST_MS,
  }, async () => {
    running = await startAgent(configPath);
    await waitForLog(running, "ready");
    assert.ok(running.stdout.every((line) => line.startsWith("{")), "every log line is JSON");
    const url = running.statusUrl();
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await statusGet(running, "/healthz");
    assert.equal(health.status, 200);
    const ready = await statusGet(running, "/readyz");
    assert.deepEqual([ready.status, await ready.json()], [200, { status: "ready" }]);
    const metrics = await (await statusGet(running, "/metrics")).text();
    assert.match(metrics, new RegExp(`^meshauth_agent_certificates ${names.length}$`, "m"));
    assert.match(metrics, /^meshauth_agent_node_certificate_expiry_seconds \d+$/m);
    assert.equal((await statusGet(running, "/readyz", { method: "POST" })).status, 405);
    await assertEveryDirectoryMatches();
  });

  test("SIGTERM stops it cleanly: exit code 0, files in place", { timeout: TEST_MS }, async () => {
    await terminate(running!);
    assert.deepEqual(running!.stderr, []);
    await assertEveryDirectoryMatches();
  });

  test(
    "SIGKILL in the middle of a wave of writes leaves every directory whole, and the next start sweeps the rest",
    { timeout: 10 * TEST_MS },
    async (t) => {
      // Each start finds every key file in the other mode and re-writes all the directories; the
      // kill comes as the first of those writes is logged, while the others are under way.
      const kills = 8;
      let interrupted = 0;
      for (let i = 0; i < kills; i++) {
        const mode = i % 2 === 0 ? 0o640 : 0o600;
        await writeConfig(`0${mode.toString(8)}`);
        running = await startAgent(configPath);
        await waitForLog(running, "delivered");
        await killAgent(running);
        const { modes, leftovers } = await assertEveryDirectoryMatches();
        assert.ok(modes.has(mode), "the wave had begun");
        // Some directories still in the old mode, or a write's leftovers: the kill landed mid-wave.
        if (modes.size > 1 || leftovers > 0) interrupted++;
      }
      t.diagnostic(`${interrupted} of ${kills} kills landed while writes were under way`);
      assert.ok(interrupted > 0, `no kill of ${kills} landed while writes were under way`);
      // A clean start finishes the wave and sweeps every leftover.
      running = await startAgent(configPath);
      await waitForLog(running, "ready");
      await terminate(running);
      const { modes, leftovers } = await assertEveryDirectoryMatches();
      assert.deepEqual([...modes], [0o600]);
      assert.equal(leftovers, 0);
    },
  );

  test("a restart with the CA down serves the stored certificates at once and issues none", {
    timeout: TEST_MS,
  }, async () => {
    await ca.stop();
    try {
      running = await startAgent(configPath);
      await waitForLog(running, "ready");
      const restored = running.logs.filter((l) => l.msg === "certificate restored from the state directory");
      assert.equal(restored.length, names.length);
      assert.ok(running.logs.some((l) => l.msg === "node identity restored"));
      const ready = await statusGet(running, "/readyz");
      assert.equal(ready.status, 200);
      const metrics = await (await statusGet(running, "/metrics")).text();
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

  test(
    "without a node identity, a spent join token is one clear line and exit code 1",
    { timeout: TEST_MS },
    async () => {
      const fresh = join(dir.path, "fresh.yaml");
      await writeFile(
        fresh,
        (await readFile(configPath, "utf8")).replace("stateDir: state", "stateDir: fresh-state"),
      );
      running = await startAgent(fresh);
      assert.equal(await exitCodeOf(running, "a spent join token"), 1);
      const message = running.stderr.join("");
      assert.equal(message.trim().split("\n").length, 1, message);
      assert.match(
        message,
        /^meshauth: ERR_NODE_BOOTSTRAP_FAILED: cannot obtain the node identity spiffe:\/\/agent\.test\/node\/node-a: .*ERR_TOKEN_USED/,
      );
    },
  );

  test(
    "SIGTERM while it still retries an unreachable CA logs its stop and exits 0",
    { timeout: TEST_MS },
    async () => {
      // A port nothing listens on: taken, then released.
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      const path = join(dir.path, "unreachable.yaml");
      await writeFile(
        path,
        (await readFile(configPath, "utf8"))
          .replace("stateDir: state", "stateDir: unreachable-state")
          .replace(`url: "${ca.url}"`, `url: "https://127.0.0.1:${port}"`),
      );
      running = await startAgent(path);
      await waitForLog(running, "node bootstrap failed; retrying");
      await terminate(running);
      assert.deepEqual(running.stderr, []);
    },
  );

  test("a token file that is absent, unreadable or empty is one line naming the file, and exit code 1", {
    timeout: 5 * TEST_MS,
  }, async () => {
    await mkdir(join(dir.path, "token-dir"));
    await writeFile(join(dir.path, "empty.token"), "\n");
    const base = await readFile(configPath, "utf8");
    for (
      const [credential, reason] of [
        ["joinTokenFile: nope.token", /node\.joinTokenFile \S*\/nope\.token does not exist$/],
        ["serviceAccountTokenFile: sa.token", /node\.serviceAccountTokenFile \S*\/sa\.token does not exist$/],
        ["joinTokenFile: token-dir", /node\.joinTokenFile \S*\/token-dir cannot be read \(EISDIR\)$/],
        ["joinTokenFile: empty.token", /node\.joinTokenFile \S*\/empty\.token is empty$/],
      ] as const
    ) {
      const path = join(dir.path, "token-file.yaml");
      await writeFile(
        path,
        base.replace("stateDir: state", "stateDir: token-state").replace(
          "joinTokenFile: node.token",
          credential,
        ),
      );
      running = await startAgent(path);
      assert.equal(await exitCodeOf(running, credential), 1, credential);
      const message = running.stderr.join("").trim();
      assert.equal(message.split("\n").length, 1, message);
      assert.match(
        message,
        /^meshauth: ERR_NODE_BOOTSTRAP_FAILED: cannot obtain the node identity .*: the bearer token is missing: /,
      );
      assert.match(message, reason);
    }
  });
});
