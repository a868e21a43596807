// bench/proxy-revocation.ts: how long a revocation takes to reach open connections, at each
// proxy: from `POST /v1/revocations` on a real CA server to the revoked peer's open connection
// closed, and to its next connection refused, at the server's proxy (a revoked client) and at the
// client's proxy (a revoked server). The sources follow the CA's CRL on a timer (--poll-ms), as
// the agent does on the CA's caching hint; the part that is the proxy's own (from the new CRL
// handed to it to the connection closed) is printed apart.
//
//   npm run bench:proxy-revocation [-- --samples 10 --poll-ms 100,1000]
import { parseArgs } from "node:util";
import type { MeshProxy } from "../agent/mod.ts";
import {
  echoServer,
  exchange,
  openStream,
  startProxy,
  tempDir,
  until,
} from "../tests/agent/proxy-support.ts";
import { type CaFollowingSource, TestCaServer } from "../tests/agent/proxy-ca-support.ts";

const { values } = parseArgs({
  options: {
    samples: { type: "string", default: "10" },
    "poll-ms": { type: "string", default: "100,1000" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench:proxy-revocation [-- --samples 10 --poll-ms 100,1000]

Revokes a peer with POST /v1/revocations while a connection is open and prints, per CRL poll
interval and per proxy, p50 and max of the times to the open connection closed, to the next
connection refused, and the proxy's own part (new CRL handed to it -> connection closed).`);
  process.exit(0);
}
const SAMPLES = Number(values.samples);
const POLLS = values["poll-ms"]!.split(",").map(Number);
const TRUST_DOMAIN = "revocation.bench";
const CLIENT = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;
const SERVER = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/server`;

const ca = await TestCaServer.start(TRUST_DOMAIN);
const dir = await tempDir();
const echo = await echoServer();
const admin = await ca.adminToken();

interface Sample {
  closedMs: number;
  refusedMs: number;
  ownMs: number;
}

/** One revocation: a fresh pair, an open connection, the POST, and the times. */
async function sample(pollMs: number, revoke: "client" | "server"): Promise<Sample> {
  const sources = { client: await ca.issue(CLIENT), server: await ca.issue(SERVER) };
  for (const source of Object.values(sources)) source.follow(pollMs);
  const proxies: MeshProxy[] = [];
  try {
    const servers = await startProxy(
      {
        inbound: [{
          name: "in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: echo.port,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      sources,
    );
    proxies.push(servers.proxy);
    const clients = await startProxy(
      {
        outbound: [{
          name: "out",
          workload: "client",
          listen: 0,
          upstream: `127.0.0.1:${servers.port("in")}`,
          allowedIds: [SERVER],
        }],
      },
      dir.path,
      sources,
    );
    proxies.push(clients.proxy);
    const target = { port: clients.port("out") };
    const stream = await openStream(target);
    await stream.send("before");
    const revoked: CaFollowingSource = sources[revoke];
    // The proxy that notices: the server's for a revoked client, the client's for a revoked server.
    const noticing: CaFollowingSource = revoke === "client" ? sources.server : sources.client;
    const postedAt = performance.now();
    await ca.revoke(revoked.svid.serialNumber, admin);
    const closedAt = await stream.closed;
    let refusedAt = 0;
    await until(async () => {
      const { reply } = await exchange(target, "after", 2000);
      refusedAt = performance.now();
      return reply === "";
    }, 30_000);
    return {
      closedMs: closedAt - postedAt,
      refusedMs: refusedAt - postedAt,
      ownMs: closedAt - noticing.changedAt,
    };
  } finally {
    for (const source of Object.values(sources)) source.stop();
    for (const proxy of proxies) await proxy.stop();
  }
}

const stat = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return `p50 ${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`;
};

console.log(`bench/proxy-revocation: ${SAMPLES} samples per poll interval and proxy`);
try {
  for (const pollMs of POLLS) {
    for (const revoke of ["client", "server"] as const) {
      const results: Sample[] = [];
      for (let i = 0; i < SAMPLES; i++) results.push(await sample(pollMs, revoke));
      const where = revoke === "client"
        ? "server's proxy (revoked client)"
        : "client's proxy (revoked server)";
      console.log(`CRL followed every ${pollMs} ms, at the ${where}:`);
      console.log(`  open connection closed    ${stat(results.map((r) => r.closedMs))}`);
      console.log(`  next connection refused   ${stat(results.map((r) => r.refusedMs))}`);
      console.log(
        `  the proxy's own part      ${stat(results.map((r) => r.ownMs))} (new CRL handed to it -> closed)`,
      );
    }
  }
} finally {
  await echo.close();
  await ca.stop();
  await dir.remove();
}
