// HTTP mode of the inbound proxy under hostile input: requests whose fields the policy and the
// service could read differently, upgrades a service declines, heads that trickle in, slow
// answers of the service, path parameters, and failures inside the proxy's own handling.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from "node:http";
import { connect, createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { type MeshProxy, ProxyMetrics } from "../../agent/mod.ts";
import { AuditLog } from "../../agent/proxy/audit.ts";
import { UnverifiedAudit } from "../../agent/proxy/audit-aggregation.ts";
import { HttpInbound } from "../../agent/proxy/http-inbound.ts";
import { ListenerPolicy } from "../../agent/proxy/policy-files.ts";
import { silentLogger } from "../../internal/mod.ts";
import {
  auditRecords,
  IDS,
  proxyConfig,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  until,
  within,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let sources: Record<string, TestSource>;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  const ca = await TestCa.create();
  sources = {
    "photo-frontend": new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
    "photo-backend": new TestSource(await ca.issue(IDS.backend), ca.bundle()),
  };
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await dir?.remove();
});

/** What the service saw of one request: its target and every raw field line. */
interface Seen {
  url: string;
  rawHeaders: string[];
}

/** An HTTP service on 127.0.0.1 that records each request and answers it (by default 200 with the URL). */
async function service(
  answer: (req: IncomingMessage, res: import("node:http").ServerResponse) => void = (req, res) =>
    res.end(`served ${req.url}`),
): Promise<{ server: HttpServer; port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createHttpServer((req, res) => {
    seen.push({ url: req.url ?? "", rawHeaders: req.rawHeaders });
    answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { server, port: (server.address() as { port: number }).port, seen };
}

/**
 * An inbound HTTP listener (photo-backend, PERMISSIVE so that plain text reaches it too) in
 * front of `forwardPort`, and an outbound one (photo-frontend) to it.
 */
async function pair(
  name: string,
  forwardPort: number,
  inbound: Record<string, unknown> = {},
  raw: Record<string, unknown> = {},
): Promise<{ port: number; inboundPort: number; server: MeshProxy }> {
  const servers = await startProxy(
    {
      ...raw,
      inbound: [{
        name: `${name}-in`,
        workload: "photo-backend",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${forwardPort}`,
        protocol: "http",
        mode: "PERMISSIVE",
        defaultAction: "ALLOW",
        ...inbound,
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => servers.proxy.stop());
  const clients = await startProxy(
    {
      outbound: [{
        name: `${name}-out`,
        service: "photo-backend",
        workload: "photo-frontend",
        listen: "127.0.0.1:0",
        upstream: `127.0.0.1:${servers.port(`${name}-in`)}`,
        allowedIds: [IDS.backend],
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => clients.proxy.stop());
  return {
    port: clients.port(`${name}-out`),
    inboundPort: servers.port(`${name}-in`),
    server: servers.proxy,
  };
}

/** Writes `text` (or each part, `gapMs` apart) and answers what came back before the server closed or `waitMs` passed. */
function rawHttp(
  port: number,
  text: string | string[],
  waitMs = 2000,
  gapMs = 0,
): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    let closed = false;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ reply, closed });
    };
    const timer = setTimeout(done, waitMs);
    socket.on("data", (d) => reply += d);
    socket.on("error", () => {});
    socket.on("close", () => {
      closed = true;
      done();
    });
    socket.on("connect", async () => {
      for (const part of Array.isArray(text) ? text : [text]) {
        if (socket.destroyed) return;
        socket.write(part);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  });
}

/** The status codes of the responses in `reply`, in order. */
function statuses(reply: string): number[] {
  return [...reply.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

async function policyFile(name: string, yaml: string): Promise<string> {
  const path = join(dir.path, name);
  await writeFile(path, yaml);
  return path;
}

test(
  "HTTP mode: a request with two Host fields is refused with 400 and audited, over mutual TLS and plain text, and the proxy lives on",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const { port, inboundPort } = await pair("dup-host", backend.port);
    const twoHosts = "GET /x HTTP/1.1\r\nhost: a.example\r\nhost: admin.example\r\n\r\n";
    for (const target of [port, inboundPort]) {
      const answer = await rawHttp(target, twoHosts);
      assert.deepEqual(statuses(answer.reply), [400], answer.reply);
      assert.match(answer.reply, /"code":"ERR_BAD_REQUEST"/);
      assert.match(answer.reply, /2 host header fields/);
    }
    assert.equal(backend.seen.length, 0);
    await until(async () =>
      (await auditRecords(dir.path)).filter((r) => r.listener === "dup-host-in").length === 2
    );
    const records = (await auditRecords(dir.path)).filter((r) => r.listener === "dup-host-in");
    assert.deepEqual(
      records.map((r) => [r.decision, r.reason, r.error?.code, r.transport, r.path]),
      [
        ["deny", "malformed-request", "ERR_BAD_REQUEST", "mtls", "/x"],
        ["deny", "malformed-request", "ERR_BAD_REQUEST", "plaintext", "/x"],
      ],
    );
    // Still serving, both ways.
    for (const target of [port, inboundPort]) {
      const answer = await rawHttp(target, "GET /after HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
      assert.deepEqual(statuses(answer.reply), [200], answer.reply);
    }
  },
);

test(
  "HTTP mode: the policy and the service read the same fields: a repeated singleton is refused, a repeated list field arrives as the one line the policy read",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const file = await policyFile(
      "same-fields.yaml",
      `policies:
  - name: tagged-both
    action: ALLOW
    rules:
      - when: [{ key: "request.headers[x-tag]", values: ["a, b"] }]
`,
    );
    const { port } = await pair("same-fields", backend.port, { policies: [file], defaultAction: "DENY" });
    for (const field of ["authorization: Bearer x", "user-agent: u", "content-type: text/plain"]) {
      const request = `GET /x HTTP/1.1\r\nhost: b\r\nx-tag: a\r\nx-tag: b\r\n${field}\r\n${field}2\r\n\r\n`;
      const answer = await rawHttp(port, request);
      assert.deepEqual(statuses(answer.reply), [400], `${field}: ${answer.reply}`);
    }
    assert.equal(backend.seen.length, 0);
    const answer = await rawHttp(
      port,
      "GET /x HTTP/1.1\r\nhost: b\r\nx-tag: a\r\nX-Tag: b\r\ncookie: c=1\r\ncookie: d=2\r\nconnection: close\r\n\r\n",
    );
    assert.deepEqual(statuses(answer.reply), [200], answer.reply);
    const lines = backend.seen[0].rawHeaders;
    const fields = (name: string) =>
      lines.filter((_, i) => i % 2 === 1 && lines[i - 1].toLowerCase() === name);
    assert.deepEqual(fields("x-tag"), ["a, b"]);
    assert.deepEqual(fields("cookie"), ["c=1; d=2"]);
    assert.deepEqual(fields("host"), ["b"]);
  },
);

test(
  "HTTP mode: a Connection field that names Host or Content-Length is refused",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const { port } = await pair("conn-names", backend.port);
    for (const named of ["host", "content-length"]) {
      const answer = await rawHttp(
        port,
        `POST /x HTTP/1.1\r\nhost: b\r\ncontent-length: 4\r\nconnection: ${named}\r\n\r\nabcd`,
      );
      assert.deepEqual(statuses(answer.reply), [400], answer.reply);
    }
    assert.equal(backend.seen.length, 0);
  },
);

test(
  "HTTP mode: an exception inside the proxy's request handling is answered 500, logged and counted, and the process lives",
  { timeout: 30_000 },
  async () => {
    // A fault injected where no wire input reaches: the listener's view of its connection throws.
    const metrics = new ProxyMetrics();
    const audit = new AuditLog(join(dir.path, "fault-audit.jsonl"));
    await audit.open();
    const errors: string[] = [];
    const config = proxyConfig({
      auditLog: join(dir.path, "fault-audit.jsonl"),
      inbound: [{
        name: "fault-in",
        workload: "photo-backend",
        listen: "127.0.0.1:0",
        forward: "127.0.0.1:9",
        protocol: "http",
        defaultAction: "ALLOW",
      }],
    }, dir.path);
    const inbound = config.inbound[0];
    const policy = await ListenerPolicy.load({
      listener: inbound.name,
      files: [],
      protocol: "http",
      defaultAction: "ALLOW",
    });
    const { ProxyConnection } = await import("../../agent/proxy/connection.ts");
    const connections = new WeakMap<object, InstanceType<typeof ProxyConnection>>();
    let ids = 0;
    const http = new HttpInbound(inbound, policy, {
      limits: config.limits,
      sessionResumption: false,
      sessionTimeoutSeconds: 300,
      ticketKeys: new Uint8Array(48),
      logger: { ...silentLogger, error: (message: string) => void errors.push(message) },
      metrics,
      audit,
      unverifiedAudit: new UnverifiedAudit({
        intervalMs: 10_000,
        write: (r) => audit.append(r),
        folded: () => {},
      }),
      nextConnectionId: () => ++ids,
    }, {
      connectionOf: (socket) => connections.get(socket),
      policyRequest: () => {
        throw new TypeError("injected fault");
      },
      auditFields: (connection) => ({
        destination: "127.0.0.1:9",
        transport: "plaintext",
        connection: connection.id,
      }),
      ownId: () => undefined,
    });
    const server = createNetServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
      const connection = new ProxyConnection(++ids, "plaintext", socket);
      connection.add(socket);
      connections.set(socket, connection);
      http.serve(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(async () => {
      http.close();
      await audit.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const port = (server.address() as { port: number }).port;
    const plain = await rawHttp(port, "GET /x HTTP/1.1\r\nhost: b\r\n\r\n");
    assert.deepEqual(statuses(plain.reply), [500], plain.reply);
    assert.match(plain.reply, /"code":"ERR_INTERNAL"/);
    const upgrade = await rawHttp(
      port,
      "GET /ws HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    );
    assert.deepEqual(statuses(upgrade.reply), [500], upgrade.reply);
    assert.equal(metrics.internalErrors.value({ listener: "fault-in" }), 2);
    assert.deepEqual(errors, ["handling an HTTP request failed", "handling an HTTP request failed"]);
  },
);

test(
  "HTTP mode: connectTimeoutSeconds bounds connecting only: a service that answers after longer is served",
  { timeout: 30_000 },
  async () => {
    const backend = await service((req, res) => setTimeout(() => res.end(`late ${req.url}`), 2000));
    const { port } = await pair("slow-answer", backend.port, {}, { limits: { connectTimeoutSeconds: 1 } });
    const answer = await rawHttp(port, "GET /slow HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n", 6000);
    assert.deepEqual(statuses(answer.reply), [200], answer.reply);
    assert.match(answer.reply, /late \/slow$/);
  },
);

test(
  "HTTP mode: an event stream outlives responseIdleTimeoutSeconds while the service keeps sending; a silent service is answered 504",
  { timeout: 30_000 },
  async () => {
    const backend = await service((req, res) => {
      if (req.url === "/silent") return; // never answers
      res.writeHead(200, { "content-type": "text/event-stream" });
      let sent = 0;
      const timer = setInterval(() => {
        res.write(`data: ${++sent}\n\n`);
        if (sent === 6) {
          clearInterval(timer);
          res.end();
        }
      }, 400);
    });
    const { port } = await pair("event-stream", backend.port, {}, {
      limits: { responseIdleTimeoutSeconds: 1 },
    });
    const events = await rawHttp(port, "GET /events HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n", 8000);
    assert.deepEqual(statuses(events.reply), [200], events.reply);
    assert.deepEqual([...events.reply.matchAll(/data: (\d)/g)].map((m) => m[1]), [
      "1",
      "2",
      "3",
      "4",
      "5",
      "6",
    ]);
    const silent = await rawHttp(port, "GET /silent HTTP/1.1\r\nhost: b\r\n\r\n", 6000);
    assert.deepEqual(statuses(silent.reply), [504], silent.reply);
    assert.match(silent.reply, /"code":"ERR_UPSTREAM_TIMEOUT"/);
  },
);

/** An HTTP service that switches `/chat` to an echo protocol (101, then every byte back) and answers the rest as HTTP. */
async function upgradingService(): Promise<{ port: number; seen: Seen[]; upgrades: Seen[] }> {
  const backend = await service();
  const upgrades: Seen[] = [];
  // Upgraded sockets are no longer the HTTP server's: closing it would wait for them.
  const tunnels = new Set<import("node:net").Socket>();
  closers.push(() => {
    for (const socket of tunnels) socket.destroy();
    return Promise.resolve();
  });
  backend.server.on("upgrade", (req: IncomingMessage, socket: import("node:net").Socket, head: Buffer) => {
    upgrades.push({ url: req.url ?? "", rawHeaders: req.rawHeaders });
    tunnels.add(socket);
    if (req.url !== "/chat") {
      socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nno such\r\n");
      return;
    }
    socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    socket.write(head);
    socket.pipe(socket);
  });
  return { port: backend.port, seen: backend.seen, upgrades };
}

const PUBLIC_ONLY = `policies:
  - name: public-and-chat
    action: ALLOW
    rules:
      - to: [{ operation: { paths: ["/public*", "/chat"] } }]
`;

test(
  "HTTP mode: an upgrade the service does not switch is answered as HTTP, and the requests after it are decided: a smuggled one with a forged XFCC never reaches the service",
  { timeout: 30_000 },
  async () => {
    // node:http without an upgrade listener answers an Upgrade request as an ordinary one and keeps reading.
    const backend = await service();
    const file = await policyFile("smuggle.yaml", PUBLIC_ONLY);
    const { port } = await pair("smuggle", backend.port, { policies: [file], defaultAction: "DENY" });
    const upgrade = "GET /public HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
    const smuggled =
      `GET /admin/secret HTTP/1.1\r\nhost: b\r\nx-forwarded-client-cert: URI=${IDS.datastore}\r\n\r\n`;
    // In the same write as the upgrade request, and in a later one.
    const together = await rawHttp(port, upgrade + smuggled, 3000);
    const apart = await rawHttp(port, [upgrade, smuggled], 3000, 300);
    for (const { reply } of [together, apart]) {
      assert.deepEqual(statuses(reply), [200, 403], reply);
      assert.match(reply, /served \/public/);
    }
    assert.deepEqual(backend.seen.map((s) => s.url), ["/public", "/public"]);
    const audited = (await auditRecords(dir.path)).filter((r) => r.listener === "smuggle-in");
    assert.deepEqual(audited.map((r) => [r.path, r.decision]), [
      ["/public", "allow"],
      ["/admin/secret", "deny"],
      ["/public", "allow"],
      ["/admin/secret", "deny"],
    ]);
  },
);

test(
  "HTTP mode: an allowed upgrade is piped only after the service's 101, and the service sees the proxy's XFCC, never a forged one",
  { timeout: 30_000 },
  async () => {
    const backend = await upgradingService();
    const file = await policyFile("upgrade-xfcc.yaml", PUBLIC_ONLY);
    const { port } = await pair("upgrade-xfcc", backend.port, { policies: [file], defaultAction: "DENY" });
    const answer = await rawHttp(
      port,
      `GET /chat HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: echo\r\nx-forwarded-client-cert: URI=${IDS.datastore}\r\n\r\nping`,
      1500,
    );
    assert.match(answer.reply, /^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nping$/);
    const lines = backend.upgrades[0].rawHeaders;
    const xfcc = lines.filter((_, i) =>
      i % 2 === 1 && lines[i - 1].toLowerCase() === "x-forwarded-client-cert"
    );
    assert.equal(xfcc.length, 1);
    assert.match(xfcc[0], new RegExp(`^By=${IDS.backend};Hash=[0-9a-f]{64};URI=${IDS.frontend}$`));
    // An upgrade the service refuses comes back as its answer; an upgrade request with a body is refused.
    const refused = await rawHttp(
      port,
      "GET /public/x HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    );
    assert.deepEqual(statuses(refused.reply), [404], refused.reply);
    const withBody = await rawHttp(
      port,
      "POST /chat HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: echo\r\ncontent-length: 4\r\n\r\nbody",
    );
    assert.deepEqual(statuses(withBody.reply), [400], withBody.reply);
    assert.equal(backend.upgrades.length, 2);
  },
);

test(
  "HTTP mode: an upgraded connection whose request a reloaded policy denies is closed and audited",
  { timeout: 30_000 },
  async () => {
    const backend = await upgradingService();
    const file = await policyFile("tunnel-reload.yaml", PUBLIC_ONLY);
    const { port, server } = await pair("tunnel-reload", backend.port, {
      policies: [file],
      defaultAction: "DENY",
    });
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    socket.on("data", (d) => reply += d);
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    await new Promise((resolve) => socket.on("connect", resolve));
    socket.write("GET /chat HTTP/1.1\r\nhost: b\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    await until(() => reply.includes("\r\n\r\n"));
    assert.match(reply, /^HTTP\/1\.1 101 /);
    socket.write("still open");
    await until(() => reply.endsWith("still open"));
    // A reload that keeps /chat allowed leaves the tunnel open; one that denies it closes it.
    await writeFile(file, PUBLIC_ONLY.replace("name: public-and-chat", "name: renamed"));
    await server.reloadPolicies();
    socket.write("!");
    await until(() => reply.endsWith("still open!"));
    await writeFile(file, PUBLIC_ONLY.replace(`, "/chat"`, ""));
    await server.reloadPolicies();
    await within(closed, 5000, "the tunnel denied by the new policy closed");
    assert.equal(server.metrics.closed.value({ listener: "tunnel-reload-in", reason: "denied" }), 1);
    const audited = (await auditRecords(dir.path)).filter((r) => r.listener === "tunnel-reload-in");
    assert.deepEqual(audited.at(-1)?.path, "/chat");
    assert.equal(audited.at(-1)?.decision, "deny");
  },
);

/**
 * Deno's node:http closes a connection after each answer when the server did not listen() itself
 * (its resOnFinish destroys the socket of a server that is not listening), and the proxy hands
 * its HTTP server the sockets it accepted: on Deno there is no keep-alive in HTTP mode.
 */
const keepsAlive = !("Deno" in globalThis);

test(
  "HTTP mode: a request head trickled in a byte at a time is cut off after headersTimeoutSeconds with 408, over mutual TLS and plain text",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const { port, inboundPort, server } = await pair("slow-head", backend.port, {}, {
      limits: { headersTimeoutSeconds: 1, idleTimeoutSeconds: 60 },
    });
    const trickle = ["GET /x HTTP/1.1\r\nhost: b\r\n", ..."x-slow: 1234567890".split("")];
    for (const target of [port, inboundPort]) {
      const started = performance.now();
      const answer = await rawHttp(target, trickle, 8000, 300);
      const elapsedMs = performance.now() - started;
      assert.equal(answer.closed, true);
      assert.ok(elapsedMs < 4000, `closed after ${Math.round(elapsedMs)} ms`);
      assert.deepEqual(statuses(answer.reply), [408], answer.reply);
      assert.match(answer.reply, /"code":"ERR_REQUEST_TIMEOUT"/);
    }
    assert.equal(backend.seen.length, 0);
    assert.equal(server.metrics.closed.value({ listener: "slow-head-in", reason: "headers_timeout" }), 2);
  },
);

test(
  "HTTP mode: between requests a connection rests longer than headersTimeoutSeconds; a new connection that sends nothing does not",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const { port, inboundPort } = await pair("rest", backend.port, {}, {
      limits: { headersTimeoutSeconds: 1, idleTimeoutSeconds: 60 },
    });
    const request = "GET /x HTTP/1.1\r\nhost: b\r\n\r\n";
    const rested = await rawHttp(inboundPort, [request, request], 4000, 1800);
    if (keepsAlive) assert.deepEqual(statuses(rested.reply), [200, 200], rested.reply);
    else assert.deepEqual(statuses(rested.reply), [200], rested.reply);
    // Through the outbound listener: a verified connection that never sends a request head.
    const silent = await rawHttp(port, [], 4000);
    assert.equal(silent.closed, true);
    assert.deepEqual(statuses(silent.reply), [408], silent.reply);
  },
);

test(
  "HTTP mode: path parameters (;) and NUL are refused with 400 and audited, so /public/..;/admin never reaches a service that reads it as /admin",
  { timeout: 30_000 },
  async () => {
    const backend = await service();
    const file = await policyFile("path-parameters.yaml", PUBLIC_ONLY);
    const { port } = await pair("path-parameters", backend.port, { policies: [file], defaultAction: "DENY" });
    const targets = ["/public/..;/admin", "/public;jsessionid=1", "/public/..%3B/admin", "/public/a%00b"];
    for (const target of targets) {
      const answer = await rawHttp(port, `GET ${target} HTTP/1.1\r\nhost: b\r\n\r\n`);
      assert.deepEqual(statuses(answer.reply), [400], `${target}: ${answer.reply}`);
    }
    assert.equal(backend.seen.length, 0);
    // A semicolon in the query is the query's business.
    const query = await rawHttp(
      port,
      "GET /public/x?a=1;b=2 HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
    );
    assert.deepEqual(statuses(query.reply), [200], query.reply);
    await until(async () =>
      (await auditRecords(dir.path)).filter((r) => r.listener === "path-parameters-in").length === 5
    );
    const audited = (await auditRecords(dir.path)).filter((r) => r.listener === "path-parameters-in");
    assert.deepEqual(
      audited.slice(0, 4).map((r) => [r.path, r.reason]),
      targets.map((t) => [t, "malformed-request"]),
    );
  },
);
