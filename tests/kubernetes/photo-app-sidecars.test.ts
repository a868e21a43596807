// The photo app's sidecars, as examples/kubernetes/demo/photo-app.yaml configures them, enforce
// its policies: each sidecar's proxy.yaml and policy.yaml are taken out of its ConfigMap, only
// their paths and ports are moved to 127.0.0.1 and a temporary directory (and the CRL refresh
// bounded to a second, where the manifest leaves the CA's hint), SVIDs from a real CA are
// delivered for the three service accounts as the agent's CSI volume holds them (`..data`, the
// istio layout), and each sidecar runs as `meshauth proxy` in a process of its own in front of
// a small HTTP app. Frontend -> backend and backend -> datastore pass, with the caller's SPIFFE
// ID in XFCC; a method the backend's policy does not allow, and the frontend at the datastore
// (its DENY rule), get 403; plain text to a sidecar's mTLS port is refused; a rotation of the
// backend's files during a stream of requests fails none; a revoked frontend is refused once
// the backend's sidecar has the CA's new CRL; SIGTERM stops each cleanly.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml, parseAllDocuments, stringify } from "yaml";
import { credentialFiles, writeGeneration } from "../../agent/mod.ts";
import { NODE, ROOT, tempDir } from "../ca-server/helpers.ts";
import { type CaFollowingSource, TestCaServer } from "../agent/proxy-ca-support.ts";
import { hasExited, killStartedProcesses, spawnInGroup, within } from "../support/processes.ts";
import { waitFor } from "../agent/helpers.ts";

const MANIFEST = join(ROOT, "examples/kubernetes/demo/photo-app.yaml");
const TRUST_DOMAIN = "cluster.local";
const START_MS = 60_000;
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

const PODS = {
  "photo-frontend": "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend",
  "photo-backend": "spiffe://cluster.local/ns/photo-ns/sa/photo-backend",
  datastore: "spiffe://cluster.local/ns/datastore-ns/sa/datastore",
} as const;
type Pod = keyof typeof PODS;

/** The `<pod>-proxy` ConfigMaps of the manifest: proxy.yaml and policy.yaml, as written there. */
function proxyConfigMaps(): Record<Pod, { proxyYaml: string; policyYaml: string }> {
  const out: Partial<Record<Pod, { proxyYaml: string; policyYaml: string }>> = {};
  for (const doc of parseAllDocuments(readFileSync(MANIFEST, "utf8"))) {
    const object = doc.toJS();
    const pod = object?.kind === "ConfigMap" && /^(.+)-proxy$/.exec(object.metadata.name)?.[1];
    if (pod && pod in PODS) {
      out[pod as Pod] = { proxyYaml: object.data["proxy.yaml"], policyYaml: object.data["policy.yaml"] };
    }
  }
  assert.deepEqual(Object.keys(out).sort(), Object.keys(PODS).sort(), "a proxy ConfigMap per pod");
  return out as Record<Pod, { proxyYaml: string; policyYaml: string }>;
}

interface Sidecar {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  stderr: string[];
  exited: Promise<number | null>;
  signal?: NodeJS.Signals | null;
  /** Each listener's address, from the "proxy listening" line. */
  ports: Record<string, number>;
  opsUrl: string;
}

function startSidecar(configPath: string): Sidecar {
  const child = spawnInGroup(NODE, ["--import", "tsx", "cli/main.ts", "proxy", "--config", configPath], {
    cwd: ROOT,
  });
  const sidecar = { child, logs: [], stderr: [], ports: {}, opsUrl: "" } as unknown as Sidecar;
  let buffered = "";
  child.stdout!.on("data", (d) => {
    buffered += d;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) sidecar.logs.push(JSON.parse(line));
  });
  child.stderr!.on("data", (d) => sidecar.stderr.push(String(d)));
  sidecar.exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      sidecar.signal = signal;
      resolve(code);
    })
  );
  return sidecar;
}

async function untilStarted(sidecar: Sidecar): Promise<void> {
  await waitFor(
    `the sidecar's start (stderr: ${sidecar.stderr.join("")})`,
    () => sidecar.logs.some((l) => l.msg === "proxy sidecar started") || hasExited(sidecar.child),
    START_MS,
  );
  const started = sidecar.logs.find((l) => l.msg === "proxy sidecar started");
  assert.ok(started, `the sidecar started; stderr: ${sidecar.stderr.join("")}`);
  const listening = sidecar.logs.find((l) => l.msg === "proxy listening")!;
  for (const [name, address] of Object.entries(listening.listeners as Record<string, { port: number }>)) {
    sidecar.ports[name] = address.port;
  }
  sidecar.opsUrl = String(started.ops);
}

/** A small app: answers what it was asked and with which XFCC header. */
async function startApp(): Promise<{ server: Server; port: number }> {
  const server = createServer((req: IncomingMessage, res) => {
    req.resume();
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({
        method: req.method,
        path: req.url,
        xfcc: req.headers["x-forwarded-client-cert"] ?? null,
      }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** One HTTP request on a new connection (a new TLS handshake behind the outbound listener). */
function call(port: number, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => body += chunk);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} on ${port} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

async function metrics(sidecar: Sidecar): Promise<string> {
  const res = await fetch(`${sidecar.opsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  return await res.text();
}

/** The value of a counter's series whose labels include every one of `labels`. */
function counter(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

describe("the photo app's sidecars (demo/photo-app.yaml) enforce its policies", {
  timeout: 5 * START_MS,
}, () => {
  let dir: { path: string; remove: () => Promise<void> };
  let ca: TestCaServer;
  const svids = {} as Record<Pod, CaFollowingSource>;
  const apps = {} as Record<Pod, { server: Server; port: number }>;
  const sidecars = {} as Record<Pod, Sidecar>;

  const deliver = async (pod: Pod) => {
    const svid = await ca.issue(PODS[pod]);
    svids[pod] = svid;
    await writeGeneration(
      join(dir.path, "pods", pod),
      credentialFiles({
        certificateChainPem: svid.svid.certificateChainPem,
        privateKeyPem: svid.svid.privateKeyPem,
        trustBundlePem: svid.bundle.toPem(),
      }, { layout: "istio", keyFileMode: 0o600 }),
      {},
      { root: dir.path },
    );
  };

  before(async () => {
    dir = await tempDir("meshauth-sidecars-");
    ca = await TestCaServer.start(TRUST_DOMAIN);
    const configMaps = proxyConfigMaps();
    // The datastore first: the others' outbound listeners name the ports of the ones they call.
    const services: Record<string, number> = {};
    for (const pod of ["datastore", "photo-backend", "photo-frontend"] as const) {
      await deliver(pod);
      apps[pod] = await startApp();
      const policyPath = join(dir.path, `${pod}-policy.yaml`);
      writeFileSync(policyPath, configMaps[pod].policyYaml);
      const config = parseYaml(configMaps[pod].proxyYaml);
      config.credentials.dir = join(dir.path, "pods", pod);
      config.ca.url = ca.server.url;
      config.refresh = { minSeconds: 1, maxSeconds: 1 };
      config.listen = { host: "127.0.0.1", port: 0 };
      config.auditLog = join(dir.path, `${pod}-audit.jsonl`);
      for (const inbound of config.inbound) {
        assert.equal(inbound.forward, "127.0.0.1:8080", "the app is on loopback, port 8080");
        inbound.forward = `127.0.0.1:${apps[pod].port}`;
        assert.equal(inbound.listen, 8443);
        inbound.listen = "127.0.0.1:0";
        assert.deepEqual(inbound.policies, ["/etc/meshauth-proxy/policy.yaml"]);
        inbound.policies = [policyPath];
      }
      for (const outbound of config.outbound ?? []) {
        const upstream = /^([a-z-]+)\.[a-z-]+\.svc:8443$/.exec(outbound.upstream)?.[1];
        assert.ok(upstream && services[upstream], `${pod} calls ${outbound.upstream}, started before it`);
        outbound.upstream = `127.0.0.1:${services[upstream]}`;
        outbound.listen = "127.0.0.1:0";
      }
      const configPath = join(dir.path, `${pod}-proxy.yaml`);
      writeFileSync(configPath, stringify(config));
      sidecars[pod] = startSidecar(configPath);
      await untilStarted(sidecars[pod]);
      services[pod] = sidecars[pod].ports[pod];
    }
  });

  after(async () => {
    await killStartedProcesses();
    for (const app of Object.values(apps)) app.server.close();
    await ca?.stop();
    await dir?.remove();
  });

  test("each sidecar is ready on its ops port once it has loaded its pod's SVID", async () => {
    for (const [pod, sidecar] of Object.entries(sidecars)) {
      const res = await fetch(`${sidecar.opsUrl}/readyz`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(res.status, 200, `${pod}: ${JSON.stringify(sidecar.logs)}`);
      const loaded = sidecar.logs.find((l) => l.msg === "credential files loaded");
      assert.equal(loaded?.spiffeId, PODS[pod as Pod]);
    }
  });

  test("frontend -> backend: GET /photos/1 is 200, and the backend's app sees the frontend's SPIFFE ID in XFCC", async () => {
    const res = await call(sidecars["photo-frontend"].ports["photo-backend"], "GET", "/photos/1");
    assert.equal(res.status, 200, res.body);
    const seen = JSON.parse(res.body);
    assert.equal(seen.path, "/photos/1");
    assert.match(seen.xfcc, new RegExp(`URI=${PODS["photo-frontend"]}$`));
  });

  test("frontend -> backend: DELETE, which the backend's policy does not allow, is 403", async () => {
    const res = await call(sidecars["photo-frontend"].ports["photo-backend"], "DELETE", "/photos/1");
    assert.equal(res.status, 403, res.body);
    assert.match(res.body, /ERR_POLICY_DENIED/);
  });

  test("backend -> datastore is 200, as the backend", async () => {
    const res = await call(sidecars["photo-backend"].ports.datastore, "GET", "/rows");
    assert.equal(res.status, 200, res.body);
    assert.match(JSON.parse(res.body).xfcc, new RegExp(`URI=${PODS["photo-backend"]}$`));
  });

  test("frontend -> datastore is 403 at the datastore's sidecar, by its DENY rule", async () => {
    const res = await call(sidecars["photo-frontend"].ports.datastore, "GET", "/rows");
    assert.equal(res.status, 403, res.body);
    const text = await metrics(sidecars.datastore);
    assert.equal(
      counter(text, "meshauth_proxy_decisions_total", {
        listener: "datastore",
        policy: "never-the-frontend",
      }),
      1,
    );
  });

  test("the frontend, the edge, serves its pages in plain text to anyone, and never agnhost's tools", async () => {
    const edge = sidecars["photo-frontend"].ports["photo-frontend"];
    for (const path of ["/", "/hostname", "/dial?host=127.0.0.1&port=15001&request=/photos"]) {
      const res = await call(edge, "GET", path);
      assert.equal(res.status, 200, `${path}: ${res.body}`);
      assert.equal(JSON.parse(res.body).xfcc, null, "no identity: a plain-text caller has none");
    }
    for (const path of ["/shell?cmd=id", "/upload", "/exit?code=0", "/shutdown", "/redirect?location=/"]) {
      const res = await call(edge, "GET", path);
      assert.equal(res.status, 403, `${path}: ${res.body}`);
    }
    assert.equal((await call(edge, "POST", "/")).status, 403, "only GET and HEAD");
    const text = await metrics(sidecars["photo-frontend"]);
    assert.equal(
      counter(text, "meshauth_proxy_decisions_total", {
        listener: "photo-frontend",
        policy: "nobody-runs-the-apps-tools",
      }),
      5,
    );
  });

  test("plain text to a sidecar's mTLS port is refused", async () => {
    const port = sidecars["photo-backend"].ports["photo-backend"];
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(
        port,
        "127.0.0.1",
        () => socket.write("GET /photos HTTP/1.1\r\nhost: x\r\n\r\n"),
      );
      let text = "";
      socket.setEncoding("latin1");
      socket.on("data", (d) => text += d);
      socket.on("close", () => resolve(text));
      socket.on("error", () => resolve(text));
      socket.setTimeout(10_000, () => reject(new Error("the connection stayed open")));
    });
    assert.doesNotMatch(answer, /^HTTP\/1\.1 200/);
    const text = await metrics(sidecars["photo-backend"]);
    assert.ok(
      counter(text, "meshauth_proxy_connections_total", {
        transport: "plaintext",
        outcome: "plaintext_refused",
      }) >=
        1,
    );
  });

  test("a rotation of the backend's files during a stream of requests fails none of them", async () => {
    const backend = sidecars["photo-backend"];
    const before = svids["photo-backend"].svid.serialNumber;
    const rotated = () =>
      backend.logs.some((l) => l.msg === "credential files rotated" && l.serialNumber !== before);
    let failures = 0;
    let sent = 0;
    let stop = false;
    const stream = (async () => {
      // Bounded: until a while after the rotation, or 2000 requests at most.
      let afterRotation = 0;
      while (!stop && sent < 2000 && afterRotation < 50) {
        sent++;
        const res = await call(sidecars["photo-frontend"].ports["photo-backend"], "GET", "/photos").catch(
          () => ({
            status: 0,
            body: "",
          }),
        );
        if (res.status !== 200) failures++;
        if (rotated()) afterRotation++;
      }
    })();
    await waitFor("a few requests before the rotation", () => sent >= 20, START_MS);
    await deliver("photo-backend");
    await within(stream, START_MS * 2, "the stream of requests");
    stop = true;
    assert.ok(rotated(), "the backend's sidecar put the new SVID into service");
    assert.equal(failures, 0, `${failures} of ${sent} requests failed`);
    const text = await metrics(backend);
    assert.ok(counter(text, "meshauth_proxy_credential_rotations_total", { workload: "photo-backend" }) >= 2);
  });

  test("a revoked frontend is refused once the backend's sidecar has the CA's new CRL", async () => {
    const backend = sidecars["photo-backend"];
    const frontendPort = sidecars["photo-frontend"].ports["photo-backend"];
    assert.equal((await call(frontendPort, "GET", "/photos")).status, 200);
    await ca.revoke(svids["photo-frontend"].svid.serialNumber, await ca.adminToken());
    await waitFor(
      "the backend's sidecar to take a CRL listing the frontend",
      () => backend.logs.some((l) => l.msg === "CRL updated" && Number(l.entries) >= 1),
      START_MS,
    );
    const res = await call(frontendPort, "GET", "/photos").catch((err: Error) => ({
      status: 0,
      body: err.message,
    }));
    assert.notEqual(res.status, 200, "the revoked frontend got through");
    const text = await metrics(backend);
    assert.ok(
      counter(text, "meshauth_proxy_connections_total", {
        listener: "photo-backend",
        outcome: "unverified",
      }) >= 1,
      text.split("\n").filter((l) => l.startsWith("meshauth_proxy_connections_total")).join("\n"),
    );
  });

  test("SIGTERM closes each sidecar's listeners and it exits 0", async () => {
    for (const sidecar of Object.values(sidecars)) sidecar.child.kill("SIGTERM");
    for (const [pod, sidecar] of Object.entries(sidecars)) {
      const code = await within(sidecar.exited, START_MS, `${pod}'s sidecar to exit`);
      assert.ok(sidecar.logs.some((l) => l.msg === "stopped"), `${pod} logged its clean stop`);
      // Deno's child_process reports a child that handles SIGTERM and exits 0 as killed by the
      // signal (code null); Node reports the exit code. The "stopped" line is the same proof.
      if (isDeno && code === null) assert.equal(sidecar.signal, "SIGTERM");
      else assert.equal(code, 0, `${pod}: ${sidecar.stderr.join("")}`);
    }
    const port = sidecars["photo-backend"].ports["photo-backend"];
    await assert.rejects(call(port, "GET", "/photos"), "the listener is closed");
  });
});
