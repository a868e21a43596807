// The soak: the three-tier mesh (photo-frontend -> photo-backend -> datastore) under steady
// load, with 1-minute certificates, for --minutes (20 by default). Processes: the CA
// (`meshauth ca serve`, TLS, the file store) and the agent with its mTLS proxy
// (bench/soak-agent.ts); this process runs the services (photo-backend's, a relay that calls
// the datastore through the agent's backend-to-datastore listener; the datastore's, an echo)
// and the clients. Each request goes client -> frontend-to-backend -> mutual TLS -> backend-in
// -> relay -> backend-to-datastore -> mutual TLS -> datastore-in -> echo and back, on a
// connection of its own. Reports the RSS and open file descriptors of the CA and the agent at
// the start (after a minute's warm-up) and the end, and every failed request.
//
//   npm run soak [-- --minutes 20 --clients 8]
import { spawn } from "node:child_process";
import { createWriteStream, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createJoinToken, FileStore } from "../ca-server/mod.ts";
import { processFootprint } from "../tests/faults/support.ts";
import { requestLoop } from "../tests/faults/mesh.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "20" },
    clients: { type: "string", default: "8" },
    "ttl-seconds": { type: "string", default: "60" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run soak [-- --minutes 20 --clients 8 --ttl-seconds 60]

Runs the CA and the agent with its mTLS proxy as processes, the three-tier mesh's services
here, and requests through both mTLS hops for --minutes; prints RSS and open file descriptors
of the CA and the agent at the start and the end, and the failed requests (the goal: none).`);
  process.exit(0);
}
const MINUTES = Number(values.minutes);
const ROOT = new URL("..", import.meta.url).pathname;
const TD = "soak.test";
const log = (message: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

/** A TCP server on 127.0.0.1 that hands each connection to `handle`; resolves with its port. */
async function serve(handle: (socket: Socket) => void): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Starts `args` in the checkout with its output in `logPath`; resolves once `isReady` holds. */
async function startProcess(args: string[], logPath: string, isReady: () => Promise<boolean>) {
  const out = createWriteStream(logPath);
  await new Promise((resolve) => out.once("open", resolve));
  const child = spawn(process.execPath, ["--import", "tsx", ...args], {
    cwd: ROOT,
    stdio: ["ignore", out, out],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let t = 0; !(await isReady()); t++) {
    if (child.exitCode !== null) {
      throw new Error(`${args[0]} exited:\n${readFileSync(logPath, "utf8").slice(-2000)}`);
    }
    if (t > 600) throw new Error(`${args[0]} was not ready in 60 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    pid: child.pid!,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

const dir = await mkdtemp(join(tmpdir(), "meshauth-soak-"));
const stops: (() => Promise<void> | void)[] = [];
let exitCode = 0;
try {
  const names = ["photo-frontend", "photo-backend", "datastore"];
  const configPath = join(dir, "ca.json");
  await writeFile(
    configPath,
    JSON.stringify({
      trustDomain: TD,
      dataDir: join(dir, "ca"),
      listen: { host: "127.0.0.1", port: 0 },
      nodes: {
        "soak-node": {
          workloads: [
            `spiffe://${TD}/ns/photo-ns/sa/photo-frontend`,
            `spiffe://${TD}/ns/photo-ns/sa/photo-backend`,
            `spiffe://${TD}/ns/datastore-ns/sa/datastore`,
          ],
        },
      },
      log: { level: "info" },
    }),
  );
  const { runCli } = await import("../cli/main.ts");
  if ((await runCli(["ca", "init", "--config", configPath])) !== 0) throw new Error("ca init failed");
  const caLog = join(dir, "ca.log");
  const listening = async () => (await readFile(caLog, "utf8").catch(() => "")).includes('"msg":"listening"');
  const ca = await startProcess(["cli/main.ts", "ca", "serve", "--config", configPath], caLog, listening);
  stops.push(ca.stop);
  const caUrl = JSON.parse(
    (await readFile(caLog, "utf8")).split("\n").find((l) => l.includes('"msg":"listening"'))!,
  ).url;
  const store = new FileStore(join(dir, "ca", "store"), { isCompacting: false });
  await store.open();
  const { token } = await createJoinToken(store, { role: "node", node: "soak-node", ttlSeconds: 3600 });
  await store.close();

  // The services: the datastore echoes; photo-backend's relays each connection to the datastore
  // through its agent's outbound listener (whose port is known once the agent is up).
  const datastore = await serve((socket) => socket.pipe(socket));
  let toDatastore = 0;
  const backend = await serve((socket) => {
    const upstream = connect(toDatastore, "127.0.0.1");
    upstream.on("error", () => socket.destroy());
    socket.on("close", () => upstream.destroy());
    upstream.on("close", () => socket.destroy());
    socket.pipe(upstream).pipe(socket);
  });
  stops.push(() => datastore.close(), () => backend.close());
  const portsFile = join(dir, "ports.json");
  const agent = await startProcess(
    [
      "bench/soak-agent.ts",
      "--ca-url",
      caUrl,
      "--bundle",
      join(dir, "ca", "bundle.pem"),
      "--token",
      token,
      "--dir",
      join(dir, "agent"),
      "--trust-domain",
      TD,
      "--ttl-seconds",
      values["ttl-seconds"]!,
      "--backend-service",
      String(backend.port),
      "--datastore-service",
      String(datastore.port),
      "--ports-file",
      portsFile,
    ],
    join(dir, "agent.log"),
    async () => !!(await readFile(portsFile, "utf8").catch(() => "")),
  );
  stops.unshift(agent.stop);
  const ports = JSON.parse(await readFile(portsFile, "utf8"));
  toDatastore = ports["backend-to-datastore"];
  log(`mesh up: ${names.join(" -> ")}, ${values["ttl-seconds"]} s certificates; load for ${MINUTES} min`);

  let stopping = false;
  const load = requestLoop(ports["frontend-to-backend"], Number(values.clients), () => stopping, 10);
  const footprints: {
    minute: number;
    ca: { rssKiB: number; fds: number };
    agent: { rssKiB: number; fds: number };
  }[] = [];
  const sample = async (minute: number) => {
    footprints.push({ minute, ca: await processFootprint(ca.pid), agent: await processFootprint(agent.pid) });
    const f = footprints.at(-1)!;
    log(
      `minute ${minute}: CA ${(f.ca.rssKiB / 1024).toFixed(1)} MiB, ${f.ca.fds} fds; agent ${
        (f.agent.rssKiB / 1024).toFixed(1)
      } MiB, ${f.agent.fds} fds`,
    );
  };
  for (let minute = 1; minute <= MINUTES; minute++) {
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    await sample(minute);
  }
  stopping = true;
  const tally = await load;
  const renewals = (await readFile(caLog, "utf8")).split("\n").filter((l) =>
    l.includes('"msg":"issued"')
  ).length;
  const [first, last] = [footprints[0], footprints.at(-1)!];
  const result = {
    minutes: MINUTES,
    certificateTtlSeconds: Number(values["ttl-seconds"]),
    requests: tally.ok + tally.failed,
    failedRequests: tally.failed,
    failures: tally.failures,
    issuedByCa: renewals,
    caRssMiB: { start: +(first.ca.rssKiB / 1024).toFixed(1), end: +(last.ca.rssKiB / 1024).toFixed(1) },
    caFds: { start: first.ca.fds, end: last.ca.fds },
    agentRssMiB: {
      start: +(first.agent.rssKiB / 1024).toFixed(1),
      end: +(last.agent.rssKiB / 1024).toFixed(1),
    },
    agentFds: { start: first.agent.fds, end: last.agent.fds },
    footprints,
  };
  const { footprints: _all, ...printed } = result;
  console.log(`\nsoak:\n${JSON.stringify(printed, null, 2)}`);
  if (tally.failed > 0) exitCode = 1;
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  for (const stop of stops) await stop();
  await rm(dir, { recursive: true, force: true });
}
process.exit(exitCode);
