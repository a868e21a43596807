// Trust changes reach the proxy while it runs: a revoked client is refused and its open
// connection closed; rotations of both sides' SVIDs during a stream of requests fail none of
// them; and a resumed TLS session is verified again against the bundle and CRLs of now, on both
// sides, so a revocation or a root rotation refuses it; a ticket of a connection opened with an
// SVID replaced since is never offered again.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { TrustBundle } from "../../mod.ts";
import type { MeshProxy } from "../../agent/mod.ts";
import {
  auditRecords,
  echoServer,
  exchange,
  IDS,
  openStream,
  runtimeResumesSessions,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  type TestSvid,
  until,
  within,
} from "./proxy-support.ts";

// Node resumes mutual-TLS sessions and must: these tests run there whatever the probe says.
// Deno's node:tls never resumes a session in which the client presented a certificate, so on
// Deno there is no resumed session to verify again.
const resumption = "Deno" in globalThis && !(await runtimeResumesSessions())
  ? "Deno's node:tls does not resume mutual-TLS sessions (the client presenting a certificate)"
  : false;

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let echo: Awaited<ReturnType<typeof echoServer>>;

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  echo = await echoServer();
});

after(async () => {
  await echo?.close();
  await dir?.remove();
});

interface Pair {
  client: TestSource;
  server: TestSource;
  clientSvid: TestSvid;
  serverSvid: TestSvid;
  clientProxy: MeshProxy;
  serverProxy: MeshProxy;
  /** The outbound listener's port. */
  port: number;
  stop(): Promise<void>;
}

/** A client workload's outbound listener -> mutual TLS -> a server workload's inbound listener -> echo. */
async function pair(name: string, options: { sessionResumption?: boolean } = {}): Promise<Pair> {
  const clientSvid = await ca.issue(IDS.frontend);
  const serverSvid = await ca.issue(IDS.backend);
  const client = new TestSource(clientSvid, ca.bundle());
  const server = new TestSource(serverSvid, ca.bundle());
  const tls = { sessionResumption: options.sessionResumption ?? true };
  const servers = await startProxy(
    {
      tls,
      inbound: [{
        name: `${name}-in`,
        workload: "server",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${echo.port}`,
        defaultAction: "ALLOW",
      }],
    },
    dir.path,
    { server },
  );
  const clients = await startProxy(
    {
      tls,
      outbound: [{
        name: `${name}-out`,
        service: "backend",
        workload: "client",
        listen: "127.0.0.1:0",
        upstream: `127.0.0.1:${servers.port(`${name}-in`)}`,
        allowedIds: [IDS.backend],
      }],
    },
    dir.path,
    { client },
  );
  return {
    client,
    server,
    clientSvid,
    serverSvid,
    clientProxy: clients.proxy,
    serverProxy: servers.proxy,
    port: clients.port(`${name}-out`),
    stop: async () => {
      await clients.proxy.stop();
      await servers.proxy.stop();
    },
  };
}

async function records(listener: string) {
  return (await auditRecords(dir.path)).filter((r) => r.listener === listener);
}

test("a client revoked mid-stream has its open connection closed, and is refused afterwards", {
  timeout: 30_000,
}, async (t) => {
  const p = await pair("revoked-client");
  try {
    const stream = await openStream({ port: p.port });
    assert.equal(await stream.send("before"), "before");
    ca.revoke(p.clientSvid);
    const changedAt = performance.now();
    // The server's side learns the new CRL (the agent would, from the CA).
    p.server.update({ crls: [await ca.crl()] });
    const closedAt = await within(stream.closed, 5000, "the revoked client's connection closed");
    t.diagnostic(`open connection closed ${(closedAt - changedAt).toFixed(1)} ms after the CRL changed`);
    const { reply, closed } = await exchange({ port: p.port }, "after");
    assert.equal(reply, "");
    assert.equal(closed, true);
    await until(async () =>
      (await records("revoked-client-in")).some((r) => r.error?.code === "ERR_CERT_REVOKED")
    );
    const audit = await records("revoked-client-in");
    const whileOpen = audit.find((r) => r.reason === "revoked-while-open");
    assert.equal(whileOpen.peerId, IDS.frontend);
    assert.equal(whileOpen.peerSerial, p.clientSvid.serialNumber);
    assert.equal(p.serverProxy.metrics.closed.value({ listener: "revoked-client-in", reason: "revoked" }), 1);
  } finally {
    await p.stop();
  }
});

test(
  "a server revoked mid-stream has its open connection closed by the client's proxy",
  { timeout: 30_000 },
  async () => {
    const p = await pair("revoked-server");
    try {
      const stream = await openStream({ port: p.port });
      assert.equal(await stream.send("before"), "before");
      ca.revoke(p.serverSvid);
      p.client.update({ crls: [await ca.crl()] });
      await within(stream.closed, 5000, "the revoked server's connection closed");
      assert.equal(
        p.clientProxy.metrics.closed.value({ listener: "revoked-server-out", reason: "revoked" }),
        1,
      );
      const { closed } = await exchange({ port: p.port }, "after");
      assert.equal(closed, true);
    } finally {
      await p.stop();
    }
  },
);

test(
  "a resumed session of a client revoked since is refused by the server's proxy",
  { timeout: 30_000, skip: resumption },
  async () => {
    const p = await pair("resume-revoked-client");
    try {
      assert.equal((await exchange({ port: p.port }, "full")).reply, "full");
      assert.equal((await exchange({ port: p.port }, "resumed")).reply, "resumed");
      const resumedBefore = p.serverProxy.metrics.resumed.value({
        listener: "resume-revoked-client-in",
        direction: "inbound",
      });
      assert.ok(resumedBefore >= 1, "the second connection resumed its session");
      ca.revoke(p.clientSvid);
      p.server.update({ crls: [await ca.crl()] });
      const { reply, closed } = await exchange({ port: p.port }, "after revocation");
      assert.equal(reply, "");
      assert.equal(closed, true);
      await until(async () => (await records("resume-revoked-client-in")).some((r) => r.decision === "deny"));
      const refusal = (await records("resume-revoked-client-in")).find((r) => r.decision === "deny");
      assert.equal(refusal.resumed, true, "the refused connection was a resumed session");
      assert.equal(refusal.error.code, "ERR_CERT_REVOKED");
    } finally {
      await p.stop();
    }
  },
);

test(
  "a resumed session of a server revoked since is refused by the client's proxy",
  { timeout: 30_000, skip: resumption },
  async () => {
    const p = await pair("resume-revoked-server");
    try {
      assert.equal((await exchange({ port: p.port }, "full")).reply, "full");
      assert.equal((await exchange({ port: p.port }, "resumed")).reply, "resumed");
      assert.ok(
        p.clientProxy.metrics.resumed.value({
          listener: "resume-revoked-server-out",
          direction: "outbound",
        }) >= 1,
        "the second connection resumed its session",
      );
      ca.revoke(p.serverSvid);
      p.client.update({ crls: [await ca.crl()] });
      const { reply, closed } = await exchange({ port: p.port }, "after revocation");
      assert.equal(reply, "");
      assert.equal(closed, true);
      const refusal = (await records("resume-revoked-server-out")).find((r) => r.decision === "deny");
      assert.equal(refusal.resumed, true, "the refused connection was a resumed session");
      assert.equal(refusal.error.code, "ERR_CERT_REVOKED");
    } finally {
      await p.stop();
    }
  },
);

test("after a root rotation that retires the old root, a resumed session under it is refused", {
  timeout: 30_000,
  skip: resumption,
}, async () => {
  const p = await pair("resume-rotated-root");
  try {
    assert.equal((await exchange({ port: p.port }, "full")).reply, "full");
    // A new trust domain root replaces the old one on the server's side.
    const next = await TestCa.create();
    p.server.update({ bundle: new TrustBundle(next.bundle().trustDomain, next.bundle().x509Authorities()) });
    const { reply, closed } = await exchange({ port: p.port }, "after rotation");
    assert.equal(reply, "");
    assert.equal(closed, true);
    const refusal = (await records("resume-rotated-root-in")).find((r) => r.decision === "deny");
    assert.equal(refusal.resumed, true, "the refused connection was a resumed session");
    assert.equal(refusal.error.code, "ERR_CERT_UNTRUSTED");
  } finally {
    await p.stop();
  }
});

test(
  "SVIDs of both sides rotate during a stream of requests: no request fails, open connections continue, new ones use the new SVIDs",
  { timeout: 30_000 },
  async () => {
    const p = await pair("rotation");
    try {
      const longLived = await openStream({ port: p.port });
      let failures = 0;
      let sent = 0;
      let isRunning = true;
      const load = (async () => {
        while (isRunning) {
          const message = `request ${sent++}`;
          const { reply } = await exchange({ port: p.port }, message);
          if (reply !== message) failures++;
        }
      })();
      const serials = { client: [p.clientSvid.serialNumber], server: [p.serverSvid.serialNumber] };
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 60));
        const client = await ca.issue(IDS.frontend);
        const server = await ca.issue(IDS.backend);
        serials.client.push(client.serialNumber);
        serials.server.push(server.serialNumber);
        p.client.update({ credential: client });
        p.server.update({ credential: server });
        assert.equal(await longLived.send(`long-lived ${i}`), `long-lived ${i}`);
      }
      await new Promise((r) => setTimeout(r, 60));
      const countBefore = sent;
      await until(() => sent > countBefore + 3);
      isRunning = false;
      await load;
      assert.equal(failures, 0, `${failures} of ${sent} requests failed`);
      assert.ok(sent > 10, `only ${sent} requests were sent`);
      assert.equal(longLived.isClosed(), false);
      longLived.destroy();
      // The last connections present the newest SVIDs on both sides.
      await p.clientProxy.stop();
      await p.serverProxy.stop();
      const inbound = await records("rotation-in");
      const outbound = await records("rotation-out");
      assert.equal(inbound.at(-1).peerSerial, serials.client.at(-1));
      assert.equal(outbound.at(-1).peerSerial, serials.server.at(-1));
      assert.deepEqual(new Set(inbound.map((r) => r.peerSerial)).size > 1, true);
      assert.ok(p.clientProxy.metrics.rotations.value({ workload: "client" }) >= 4);
    } finally {
      await p.stop();
    }
  },
);

test(
  "a change to the secure-naming table closes open connections to a server no longer allowed, and refuses new ones",
  {
    timeout: 30_000,
  },
  async () => {
    const p = await pair("naming-change");
    try {
      assert.equal((await exchange({ port: p.port }, "full")).reply, "full");
      const stream = await openStream({ port: p.port });
      assert.equal(await stream.send("open"), "open");
      await p.clientProxy.setAllowedIds("backend", [IDS.datastore]);
      await within(stream.closed, 5000, "the connection to the server no longer allowed closed");
      assert.equal(
        p.clientProxy.metrics.closed.value({ listener: "naming-change-out", reason: "secure_naming" }),
        1,
      );
      const { reply, closed } = await exchange({ port: p.port }, "after");
      assert.equal(reply, "");
      assert.equal(closed, true);
      const refusal = (await records("naming-change-out")).findLast((r) => r.decision === "deny");
      assert.equal(refusal.reason, "secure-naming");
    } finally {
      await p.stop();
    }
  },
);

test(
  "a change to the secure-naming table refuses a resumed session of a server no longer allowed",
  { skip: resumption, timeout: 30_000 },
  async () => {
    const p = await pair("naming-resumed");
    try {
      // No connection is open when the table changes: the ticket is kept, and offered next.
      assert.equal((await exchange({ port: p.port }, "full")).reply, "full");
      await until(() =>
        p.clientProxy.metrics.render().includes(
          'meshauth_proxy_open_connections{listener="naming-resumed-out",direction="outbound"} 0',
        )
      );
      await p.clientProxy.setAllowedIds("backend", [IDS.datastore]);
      const { reply, closed } = await exchange({ port: p.port }, "after");
      assert.equal(reply, "");
      assert.equal(closed, true);
      const refusal = (await records("naming-resumed-out")).findLast((r) => r.decision === "deny");
      assert.equal(refusal.reason, "secure-naming");
      assert.equal(refusal.resumed, true, "the refused connection was a resumed session");
    } finally {
      await p.stop();
    }
  },
);

test("a peer whose SVID expires while its connection is open is closed at the next revalidation", {
  timeout: 30_000,
}, async () => {
  const shortLived = await ca.issue(IDS.frontend, 2);
  const client = new TestSource(shortLived, ca.bundle());
  const server = new TestSource(await ca.issue(IDS.backend), ca.bundle());
  const servers = await startProxy(
    {
      limits: { revalidateIntervalSeconds: 1 },
      inbound: [{
        name: "expiring-in",
        workload: "server",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${echo.port}`,
        defaultAction: "ALLOW",
      }],
    },
    dir.path,
    { server },
  );
  const clients = await startProxy(
    {
      outbound: [{
        name: "expiring-out",
        workload: "client",
        listen: 0,
        upstream: `127.0.0.1:${servers.port("expiring-in")}`,
        allowedIds: [IDS.backend],
      }],
    },
    dir.path,
    { client },
  );
  try {
    const stream = await openStream({ port: clients.port("expiring-out") });
    assert.equal(await stream.send("while valid"), "while valid");
    await within(stream.closed, 10_000, "the connection of the expired peer closed");
    const closing = (await records("expiring-in")).find((r) => r.decision === "deny");
    assert.equal(closing.error.code, "ERR_CERT_EXPIRED");
    assert.equal(servers.proxy.metrics.closed.value({ listener: "expiring-in", reason: "unverified" }), 1);
  } finally {
    await clients.proxy.stop();
    await servers.proxy.stop();
  }
});

test(
  "a workload without an SVID has its listeners refuse connections until one arrives",
  { timeout: 30_000 },
  async () => {
    const client = new TestSource(await ca.issue(IDS.frontend), ca.bundle());
    const server = new TestSource(undefined, ca.bundle());
    const servers = await startProxy(
      {
        inbound: [{
          name: "waiting-in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      { server },
    );
    const clients = await startProxy(
      {
        outbound: [{
          name: "waiting-out",
          workload: "client",
          listen: 0,
          upstream: `127.0.0.1:${servers.port("waiting-in")}`,
          allowedIds: [IDS.backend],
        }],
      },
      dir.path,
      { client },
    );
    try {
      const port = clients.port("waiting-out");
      assert.equal((await exchange({ port }, "too early")).closed, true);
      assert.equal(
        servers.proxy.metrics.connections.value({
          listener: "waiting-in",
          direction: "inbound",
          transport: "mtls",
          outcome: "no_credential",
        }),
        1,
      );
      server.update({ credential: await ca.issue(IDS.backend) });
      assert.equal((await exchange({ port }, "in time")).reply, "in time");
    } finally {
      await clients.proxy.stop();
      await servers.proxy.stop();
    }
  },
);

test(
  "a server revoked while a connection to it is open has its session ticket dropped: once it has a new SVID, the next connection succeeds at once",
  { timeout: 30_000 },
  async () => {
    const p = await pair("ticket-drop");
    try {
      const stream = await openStream({ port: p.port });
      assert.equal(await stream.send("hello"), "hello");
      // A second connection, resumed where the runtime resumes: the client holds a ticket for this server.
      assert.equal((await exchange({ port: p.port }, "again")).reply, "again");
      ca.revoke(p.serverSvid);
      const crls = [await ca.crl()];
      p.client.update({ crls });
      p.server.update({ crls });
      await within(stream.closed, 5000, "the connection to the revoked server closed");
      p.server.update({ credential: await ca.issue(IDS.backend) });
      // Offering the old ticket would resume a session whose server chain is the revoked one.
      assert.equal((await exchange({ port: p.port }, "after the new SVID")).reply, "after the new SVID");
    } finally {
      await p.stop();
    }
  },
);

// Deno's node:tls hands a server only the first two certificates a client sent (leaf and issuer),
// so there the proxy never sees a chain over the limit.
const clientChainCut = "Deno" in globalThis
  ? "Deno's node:tls hands the server only the first two certificates of the client's chain"
  : false;

test(
  "a peer that sends more certificates than a chain may hold is refused, not cut down to a chain that verifies",
  { timeout: 30_000, skip: clientChainCut },
  async () => {
    const server = new TestSource(await ca.issue(IDS.backend), ca.bundle());
    // The SVID, its intermediate, and nine more certificates of the same CA: eleven, one over the limit.
    const svid = await ca.issue(IDS.frontend);
    const extra: string[] = [];
    for (let i = 0; i < 9; i++) {
      const other = await ca.issue(`spiffe://mesh.test/ns/extra/sa/extra-${i}`);
      extra.push(other.certificateChainPem.split(/(?<=-----END CERTIFICATE-----\n?)/)[0].trim());
    }
    const client = new TestSource({
      certificateChainPem: `${svid.certificateChainPem.trim()}\n${extra.join("\n")}\n`,
      privateKeyPem: svid.privateKeyPem,
    }, ca.bundle());
    const servers = await startProxy(
      {
        inbound: [{
          name: "long-chain-in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      { server },
    );
    const clients = await startProxy(
      {
        outbound: [{
          name: "long-chain-out",
          service: "backend",
          workload: "client",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("long-chain-in")}`,
          allowedIds: [IDS.backend],
        }],
      },
      dir.path,
      { client },
    );
    try {
      const { reply, closed } = await exchange({ port: clients.port("long-chain-out") }, "hello");
      assert.equal(reply, "");
      assert.equal(closed, true);
      await until(async () => (await records("long-chain-in")).length > 0);
      const refusal = (await records("long-chain-in"))[0];
      assert.equal(refusal.reason, "unverified-peer");
      assert.equal(refusal.error.code, "ERR_PATH_BUILDING_LIMIT");
    } finally {
      await clients.proxy.stop();
      await servers.proxy.stop();
    }
  },
);

test(
  "a ticket that arrives for a connection opened with the SVID just replaced is not resumed: the next connection presents the new SVID",
  { timeout: 30_000, skip: resumption },
  async () => {
    const name = "ticket-after-change";
    const oldSvid = await ca.issue(IDS.frontend);
    const client = new TestSource(oldSvid, ca.bundle());
    const server = new TestSource(await ca.issue(IDS.backend), ca.bundle());
    const servers = await startProxy(
      {
        inbound: [{
          name: `${name}-in`,
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      { server },
    );
    // A slow network between the two proxies: each of the server's flights arrives 60 ms late,
    // so the client's SVID can change while a handshake is under way, before its ticket comes.
    const sockets = new Set<Socket>();
    const slow = createServer((from) => {
      const to = connect(servers.port(`${name}-in`), "127.0.0.1");
      for (const s of [from, to]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => sockets.delete(s));
      }
      from.pipe(to);
      to.on("data", (data) => setTimeout(() => from.write(data), 60));
      to.on("end", () => setTimeout(() => from.end(), 60));
    });
    await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
    const clients = await startProxy(
      {
        outbound: [{
          name: `${name}-out`,
          service: "backend",
          workload: "client",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${(slow.address() as { port: number }).port}`,
          allowedIds: [IDS.backend],
        }],
      },
      dir.path,
      { client },
    );
    try {
      const port = clients.port(`${name}-out`);
      // The connection opens with the old SVID; the new one comes in during its handshake.
      const inFlight = exchange({ port }, "opened with the old SVID", 5000);
      await new Promise((resolve) => setTimeout(resolve, 30));
      const newSvid = await ca.issue(IDS.frontend);
      client.update({ credential: newSvid });
      assert.equal((await inFlight).reply, "opened with the old SVID");
      // Its ticket has come by now; the next connection must not resume it.
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal((await exchange({ port }, "next", 5000)).reply, "next");
      const allowed = (await records(`${name}-in`)).filter((r) => r.decision === "allow");
      assert.deepEqual(allowed.map((r) => r.peerSerial), [oldSvid.serialNumber, newSvid.serialNumber]);
      assert.equal(
        allowed[1].resumed,
        undefined,
        "the next connection made a full handshake with the new SVID",
      );
    } finally {
      await clients.proxy.stop();
      await servers.proxy.stop();
      for (const s of sockets) s.destroy();
      slow.close();
    }
  },
);
