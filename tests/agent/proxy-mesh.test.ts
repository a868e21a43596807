// The proxy carrying the seed's three tiers over real sockets on 127.0.0.1: photo-frontend ->
// photo-backend and photo-backend -> datastore allowed, photo-frontend -> datastore denied by the
// datastore's policy; secure naming refuses an impostor server; plain text is refused in STRICT
// and served (and counted apart) in PERMISSIVE; a Unix-socket local leg; an expired SVID refused.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { MeshProxy } from "../../agent/mod.ts";
import {
  auditRecords,
  echoServer,
  exchange,
  IDS,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  until,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let proxy: MeshProxy;
let port: (name: string) => number;
const services: { close: () => Promise<void> }[] = [];
let serverProxy: MeshProxy;
let impostorProxy: MeshProxy;
let serverPort: (name: string) => number;
/** What the impostor's own service received: must stay empty. */
const impostorReceived: string[] = [];
let sources: Record<string, TestSource>;

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  const backendService = await echoServer();
  const datastoreService = await echoServer(join(dir.path, "datastore.sock"));
  services.push(backendService, datastoreService);
  await writeFile(
    join(dir.path, "backend-policy.yaml"),
    `policies:
  - name: frontend-calls-backend
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
`,
  );
  await writeFile(
    join(dir.path, "datastore-policy.yaml"),
    `policies:
  - name: backend-reads-datastore
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.backend}"] } }]
`,
  );
  await writeFile(
    join(dir.path, "permissive-policy.yaml"),
    `policies:
  - name: frontend-or-plaintext
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
      - from: [{ source: { notPrincipals: ["*"] } }]
`,
  );
  sources = {
    "photo-frontend": new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
    "photo-backend": new TestSource(await ca.issue(IDS.backend), ca.bundle()),
    datastore: new TestSource(await ca.issue(IDS.datastore), ca.bundle()),
    impostor: new TestSource(await ca.issue(IDS.impostor), ca.bundle()),
    expired: new TestSource(await ca.issueExpired(IDS.frontend), ca.bundle()),
  };
  const impostorService = await echoServer();
  impostorService.server.on(
    "connection",
    (socket) => socket.on("data", (d) => impostorReceived.push(String(d))),
  );
  services.push(impostorService);
  const impostor = await startProxy(
    {
      inbound: [{
        name: "impostor-in",
        workload: "impostor",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${impostorService.port}`,
        defaultAction: "ALLOW",
      }],
    },
    dir.path,
    sources,
  );
  impostorProxy = impostor.proxy;
  // The servers' side first, so the clients' side can name its ports (as on two nodes).
  const servers = await startProxy(
    {
      inbound: [
        {
          name: "photo-backend-in",
          workload: "photo-backend",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${backendService.port}`,
          policies: ["backend-policy.yaml"],
        },
        {
          name: "datastore-in",
          workload: "datastore",
          listen: "127.0.0.1:0",
          forward: `unix:${join(dir.path, "datastore.sock")}`,
          policies: ["datastore-policy.yaml"],
        },
        {
          name: "backend-permissive-in",
          workload: "photo-backend",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${backendService.port}`,
          mode: "PERMISSIVE",
          policies: ["permissive-policy.yaml"],
        },
      ],
    },
    dir.path,
    sources,
  );
  serverProxy = servers.proxy;
  serverPort = servers.port;
  ({ proxy, port } = await startProxy(
    {
      outbound: [
        {
          name: "frontend-to-backend",
          service: "photo-backend",
          workload: "photo-frontend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("photo-backend-in")}`,
          allowedIds: [IDS.backend],
        },
        {
          name: "backend-to-datastore",
          service: "datastore",
          workload: "photo-backend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("datastore-in")}`,
          allowedIds: [IDS.datastore],
        },
        {
          name: "frontend-to-datastore",
          service: "datastore",
          workload: "photo-frontend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("datastore-in")}`,
          allowedIds: [IDS.datastore],
        },
        {
          name: "frontend-to-impostor",
          service: "photo-backend",
          workload: "photo-frontend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${impostor.port("impostor-in")}`,
          allowedIds: [IDS.backend],
        },
        {
          name: "frontend-to-permissive",
          service: "photo-backend",
          workload: "photo-frontend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("backend-permissive-in")}`,
          allowedIds: [IDS.backend],
        },
        {
          name: "expired-to-backend",
          service: "photo-backend",
          workload: "expired",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${servers.port("photo-backend-in")}`,
          allowedIds: [IDS.backend],
        },
      ],
    },
    dir.path,
    sources,
  ));
});

after(async () => {
  await proxy?.stop();
  await serverProxy?.stop();
  await impostorProxy?.stop();
  for (const s of services) await s.close();
  await dir?.remove();
});

test("photo-frontend reaches photo-backend through its outbound and the backend's inbound listener", {
  timeout: 30_000,
}, async () => {
  const { reply } = await exchange({ port: port("frontend-to-backend") }, "hello backend");
  assert.equal(reply, "hello backend");
});

test(
  "photo-backend reaches the datastore, whose local leg is a Unix socket",
  { timeout: 30_000 },
  async () => {
    const { reply } = await exchange({ port: port("backend-to-datastore") }, "GET photo:1");
    assert.equal(reply, "GET photo:1");
  },
);

test("photo-frontend -> datastore is denied by the datastore's policy, at the datastore's proxy", {
  timeout: 30_000,
}, async () => {
  const { reply, closed } = await exchange({ port: port("frontend-to-datastore") }, "GET photo:1");
  assert.equal(reply, "");
  assert.equal(closed, true);
  await until(async () =>
    (await auditRecords(dir.path)).some((r) =>
      r.listener === "datastore-in" && r.decision === "deny" && r.peerId === IDS.frontend
    )
  );
  const denial = (await auditRecords(dir.path)).find((r) =>
    r.listener === "datastore-in" && r.decision === "deny"
  );
  assert.equal(denial.reason, "no-allow-policy-matched");
  assert.equal(denial.transport, "mtls");
  assert.match(denial.destination, /^unix:.*datastore\.sock$/);
  assert.equal(
    serverProxy.metrics.connections.value({
      listener: "datastore-in",
      direction: "inbound",
      transport: "mtls",
      outcome: "denied",
    }),
    1,
  );
});

test("the allowed calls are audited with the deciding policy and the peer", { timeout: 30_000 }, async () => {
  const records = await auditRecords(dir.path);
  const allowed = records.find((r) => r.listener === "photo-backend-in" && r.decision === "allow");
  assert.equal(allowed.policy, "frontend-calls-backend");
  assert.equal(allowed.ruleIndex, 0);
  assert.equal(allowed.peerId, IDS.frontend);
  assert.equal(allowed.direction, "inbound");
  assert.ok(!Number.isNaN(Date.parse(allowed.time)));
  const naming = records.find((r) => r.listener === "frontend-to-backend");
  assert.equal(naming.decision, "allow");
  assert.equal(naming.peerId, IDS.backend);
});

test("a server whose SVID names an identity not allowed for the service is refused by secure naming", {
  timeout: 30_000,
}, async () => {
  const { reply, closed } = await exchange({ port: port("frontend-to-impostor") }, "secret photo request");
  assert.equal(reply, "");
  assert.equal(closed, true);
  // Not one byte of the client's data reached the impostor's service.
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(impostorReceived, []);
  const records = await auditRecords(dir.path);
  const refusal = records.find((r) => r.listener === "frontend-to-impostor");
  assert.equal(refusal.decision, "deny");
  assert.equal(refusal.reason, "secure-naming");
  assert.equal(refusal.peerId, IDS.impostor);
  assert.equal(
    proxy.metrics.connections.value({
      listener: "frontend-to-impostor",
      direction: "outbound",
      transport: "mtls",
      outcome: "secure_naming",
    }),
    1,
  );
});

test("a client presenting an expired SVID is refused", { timeout: 30_000 }, async () => {
  const { reply, closed } = await exchange({ port: port("expired-to-backend") }, "hello");
  assert.equal(reply, "");
  assert.equal(closed, true);
  await until(async () =>
    (await auditRecords(dir.path)).some((r) =>
      r.listener === "photo-backend-in" && r.reason === "unverified-peer"
    )
  );
  const refusal = (await auditRecords(dir.path)).find((r) =>
    r.listener === "photo-backend-in" && r.reason === "unverified-peer"
  );
  assert.equal(refusal.error.code, "ERR_CERT_EXPIRED");
  assert.equal(refusal.peerId, undefined);
});

test(
  "plain text to a STRICT listener is refused and counted as plain text",
  { timeout: 30_000 },
  async () => {
    for (const message of ["GET / HTTP/1.1\r\nhost: x\r\n\r\n", "PING\r\n"]) {
      // Whatever a TLS stack answers plain text with (an alert, or nothing), the connection is closed.
      const { reply, closed } = await exchange({ port: serverPort("photo-backend-in") }, message, 3000, {
        untilClosed: true,
      });
      assert.equal(closed, true);
      assert.doesNotMatch(reply, /PING|GET/);
    }
    const labels = { listener: "photo-backend-in", direction: "inbound", transport: "plaintext" };
    await until(() =>
      serverProxy.metrics.connections.value({ ...labels, outcome: "plaintext_refused" }) === 2
    );
    const records = await auditRecords(dir.path);
    assert.ok(records.some((r) => r.listener === "photo-backend-in" && r.reason === "plaintext-refused"));
  },
);

test("a PERMISSIVE listener serves plain text and mutual TLS on one port, counting plain text apart", {
  timeout: 30_000,
}, async () => {
  const plain = await exchange({ port: serverPort("backend-permissive-in") }, "plain hello");
  assert.equal(plain.reply, "plain hello");
  const mtls = await exchange({ port: port("frontend-to-permissive") }, "mtls hello");
  assert.equal(mtls.reply, "mtls hello");
  const labels = { listener: "backend-permissive-in", direction: "inbound", outcome: "allowed" };
  assert.equal(serverProxy.metrics.connections.value({ ...labels, transport: "plaintext" }), 1);
  assert.equal(serverProxy.metrics.connections.value({ ...labels, transport: "mtls" }), 1);
  const records = (await auditRecords(dir.path)).filter((r) => r.listener === "backend-permissive-in");
  assert.deepEqual(records.map((r) => [r.transport, r.peerId, r.ruleIndex]).sort(), [
    ["mtls", IDS.frontend, 0],
    ["plaintext", undefined, 1],
  ]);
});
