// bench/agent.ts: the node agent (`meshauth agent`, the built dist/cli.js, as users run it)
// against a CA (`meshauth ca serve`, also built) on 127.0.0.1, both as their own processes:
//
//   - time from a workload added (its drop-in file written) to its files on disk (the agent's
//     "delivered" log line), p50 and p99: for --workloads dropped in at once (a node whose pods
//     all start together), then for --trickle more added one at a time (nothing else going on);
//   - the agent's RSS above its idle RSS (node identity held, warmed up by the one-by-one
//     workloads, then holding none) once the workloads are delivered and it has settled (goal:
//     at most 30 MB for 1,000): thirty samples over 15 s each, reported as lowest, median and
//     peak, since V8 gives memory back in steps;
//   - CPU per renewal: the agent's CPU time over a wave of renewals (every certificate lives
//     --ttl-seconds, so all renew in one window) divided by the renewals, beside the CA's CPU
//     per issuance over the same window, as the peer a renewal costs on the other side.
//
//   npm run bench:agent [-- --workloads 1000 --trickle 100 --ttl-seconds 60]
//
// MESHAUTH_BENCH_AGENT_FLAGS passes Node flags to the agent's process (`--cpu-prof`,
// `--max-semi-space-size=16`, ...). The CA runs with `rateLimit: false`: its per-identity limit
// counts the node as one caller for all its workloads (at the defaults, 1,000 workloads would
// take about three minutes; see docs/agent.md). CPU and RSS come from /proc (Linux). The
// machine's cores are shared with the CA.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  createJoinToken,
  FileStore,
  initRoot,
  loadAuthorities,
  loadConfig,
  openKeyManager,
} from "../ca-server/mod.ts";

const { values } = parseArgs({
  options: {
    workloads: { type: "string", default: "1000" },
    trickle: { type: "string", default: "100" },
    "ttl-seconds": { type: "string", default: "60" },
    connections: { type: "string", default: "1" },
    "pods-dir": { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:agent [-- --workloads 1000 --trickle 100 --ttl-seconds 60]

Runs the built meshauth CA and agent (dist/cli.js; rebuilt when older than the sources) on
127.0.0.1 and prints: time from a workload's drop-in file to its delivered files (p50/p99) for
--workloads added at once and --trickle added one by one, the agent's RSS above idle (lowest,
median and peak of 30 samples), and the agent's CPU per renewal beside the CA's CPU per
issuance. The CA runs with rateLimit: false (its per-identity limit counts the node as one
caller).

Options:
  --workloads <n>     workloads added at once (default 1000)
  --trickle <n>       workloads added one by one first (default 100)
  --ttl-seconds <n>   certificate lifetime, for the renewal wave (default 60)
  --connections <n>   ca.connectionsPerCredential of the agent (default 1)
  --pods-dir <dir>    where the workloads' directories go (default /dev/shm)
Environment:
  MESHAUTH_BENCH_AGENT_FLAGS   Node flags for the agent's process, e.g. "--cpu-prof"`);
  process.exit(0);
}
const WORKLOADS = Number(values.workloads);
const TRICKLE = Number(values.trickle);
const TTL_SECONDS = Number(values["ttl-seconds"]);
const ROOT = new URL("..", import.meta.url).pathname;
const CLI = join(ROOT, "dist/cli.js");
const TD = "bench.test";
const TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(join(ROOT, dir), { recursive: true }) as string[]) {
    if (entry.endsWith(".ts")) newest = Math.max(newest, statSync(join(ROOT, dir, entry)).mtimeMs);
  }
  return newest;
}

function ensureBuilt(): void {
  let built = 0;
  try {
    built = statSync(CLI).mtimeMs;
  } catch {
    // not built
  }
  const newest = Math.max(...["agent", "ca-server", "cli", "internal", "lib"].map(newestSource));
  if (built < newest) {
    console.log("building dist/ (JavaScript only) ...");
    const r = spawnSync(process.execPath, ["scripts/build.mjs", "--skip-types"], {
      cwd: ROOT,
      stdio: "inherit",
    });
    if (r.status !== 0) throw new Error("the build failed");
  }
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Resident set size of a process, in MiB. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

interface Proc {
  child: ChildProcess;
  logs: Record<string, any>[];
  onLog: Set<(entry: Record<string, any>) => void>;
}

function start(args: string[], nodeFlags: string[] = []): Proc {
  const child = spawn(process.execPath, [...nodeFlags, CLI, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const proc: Proc = { child, logs: [], onLog: new Set() };
  let buffered = "";
  child.stdout!.on("data", (d) => {
    buffered += d;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) {
      try {
        const entry = JSON.parse(line);
        proc.logs.push(entry);
        for (const f of proc.onLog) f(entry);
      } catch {
        // not a log line
      }
    }
  });
  return proc;
}

function waitForLog(
  proc: Proc,
  test: (e: Record<string, any>) => boolean,
  timeoutMs = 120_000,
): Promise<void> {
  if (proc.logs.some(test)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out waiting for a log line")), timeoutMs);
    const listener = (e: Record<string, any>) => {
      if (!test(e)) return;
      clearTimeout(timer);
      proc.onLog.delete(listener);
      resolve();
    };
    proc.onLog.add(listener);
  });
}

/** Thirty RSS samples over 15 s: V8's memory reducer shrinks the heap after a few quiet seconds. */
async function rssSamples(pid: number): Promise<{ lowest: number; median: number; peak: number }> {
  const samples: number[] = [];
  for (let i = 0; i < 30; i++) {
    await sleep(500);
    samples.push(rssMiB(pid));
  }
  samples.sort((a, b) => a - b);
  return { lowest: samples[0], median: percentile(samples, 0.5), peak: samples[samples.length - 1] };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function metric(url: string, line: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

async function main(): Promise<void> {
  ensureBuilt();
  const dir = await mkdtemp(join(tmpdir(), "meshauth-bench-agent-"));
  const procs: Proc[] = [];
  let podsRoot: string | undefined;
  try {
    const names = Array.from({ length: WORKLOADS + TRICKLE }, (_, i) => `w${String(i).padStart(5, "0")}`);
    const caConfigPath = join(dir, "ca.json");
    await writeFile(
      caConfigPath,
      JSON.stringify({
        trustDomain: TD,
        dataDir: join(dir, "ca"),
        listen: { host: "127.0.0.1", port: 0 },
        // The agent is one requester for all its workloads; the CA's per-identity limit is
        // for callers that are not node agents.
        rateLimit: false,
        nodes: { "bench-node": { workloads: names.map((n) => `spiffe://${TD}/${n}`) } },
      }),
    );
    const caConfig = await loadConfig({ path: caConfigPath });
    await initRoot(caConfig, openKeyManager(caConfig));
    const bundle = join(dir, "bundle.pem");
    await writeFile(bundle, (await loadAuthorities(caConfig, openKeyManager(caConfig))).bundlePem());
    const store = new FileStore(join(dir, "ca", "store"));
    await store.open();
    const { token } = await createJoinToken(store, { role: "node", node: "bench-node", ttlSeconds: 3600 });
    await store.close();
    await writeFile(join(dir, "node.token"), token);

    const ca = start(["ca", "serve", "--config", caConfigPath]);
    procs.push(ca);
    await waitForLog(ca, (e) => e.msg === "listening");
    const caUrl = ca.logs.find((e) => e.msg === "listening")!.url as string;

    // Pod volumes for credentials are memory-backed (an emptyDir with medium Memory, a CSI
    // ephemeral volume): /dev/shm stands for them unless --pods-dir says otherwise.
    podsRoot = await mkdtemp(join(values["pods-dir"] ?? "/dev/shm", "meshauth-bench-pods-"));
    const drop = join(dir, "workloads.d");
    await mkdir(drop);
    const agentConfigPath = join(dir, "agent.json");
    await writeFile(
      agentConfigPath,
      JSON.stringify({
        trustDomain: TD,
        ca: { url: caUrl, trustBundleFile: bundle, connectionsPerCredential: Number(values.connections) },
        node: { name: "bench-node", joinTokenFile: "node.token" },
        stateDir: "state",
        workloadsDir: "workloads.d",
        delivery: { roots: [podsRoot] },
        workloadDefaults: { ttlSeconds: TTL_SECONDS },
        listen: { port: 0 },
      }),
    );
    // MESHAUTH_BENCH_AGENT_FLAGS: Node flags for the agent (--cpu-prof, say).
    const agent = start(
      ["agent", "--config", agentConfigPath],
      (process.env.MESHAUTH_BENCH_AGENT_FLAGS ?? "").split(" ").filter(Boolean),
    );
    procs.push(agent);
    await waitForLog(agent, (e) => e.msg === "ready");
    const statusUrl = agent.logs.find((e) => e.msg === "listening")!.url as string;
    const pid = agent.child.pid!;
    const delivered = new Map<string, number>();
    agent.onLog.add((e) => {
      if (e.msg === "delivered" && !delivered.has(e.workload)) delivered.set(e.workload, Date.parse(e.time));
    });
    const added = new Map<string, number>();

    // 1. One at a time, with nothing else going on.
    const trickle = names.slice(WORKLOADS);
    for (const name of trickle) {
      await writeFile(
        join(drop, `${name}.json`),
        JSON.stringify({ spiffeId: `spiffe://${TD}/${name}`, directory: join(podsRoot, name) }),
      );
      added.set(name, Date.now());
      while (!delivered.has(name)) await sleep(2);
    }
    const trickleLatencies = trickle.map((n) => delivered.get(n)! - added.get(n)!).sort((a, b) => a - b);

    // Idle: the agent warmed up by the workloads above (its code compiled, its pools open), then
    // holding none. Idle and loaded RSS alike: thirty samples over 15 s.
    for (const name of trickle) await rm(join(drop, `${name}.json`));
    while ((await metric(statusUrl, "meshauth_agent_workloads")) > 0) await sleep(100);
    const idleCpu0 = cpuSeconds(pid);
    const idleRss = await rssSamples(pid);
    const idleCpuPerSecond = (cpuSeconds(pid) - idleCpu0) / 15;

    // 2. All at once.
    const burst = names.slice(0, WORKLOADS);
    const cpuBurst0 = cpuSeconds(pid);
    for (const name of burst) {
      await writeFile(
        join(drop, `${name}.json`),
        JSON.stringify({ spiffeId: `spiffe://${TD}/${name}`, directory: join(podsRoot, name) }),
      );
      added.set(name, Date.now());
    }
    const burstStarted = added.get(burst[0])!;
    while (burst.some((n) => !delivered.has(n))) await sleep(50);
    const burstSeconds = (Math.max(...burst.map((n) => delivered.get(n)!)) - burstStarted) / 1000;
    const burstCpu = cpuSeconds(pid) - cpuBurst0;
    const burstLatencies = burst.map((n) => delivered.get(n)! - added.get(n)!).sort((a, b) => a - b);

    // 3. Settled RSS with every workload held.
    const heldRss = await rssSamples(pid);

    // 4. A renewal wave: every certificate above renews between ~45% and 50% of its life.
    const renewals0 = await metric(
      statusUrl,
      'meshauth_agent_renewals_total{kind="workload",reason="renewal"}',
    );
    const agentCpu0 = cpuSeconds(pid);
    const caCpu0 = cpuSeconds(ca.child.pid!);
    const waveStarted = Date.now();
    let renewals = 0;
    while (Date.now() - waveStarted < (TTL_SECONDS + 30) * 1000) {
      await sleep(1000);
      renewals =
        (await metric(statusUrl, 'meshauth_agent_renewals_total{kind="workload",reason="renewal"}')) -
        renewals0;
      if (renewals >= WORKLOADS) break;
    }
    const waveSeconds = (Date.now() - waveStarted) / 1000;
    const agentCpu = cpuSeconds(pid) - agentCpu0 - idleCpuPerSecond * waveSeconds;
    const caCpu = cpuSeconds(ca.child.pid!) - caCpu0;

    const ms = (n: number) => `${n.toFixed(0)} ms`;
    console.log(
      `\nnode agent, ${WORKLOADS} workloads (node ${process.version}, ${
        (await readdir(drop)).length
      } drop-in files; the CA with rateLimit: false${
        process.env.MESHAUTH_BENCH_AGENT_FLAGS
          ? `; agent flags ${process.env.MESHAUTH_BENCH_AGENT_FLAGS}`
          : ""
      })`,
    );
    console.log(
      `  added at once:   p50 ${ms(percentile(burstLatencies, 0.5))}, p99 ${
        ms(percentile(burstLatencies, 0.99))
      }, ` +
        `all ${WORKLOADS} on disk in ${burstSeconds.toFixed(1)} s (${
          (WORKLOADS / burstSeconds).toFixed(0)
        }/s), ` +
        `agent CPU ${(burstCpu * 1000 / WORKLOADS).toFixed(2)} ms per workload`,
    );
    if (TRICKLE) {
      console.log(
        `  added one by one: p50 ${ms(percentile(trickleLatencies, 0.5))}, p99 ${
          ms(percentile(trickleLatencies, 0.99))
        } (${TRICKLE} workloads; includes the directory watch's 100 ms debounce)`,
      );
    }
    const mib = (n: number) => n.toFixed(1);
    console.log(
      `  RSS (lowest / median / peak of 30 samples): idle ${mib(idleRss.lowest)} / ${
        mib(idleRss.median)
      } / ` +
        `${mib(idleRss.peak)} MiB, with ${WORKLOADS} workloads ${mib(heldRss.lowest)} / ${
          mib(heldRss.median)
        } / ` +
        `${mib(heldRss.peak)} MiB: above idle +${mib(heldRss.lowest - idleRss.lowest)} / ` +
        `+${mib(heldRss.median - idleRss.median)} / +${
          mib(heldRss.peak - idleRss.peak)
        } MiB (goal: at most 30 MiB)`,
    );
    console.log(
      `  renewal wave: ${renewals} renewals in ${waveSeconds.toFixed(0)} s; agent CPU ${
        (agentCpu * 1000 / Math.max(1, renewals)).toFixed(2)
      } ms per renewal (idle ${(idleCpuPerSecond * 1000).toFixed(1)} ms/s subtracted), ` +
        `CA CPU ${(caCpu * 1000 / Math.max(1, renewals)).toFixed(2)} ms per issuance: ratio ${
          (agentCpu / Math.max(caCpu, 1e-9)).toFixed(2)
        }`,
    );
  } finally {
    for (const p of procs) p.child.kill("SIGTERM");
    await Promise.all(
      procs.map((p) =>
        p.child.exitCode === null ? new Promise((resolve) => p.child.once("exit", resolve)) : undefined
      ),
    );
    await rm(dir, { recursive: true, force: true });
    if (podsRoot) await rm(podsRoot, { recursive: true, force: true });
  }
}

await main();
