// bench/ca.ts: loads the CA server with a bounded undici client at concurrency 1, 8 and 32
// and reports certificates per second, p50/p99 latency and the CPU that server and client
// used per certificate, side by side in the same run with a floor server per runtime,
// CloudFlare's cfssl and Smallstep's step-ca, as ratios.
//
//   npm run bench:ca [-- --seconds 5 --workers 2 --concurrency 1,8,32 --step-ca PATH]
//
// All servers run at once and are loaded in turn, one second each, round after round, so a
// change in the machine's speed (this one is a VM shared with other work, whose speed drifts by
// a third within a minute) falls on all of them alike instead of on whichever ran last.
//
// The servers: meshauth on Node and on Bun, each with fsync (its default: fdatasync before
// answering, grouped) and without (synced once a second); per runtime a floor server
// (bench/ca-floor-server.ts) that only parses the JSON body and does a CA's crypto (import the
// CSR's key, verify, sign): no CA on that runtime can be faster than its floor. cfssl (from
// PATH, Debian's golang-cfssl) signs with its default profile from an unauthenticated request
// and records nothing; step-ca (bench/ca-peers.ts says how it is found or built) authenticates
// a one-time JWT per request, keeps no database and serves only TLS.
//
// Every server signs P-256 CSRs with a P-256 CA on 127.0.0.1. meshauth runs with its
// production defaults apart from two settings: plain HTTP on loopback (as cfssl; TLS would cost
// every server the same), and its rate limit raised to 100,000 requests per second with a burst
// of 10,000 per key (the bench is one client address and one identity; the default, 5/s, would
// throttle it), but on: every request takes a token from its address's bucket and moves it to
// its identity's, in the buckets the CA's primary process keeps for its workers. It issues the
// full X509-SVID profile (URI SAN, critical CA:FALSE and key usage, both EKUs, SKI/AKI) after
// authenticating a join token, and records every issuance and its audit entry. Every 50th
// certificate of every server is parsed with node:crypto and its URI SAN compared with the
// CSR's: meshauth's must match (a mismatch counts as an error), the peers' are reported.
// The client runs on Node 24 when it is installed (it is cheaper per request than Node 20's)
// and shares the machine's cores with the servers.
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { createCsr, generateKeyPair } from "../mod.ts";
import { createJoinToken, FileStore } from "../ca-server/mod.ts";
import { ensureRuntimes, RUNTIME_BINARIES } from "../tests/runtimes/runtimes.mjs";
import {
  findStepCa,
  freePort,
  ROOT,
  startCfssl,
  type Started,
  startProcess,
  startStepCa,
  stop,
  type Target,
} from "./ca-peers.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    workers: { type: "string", default: "2" },
    concurrency: { type: "string", default: "1,8,32" },
    "step-ca": { type: "string", default: process.env.STEP_CA },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:ca [-- --seconds 5 --workers 2 --concurrency 1,8,32 --step-ca PATH]

Loads meshauth CA servers (on Node and on Bun, with and without fsync), a floor server per
runtime (JSON and crypto only), cfssl and step-ca (when found: --step-ca, STEP_CA, PATH, or
built by ../shared/peers/build-step-ca.sh) on 127.0.0.1 and prints certificates per second,
p50/p99 latency, server and client CPU per certificate and the ratios to the floor, cfssl and
step-ca at each concurrency, then checks issue 23's targets at c=8. All servers run at once and
take turns, one second each, for --seconds rounds per level, after a warm-up of 10 s each.`);
  process.exit(0);
}
const SECONDS = Number(values.seconds);
const WORKERS = Number(values.workers);
const LEVELS = values.concurrency!.split(",").map(Number);
/** Issue 23's targets, at concurrency 8. */
const TARGET = { concurrency: 8, ofFloor: 0.8, ofCfssl: 1.5, ofStepCa: 4, p99OfCfssl: 0.5 };
/** Raised so that one client address and one identity are never throttled; still on. */
const RATE_LIMIT = { requestsPerSecond: 100_000, burst: 10_000 };
const CHECK_EVERY = 50;
// Node 20 is past its end of life; Node 24 (from npm) runs the Node servers, and the client.
ensureRuntimes();
const NODE_24 = RUNTIME_BINARIES.node24;
const BUN = RUNTIME_BINARIES.bun;
const NODE_24_OR_THIS = existsSync(NODE_24) ? NODE_24 : process.execPath;
if (existsSync(NODE_24) && Number(process.versions.node.split(".")[0]) < 24) {
  const { status } = spawnSync(NODE_24, [
    "--import",
    "tsx",
    fileURLToPath(import.meta.url),
    ...process.argv.slice(2),
  ], {
    stdio: "inherit",
  });
  process.exit(status ?? 1);
}
const WARM_UP_MS = 10_000;
const TRUST_DOMAIN = "bench.example";
const ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;

type Kind = "meshauth" | "floor" | "cfssl" | "step-ca";
type Runtime = "node" | "bun";

interface Result {
  concurrency: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** Server CPU time (all its processes) per certificate: the figure load on the machine disturbs least. */
  serverCpuMs: number;
  /** The client's CPU per certificate, while it loaded this server. */
  clientCpuMs: number;
  /** Certificates parsed, and how many of them carried the CSR's URI SAN. */
  checked: number;
  withUri: number;
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

/** One concurrency level: each target gets `concurrency` request loops, one second at a time, in turn. */
async function measure(targets: Target[], concurrency: number, warmUpMs: number): Promise<Result[]> {
  const state = targets.map((target) => ({
    target,
    pool: new Pool(target.origin, {
      connections: concurrency,
      pipelining: 1,
      keepAliveTimeout: 10_000,
      connect: target.caPem ? { ca: target.caPem } : undefined,
    }),
    latencies: [] as number[],
    errors: 0,
    firstError: "",
    seconds: 0,
    serverCpuMs: 0,
    clientCpuMs: 0,
    lastCount: 0,
    checked: 0,
    withUri: 0,
  }));
  const runFor = async (s: (typeof state)[number], ms: number, record: boolean) => {
    const { target, pool } = s;
    s.target.prepare?.(Math.ceil(s.lastCount * 1.5 * (ms / 1000)) + 200);
    let count = 0;
    const deadline = performance.now() + ms;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const body = target.nextBody();
        const isChecked = ++count % CHECK_EVERY === 0 && record;
        const t0 = performance.now();
        try {
          const response = await pool.request({
            method: "POST",
            path: target.path,
            headers: target.headers,
            body,
          });
          const text = isChecked || response.statusCode !== target.expectStatus
            ? await response.body.text()
            : await response.body.dump();
          if (response.statusCode !== target.expectStatus) {
            throw new Error(`status ${response.statusCode}: ${String(text).slice(0, 200)}`);
          }
          if (record) s.latencies.push(performance.now() - t0);
          if (isChecked && target.certificateOf) {
            const pem = target.certificateOf(text as string);
            const san = pem ? new X509Certificate(pem).subjectAltName ?? "" : "";
            s.checked++;
            if (san.split(", ").includes(`URI:${ID}`)) s.withUri++;
            else if (target.name.startsWith("meshauth")) throw new Error(`certificate without ${ID}: ${san}`);
          }
        } catch (err) {
          if (record) s.errors++;
          s.firstError ||= (err as Error).message;
        }
      }
    }));
    s.lastCount = count / (ms / 1000);
  };
  for (const s of state) await runFor(s, warmUpMs, false);
  for (let round = 0; round < SECONDS; round++) {
    // Rotate who goes first, so no server always follows the same one.
    for (let i = 0; i < state.length; i++) {
      const s = state[(round + i) % state.length];
      const started = performance.now();
      const cpuBefore = processTreeCpuMs(s.target.pid);
      const clientBefore = process.cpuUsage();
      await runFor(s, 1000, true);
      const client = process.cpuUsage(clientBefore);
      s.clientCpuMs += (client.user + client.system) / 1000;
      s.serverCpuMs += processTreeCpuMs(s.target.pid) - cpuBefore;
      s.seconds += (performance.now() - started) / 1000;
    }
  }
  return await Promise.all(state.map(async (s) => {
    await s.pool.close();
    if (s.firstError) console.log(`  ${s.target.name} at c=${concurrency}: first error: ${s.firstError}`);
    s.latencies.sort((a, b) => a - b);
    const n = Math.max(1, s.latencies.length);
    return {
      concurrency,
      perSecond: s.latencies.length / s.seconds,
      p50Ms: percentile(s.latencies, 50),
      p99Ms: percentile(s.latencies, 99),
      errors: s.errors,
      serverCpuMs: s.serverCpuMs / n,
      clientCpuMs: s.clientCpuMs / n,
      checked: s.checked,
      withUri: s.withUri,
    };
  }));
}

/** How to run a TypeScript entry on a runtime. */
function command(runtime: Runtime, script: string, args: string[]): [string, string[]] {
  return runtime === "bun"
    ? [BUN, [script, ...args]]
    : [NODE_24_OR_THIS, ["--import", "tsx", script, ...args]];
}

/** Starts a server that answers `POST /v1/certificates` with 201, and waits until its workers listen. */
async function startIssuer(
  name: string,
  [cmd, args]: [string, string[]],
  port: number,
  csrs: string[],
  options: { headers?: Record<string, string>; isCertificateAnswer: boolean },
): Promise<Started> {
  const server = await startProcess(cmd, args, port);
  // With several workers, give the others a moment to listen too.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const bodies = csrs.map((csr) => JSON.stringify({ csr }));
  let n = 0;
  return {
    server,
    target: {
      name,
      origin: `http://127.0.0.1:${port}`,
      path: "/v1/certificates",
      nextBody: () => bodies[n++ % bodies.length],
      headers: { "content-type": "application/json", ...options.headers },
      expectStatus: 201,
      certificateOf: options.isCertificateAnswer
        ? (body) => JSON.parse(body).certificateChain?.[0]
        : undefined,
      pid: server.pid!,
    },
  };
}

async function startMeshauth(
  root: string,
  csrs: string[],
  runtime: Runtime,
  fsync: boolean,
): Promise<Started> {
  const dir = join(root, `${runtime}-${fsync ? "durable" : "no-fsync"}`);
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const configPath = join(dir, "meshauth.json");
  await writeFile(
    configPath,
    JSON.stringify({
      trustDomain: TRUST_DOMAIN,
      dataDir: join(dir, "meshauth"),
      store: { kind: "file", fsync },
      listen: { host: "127.0.0.1", port, plainHttp: true },
      rateLimit: RATE_LIMIT,
      workers: WORKERS,
      log: { level: "warn" },
    }),
  );
  execFileSync(...command("node", "cli/main.ts", ["ca", "init", "--config", configPath]), { cwd: ROOT });
  const store = new FileStore(join(dir, "meshauth", "store"));
  await store.open();
  const { token } = await createJoinToken(store, {
    role: "workload",
    spiffeId: ID,
    ttlSeconds: 3600,
    isSingleUse: false,
  });
  await store.close();
  return await startIssuer(
    `meshauth on ${runtime}, fsync ${fsync ? "on" : "off"}`,
    command(runtime, "cli/main.ts", ["ca", "serve", "--config", configPath]),
    port,
    csrs,
    { headers: { authorization: `Bearer ${token}` }, isCertificateAnswer: true },
  );
}

async function startFloor(csrs: string[], runtime: Runtime): Promise<Started> {
  const port = await freePort();
  return await startIssuer(
    `floor on ${runtime}`,
    command(runtime, "bench/ca-floor-server.ts", ["--port", String(port), "--workers", String(WORKERS)]),
    port,
    csrs,
    { isCertificateAnswer: false },
  );
}

/** The machine's `openssl speed ecdsap256` line: what its cores do per second, for the reader. */
function opensslSpeed(): string {
  try {
    const out = execFileSync("openssl", ["speed", "-seconds", "2", "ecdsap256"], {
      stdio: ["ignore", "pipe", "ignore"],
    })
      .toString();
    const line = out.split("\n").find((l) => l.includes("nistp256"))?.trim().split(/\s+/);
    return line ? `openssl speed ecdsap256 (one core): ${line.at(-2)} sign/s, ${line.at(-1)} verify/s` : "?";
  } catch {
    return "openssl speed: not available";
  }
}

interface Row {
  level: number;
  kind: Kind;
  runtime?: Runtime;
  name: string;
  result: Result;
}

const dir = await mkdtemp(join(tmpdir(), "meshauth-bench-ca-"));
const started: { started: Started; kind: Kind; runtime?: Runtime }[] = [];
try {
  const speed = opensslSpeed();
  // Distinct keys, so no server can profit from caching one public key.
  const csrs = await Promise.all(
    Array.from({ length: 256 }, async () => createCsr({ keys: await generateKeyPair(), id: ID })),
  );
  const runtimes: Runtime[] = existsSync(BUN) ? ["node", "bun"] : ["node"];
  const stepCaBinary = findStepCa(values["step-ca"]);
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  console.log(
    `bench/ca: ${SECONDS} one-second slices per server and level, taken in turn, after a warm-up (${
      WARM_UP_MS / 1000
    }s per server, then 1s per level); ${WORKERS} worker(s) per server; client on Node ${process.versions.node}; ` +
      runtimes.map((r) =>
        `${r} ${execFileSync(r === "bun" ? BUN : NODE_24_OR_THIS, ["--version"]).toString().trim()}`
      )
        .join(", ") +
      `\n${speed}\nload average at start: ${load}`,
  );
  for (const runtime of runtimes) {
    started.push(
      { started: await startMeshauth(dir, csrs, runtime, true), kind: "meshauth", runtime },
      { started: await startMeshauth(dir, csrs, runtime, false), kind: "meshauth", runtime },
      { started: await startFloor(csrs, runtime), kind: "floor", runtime },
    );
  }
  const cfssl = await startCfssl(join(dir, "cfssl"), csrs);
  if (cfssl) started.push({ started: cfssl, kind: "cfssl" });
  else console.log("cfssl is not installed (apt-get install golang-cfssl): no cfssl ratio.");
  if (stepCaBinary) {
    started.push({
      started: await startStepCa(stepCaBinary, join(dir, "step-ca"), csrs, ID),
      kind: "step-ca",
    });
  } else console.log("step-ca was not found (--step-ca PATH): no step-ca ratio.");
  const rows: Row[] = [];
  for (const [i, level] of LEVELS.entries()) {
    // The first level warms each server up for longer: Bun's JIT keeps compiling for about
    // ten seconds of load, and a CA runs for far longer than a bench.
    const results = await measure(started.map((s) => s.started.target), level, i === 0 ? WARM_UP_MS : 1000);
    for (const [j, result] of results.entries()) {
      const { kind, runtime } = started[j];
      rows.push({ level, kind, runtime, name: started[j].started.target.name, result });
    }
  }
  printTable(rows);
  printTargets(rows);
  console.log(
    `load average at end: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
  );
  for (const runtime of runtimes) {
    const recorded = certificateLines(join(dir, `${runtime}-durable`, "meshauth", "store"));
    console.log(`meshauth on ${runtime} (fsync on) recorded ${recorded} issuances durably during its run.`);
  }
} finally {
  for (const s of started) await stop(s.started.server);
  await rm(dir, { recursive: true, force: true });
}

/** Issuance records in a file store's journal, its archived segments included. */
function certificateLines(storeDir: string): number {
  const archive = join(storeDir, "archive");
  const files = [
    join(storeDir, "journal.jsonl"),
    ...(existsSync(archive) ? readdirSync(archive).map((f) => join(archive, f)) : []),
  ];
  return files.reduce((sum, file) => {
    const text = existsSync(file) ? readFileSync(file, "utf8") : "";
    return sum + text.split("\n").filter((line) => line.startsWith('{"kind":"certificate"')).length;
  }, 0);
}

function ratioTo(rows: Row[], row: Row, kind: Kind): number | undefined {
  const peer = rows.find((r) =>
    r.level === row.level && r.kind === kind && (kind !== "floor" || r.runtime === row.runtime)
  );
  return peer && row.kind !== kind ? row.result.perSecond / peer.result.perSecond : undefined;
}

function printTable(rows: Row[]): void {
  const fmt = (n: number | undefined, d = 0) => (n !== undefined && Number.isFinite(n) ? n.toFixed(d) : "-");
  const x = (n: number | undefined) => (n === undefined ? "-" : `${n.toFixed(2)}x`);
  const width = Math.max(...rows.map((r) => r.name.length));
  const header = [
    "certs/s",
    "p50 ms",
    "p99 ms",
    "server CPU",
    "client CPU",
    "x floor",
    "x cfssl",
    "x step-ca",
  ];
  console.log(
    `\n${"c".padStart(3)}  ${"server".padEnd(width)}  ${
      header.map((h) => h.padStart(11)).join("")
    }  URI SAN  errors`,
  );
  for (const row of rows) {
    const r = row.result;
    const cells = [
      fmt(r.perSecond),
      fmt(r.p50Ms, 2),
      fmt(r.p99Ms, 2),
      fmt(r.serverCpuMs, 3),
      fmt(r.clientCpuMs, 3),
      x(ratioTo(rows, row, "floor")),
      x(ratioTo(rows, row, "cfssl")),
      x(ratioTo(rows, row, "step-ca")),
    ];
    const san = row.kind === "floor" ? "-" : `${r.withUri}/${r.checked}`;
    console.log(
      `${String(row.level).padStart(3)}  ${row.name.padEnd(width)}  ${
        cells.map((c) => c.padStart(11)).join("")
      }  ${san.padStart(7)}  ${r.errors}`,
    );
  }
  console.log(
    "\nCPU columns are milliseconds per certificate: the server's (all its processes) and the client's while it" +
      "\nloaded that server; they are what other load on the machine disturbs least. The client shares the" +
      "\nmachine's cores with the servers. A floor server parses the JSON and does a CA's crypto and nothing" +
      "\nelse: no CA on its runtime can pass it. URI SAN: certificates parsed that carry the CSR's SPIFFE ID.",
  );
}

function printTargets(rows: Row[]): void {
  const at = rows.filter((r) => r.level === TARGET.concurrency);
  if (at.length === 0) {
    console.log(`\nthe targets are at concurrency ${TARGET.concurrency}, which this run did not measure`);
    return;
  }
  const find = (kind: Kind, runtime?: Runtime, fsync = true) =>
    at.find((r) =>
      r.kind === kind && (runtime === undefined || r.runtime === runtime) &&
      (kind !== "meshauth" || r.name.endsWith(fsync ? "fsync on" : "fsync off"))
    );
  const verdict = (what: string, value: number | undefined, goal: number, atMost = false) => {
    if (value === undefined || !Number.isFinite(value)) return console.log(`  ${what}: not measured`);
    const met = atMost ? value <= goal : value >= goal;
    console.log(
      `  ${what}: ${value.toFixed(2)} (goal ${atMost ? "<=" : ">="} ${goal}) ${met ? "met" : "MISSED"}`,
    );
  };
  console.log(`\nissue 23's targets at c=${TARGET.concurrency} (meshauth with fsync on, rate limit on):`);
  const cfssl = find("cfssl");
  const stepCa = find("step-ca");
  for (const runtime of ["node", "bun"] as const) {
    const ours = find("meshauth", runtime);
    const floor = find("floor", runtime);
    if (!ours) continue;
    verdict(
      `meshauth on ${runtime} / floor on ${runtime}`,
      floor && ours.result.perSecond / floor.result.perSecond,
      TARGET.ofFloor,
    );
    if (ours.result.errors) console.log(`  meshauth on ${runtime}: ${ours.result.errors} errors`);
  }
  const node = find("meshauth", "node");
  if (node) {
    verdict(
      "meshauth on node / cfssl",
      cfssl && node.result.perSecond / cfssl.result.perSecond,
      TARGET.ofCfssl,
    );
    verdict(
      "meshauth on node / step-ca",
      stepCa && node.result.perSecond / stepCa.result.perSecond,
      TARGET.ofStepCa,
    );
    verdict(
      "meshauth on node p99 / cfssl p99",
      cfssl && node.result.p99Ms / cfssl.result.p99Ms,
      TARGET.p99OfCfssl,
      true,
    );
  }
}
