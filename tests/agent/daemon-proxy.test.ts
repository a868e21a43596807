// The agent daemon with a `proxy:` section, against a real CA on 127.0.0.1: two nodes, each an
// agent whose proxy presents the SVIDs that agent obtained, with a real HTTP service behind the
// server's inbound listener. A request crosses both proxies as the client workload; a renewal
// reaches the proxy with no restart; one /metrics carries the agent's and the proxy's metrics,
// each family once; the status page's data, its stream, and its refusal of a foreign Host.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadAgentConfig, type RunningAgent, startAgentDaemon } from "../../agent/mod.ts";
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
});
