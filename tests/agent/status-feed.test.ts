// The status page's bounds, over real HTTP on 127.0.0.1: at most 16 followers of `/events` (the
// next is answered 503), a follower that stops reading is dropped once more than 1 MiB waits for
// it, the newest 200 events are kept, and a burst beyond one batch is counted (`eventsNotSent`),
// not sent. The feed's inputs are the agent's events and the proxy's audit records; here a
// stand-in hands it records of those real types, as many and as large as each bound needs.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import { SpiffeId, TrustBundle } from "../../mod.ts";
import {
  type AgentEvent,
  type AuditRecord,
  type MeshProxy,
  type NodeAgent,
  StatusFeed,
} from "../../agent/mod.ts";
import { TestCa } from "./proxy-support.ts";

const NODE = SpiffeId.parse("spiffe://mesh.test/node/node-1");
let bundle: TrustBundle;

before(async () => {
  bundle = (await TestCa.create()).bundle();
});

/** What the feed reads of an agent and a proxy, driven by the test. */
class Sources {
  readonly agentListeners = new Set<(event: AgentEvent) => void>();
  readonly proxyListeners = new Set<(record: AuditRecord) => void>();
  readonly agent = {
    nodeId: NODE,
    subscribe: (listener: (event: AgentEvent) => void) => {
      this.agentListeners.add(listener);
      return () => this.agentListeners.delete(listener);
    },
    workloads: () => [],
    svid: () => undefined,
    svids: () => new Map(),
    trustBundle: () => bundle,
  } as unknown as NodeAgent;
  readonly proxy = {
    config: undefined,
    addresses: () => ({}),
    subscribe: (listener: (record: AuditRecord) => void) => {
      this.proxyListeners.add(listener);
      return () => this.proxyListeners.delete(listener);
    },
  } as unknown as MeshProxy;

  /** `count` decisions, numbered from `from` (`connection`), with `padding` bytes of path each. */
  decisions(count: number, from = 0, padding = 0): void {
    for (let i = from; i < from + count; i++) {
      const record: AuditRecord = {
        time: new Date().toISOString(),
        listener: "photo-backend",
        direction: "inbound",
        decision: "allow",
        reason: "policy",
        destination: "unix:/run/photo-backend.sock",
        transport: "mtls",
        connection: i,
        ...(padding ? { path: `/${"x".repeat(padding)}` } : {}),
      };
      for (const listener of this.proxyListeners) listener(record);
    }
  }

  bundleChanged(): void {
    for (const listener of this.agentListeners) {
      listener({ type: "bundle", trustBundle: bundle, pem: "", sequence: 2 });
    }
  }
}

interface Served {
  feed: StatusFeed;
  sources: Sources;
  port: number;
  close(): Promise<void>;
}

const opened: Served[] = [];
after(async () => {
  for (const served of opened) await served.close();
});

async function serve(options: Partial<ConstructorParameters<typeof StatusFeed>[0]> = {}): Promise<Served> {
  const sources = new Sources();
  const feed = new StatusFeed({ agent: sources.agent, proxy: sources.proxy, ...options });
  const server: Server = createServer((_req, res) => feed.follow(res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const served = {
    feed,
    sources,
    port: (server.address() as AddressInfo).port,
    close: async () => {
      feed.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  opened.push(served);
  return served;
}

/** A follower of `/events` that reads, parsing each Server-Sent Event. */
function follow(
  port: number,
): Promise<{ status: number; events: { event: string; data: any }[]; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/events" }, (res) => {
      const events: { event: string; data: any }[] = [];
      let buffered = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffered += chunk;
        let end;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) });
        }
      });
      res.on("error", () => {});
      resolve({ status: res.statusCode!, events, close: () => req.destroy() });
    });
    req.on("error", reject);
    req.end();
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("16 followers are served; the 17th is answered 503 with Retry-After, and one leaving makes room", async () => {
  const { port } = await serve();
  const followers = [];
  for (let i = 0; i < 16; i++) followers.push(await follow(port));
  assert.deepEqual(followers.map((f) => f.status), Array(16).fill(200));
  const refused = await new Promise<{ status: number; retryAfter?: string; body: string }>((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/events" }, (res) => {
      // A stream (200) never ends: only a refusal is read to its end.
      if (res.statusCode !== 503) {
        req.destroy();
        return resolve({ status: res.statusCode!, body: "" });
      }
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, retryAfter: res.headers["retry-after"], body }));
    });
    req.end();
  });
  assert.equal(refused.status, 503);
  assert.equal(refused.retryAfter, "5");
  assert.match(refused.body, /too many status page followers/);
  followers[0].close();
  // The server notices the close; then a new follower is served.
  let next = await follow(port);
  for (let i = 0; next.status === 503 && i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    next = await follow(port);
  }
  assert.equal(next.status, 200);
  for (const f of [...followers, next]) f.close();
});

test("a follower that stops reading is dropped once more than 1 MiB waits for it; a reading one keeps receiving", async () => {
  // One follower at a time: whether the stalled one was let go is whether another is served.
  const { port, sources, feed } = await serve({ maxFollowers: 2, flushIntervalMs: 5 });
  const stalled: Socket = connect(port, "127.0.0.1");
  await new Promise((resolve) => stalled.once("connect", resolve));
  stalled.write("GET /events HTTP/1.1\r\nhost: status\r\n\r\n");
  await new Promise((resolve) => stalled.once("data", resolve));
  stalled.pause();
  const reader = await follow(port);
  assert.equal(reader.status, 200);
  assert.equal((await follow(port)).status, 503, "both places are taken");
  // 20 KiB a decision, 100 a batch: 2 MiB a batch, far past what the sockets' buffers hold.
  let sent = 0;
  let isDropped = false;
  while (!isDropped && sent < 4000) {
    sources.decisions(100, sent, 20 * 1024);
    sent += 100;
    await new Promise((resolve) => setTimeout(resolve, 20));
    const probe = await follow(port);
    isDropped = probe.status === 200;
    probe.close();
  }
  assert.ok(isDropped, `the stalled follower still held its place after ${sent} decisions`);
  // Less than what was written to it was taken off its socket: it was let go, not buffered for.
  await until(
    () =>
      reader.events.some((e) => e.event === "events" && e.data.events.at(-1)?.record.connection === sent - 1),
    "the reading follower to receive the last decision",
  );
  assert.ok(feed.snapshot().events.length <= 200);
  reader.close();
  stalled.destroy();
});

test("the newest 200 events are kept", async () => {
  const { feed, sources } = await serve();
  sources.decisions(250);
  const events = feed.snapshot().events;
  assert.equal(events.length, 200);
  const connections = events.map((e) => e.kind === "decision" ? e.record.connection : undefined);
  assert.deepEqual(connections, Array.from({ length: 200 }, (_, i) => 50 + i));
});

test("lifecycle events are kept apart from decisions: 250 decisions after a bundle change leave it on the page", async () => {
  const { feed, sources } = await serve();
  sources.bundleChanged();
  sources.decisions(250);
  const events = feed.snapshot().events;
  assert.equal(events.filter((e) => e.kind === "decision").length, 200);
  assert.deepEqual(events.filter((e) => e.kind !== "decision").map((e) => e.kind), ["bundle"]);
  assert.equal(events[0].kind, "bundle", "oldest first");
});

test("a burst of more than 200 events between two batches sends the newest 200 and counts the rest in eventsNotSent", async () => {
  const { feed, sources, port } = await serve({ flushIntervalMs: 50 });
  const follower = await follow(port);
  await until(() => follower.events.some((e) => e.event === "snapshot"), "the snapshot");
  sources.decisions(250);
  await until(() => follower.events.some((e) => e.event === "events"), "the batch");
  const batch = follower.events.find((e) => e.event === "events")!.data;
  assert.equal(batch.events.length, 200);
  assert.equal(batch.events[0].record.connection, 50);
  assert.equal(batch.eventsNotSent, 50);
  assert.equal(feed.snapshot().eventsNotSent, 50);
  follower.close();
});
