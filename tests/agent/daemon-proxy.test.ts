// The agent daemon with a `proxy:` section, against a real CA on 127.0.0.1: two nodes, each an
// agent whose proxy presents the SVIDs that agent obtained, with a real HTTP service behind the
// server's inbound listener. A request crosses both proxies as the client workload; a renewal
// reaches the proxy with no restart; one /metrics carries the agent's and the proxy's metrics,
// each family once; the status page's data, its stream, and its refusal of a foreign Host. And
// two rotations under load: a revoked client's replacement is what the next connections
// present (a TLS session ticket of the revoked SVID is never resumed), and a client renewed
// onto a new root is not refused for want of the new authority's CRL.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadAgentConfig, type RunningAgent, startAgentDaemon } from "../../agent/mod.ts";
import { initRoot, openKeyManager } from "../../ca-server/mod.ts";
import { httpEcho, httpGet } from "./proxy-support.ts";
import {
  recordingLogger,
  serialOf,
  startTestCa,
  tempDir,
  type TestCa,
  TRUST_DOMAIN,
  waitFor,
} from "./helpers.ts";

const FRONTEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-frontend`;
const BACKEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-backend`;

/** GET on the status port with a chosen Host header. */
function statusGet(url: string, path: string, host?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const target = new URL(path, url);
    const req = request(target, { headers: host ? { host } : {} }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** The first Server-Sent Event of `/events`, then the stream is closed. */
function firstEvent(url: string): Promise<{ event: string; data: any; contentType?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL("/events", url), (res) => {
      let text = "";
      res.on("data", (d) => {
        text += d;
        const end = text.indexOf("\n\n");
        if (end < 0) return;
        const block = text.slice(0, end);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? "";
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
        req.destroy();
        resolve({ event, data, contentType: res.headers["content-type"] });
      });
    });
    req.on("error", reject);
    req.end();
  });
}

describe("meshauth agent with a proxy: section", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let service: Awaited<ReturnType<typeof httpEcho>>;
  let server: RunningAgent;
  let client: RunningAgent;
  let outboundPort = 0;

  before(async () => {
    ca = await startTestCa({ "node-b": [BACKEND], "node-f": [FRONTEND] });
    dir = await tempDir();
    service = await httpEcho("photo-backend");
    await writeFile(
      join(dir.path, "backend-policy.yaml"),
      `policies:
  - name: frontend-reads-photos
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${FRONTEND}"] } }]
        to: [{ operation: { methods: [GET], paths: ["/photos", "/photos/*"] } }]
`,
    );
    const agentYaml = (node: string, workload: string, id: string, proxy: string) =>
      `trustDomain: ${TRUST_DOMAIN}
ca: { url: "${ca.url}", trustBundleFile: ${ca.bundlePath} }
node: { name: ${node} }
stateDir: ${node}/state
delivery: { roots: [${node}/workloads] }
listen: { port: 0, statusPage: true }
workloads:
  - { name: ${workload}, spiffeId: "${id}", directory: ${node}/workloads/${workload} }
proxy:
${proxy}`;
    await writeFile(
      join(dir.path, "node-b.yaml"),
      agentYaml(
        "node-b",
        "photo-backend",
        BACKEND,
        `  inbound:
    - name: photo-backend
      workload: photo-backend
      listen: 127.0.0.1:0
      forward: 127.0.0.1:${service.port}
      protocol: http
      policies: [backend-policy.yaml]
`,
      ),
    );
    server = await startAgentDaemon(
      await loadAgentConfig({
        path: join(dir.path, "node-b.yaml"),
        env: { MESHAUTH_JOIN_TOKEN: await ca.nodeToken("node-b") },
      }),
      { logger: recordingLogger() },
    );
    const inbound = server.proxy!.addresses()["photo-backend"] as { port: number };
    await writeFile(
      join(dir.path, "node-f.yaml"),
      agentYaml(
        "node-f",
        "photo-frontend",
        FRONTEND,
        `  outbound:
    - name: photo-backend
      workload: photo-frontend
      listen: 127.0.0.1:0
      upstream: 127.0.0.1:${inbound.port}
      allowedIds: ["${BACKEND}"]
`,
      ),
    );
    client = await startAgentDaemon(
      await loadAgentConfig({
        path: join(dir.path, "node-f.yaml"),
        env: { MESHAUTH_JOIN_TOKEN: await ca.nodeToken("node-f") },
      }),
      { logger: recordingLogger() },
    );
    outboundPort = (client.proxy!.addresses()["photo-backend"] as { port: number }).port;
    await waitFor(
      "both workloads' SVIDs",
      () => !!server.agent.svid("photo-backend") && !!client.agent.svid("photo-frontend"),
    );
  });

  after(async () => {
    await client?.close();
    await server?.close();
    await service?.close();
    await ca?.remove();
    await dir?.remove();
  });

  test("a request crosses both proxies with the SVIDs each agent obtained, and the service sees the caller", async () => {
    const answer = await httpGet(outboundPort, "/photos/1");
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.body.name, "photo-backend");
    const xfcc = String(answer.body.headers["x-forwarded-client-cert"]);
    assert.match(xfcc, new RegExp(`URI=${FRONTEND.replaceAll("/", "\\/")}$`));
    assert.match(xfcc, new RegExp(`^By=${BACKEND.replaceAll("/", "\\/")};`));
    const denied = await httpGet(outboundPort, "/admin");
    assert.equal(denied.status, 403);
  });

  test("a renewed SVID is presented on the next connection, with no restart of the proxy", async () => {
    const decisions: { peerSerial?: string }[] = [];
    const unsubscribe = server.proxy!.subscribe((record) => decisions.push(record));
    try {
      const before = client.agent.svid("photo-frontend")!.serialNumber;
      const renewed = await client.agent.renew("photo-frontend");
      assert.notEqual(renewed.serialNumber, before);
      assert.equal(serialOf(renewed.certificateChainPem), renewed.serialNumber.replace(/^0+(?=.)/, ""));
      const answer = await httpGet(outboundPort, "/photos");
      assert.equal(answer.status, 200, answer.text);
      assert.equal(decisions.at(-1)?.peerSerial, renewed.serialNumber);
    } finally {
      unsubscribe();
    }
  });

  test("the proxy hears of a new SVID the moment the agent answers it, not after it is stored", async () => {
    const told: string[] = [];
    const unsubscribe = client.agent.subscribe((event) => {
      if (event.type === "svid" && event.workload === "photo-frontend") told.push(event.svid.serialNumber);
    });
    try {
      const before = client.agent.svid("photo-frontend")!.serialNumber;
      const renewal = client.agent.renew("photo-frontend");
      // Every turn of the event loop until svid() answers the new one: the event came first.
      while (client.agent.svid("photo-frontend")!.serialNumber === before) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.deepEqual(told, [client.agent.svid("photo-frontend")!.serialNumber]);
      await renewal;
    } finally {
      unsubscribe();
    }
  });

  test("one /metrics holds the agent's and the proxy's metrics, each family once", async () => {
    const text = (await statusGet(server.statusUrl, "/metrics")).text;
    assert.match(text, /^meshauth_agent_workloads 1$/m);
    assert.match(
      text,
      /^meshauth_proxy_decisions_total\{listener="photo-backend",decision="allow",policy="frontend-reads-photos"\} [1-9]\d*$/m,
    );
    assert.match(
      text,
      /^meshauth_proxy_decisions_total\{listener="photo-backend",decision="deny",policy=""\} 1$/m,
    );
    const helps = text.split("\n").filter((l) => l.startsWith("# HELP ")).map((l) => l.split(" ")[2]);
    assert.equal(new Set(helps).size, helps.length, "no metric family is written twice");
  });

  test("the status page's data: workloads with their SVIDs, and the decisions from the audit stream", async () => {
    const snapshot = JSON.parse((await statusGet(server.statusUrl, "/status.json")).text);
    assert.equal(snapshot.node, `spiffe://${TRUST_DOMAIN}/node/node-b`);
    assert.equal(snapshot.workloads.length, 1);
    const backend = snapshot.workloads[0];
    assert.equal(backend.spiffeId, BACKEND);
    assert.equal(backend.serialNumber, server.agent.svid("photo-backend")!.serialNumber);
    assert.ok(Date.parse(backend.notAfter) > Date.now());
    const decisions = snapshot.events.filter((e: any) => e.kind === "decision");
    assert.ok(
      decisions.some((e: any) =>
        e.record.decision === "allow" && e.record.policy === "frontend-reads-photos"
      ),
    );
    assert.ok(decisions.some((e: any) => e.record.decision === "deny" && e.record.path === "/admin"));
    assert.deepEqual(snapshot.listeners.map((l: any) => [l.name, l.direction]), [[
      "photo-backend",
      "inbound",
    ]]);

    const page = await statusGet(server.statusUrl, "/");
    assert.equal(page.status, 200);
    assert.match(page.text, /<script src="\/status\.js"><\/script>/);
    const first = await firstEvent(server.statusUrl);
    assert.match(String(first.contentType), /^text\/event-stream/);
    assert.equal(first.event, "snapshot");
    assert.equal(first.data.workloads[0].spiffeId, BACKEND);

    // A page whose DNS name was rebound to 127.0.0.1 is refused; the metrics stay open to scrapers.
    assert.equal((await statusGet(server.statusUrl, "/status.json", "evil.example:80")).status, 403);
    assert.equal((await statusGet(server.statusUrl, "/", "evil.example")).status, 403);
    assert.equal((await statusGet(server.statusUrl, "/metrics", "evil.example")).status, 200);
  });

  test("a rotation reaches the stream as it happens", async () => {
    const events: string[] = [];
    const req = request(
      new URL("/events", client.statusUrl),
      (res) => res.on("data", (d) => events.push(String(d))),
    );
    req.end();
    try {
      await waitFor("the snapshot", () => events.join("").includes("event: snapshot"));
      const renewed = await client.agent.renew("photo-frontend");
      await waitFor(
        "the rotation on the stream",
        () => events.join("").includes(`"kind":"rotated"`) && events.join("").includes(renewed.serialNumber),
        5000,
      );
      assert.match(events.join(""), /event: workloads/);
    } finally {
      req.destroy();
    }
  });

  test("after a revocation, the next connections present the replacement: no ticket of the revoked SVID is resumed", async () => {
    // Connections open, one after another from four clients, as the SVID changes under them: a
    // ticket that arrives for a connection opened with the old SVID must not be offered again.
    for (let round = 0; round < 3; round++) {
      let isLoading = true;
      const failures: string[] = [];
      const load = async () => {
        while (isLoading) {
          const answer = await httpGet(outboundPort, "/photos").catch((err: Error) => ({
            status: 0,
            text: err.message,
          }));
          if (answer.status !== 200) failures.push(`${answer.status} ${answer.text}`);
        }
      };
      const clients = [load(), load(), load(), load()];
      await new Promise((resolve) => setTimeout(resolve, 100));
      const revoked = client.agent.svid("photo-frontend")!.serialNumber;
      const renewed = await client.agent.renew("photo-frontend");
      await ca.server.store.revoke({ serialNumber: revoked, reason: "keyCompromise" }, new Date());
      await server.agent.refreshTrust();
      await waitFor(
        "the server's proxy to know the revocation",
        () =>
          [...server.agent.crls().values()].some((crl) =>
            crl.revoked.some((r) => r.serialNumber === revoked)
          ),
      );
      // Whatever was in flight settles; from here on, only the replacement is presented.
      await new Promise((resolve) => setTimeout(resolve, 200));
      failures.length = 0;
      const presented: string[] = [];
      const unsubscribe = server.proxy!.subscribe((record) => presented.push(String(record.peerSerial)));
      await new Promise((resolve) => setTimeout(resolve, 300));
      isLoading = false;
      await Promise.all(clients);
      unsubscribe();
      assert.deepEqual(failures, [], `round ${round}`);
      assert.ok(presented.length > 0);
      assert.deepEqual([...new Set(presented)], [renewed.serialNumber], `round ${round}`);
    }
  });

  test("a client renewed onto a new root before the server's node is verified against the new authority's CRL, not refused", async () => {
    // The new root has the old one's name: a CRL of the old key is out of scope for it, so
    // without the new authority's CRL the server's proxy cannot tell whether it is revoked.
    const activeFrom = new Date(Date.now() + 1500);
    await initRoot(ca.config, openKeyManager(ca.config), { activeFrom });
    await ca.server.reloadAuthorities();
    await Promise.all([server.agent.refreshTrust(), client.agent.refreshTrust()]);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, activeFrom.getTime() - Date.now() + 100)));
    const crlsBefore = server.agent.crls().size;
    const renewed = await client.agent.renew("photo-frontend");
    const records: { decision: string; peerSerial?: string; reason: string }[] = [];
    const unsubscribe = server.proxy!.subscribe((record) => records.push(record));
    try {
      const answer = await httpGet(outboundPort, "/photos");
      assert.equal(answer.status, 200, JSON.stringify(records));
      assert.deepEqual(records.map((r) => [r.decision, r.peerSerial]), [["allow", renewed.serialNumber]]);
      // The server's node now follows the new authority's CRL, and a revocation there reaches it.
      assert.equal(server.agent.crls().size, crlsBefore + 1);
      await ca.server.store.revoke(
        { serialNumber: renewed.serialNumber, reason: "keyCompromise" },
        new Date(),
      );
      await server.agent.refreshTrust();
      await waitFor(
        "the new authority's CRL with the revocation",
        () =>
          [...server.agent.crls().values()].some((crl) =>
            crl.revoked.some((r) => r.serialNumber === renewed.serialNumber)
          ),
      );
      records.length = 0;
      const refused = await httpGet(outboundPort, "/photos").catch((err: Error) => err);
      assert.ok(refused instanceof Error, "the revoked client's next connection is refused");
      const denial = records.find((r) => r.decision === "deny") as {
        error?: { code: string; message: string };
      };
      assert.equal(denial?.error?.code, "ERR_CERT_REVOKED");
      assert.match(denial.error!.message, new RegExp(renewed.serialNumber));
    } finally {
      unsubscribe();
    }
  });
});
