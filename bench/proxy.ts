// bench/proxy.ts: the meshauth proxy pair against a HAProxy pair and a stunnel pair configured
// the same way, and a floor (bench/proxy-floor.ts), side by side in one run:
//
//   npm run bench:proxy [-- --seconds 4 --rounds 3 --connections 32 --bulk-seconds 3 --workers 1]
//
// Each peer is two sidecars: wrk -> client sidecar (plain) -> mutual TLS 1.3 (client and server
// certificates, both verified against the bundle) -> server sidecar -> upstream on 127.0.0.1.
// The upstream is a HAProxy answering `200 ok` itself (cheap, and the same for every peer); the
// bulk upstream a Node process that writes as fast as the pair takes it.
//
// Four measures per peer, taken in turns, round after round (this machine's speed drifts, and
// others share its two cores: turns spread that over every peer alike), the median reported:
//   keep-alive      wrk, --connections connections, requests/s; and p50/p99 latency added to a
//                   direct request at one connection (wrk -c1, proxied minus direct)
//   conn/request    wrk with `Connection: close`: a new connection per request, sessions resumed
//   handshakes      the same with resumption off on both sides: a full handshake per request
//   bulk            one connection, as many MB/s as the upstream can push through for --bulk-seconds
// and the CPU the two sidecars used (all their processes and threads), per request or per MB.
// Each ratio is taken within a round (peers measured back to back) and its median over rounds
// printed: throughput to HAProxy, stunnel and the floor, and CPU efficiency (their CPU per unit
// over meshauth's) to HAProxy and the floor. On a machine others share, throughput follows the
// share of the cores the sidecars get; CPU per unit is what their load disturbs least.
//
// Every pair uses the same groups (X25519, as Debian's HAProxy and stunnel have no ML-KEM), TLS
// 1.3 and the same certificates: P-256 SVIDs from a meshauth CA, with an intermediate.
//
// Fairness, printed with the figures:
//   OpenSSL     each peer's OpenSSL version is printed. By default meshauth runs on the Node
//               (20 or 24) whose OpenSSL is the one HAProxy runs on (Debian's libssl), so the
//               TLS library is the same on both sides; --node 20|24 overrides it, and a
//               mismatch is printed beside the figures.
//   cores       every sidecar process of every peer runs under `taskset -c --cpus` (all cores
//               by default): no peer gets cores another lacks; meshauth's --workers and
//               HAProxy's nbthread are the same number (stunnel runs a thread per connection).
//   verifying   meshauth remembers verifySvid's answer per exact chain (until the bundle or a
//               CRL changes, or the chain expires), so a full handshake with a chain it has
//               verified does not verify its signatures again; OpenSSL in HAProxy and stunnel
//               verifies the chain on every full handshake. A resumed session is verified again
//               by meshauth (from that memory) and not at all by HAProxy and stunnel.
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CertificateAuthority, createCsr, exportPrivateKeyPem, generateKeyPair, SpiffeId } from "../mod.ts";
import { ensureRuntimes, RUNTIME_BINARIES } from "../tests/runtimes/runtimes.mjs";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "4" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "32" },
    "bulk-seconds": { type: "string", default: "3" },
    workers: { type: "string", default: "1" },
    node: { type: "string", default: "same-openssl" },
    cpus: { type: "string", default: "" },
    only: { type: "string", default: "" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:proxy [-- --seconds 4 --rounds 3 --connections 32 --bulk-seconds 3
                              --workers 1 --node same-openssl|24|20 --cpus 0-1
                              --only keepalive,connreq,handshake,bulk]

Runs the meshauth proxy pair, a HAProxy pair, a stunnel pair and a minimal Node relay (the
floor) on 127.0.0.1 and prints keep-alive requests/s with p50/p99 added latency, requests/s with
a connection per request (sessions resumed), full handshakes/s (resumption off) and bulk MB/s,
each as a ratio to HAProxy, to stunnel and to the floor, with the sidecars' CPU. Needs wrk,
haproxy and stunnel4 (npm test installs them).

--node same-openssl (the default) runs meshauth on the Node whose OpenSSL is the one HAProxy
runs on; --cpus is the taskset list every sidecar of every peer is pinned to (all cores).`);
  process.exit(0);
}
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);
const BULK_SECONDS = Number(values["bulk-seconds"]);
const WORKERS = Number(values.workers);
const GROUPS = "X25519";
const ROOT = new URL("..", import.meta.url).pathname;
const MEASURES = ["keepalive", "connreq", "handshake", "bulk"] as const;
type Measure = typeof MEASURES[number];
const ONLY = values.only ? values.only.split(",") as Measure[] : [...MEASURES];

ensureRuntimes({ log: (line: string) => console.error(line) });

/** The OpenSSL each peer runs on, as the peer itself reports it. */
function openSslVersions(): { node20: string; node24: string; haproxy: string; stunnel: string } {
  const nodeOpenSsl = (node: string) =>
    execFileSync(node, ["-p", "process.versions.openssl"], { encoding: "utf8" }).trim();
  const haproxy = execFileSync("haproxy", ["-vv"], { encoding: "utf8" });
  // stunnel prints its version to stderr (and exits 0 or 1 by version).
  const stunnelRun = spawnSync("stunnel4", ["-version"], { encoding: "utf8" });
  const stunnel = `${stunnelRun.stdout}${stunnelRun.stderr}`;
  const version = (text: string, pattern: RegExp) => pattern.exec(text)?.[1] ?? "unknown";
  return {
    node20: nodeOpenSsl(process.execPath),
    node24: nodeOpenSsl(RUNTIME_BINARIES.node24),
    haproxy: version(haproxy, /Running on OpenSSL version : OpenSSL (\S+)/),
    stunnel: version(stunnel, /Running\s+with OpenSSL (\S+)/),
  };
}
const OPENSSL = openSslVersions();
const NODE_VERSION = values.node === "same-openssl"
  ? (OPENSSL.node24 === OPENSSL.haproxy || OPENSSL.node20 !== OPENSSL.haproxy ? "24" : "20")
  : values.node;
const NODE = NODE_VERSION === "20" ? process.execPath : RUNTIME_BINARIES.node24;
const MESHAUTH_OPENSSL = NODE_VERSION === "20" ? OPENSSL.node20 : OPENSSL.node24;
const CPUS = values.cpus || `0-${cpus().length - 1}`;

/** A sidecar's command line, pinned to CPUS. */
function pinned(cmd: string, args: string[]): [string, string[]] {
  return ["taskset", ["-c", CPUS, cmd, ...args]];
}

/** CPU milliseconds used so far by the processes `pids` (all threads; Linux /proc). */
function cpuMs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited
    }
  }
  return ticks * 10;
}

/** What else is running: the load average and the busiest processes. */
function machineLoad(): string {
  const top = execFileSync("ps", ["-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], { encoding: "utf8" })
    .split("\n").slice(0, 6).map((l) => l.trim()).filter(Boolean).join("; ");
  return `load average ${
    loadavg().map((l) => l.toFixed(2)).join(" ")
  } on ${cpus().length} cores; busiest: ${top}`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Process {
  child: ChildProcess;
  pids(): number[];
  /** What it wrote to stderr and stdout. */
  log(): string;
}

/** Starts a process; `ready` resolves once it prints `{"msg":"ready"}` or, without it, at once. */
function start(cmd: string, args: string[], waitForReady: boolean): Promise<Process> {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
  let log = "";
  child.stderr!.on("data", (d) => log += d);
  child.stdout!.on("data", (d) => log += d);
  const process_: Process = {
    child,
    log: () => `${cmd} ${args.join(" ")}:\n${log.slice(-2000)}`,
    pids: () => {
      // The process and its children (haproxy's master/worker, Node's workers).
      const all = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);
      const tree = new Set([child.pid!]);
      for (let grew = true; grew;) {
        grew = false;
        for (const pid of all) {
          if (tree.has(pid)) continue;
          try {
            const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
            if (tree.has(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]))) {
              tree.add(pid);
              grew = true;
            }
          } catch {
            // gone
          }
        }
      }
      return [...tree];
    },
  };
  if (!waitForReady) return Promise.resolve(process_);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(
      () => reject(new Error(`${cmd} ${args.join(" ")} did not start:\n${log}`)),
      30_000,
    );
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes('"msg":"ready"')) {
        clearTimeout(timer);
        resolve(process_);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code}:\n${log}`));
    });
  });
}

/** Waits until `port` answers an HTTP request with 200, at most 15 s. */
async function waitHttp(port: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(
        port,
        "127.0.0.1",
        () => socket.write("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
      );
      let data = "";
      socket.on("data", (d) => data += d);
      socket.on("close", () => resolve(data.startsWith("HTTP/1.1 200")));
      socket.on("error", () => resolve(false));
      socket.setTimeout(2000, () => socket.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing answers on port ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface WrkResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

function parseDuration(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[m[2]];
}

function wrk(port: number, connections: number, seconds: number, close: boolean): WrkResult {
  const args = ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "--timeout", "5s"];
  if (close) args.push("-H", "Connection: close");
  const out = execFileSync("wrk", [...args, `http://127.0.0.1:${port}/`], { encoding: "utf8" });
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requestsPerSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50Ms: parseDuration(/ 50%\s+(\S+)/.exec(out)?.[1] ?? ""),
    p99Ms: parseDuration(/ 99%\s+(\S+)/.exec(out)?.[1] ?? ""),
    // With Connection: close, wrk counts the server's close after each answer as a read "error".
    errors: (errors ? Number(errors[1]) + Number(errors[3]) + Number(errors[4]) : 0) +
      Number(non2xx?.[1] ?? 0),
  };
}

/** Reads from `port` for `seconds`; answers MB/s (10^6 bytes). */
function bulk(port: number, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let bytes = 0;
    let t0 = 0;
    socket.on("data", (d) => {
      if (t0 === 0) t0 = performance.now();
      else bytes += d.length;
    });
    socket.on("error", reject);
    socket.on("connect", () => {
      socket.write("BULK\n");
      setTimeout(() => {
        const elapsed = (performance.now() - t0) / 1000;
        socket.destroy();
        resolve(bytes / elapsed / 1e6);
      }, seconds * 1000);
    });
  });
}

// ---- certificates ----

const dir = await mkdtemp(join(tmpdir(), "meshauth-bench-proxy-"));
const TRUST_DOMAIN = "bench.test";
const root = await CertificateAuthority.createRoot({ trustDomain: TRUST_DOMAIN });
const ca = await root.createIntermediate({ ttlSeconds: 86400 });
async function svid(name: string, id: string) {
  const keys = await generateKeyPair("ECDSA-P256");
  const spiffeId = SpiffeId.parse(id);
  const issued = await ca.issue(await createCsr({ keys, id: spiffeId }), { id: spiffeId });
  const key = await exportPrivateKeyPem(keys.privateKey);
  const files = {
    cert: join(dir, `${name}.crt`),
    key: join(dir, `${name}.key`),
    pem: join(dir, `${name}.pem`),
  };
  await writeFile(files.cert, issued.chainPem);
  await writeFile(files.key, key, { mode: 0o600 });
  await writeFile(files.pem, issued.chainPem + key, { mode: 0o600 });
  return files;
}
const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;
const SERVER_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/server`;
const client = await svid("client", CLIENT_ID);
const server = await svid("server", SERVER_ID);
const bundle = join(dir, "bundle.pem");
await writeFile(bundle, root.bundle().toPem());

// ---- upstreams ----

const processes: Process[] = [];
const upstreamPort = await freePort();
await writeFile(
  join(dir, "upstream.cfg"),
  `global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend upstream
  bind 127.0.0.1:${upstreamPort}
  http-request return status 200 content-type text/plain string "ok"
`,
);
processes.push(await start("haproxy", ["-db", "-f", join(dir, "upstream.cfg")], false));
const bulkPort = await freePort();
processes.push(
  await start(NODE, [
    "-e",
    `const net = require("node:net");
const chunk = Buffer.alloc(256 * 1024, 120);
net.createServer((s) => {
  s.once("data", () => {
    const pump = () => { while (s.write(chunk)); };
    s.on("drain", pump);
    pump();
  });
  s.on("error", () => {});
}).listen(${bulkPort}, "127.0.0.1", () => console.log(JSON.stringify({ msg: "ready" })));`,
  ], true),
);
await waitHttp(upstreamPort);

// ---- the peers ----

interface Pair {
  name: string;
  /** Client sidecar ports: resumption on (http, bulk) and off (http). */
  http: number;
  bulk: number;
  httpNoResume: number;
  sidecars: Process[];
}

async function ports() {
  return {
    clientHttp: await freePort(),
    clientBulk: await freePort(),
    serverHttp: await freePort(),
    serverBulk: await freePort(),
  };
}

async function meshauthPair(): Promise<Pair> {
  const sidecars: Process[] = [];
  const made: Record<string, number> = {};
  for (const resumption of [true, false]) {
    const p = await ports();
    const tls = { groups: [GROUPS], sessionResumption: resumption };
    const workloads = {
      client: { cert: client.cert, key: client.key, bundle },
      server: { cert: server.cert, key: server.key, bundle },
    };
    const serverConfig = {
      trustDomain: TRUST_DOMAIN,
      workloads,
      proxy: {
        auditLog: join(dir, `meshauth-server-${resumption}.jsonl`),
        tls,
        inbound: [
          {
            name: "http",
            workload: "server",
            listen: `127.0.0.1:${p.serverHttp}`,
            forward: upstreamPort,
            defaultAction: "ALLOW",
          },
          {
            name: "bulk",
            workload: "server",
            listen: `127.0.0.1:${p.serverBulk}`,
            forward: bulkPort,
            defaultAction: "ALLOW",
          },
        ],
      },
    };
    const clientConfig = {
      trustDomain: TRUST_DOMAIN,
      workloads,
      proxy: {
        auditLog: join(dir, `meshauth-client-${resumption}.jsonl`),
        tls,
        outbound: [
          {
            name: "http",
            workload: "client",
            listen: p.clientHttp,
            upstream: `127.0.0.1:${p.serverHttp}`,
            allowedIds: [SERVER_ID],
          },
          {
            name: "bulk",
            service: "http",
            workload: "client",
            listen: p.clientBulk,
            upstream: `127.0.0.1:${p.serverBulk}`,
            allowedIds: [SERVER_ID],
          },
        ],
      },
    };
    for (const [role, config] of [["server", serverConfig], ["client", clientConfig]] as const) {
      const file = join(dir, `meshauth-${role}-${resumption}.json`);
      await writeFile(file, JSON.stringify(config));
      sidecars.push(await start(...pinned(NODE, ["--import", "tsx", "bench/proxy-sidecar.ts", file]), true));
    }
    if (resumption) Object.assign(made, { http: p.clientHttp, bulk: p.clientBulk });
    else made.httpNoResume = p.clientHttp;
  }
  return { name: "meshauth", http: made.http, bulk: made.bulk, httpNoResume: made.httpNoResume, sidecars };
}

async function floorPair(): Promise<Pair> {
  const sidecars: Process[] = [];
  const made: Record<string, number> = {};
  for (const resumption of [true, false]) {
    const p = await ports();
    const common = { ca: bundle, resumption, groups: GROUPS };
    const configs = {
      server: {
        ...common,
        role: "server",
        cert: server.cert,
        key: server.key,
        routes: [{ listen: p.serverHttp, target: upstreamPort }, { listen: p.serverBulk, target: bulkPort }],
      },
      client: {
        ...common,
        role: "client",
        cert: client.cert,
        key: client.key,
        routes: [{ listen: p.clientHttp, target: p.serverHttp }, {
          listen: p.clientBulk,
          target: p.serverBulk,
        }],
      },
    };
    for (const [role, config] of Object.entries(configs)) {
      const file = join(dir, `floor-${role}-${resumption}.json`);
      await writeFile(file, JSON.stringify(config));
      sidecars.push(await start(...pinned(NODE, ["--import", "tsx", "bench/proxy-floor.ts", file]), true));
    }
    if (resumption) Object.assign(made, { http: p.clientHttp, bulk: p.clientBulk });
    else made.httpNoResume = p.clientHttp;
  }
  return { name: "floor", http: made.http, bulk: made.bulk, httpNoResume: made.httpNoResume, sidecars };
}

async function haproxyPair(): Promise<Pair> {
  const sidecars: Process[] = [];
  const made: Record<string, number> = {};
  for (const resumption of [true, false]) {
    const p = await ports();
    const global = `global
  nbthread ${WORKERS}
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
`;
    // HAProxy 2.6 has no curves on server lines: its client offers OpenSSL's defaults, X25519 first,
    // and the server sidecar's bind allows X25519 only.
    const serverOptions = `ssl crt ${client.pem} ca-file ${bundle} verify required${
      resumption ? "" : " no-ssl-reuse"
    }`;
    const bindOptions = `ssl crt ${server.pem} ca-file ${bundle} verify required curves ${GROUPS}${
      resumption ? "" : " no-tls-tickets"
    }`;
    const configs = {
      server: `${global}
frontend http
  bind 127.0.0.1:${p.serverHttp} ${bindOptions}
  default_backend http
backend http
  server upstream 127.0.0.1:${upstreamPort}
frontend bulk
  bind 127.0.0.1:${p.serverBulk} ${bindOptions}
  default_backend bulk
backend bulk
  server upstream 127.0.0.1:${bulkPort}
`,
      client: `${global}
frontend http
  bind 127.0.0.1:${p.clientHttp}
  default_backend http
backend http
  server sidecar 127.0.0.1:${p.serverHttp} ${serverOptions}
frontend bulk
  bind 127.0.0.1:${p.clientBulk}
  default_backend bulk
backend bulk
  server sidecar 127.0.0.1:${p.serverBulk} ${serverOptions}
`,
    };
    for (const [role, config] of Object.entries(configs)) {
      const file = join(dir, `haproxy-${role}-${resumption}.cfg`);
      await writeFile(file, config);
      sidecars.push(await start(...pinned("haproxy", ["-db", "-f", file]), false));
    }
    if (resumption) Object.assign(made, { http: p.clientHttp, bulk: p.clientBulk });
    else made.httpNoResume = p.clientHttp;
  }
  return { name: "haproxy", http: made.http, bulk: made.bulk, httpNoResume: made.httpNoResume, sidecars };
}

async function stunnelPair(): Promise<Pair> {
  const sidecars: Process[] = [];
  const made: Record<string, number> = {};
  for (const resumption of [true, false]) {
    const p = await ports();
    const common = `foreground = yes
pid =
debug = 3
syslog = no
`;
    const tls = `CAfile = ${bundle}
verifyChain = yes
sslVersionMin = TLSv1.3
curves = ${GROUPS}
`;
    const configs = {
      server: `${common}
[http]
accept = 127.0.0.1:${p.serverHttp}
connect = 127.0.0.1:${upstreamPort}
cert = ${server.cert}
key = ${server.key}
requireCert = yes
${tls}${resumption ? "" : "options = NO_TICKET\nsessionCacheSize = 1\nsessionCacheTimeout = 1\n"}
[bulk]
accept = 127.0.0.1:${p.serverBulk}
connect = 127.0.0.1:${bulkPort}
cert = ${server.cert}
key = ${server.key}
requireCert = yes
${tls}`,
      client: `${common}
[http]
client = yes
accept = 127.0.0.1:${p.clientHttp}
connect = 127.0.0.1:${p.serverHttp}
cert = ${client.cert}
key = ${client.key}
${tls}${resumption ? "" : "sessionResume = no\n"}
[bulk]
client = yes
accept = 127.0.0.1:${p.clientBulk}
connect = 127.0.0.1:${p.serverBulk}
cert = ${client.cert}
key = ${client.key}
${tls}`,
    };
    for (const [role, config] of Object.entries(configs)) {
      const file = join(dir, `stunnel-${role}-${resumption}.conf`);
      await writeFile(file, config);
      sidecars.push(await start(...pinned("stunnel4", [file]), false));
    }
    if (resumption) Object.assign(made, { http: p.clientHttp, bulk: p.clientBulk });
    else made.httpNoResume = p.clientHttp;
  }
  return { name: "stunnel", http: made.http, bulk: made.bulk, httpNoResume: made.httpNoResume, sidecars };
}

// ---- run ----

console.log(
  `bench/proxy: ${ROUNDS} rounds of ${SECONDS}s per measure and peer; meshauth on Node ${NODE_VERSION}`,
);
console.log(
  `OpenSSL: meshauth ${MESHAUTH_OPENSSL} (Node ${NODE_VERSION}), haproxy ${OPENSSL.haproxy}, stunnel ${OPENSSL.stunnel}${
    MESHAUTH_OPENSSL === OPENSSL.haproxy
      ? " (meshauth and HAProxy on the same OpenSSL)"
      : ": NOT the same OpenSSL for meshauth and HAProxy, the ratios compare TLS libraries too"
  }`,
);
console.log(
  `cores: every sidecar pinned to CPUs ${CPUS} (taskset); meshauth ${WORKERS} worker(s) per sidecar, ` +
    `HAProxy nbthread ${WORKERS}, stunnel a thread per connection, the floor one process`,
);
console.log(
  "verifying: meshauth remembers each chain's verifySvid answer (a repeated chain's signatures are " +
    "not verified again, a resumed session is re-verified from that memory); HAProxy and stunnel " +
    "have OpenSSL verify every full handshake's chain and skip verification on resumption",
);
console.log(`machine: ${machineLoad()}`);
let exitCode = 0;
try {
  const pairs = [await meshauthPair(), await haproxyPair(), await stunnelPair(), await floorPair()];
  processes.push(...pairs.flatMap((p) => p.sidecars));
  for (const pair of pairs) {
    try {
      await Promise.all([waitHttp(pair.http), waitHttp(pair.httpNoResume)]);
    } catch (err) {
      throw new Error(
        `the ${pair.name} pair does not answer: ${(err as Error).message}\n${
          pair.sidecars.map((s) => s.log()).join("\n")
        }`,
      );
    }
  }
  const direct = wrk(upstreamPort, 1, 2, false);
  type Sample = {
    value: number;
    cpuMsPerUnit: number;
    p50AddedMs?: number;
    p99AddedMs?: number;
    errors: number;
  };
  const samples = new Map<string, Sample[]>();
  const record = (pair: string, measure: Measure, sample: Sample) => {
    const key = `${pair}/${measure}`;
    samples.set(key, [...(samples.get(key) ?? []), sample]);
  };
  // Warm-up: JIT, session caches, connection pools.
  for (const pair of pairs) {
    wrk(pair.http, CONNECTIONS, 1, false);
    wrk(pair.http, 8, 1, true);
  }
  for (let round = 1; round <= ROUNDS; round++) {
    process.stdout.write(`round ${round}/${ROUNDS}:`);
    for (const measure of ONLY) {
      for (const pair of pairs) {
        process.stdout.write(` ${measure}@${pair.name}`);
        const pids = pair.sidecars.flatMap((s) => s.pids());
        const cpuBefore = cpuMs(pids);
        if (measure === "bulk") {
          const mbPerSecond = await bulk(pair.bulk, BULK_SECONDS);
          const cpu = cpuMs(pids) - cpuBefore;
          record(pair.name, measure, {
            value: mbPerSecond,
            cpuMsPerUnit: cpu / (mbPerSecond * BULK_SECONDS),
            errors: 0,
          });
          continue;
        }
        const port = measure === "handshake" ? pair.httpNoResume : pair.http;
        const result = measure === "keepalive"
          ? wrk(port, CONNECTIONS, SECONDS, false)
          : wrk(port, Math.min(CONNECTIONS, 16), SECONDS, true);
        const cpu = cpuMs(pids) - cpuBefore;
        const sample: Sample = {
          value: result.requestsPerSecond,
          cpuMsPerUnit: cpu / (result.requestsPerSecond * SECONDS),
          errors: result.errors,
        };
        if (measure === "keepalive") {
          const latency = wrk(port, 1, Math.max(1, Math.floor(SECONDS / 2)), false);
          sample.p50AddedMs = latency.p50Ms - direct.p50Ms;
          sample.p99AddedMs = latency.p99Ms - direct.p99Ms;
        }
        record(pair.name, measure, sample);
      }
    }
    process.stdout.write("\n");
  }
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)];
  };
  const summary = (pair: string, measure: Measure) => {
    const list = samples.get(`${pair}/${measure}`) ?? [];
    return {
      value: median(list.map((s) => s.value)),
      cpu: median(list.map((s) => s.cpuMsPerUnit)),
      p50: median(list.map((s) => s.p50AddedMs ?? NaN)),
      p99: median(list.map((s) => s.p99AddedMs ?? NaN)),
      errors: list.reduce((sum, s) => sum + s.errors, 0),
      all: list.map((s) => s.value),
    };
  };
  const unit: Record<Measure, string> = {
    keepalive: "req/s",
    connreq: "req/s",
    handshake: "req/s",
    bulk: "MB/s",
  };
  const cpuUnit: Record<Measure, string> = {
    keepalive: "µs/req",
    connreq: "µs/req",
    handshake: "µs/req",
    bulk: "ms/MB",
  };
  const label: Record<Measure, string> = {
    keepalive: `keep-alive (c=${CONNECTIONS})`,
    connreq: "conn/request, resumed",
    handshake: "full handshakes",
    bulk: "bulk, one connection",
  };
  console.log(
    `\ndirect to the upstream at c=1: p50 ${direct.p50Ms.toFixed(3)} ms, p99 ${direct.p99Ms.toFixed(3)} ms`,
  );
  console.log(
    `${"".padEnd(34)} ${"median".padStart(12)} ${"throughput ratio to".padStart(26)}  ${
      "sidecar CPU".padStart(12)
    } ${"CPU efficiency to".padStart(19)}`,
  );
  console.log(
    `${"measure".padEnd(24)} ${"peer".padEnd(9)} ${"".padStart(12)}${"haproxy".padStart(9)}${
      "stunnel".padStart(9)
    }${"floor".padStart(9)} ${"per unit".padStart(13)} ${"haproxy".padStart(9)} ${
      "floor".padStart(9)
    }  rounds`,
  );
  // Ratios are taken within each round (the peers measured back to back, in the same conditions),
  // then their median over rounds; CPU per unit is the sidecars' own CPU, what others' load
  // disturbs least.
  const roundRatio = (pair: string, peer: string, measure: Measure, of: "value" | "cpu") => {
    const ours = samples.get(`${pair}/${measure}`) ?? [];
    const theirs = samples.get(`${peer}/${measure}`) ?? [];
    return median(
      ours.map((s, i) =>
        of === "value" ? s.value / theirs[i].value : theirs[i].cpuMsPerUnit / s.cpuMsPerUnit
      ),
    );
  };
  for (const measure of ONLY) {
    for (const pair of pairs) {
      const s = summary(pair.name, measure);
      const cpu = measure === "bulk" ? s.cpu : s.cpu * 1000;
      const ratios = ["haproxy", "stunnel", "floor"].map((peer) =>
        roundRatio(pair.name, peer, measure, "value").toFixed(2).padStart(9)
      ).join("");
      console.log(
        `${label[measure].padEnd(24)} ${pair.name.padEnd(9)} ${
          `${s.value.toFixed(0)} ${unit[measure]}`.padStart(12)
        }${ratios} ${`${cpu.toFixed(measure === "bulk" ? 2 : 0)} ${cpuUnit[measure]}`.padStart(13)} ${
          roundRatio(pair.name, "haproxy", measure, "cpu").toFixed(2).padStart(9)
        } ${roundRatio(pair.name, "floor", measure, "cpu").toFixed(2).padStart(9)}  ${
          s.all.map((v) => v.toFixed(0)).join(" ")
        }${s.errors ? `  errors ${s.errors}` : ""}`,
      );
      if (measure === "keepalive") {
        console.log(
          `${"".padEnd(24)} ${"".padEnd(9)} latency added at c=1: p50 ${s.p50.toFixed(3)} ms, p99 ${
            s.p99.toFixed(3)
          } ms`,
        );
      }
    }
  }
  console.log(`\nmachine after: ${machineLoad()}`);
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  for (const p of processes) p.child.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
}
process.exit(exitCode);
