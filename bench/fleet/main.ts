// bench/fleet: N simulated workloads over M simulated node agents against two CA replicas
// (`meshauth ca serve`, TLS, each its own process) on one PostgreSQL, on this machine.
//
//   npm run bench:fleet [-- --workloads 100000 --agents 100 --ttl-seconds 3600
//                          --steady-seconds 120 --outage-minutes 30 --global-rate 300]
//
// Steady state: the fleet starts as if it had been running (each workload holds a certificate
// issued at a random point of its renewal cycle) and renews in real time; the report gives the
// issuance rate, the CA's CPU per issuance (both replicas, from /proc), PostgreSQL's CPU and
// growth per issuance and per day, and the p50/p99 of a renewal's request.
//
// Renewal storm: the replicas stop, and the fleet lives through --outage-minutes without them
// in simulated time: every workload whose renewal came due meanwhile tried, failed (a refused
// connection: no Retry-After) and backed off with the agent's own renewalRetryWait, again and again
// until the outage's end; then the simulated clock jumps ahead by the outage and the replicas
// start again, into the attempts the replay scheduled. Compressing the outage is faithful
// because during it nothing reaches the CA: the only effect of those 30 minutes is each
// workload's backoff state and next attempt, which the replay computes with the same code and
// randomness as the agent; from the CA's return on, everything runs in real time against the
// real CA. The report gives the peak request rate the CA saw, how its limits answered, and the
// time until every workload renewed, and how many certificates expired before renewal.
import { spawn } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { generateKeyPair, SpiffeId } from "../../mod.ts";
import { createJoinToken, initRoot, loadConfig, openKeyManager, PostgresStore } from "../../ca-server/mod.ts";
import { Backoff, CaClient, type CaCredential, obtainSvid } from "../../agent/mod.ts";
import { renewalRetryWait } from "../../agent/lifecycle/backoff.ts";
import { startPostgres } from "../../tests/ca-server/postgres.ts";
import { httpsCall } from "../../tests/faults/support.ts";
import { type AttemptRecord, SimClock, SimulatedAgent, type SimWorkload } from "./simulated-agent.ts";

const { values } = parseArgs({
  options: {
    workloads: { type: "string", default: "100000" },
    agents: { type: "string", default: "100" },
    "ttl-seconds": { type: "string", default: "3600" },
    "steady-seconds": { type: "string", default: "120" },
    "outage-minutes": { type: "string", default: "30" },
    "global-rate": { type: "string", default: "0" },
    "max-storm-seconds": { type: "string", default: "1200" },
    scenario: { type: "string", default: "all" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:fleet [-- --workloads 100000 --agents 100 --ttl-seconds 3600
         --steady-seconds 120 --outage-minutes 30 --global-rate 0 --scenario all|steady]

Runs two CA replicas on one PostgreSQL and a fleet of simulated agents and workloads; prints
the steady state (issuance rate, CA CPU per issuance, PostgreSQL growth per day, renewal p99),
then a renewal storm after an outage of --outage-minutes (compressed: see the file's header).
--global-rate sets the CA's rateLimit.global (0: none).`);
  process.exit(0);
}
const WORKLOADS = Number(values.workloads);
const AGENTS = Number(values.agents);
const TTL_SECONDS = Number(values["ttl-seconds"]);
const STEADY_SECONDS = Number(values["steady-seconds"]);
const OUTAGE_MS = Number(values["outage-minutes"]) * 60_000;
const GLOBAL_RATE = Number(values["global-rate"]);
const MAX_STORM_SECONDS = Number(values["max-storm-seconds"]);
const ROOT = new URL("../..", import.meta.url).pathname;
const TD = "fleet.test";
const TICKS_PER_SECOND = 100;
const RENEWAL = { ratio: 0.5, jitter: 0.1 };
const BACKOFF = { initialMs: 1000, maxMs: 60_000 };

const log = (message: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** CPU seconds (user + system) of a process. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** Resident memory of a process, in MiB. */
function rssMiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** The postmaster listening on `port` and every process it started. */
function postgresPids(port: number): number[] {
  const stats = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map((pid) => {
    try {
      return {
        pid: Number(pid),
        ppid: Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[1]),
        cmdline: readFileSync(`/proc/${pid}/cmdline`, "utf8"),
      };
    } catch {
      return undefined;
    }
  }).filter((s) => s !== undefined);
  const master = stats.find((s) => s.cmdline.includes("postgres") && s.cmdline.includes(`-p\0${port}`));
  if (!master) return [];
  return [master.pid, ...stats.filter((s) => s.ppid === master.pid).map((s) => s.pid)];
}

const percentile = (sorted: number[], p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;

/** A min-heap of workloads by due time (entries go stale when a workload is rescheduled). */
class DueHeap {
  readonly #items: { dueAt: number; workload: SimWorkload }[] = [];
  get size(): number {
    return this.#items.length;
  }
  push(workload: SimWorkload): void {
    const items = this.#items;
    items.push({ dueAt: workload.dueAt, workload });
    for (let i = items.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (items[parent].dueAt <= items[i].dueAt) break;
      [items[parent], items[i]] = [items[i], items[parent]];
      i = parent;
    }
  }
  peek(): number | undefined {
    return this.#items[0]?.dueAt;
  }
  pop(): { dueAt: number; workload: SimWorkload } | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length && last) {
      items[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && items[l].dueAt < items[m].dueAt) m = l;
        if (r < items.length && items[r].dueAt < items[m].dueAt) m = r;
        if (m === i) break;
        [items[m], items[i]] = [items[i], items[m]];
        i = m;
      }
    }
    return top;
  }
  clear(): void {
    this.#items.length = 0;
  }
}

const dir = await mkdtemp(join(tmpdir(), "meshauth-fleet-"));
const db = await startPostgres();
const replicas: { pid: number; port: number; url: string; stop: () => Promise<void> }[] = [];
let exitCode = 0;
try {
  log(
    `fleet: ${WORKLOADS} workloads on ${AGENTS} agents, ${TTL_SECONDS} s certificates, 2 CA replicas on PostgreSQL`,
  );
  const perAgent = Math.ceil(WORKLOADS / AGENTS);
  const idOf = (agent: number, i: number) => `spiffe://${TD}/ns/node-${agent}/sa/w${i}`;
  const nodes: Record<string, { workloads: string[] }> = {};
  for (let a = 0; a < AGENTS; a++) {
    nodes[`node-${a}`] = {
      workloads: Array.from({ length: Math.min(perAgent, WORKLOADS - a * perAgent) }, (_, i) => idOf(a, i)),
    };
  }
  const configPath = join(dir, "ca.json");
  await writeFile(
    configPath,
    JSON.stringify({
      trustDomain: TD,
      dataDir: join(dir, "data"),
      listen: { host: "127.0.0.1", port: 0 },
      store: { kind: "postgres", url: db.url, maxConnections: 10 },
      issuance: { defaultTtlSeconds: TTL_SECONDS, maxTtlSeconds: Math.max(TTL_SECONDS, 86400) },
      rateLimit: {
        requestsPerSecond: 5,
        burst: 50,
        ...(GLOBAL_RATE > 0 ? { global: { requestsPerSecond: GLOBAL_RATE, burst: 2 * GLOBAL_RATE } } : {}),
      },
      nodes,
      log: { level: "info" },
    }),
  );
  const config = await loadConfig({ path: configPath });
  await initRoot(config, openKeyManager(config));
  const ports = [await freePort(), await freePort()];
  const startReplica = async (i: number) => {
    const out = createWriteStream(join(dir, `replica-${i}.log`), { flags: "a" });
    await new Promise((resolve) => out.once("open", resolve));
    const child = spawn(process.execPath, [
      "--import",
      "tsx",
      "cli/main.ts",
      "ca",
      "serve",
      "--config",
      configPath,
    ], {
      cwd: ROOT,
      env: { ...process.env, MESHAUTH_LISTEN_PORT: String(ports[i]) },
      stdio: ["ignore", out, out],
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const url = `https://127.0.0.1:${ports[i]}`;
    for (let t = 0;; t++) {
      const text = await readFile(join(dir, `replica-${i}.log`), "utf8").catch(() => "");
      if (text.split("\n").filter((l) => l.includes('"msg":"listening"')).length > (replicas[i] ? 1 : 0)) {
        break;
      }
      if (child.exitCode !== null) throw new Error(`replica ${i} exited:\n${text.slice(-2000)}`);
      if (t > 600) throw new Error(`replica ${i} did not start in 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    replicas[i] = {
      pid: child.pid!,
      port: ports[i],
      url,
      stop: async () => {
        child.kill("SIGTERM");
        await exited;
      },
    };
  };
  await startReplica(0);
  await startReplica(1);
  const bundlePem = await readFile(join(dir, "data", "bundle.pem"), "utf8");
  log(`replicas listening on ${replicas.map((r) => r.url).join(" and ")}`);

  const store = new PostgresStore({ connectionString: db.url, maxConnections: 2 });
  await store.open();
  const clock = new SimClock();
  const keys = await Promise.all(Array.from({ length: 64 }, () => generateKeyPair("ECDSA-P256")));
  const attempts: AttemptRecord[] = [];
  /** When (real time) each workload last renewed since the mark. */
  let renewedSinceMark = new Map<SimWorkload, number>();
  const workloads: SimWorkload[] = [];
  const agents: SimulatedAgent[] = [];
  const clients: CaClient[] = [];
  // Each agent bootstraps its node identity with a node join token, as `meshauth agent` does,
  // and is spread over the replicas as a Service's connections would be.
  for (let a = 0; a < AGENTS; a++) {
    const client = new CaClient({
      url: replicas[a % 2].url,
      caCertificatesPem: bundlePem,
      timeoutMs: 10_000,
      // Each node from an address of its own, as in a cluster: the CA's address buckets are per
      // node, not one for the whole fleet.
      localAddress: `127.0.${1 + Math.floor(a / 250)}.${1 + (a % 250)}`,
    });
    clients.push(client);
    const { token } = await createJoinToken(store, { role: "node", node: `node-${a}`, ttlSeconds: 3600 });
    const nodeSvid = await obtainSvid({
      client,
      id: SpiffeId.parse(`spiffe://${TD}/node/node-${a}`),
      credential: { kind: "token", token },
      ttlSeconds: 86400,
    });
    const credential: CaCredential = {
      kind: "mtls",
      certificateChainPem: nodeSvid.certificateChainPem,
      privateKeyPem: nodeSvid.privateKeyPem,
    };
    const agent = new SimulatedAgent({
      node: `node-${a}`,
      client,
      credential,
      clock,
      keys,
      renewal: RENEWAL,
      backoff: BACKOFF,
      onAttempt: (r) => attempts.push(r),
      onRenewed: (w) => renewedSinceMark.set(w, Date.now()),
    });
    agents.push(agent);
    // As if the fleet had been running: each workload's certificate is at a random point of
    // its renewal cycle, so renewals come due uniformly over the next cycle.
    const lifetimeMs = (TTL_SECONDS + 30) * 1000;
    for (const id of nodes[`node-${a}`].workloads) {
      const fraction = RENEWAL.ratio - RENEWAL.jitter * Math.random();
      const dueAt = clock.now() + Math.random() * fraction * lifetimeMs;
      const notBefore = dueAt - fraction * lifetimeMs;
      workloads.push({
        id: SpiffeId.parse(id),
        agent,
        notBefore,
        notAfter: notBefore + lifetimeMs,
        dueAt,
        backoff: new Backoff(BACKOFF),
        isBusy: false,
        uncoveredMs: 0,
        renewals: 0,
      });
    }
  }
  await store.close();
  log(`${AGENTS} node identities bootstrapped; ${workloads.length} workloads scheduled`);

  // The scheduler: every workload due is handed to its agent (which runs 8 at a time).
  const heap = new DueHeap();
  for (const w of workloads) heap.push(w);
  let isPaused = false;
  let inFlight = 0;
  let expiredBeforeRenewal = 0;
  const dispatch = () => {
    if (isPaused) return;
    const now = clock.now();
    while (heap.size && heap.peek()! <= now) {
      const { dueAt, workload } = heap.pop()!;
      if (workload.isBusy || dueAt !== workload.dueAt) continue;
      workload.isBusy = true;
      inFlight++;
      const expiredAt = workload.notAfter;
      void workload.agent.renew(workload).finally(() => {
        inFlight--;
        workload.isBusy = false;
        // Renewed, but the certificate it replaced had run out: the time the workload went
        // without a valid one (the agent keeps the old files until then, never fewer).
        if (workload.notAfter !== expiredAt && expiredAt < clock.now()) {
          workload.uncoveredMs += clock.now() - expiredAt;
          expiredBeforeRenewal++;
        }
        heap.push(workload);
      });
    }
  };
  const ticker = setInterval(dispatch, 10);

  const caCpu = () => replicas.reduce((sum, r) => sum + cpuSeconds(r.pid), 0);
  const pgCpu = () => postgresPids(db.port).reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const pgClient = new pg.Client({ connectionString: db.url });
  await pgClient.connect();
  const pgSizes = async () => {
    const { rows: [row] } = await pgClient.query(
      `SELECT pg_database_size(current_database())::float8 AS db,
              pg_total_relation_size('meshauth_certificates')::float8 AS certificates,
              pg_total_relation_size('meshauth_audit')::float8 AS audit`,
    );
    return row as { db: number; certificates: number; audit: number };
  };
  const issuedAtCa = async () => {
    const { rows: [row] } = await pgClient.query("SELECT count(*)::float8 AS n FROM meshauth_certificates");
    return Number(row.n);
  };
  const results: Record<string, unknown> = {};
  /** Both replicas' counts: rate-limit refusals by bucket, and the issuance time histogram. */
  const caMetrics = async () => {
    const limited: Record<string, number> = {};
    const buckets = new Map<number, number>();
    for (const r of replicas) {
      const answer = await httpsCall(`${r.url}/metrics`, { ca: bundlePem });
      for (const line of answer.body.toString().split("\n")) {
        let m = /^meshauth_ca_rate_limited_total\{bucket="(\w+)"\} (\d+)/.exec(line);
        if (m) limited[m[1]] = (limited[m[1]] ?? 0) + Number(m[2]);
        m = /^meshauth_ca_issuance_duration_seconds_bucket\{le="([^"]+)"\} (\d+)/.exec(line);
        if (m) {
          const le = m[1] === "+Inf" ? Infinity : Number(m[1]);
          buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
        }
      }
    }
    return { limited, buckets };
  };
  /** The CA's own issuance time (authenticate, sign, record) at `q`, from two histogram readings. */
  const caQuantileMs = (before: Map<number, number>, after: Map<number, number>, q: number) => {
    const bounds = [...after.keys()].sort((a, b) => a - b);
    const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
    const le = bounds.find((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0) >= q * total);
    return le === undefined || le === Infinity ? `> ${bounds.at(-2)! * 1000} ms` : `<= ${le * 1000} ms`;
  };

  if (values.scenario === "all" || values.scenario === "steady") {
    log("steady state: warming up for 20 s");
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    const t0 = Date.now();
    const cpu0 = caCpu();
    const pg0 = pgCpu();
    const size0 = await pgSizes();
    const issued0 = await issuedAtCa();
    const first = attempts.length;
    const metrics0 = await caMetrics();
    for (let s = 0; s < STEADY_SECONDS; s += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      log(`steady: ${attempts.length - first} renewals in ${s + 10} s`);
    }
    const seconds = (Date.now() - t0) / 1000;
    const issued = (await issuedAtCa()) - issued0;
    const size1 = await pgSizes();
    const window = attempts.slice(first);
    const latencies = window.filter((a) => a.outcome === "201").map((a) => a.latencyMs).sort((a, b) => a - b);
    const perDay = (issued / seconds) * 86400;
    const steady = {
      workloads: workloads.length,
      agents: AGENTS,
      ttlSeconds: TTL_SECONDS,
      seconds: Math.round(seconds),
      issuedPerSecond: +(issued / seconds).toFixed(1),
      expectedPerSecond: +(workloads.length / (TTL_SECONDS + 30) / (RENEWAL.ratio - RENEWAL.jitter / 2))
        .toFixed(1),
      failedAttempts: window.filter((a) => a.outcome !== "201").length,
      caCpuMsPerIssuance: +(((caCpu() - cpu0) * 1000) / issued).toFixed(2),
      caCpuCoresUsed: +((caCpu() - cpu0) / seconds).toFixed(3),
      postgresCpuMsPerIssuance: +(((pgCpu() - pg0) * 1000) / issued).toFixed(2),
      postgresBytesPerIssuance: Math.round((size1.db - size0.db) / issued),
      certificateRowBytesPerIssuance: Math.round((size1.certificates - size0.certificates) / issued),
      auditBytesPerIssuance: Math.round((size1.audit - size0.audit) / issued),
      issuancesPerDay: Math.round(perDay),
      postgresGrowthPerDayMiB: Math.round((((size1.db - size0.db) / issued) * perDay) / 2 ** 20),
      renewalLatencyMs: {
        p50: +percentile(latencies, 0.5).toFixed(1),
        p99: +percentile(latencies, 0.99).toFixed(1),
      },
      caIssuanceTime: {
        p50: caQuantileMs(metrics0.buckets, (await caMetrics()).buckets, 0.5),
        p99: caQuantileMs(metrics0.buckets, (await caMetrics()).buckets, 0.99),
      },
      caRssMiB: replicas.map((r) => Math.round(rssMiB(r.pid))),
    };
    results.steady = steady;
    console.log(`\nsteady state:\n${JSON.stringify(steady, null, 2)}\n`);
  }

  if (values.scenario === "all" || values.scenario === "storm") {
    log(`renewal storm: the replicas stop; ${OUTAGE_MS / 60_000} min of outage replayed in simulated time`);
    isPaused = true;
    await Promise.all(replicas.map((r) => r.stop()));
    // What was in flight fails against the stopped replicas and reschedules itself.
    while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 50));
    const outageStart = clock.now();
    const outageEnd = outageStart + OUTAGE_MS;
    let failedDuringOutage = 0;
    let dueDuringOutage = 0;
    for (const w of workloads) {
      if (w.dueAt < outageEnd) dueDuringOutage++;
      // Each attempt meets a refused connection: no Retry-After, the agent's backoff, bounded
      // by what is left of the certificate, as the agent's renewalRetryWait.
      while (w.dueAt < outageEnd) {
        w.dueAt += renewalRetryWait(w.backoff, { retryAfterMs: 0, certificateMsLeft: w.notAfter - w.dueAt });
        failedDuringOutage++;
      }
    }
    clock.offsetMs += OUTAGE_MS;
    heap.clear();
    for (const w of workloads) heap.push(w);
    const certificatesExpiredInOutage = workloads.filter((w) => w.notAfter < clock.now()).length;
    log(
      `replayed: ${dueDuringOutage} workloads came due during the outage and failed ${failedDuringOutage} ` +
        `attempts; ${certificatesExpiredInOutage} certificates expired before the CA came back`,
    );
    await startReplica(0);
    await startReplica(1);
    for (const client of clients) client.setTrustAnchors(bundlePem);
    const backAt = Date.now();
    renewedSinceMark = new Map();
    expiredBeforeRenewal = 0;
    for (const w of workloads) w.uncoveredMs = 0;
    const first = attempts.length;
    isPaused = false;
    // Every workload that came due during the outage is backing off now; the storm is over
    // once each of them has renewed.
    const mustRenew = workloads.filter((w) => w.backoff.failures > 0);
    const renewedCount = () => mustRenew.filter((w) => renewedSinceMark.has(w)).length;
    log(`CA back: ${mustRenew.length} workloads to renew, each waiting out its backoff`);
    const cpu0 = caCpu();
    const metrics0 = await caMetrics();
    while (Date.now() - backAt < MAX_STORM_SECONDS * 1000) {
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      const done = renewedCount();
      const recent = attempts.slice(first).filter((a) => a.at > Date.now() - 10_000);
      log(
        `storm +${
          Math.round((Date.now() - backAt) / 1000)
        } s: ${done} / ${mustRenew.length} renewed; last 10 s at ` +
          `the CA: ${(recent.length / 10).toFixed(0)} requests/s, ` +
          `${(recent.filter((a) => a.outcome === "201").length / 10).toFixed(0)} issued/s, ` +
          `${(recent.filter((a) => a.outcome === "429").length / 10).toFixed(0)} refused 429/s`,
      );
      if (done === mustRenew.length) break;
    }
    const window = attempts.slice(first);
    const perSecond = new Map<number, number>();
    for (const a of window) {
      perSecond.set(
        Math.floor((a.at - backAt) / 1000),
        (perSecond.get(Math.floor((a.at - backAt) / 1000)) ?? 0) + 1,
      );
    }
    const issuedTimes = window.filter((a) => a.outcome === "201");
    const answerLatencies = window.filter((a) => a.outcome !== "unreachable").map((a) => a.latencyMs).sort((
      a,
      b,
    ) => a - b);
    const doneCount = renewedCount();
    const uncovered = workloads.filter((w) => w.uncoveredMs > 0).map((w) => w.uncoveredMs).sort((a, b) =>
      a - b
    );
    const storm = {
      outageMinutes: OUTAGE_MS / 60_000,
      dueDuringOutage,
      attemptsFailedDuringOutage: failedDuringOutage,
      certificatesExpiredDuringOutage: certificatesExpiredInOutage,
      toRenew: mustRenew.length,
      renewed: doneCount,
      secondsUntilAllRenewed: doneCount === mustRenew.length
        ? Math.round((Math.max(...mustRenew.map((w) => renewedSinceMark.get(w)!)) - backAt) / 1000)
        : null,
      peakRequestsPerSecondAtCa: Math.max(...perSecond.values()),
      meanIssuedPerSecond: +(issuedTimes.length / ((Date.now() - backAt) / 1000)).toFixed(1),
      answers: {
        issued: issuedTimes.length,
        rateLimited429: window.filter((a) => a.outcome === "429").length,
        notReady503: window.filter((a) => a.outcome === "503").length,
        other: window.filter((a) => a.outcome === "other").length,
        unreachable: window.filter((a) => a.outcome === "unreachable").length,
      },
      answerLatencyMs: {
        p50: +percentile(answerLatencies, 0.5).toFixed(1),
        p99: +percentile(answerLatencies, 0.99).toFixed(1),
      },
      caCpuCoresUsed: +((caCpu() - cpu0) / ((Date.now() - backAt) / 1000)).toFixed(2),
      rateLimitedByBucket: Object.fromEntries(
        Object.entries((await caMetrics()).limited).map(([k, v]) => [k, v - (metrics0.limited[k] ?? 0)]),
      ),
      caIssuanceTime: {
        p50: caQuantileMs(metrics0.buckets, (await caMetrics()).buckets, 0.5),
        p99: caQuantileMs(metrics0.buckets, (await caMetrics()).buckets, 0.99),
      },
      certificatesExpiredBeforeRenewal: expiredBeforeRenewal,
      longestWithoutValidCertificateSeconds: uncovered.length ? Math.round(uncovered.at(-1)! / 1000) : 0,
      requestsPerSecondBySecond: [...perSecond.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n),
    };
    results.storm = storm;
    const { requestsPerSecondBySecond, ...printed } = storm;
    console.log(`\nrenewal storm:\n${JSON.stringify(printed, null, 2)}`);
    console.log(
      `requests per second at the CA, each second from its return:\n${requestsPerSecondBySecond.join(" ")}\n`,
    );
  }
  clearInterval(ticker);
  await pgClient.end();
  await Promise.all(clients.map((c) => c.close()));
  await writeFile(join(ROOT, "bench", "fleet", "last-run.json"), JSON.stringify(results, null, 2) + "\n")
    .catch(
      () => {},
    );
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  await Promise.all(replicas.map((r) => r.stop().catch(() => {})));
  await db.stop();
  await rm(dir, { recursive: true, force: true });
}
process.exit(exitCode);
