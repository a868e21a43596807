// Limits and timeouts on every listener, and backpressure: more connections than allowed are
// closed at accept, a peer that never finishes its handshake and a connection that stays idle
// are closed, and a slow reader on either side makes the proxy stop reading instead of
// buffering: what it holds stays bounded while megabytes wait, and every byte arrives intact.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { MeshProxy } from "../../agent/mod.ts";
import {
  auditRecords,
  echoServer,
  exchange,
  IDS,
  openStream,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  until,
  within,
} from "./proxy-support.ts";

/**
 * Deno's net.Socket hands each write to its runtime at once, so `writableLength` does not show
 * what waits to be sent there; on Deno the tests check what the proxies hold, not where the rest waits.
 */
const showsPendingWrites = !("Deno" in globalThis);
/**
 * Deno's node:tls loses the end of a stream (close_notify, FIN) that arrives after its reader
 * was paused (a reader that never pauses gets it); on Deno the tests wait for every byte
 * instead of for the end.
 */
const endsAfterStall = !("Deno" in globalThis);

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let sources: Record<string, TestSource>;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  sources = {
    client: new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
    server: new TestSource(await ca.issue(IDS.backend), ca.bundle()),
  };
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await dir?.remove();
});

async function pair(
  name: string,
  forward: string,
  limits: Record<string, number> = {},
  listen = "127.0.0.1:0",
): Promise<
  { client: MeshProxy; server: MeshProxy; inboundPort: number; target: { port: number } | { path: string } }
> {
  const servers = await startProxy(
    {
      limits,
      inbound: [{
        name: `${name}-in`,
        workload: "server",
        listen: "127.0.0.1:0",
        forward,
        defaultAction: "ALLOW",
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => servers.proxy.stop());
  const clients = await startProxy(
    {
      limits,
      outbound: [{
        name: `${name}-out`,
        workload: "client",
        listen,
        upstream: `127.0.0.1:${servers.port(`${name}-in`)}`,
        allowedIds: [IDS.backend],
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => clients.proxy.stop());
  const address = clients.address(`${name}-out`);
  return {
    client: clients.proxy,
    server: servers.proxy,
    inboundPort: servers.port(`${name}-in`),
    target: "path" in address ? { path: address.path } : { port: address.port },
  };
}

test("an outbound listener on a Unix socket carries a connection", { timeout: 30_000 }, async () => {
  const echo = await echoServer();
  closers.push(echo.close);
  const { target } = await pair(
    "unix-out",
    `127.0.0.1:${echo.port}`,
    {},
    `unix:${join(dir.path, "out.sock")}`,
  );
  assert.deepEqual(target, { path: join(dir.path, "out.sock") });
  assert.equal((await exchange(target, "over a Unix socket")).reply, "over a Unix socket");
});

test("connections beyond maxConnections are closed at accept and counted", { timeout: 30_000 }, async () => {
  const echo = await echoServer();
  closers.push(echo.close);
  const { client, target } = await pair("limit", `127.0.0.1:${echo.port}`, { maxConnections: 2 });
  const first = await openStream(target);
  const second = await openStream(target);
  assert.equal(await first.send("1"), "1");
  assert.equal(await second.send("2"), "2");
  const third = await exchange(target, "3");
  assert.equal(third.reply, "");
  assert.equal(third.closed, true);
  assert.equal(client.metrics.connections.sum({ listener: "limit-out", outcome: "over_limit" }), 1);
  first.destroy();
  await until(async () => (await exchange(target, "4")).reply === "4");
  second.destroy();
});

test(
  "connections closed at accept (over the limit) cost nothing: no connection is made for them, no number used",
  {
    timeout: 30_000,
  },
  async () => {
    const echo = await echoServer();
    closers.push(echo.close);
    const servers = await startProxy(
      {
        limits: { maxConnections: 1 },
        inbound: [{
          name: "accept-in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      sources,
    );
    closers.push(() => servers.proxy.stop());
    const clients = await startProxy(
      {
        outbound: [{
          name: "accept-out",
          workload: "client",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("accept-in")}`,
          allowedIds: [IDS.backend],
        }],
      },
      dir.path,
      sources,
    );
    closers.push(() => clients.proxy.stop());
    const target = { port: clients.port("accept-out") };
    const held = await openStream(target);
    assert.equal(await held.send("held"), "held");
    for (let i = 0; i < 3; i++) assert.equal((await exchange(target, "refused")).reply, "");
    const metrics = servers.proxy.metrics;
    assert.equal(
      metrics.connections.value({
        listener: "accept-in",
        direction: "inbound",
        transport: "mtls",
        outcome: "over_limit",
      }),
      3,
    );
    held.destroy();
    await until(async () => (await exchange(target, "next")).reply === "next");
    const inbound = (await auditRecords(dir.path)).filter((r) => r.listener === "accept-in");
    assert.deepEqual(inbound.map((r) => r.connection), [1, 2]);
  },
);

test(
  "a peer that never completes its handshake is closed after handshakeTimeoutSeconds",
  { timeout: 30_000 },
  async () => {
    const echo = await echoServer();
    closers.push(echo.close);
    const { server, inboundPort } = await pair("handshake", `127.0.0.1:${echo.port}`, {
      handshakeTimeoutSeconds: 1,
    });
    const silent = connect(inboundPort, "127.0.0.1");
    silent.on("error", () => {});
    const started = performance.now();
    await within(new Promise((resolve) => silent.once("close", resolve)), 5000, "the silent peer was closed");
    assert.ok(performance.now() - started >= 900);
    assert.equal(server.metrics.closed.value({ listener: "handshake-in", reason: "handshake_timeout" }), 1);
  },
);

test("a connection idle for idleTimeoutSeconds is closed", { timeout: 30_000 }, async () => {
  const echo = await echoServer();
  closers.push(echo.close);
  const { client, server, target } = await pair("idle", `127.0.0.1:${echo.port}`, { idleTimeoutSeconds: 1 });
  const stream = await openStream(target);
  assert.equal(await stream.send("busy"), "busy");
  await within(stream.closed, 5000, "the idle connection was closed");
  // Both sides time out; whichever is first closes the connection.
  const idle = client.metrics.closed.value({ listener: "idle-out", reason: "idle" }) +
    server.metrics.closed.value({ listener: "idle-in", reason: "idle" });
  assert.ok(idle >= 1);
});

/** A service that does not read until told to, then hashes what it got. */
async function slowReader() {
  let socket: Socket | undefined;
  const hash = createHash("sha256");
  let received = 0;
  let ended!: () => void;
  const done = new Promise<void>((resolve) => ended = resolve);
  const server = createServer((s) => {
    socket = s;
    s.pause();
    s.on("data", (d) => {
      hash.update(d);
      received += d.length;
    });
    s.on("end", () => {
      s.end();
      ended();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    connected: () => socket !== undefined,
    resume: () => socket!.resume(),
    done,
    digest: () => hash.digest("hex"),
    received: () => received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

test(
  "a service that reads slowly makes the proxy stop reading: it holds a bounded amount, and every byte arrives",
  {
    timeout: 60_000,
  },
  async () => {
    const service = await slowReader();
    closers.push(service.close);
    const { client, server, target } = await pair("backpressure", `127.0.0.1:${service.port}`);
    const payload = randomBytes(32 * 1024 * 1024);
    const socket = "path" in target ? connect(target.path) : connect(target.port, "127.0.0.1");
    try {
      await new Promise((resolve) => socket.once("connect", resolve));
      socket.write(payload);
      socket.end();
      await until(() => service.connected());
      // Let every buffer on the way fill up.
      await new Promise((r) => setTimeout(r, 500));
      const held = client.bufferedBytes() + server.bufferedBytes();
      assert.ok(held < 4 * 1024 * 1024, `the proxies hold ${held} bytes while the service does not read`);
      if (showsPendingWrites) {
        assert.ok(
          socket.writableLength > 8 * 1024 * 1024,
          "the rest waits in the sender, not in the proxies",
        );
      }
      service.resume();
      if (endsAfterStall) await within(service.done, 30_000, "the whole payload and its end arrived");
      else await until(() => service.received() >= payload.length, 30_000);
      assert.equal(service.received(), payload.length);
      assert.equal(service.digest(), createHash("sha256").update(payload).digest("hex"));
    } finally {
      socket.destroy();
    }
  },
);

test(
  "a client that reads slowly makes the proxy stop reading from the service",
  { timeout: 60_000 },
  async () => {
    const payload = randomBytes(32 * 1024 * 1024);
    let serviceSocket: Socket | undefined;
    const service = createServer((s) => {
      serviceSocket = s;
      s.on("error", () => {});
      s.end(payload);
    });
    await new Promise<void>((resolve) => service.listen(0, "127.0.0.1", resolve));
    closers.push(() => {
      serviceSocket?.destroy();
      return new Promise<void>((resolve) => service.close(() => resolve()));
    });
    const port = (service.address() as { port: number }).port;
    const { client, server, target } = await pair("backpressure-reverse", `127.0.0.1:${port}`);
    const socket = "path" in target ? connect(target.path) : connect(target.port, "127.0.0.1");
    try {
      socket.pause();
      await until(() => serviceSocket !== undefined);
      await new Promise((r) => setTimeout(r, 500));
      const held = client.bufferedBytes() + server.bufferedBytes();
      assert.ok(held < 4 * 1024 * 1024, `the proxies hold ${held} bytes while the client does not read`);
      if (showsPendingWrites) {
        assert.ok(
          serviceSocket!.writableLength > 8 * 1024 * 1024,
          "the rest waits in the service, not in the proxies",
        );
      }
      const hash = createHash("sha256");
      let received = 0;
      socket.on("data", (d) => {
        hash.update(d);
        received += d.length;
      });
      socket.resume();
      if (endsAfterStall) {
        await within(
          new Promise((resolve) => socket.once("end", resolve)),
          30_000,
          "the whole payload and its end arrived",
        );
      } else await until(() => received >= payload.length, 30_000);
      assert.equal(received, payload.length);
      assert.equal(hash.digest("hex"), createHash("sha256").update(payload).digest("hex"));
    } finally {
      socket.destroy();
    }
  },
);

test(
  "every byte arrives intact through a reader that stalls again and again (buffers are never reused early)",
  {
    timeout: 60_000,
  },
  async () => {
    const payload = randomBytes(24 * 1024 * 1024);
    const service = createServer((s) => {
      s.on("error", () => {});
      s.end(payload);
    });
    await new Promise<void>((resolve) => service.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => service.close(() => resolve())));
    const port = (service.address() as { port: number }).port;
    const { target } = await pair("stalls", `127.0.0.1:${port}`);
    const socket = "path" in target ? connect(target.path) : connect(target.port, "127.0.0.1");
    try {
      const hash = createHash("sha256");
      let received = 0;
      let sinceStall = 0;
      socket.on("data", (d) => {
        hash.update(d);
        received += d.length;
        sinceStall += d.length;
        if (sinceStall > 128 * 1024) {
          sinceStall = 0;
          socket.pause();
          setTimeout(() => socket.resume(), 1);
        }
      });
      await until(() => received >= payload.length, 30_000);
      assert.equal(received, payload.length);
      assert.equal(hash.digest("hex"), createHash("sha256").update(payload).digest("hex"));
    } finally {
      socket.destroy();
    }
  },
);
