// Revocation from the CA server to the proxies, end to end: SVIDs issued by a real CA server
// (join tokens, CSRs), each workload's credentials fed to the proxy by a source that follows the
// CA's CRL as the agent does (here every 100 ms), and `POST /v1/revocations` while a connection
// is open. The revoked peer's open connection is closed and its next connection refused, at the
// server's proxy (a revoked client) and at the client's proxy (a revoked server); the times from
// the POST to each are reported (bench/proxy-revocation.ts measures them over many samples).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { echoServer, exchange, openStream, startProxy, tempDir, until, within } from "./proxy-support.ts";
import { type CaFollowingSource, TestCaServer } from "./proxy-ca-support.ts";

const TRUST_DOMAIN = "revocation.test";
const FRONTEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-frontend`;
const BACKEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-backend`;

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCaServer;

before(async () => {
  dir = await tempDir();
  ca = await TestCaServer.start(TRUST_DOMAIN);
});

after(async () => {
  await ca?.stop();
  await dir?.remove();
});

test(
  "POST /v1/revocations reaches the proxies: the revoked peer's open connection is closed and its next refused",
  {
    timeout: 60_000,
  },
  async (t) => {
    const echo = await echoServer();
    const sources = {
      client: await ca.issue(FRONTEND),
      server: await ca.issue(BACKEND),
      // A second pair whose server is revoked: the client's proxy must notice.
      client2: await ca.issue(FRONTEND),
      server2: await ca.issue(BACKEND),
    };
    for (const source of Object.values(sources)) source.follow(100);
    const servers = await startProxy(
      {
        inbound: [
          {
            name: "in",
            workload: "server",
            listen: "127.0.0.1:0",
            forward: `127.0.0.1:${echo.port}`,
            defaultAction: "ALLOW",
          },
          {
            name: "in2",
            workload: "server2",
            listen: "127.0.0.1:0",
            forward: `127.0.0.1:${echo.port}`,
            defaultAction: "ALLOW",
          },
        ],
      },
      dir.path,
      sources,
    );
    const clients = await startProxy(
      {
        outbound: [
          {
            name: "out",
            service: "backend",
            workload: "client",
            listen: 0,
            upstream: `127.0.0.1:${servers.port("in")}`,
            allowedIds: [BACKEND],
          },
          {
            name: "out2",
            service: "backend",
            workload: "client2",
            listen: 0,
            upstream: `127.0.0.1:${servers.port("in2")}`,
            allowedIds: [BACKEND],
          },
        ],
      },
      dir.path,
      sources,
    );
    try {
      const admin = await ca.adminToken();
      const measure = async (outbound: string, revoked: CaFollowingSource, where: string) => {
        const target = { port: clients.port(outbound) };
        const stream = await openStream(target);
        assert.equal(await stream.send("before"), "before");
        const postedAt = performance.now();
        await ca.revoke(revoked.svid.serialNumber, admin);
        const closedAt = await within(stream.closed, 10_000, `the open connection at ${where} closed`);
        let refusedAt = 0;
        await until(async () => {
          const { reply } = await exchange(target, "after", 2000);
          refusedAt = performance.now();
          return reply === "";
        }, 10_000);
        t.diagnostic(
          `${where}: open connection closed ${
            (closedAt - postedAt).toFixed(0)
          } ms and next connection refused ` +
            `${(refusedAt - postedAt).toFixed(0)} ms after POST /v1/revocations (CRL followed every 100 ms)`,
        );
      };
      await measure("out", sources.client, "the server's proxy (revoked client)");
      assert.equal(servers.proxy.metrics.closed.value({ listener: "in", reason: "revoked" }), 1);
      await measure("out2", sources.server2, "the client's proxy (revoked server)");
      assert.equal(clients.proxy.metrics.closed.value({ listener: "out2", reason: "revoked" }), 1);
    } finally {
      for (const source of Object.values(sources)) source.stop();
      await clients.proxy.stop();
      await servers.proxy.stop();
      await echo.close();
    }
  },
);
