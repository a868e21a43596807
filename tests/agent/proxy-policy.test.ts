// Authorization at the inbound proxy: HTTP mode (methods and paths, 403 with a problem body,
// the verified identity in X-Forwarded-Client-Cert and a client's own XFCC stripped, paths
// normalized before matching), policy files reloaded on change without dropping connections,
// rules that a TCP listener cannot evaluate refused at load with the reason, and dry-run
// policies that are logged and counted but not enforced.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { parseCertificates } from "../../mod.ts";
import { MeshProxy, PolicyFileError } from "../../agent/mod.ts";
import { ListenerPolicy } from "../../agent/proxy/policy-files.ts";
import {
  auditRecords,
  echoServer,
  exchange,
  httpEcho,
  httpGet,
  IDS,
  openStream,
  proxyConfig,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  type TestSvid,
  until,
  within,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let frontendSvid: TestSvid;
let sources: Record<string, TestSource>;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  frontendSvid = await ca.issue(IDS.frontend);
  sources = {
    "photo-frontend": new TestSource(frontendSvid, ca.bundle()),
    "photo-backend": new TestSource(await ca.issue(IDS.backend), ca.bundle()),
  };
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await dir?.remove();
});

/** An inbound listener (workload photo-backend) in front of `forwardPort`, and an outbound one (photo-frontend) to it. */
async function pair(
  name: string,
  inbound: Record<string, unknown>,
  forward: string,
): Promise<{ port: number; server: MeshProxy; client: MeshProxy; inboundPort: number }> {
  const servers = await startProxy(
    {
      inbound: [{
        name: `${name}-in`,
        workload: "photo-backend",
        listen: "127.0.0.1:0",
        forward,
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
    server: servers.proxy,
    client: clients.proxy,
    inboundPort: servers.port(`${name}-in`),
  };
}

async function policyFile(name: string, yaml: string): Promise<string> {
  const path = join(dir.path, name);
  await writeFile(path, yaml);
  return path;
}

test(
  "HTTP mode: methods and path prefixes decide each request; a denied one is answered 403 with a problem body",
  {
    timeout: 30_000,
  },
  async () => {
    const service = await httpEcho("photo-backend");
    closers.push(service.close);
    const file = await policyFile(
      "http-rules.yaml",
      `policies:
  - name: no-admin
    action: DENY
    rules:
      - to: [{ operation: { paths: ["/admin*"] } }]
  - name: frontend-reads-photos
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
        to: [{ operation: { methods: ["GET"], paths: ["/photos/*"] } }]
`,
    );
    const { port } = await pair(
      "http-rules",
      { protocol: "http", policies: [file] },
      `127.0.0.1:${service.port}`,
    );
    const allowed = await httpGet(port, "/photos/1?size=small");
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body.url, "/photos/1?size=small");
    const wrongMethod = await httpGet(port, "/photos/1", {}, "DELETE");
    assert.equal(wrongMethod.status, 403);
    assert.equal(wrongMethod.body.code, "ERR_POLICY_DENIED");
    assert.equal(wrongMethod.body.status, 403);
    assert.equal((await httpGet(port, "/admin/users")).status, 403);
    // The same connection keeps serving after a denial (keep-alive is per request).
    const records = (await auditRecords(dir.path)).filter((r) => r.listener === "http-rules-in");
    assert.deepEqual(records.map((r) => [r.method, r.path, r.decision, r.policy]), [
      ["GET", "/photos/1", "allow", "frontend-reads-photos"],
      ["DELETE", "/photos/1", "deny", undefined],
      ["GET", "/admin/users", "deny", "no-admin"],
    ]);
  },
);

test(
  "HTTP mode: paths are normalized before policies match them, and the service receives the normalized path",
  {
    timeout: 30_000,
  },
  async () => {
    const service = await httpEcho("photo-backend");
    closers.push(service.close);
    const file = await policyFile(
      "http-normalize.yaml",
      `policies:
  - name: no-admin
    action: DENY
    rules:
      - to: [{ operation: { paths: ["/admin*"] } }]
  - name: anyone-verified
    action: ALLOW
    rules:
      - from: [{ source: { trustDomains: ["mesh.test"] } }]
`,
    );
    const { port } = await pair(
      "http-normalize",
      { protocol: "http", policies: [file] },
      `127.0.0.1:${service.port}`,
    );
    for (const path of ["/public/../admin", "//admin", "/%61dmin", "/./admin/x"]) {
      assert.equal((await httpGet(port, path)).status, 403, path);
    }
    for (const path of ["/a%2Fb", "/a%5cb"]) assert.equal((await httpGet(port, path)).status, 400, path);
    const normalized = await httpGet(port, "/photos/./a/../b//c?q=%2F");
    assert.equal(normalized.status, 200);
    assert.equal(normalized.body.url, "/photos/b/c?q=%2F");
  },
);

test("HTTP mode: the service receives the caller's verified identity in XFCC, never one the client sent", {
  timeout: 30_000,
}, async () => {
  const service = await httpEcho("photo-backend");
  closers.push(service.close);
  const { port } = await pair(
    "http-xfcc",
    { protocol: "http", defaultAction: "ALLOW" },
    `127.0.0.1:${service.port}`,
  );
  const forged = "By=spiffe://mesh.test/x;URI=spiffe://mesh.test/ns/photo-ns/sa/admin";
  const answer = await httpGet(port, "/whoami", { "X-Forwarded-Client-Cert": forged });
  assert.equal(answer.status, 200);
  const leaf = parseCertificates(frontendSvid.certificateChainPem)[0];
  const hash = createHash("sha256").update(leaf.der).digest("hex");
  assert.equal(
    answer.body.headers["x-forwarded-client-cert"],
    `By=${IDS.backend};Hash=${hash};URI=${IDS.frontend}`,
  );
});

test(
  "HTTP mode on a PERMISSIVE listener serves plain-text requests without identity, stripping a forged XFCC",
  {
    timeout: 30_000,
  },
  async () => {
    const service = await httpEcho("photo-backend");
    closers.push(service.close);
    const file = await policyFile(
      "http-plaintext.yaml",
      `policies:
  - name: plaintext-health-only
    action: ALLOW
    rules:
      - from: [{ source: { notPrincipals: ["*"] } }]
        to: [{ operation: { paths: ["/healthz"] } }]
`,
    );
    const { inboundPort, server } = await pair(
      "http-plaintext",
      { protocol: "http", mode: "PERMISSIVE", policies: [file] },
      `127.0.0.1:${service.port}`,
    );
    const health = await httpGet(inboundPort, "/healthz", {
      "x-forwarded-client-cert": `URI=${IDS.frontend}`,
    });
    assert.equal(health.status, 200);
    assert.equal(health.body.headers["x-forwarded-client-cert"], undefined);
    assert.equal((await httpGet(inboundPort, "/photos/1")).status, 403);
    assert.equal(
      server.metrics.connections.sum({
        listener: "http-plaintext-in",
        transport: "plaintext",
        outcome: "allowed",
      }),
      2,
    );
  },
);

test("HTTP mode: a when condition on a request header decides", { timeout: 30_000 }, async () => {
  const service = await httpEcho("photo-backend");
  closers.push(service.close);
  const file = await policyFile(
    "http-header.yaml",
    `policies:
  - name: prod-only
    action: ALLOW
    rules:
      - when: [{ key: "request.headers[X-Env]", values: ["prod"] }]
`,
  );
  const { port } = await pair(
    "http-header",
    { protocol: "http", policies: [file] },
    `127.0.0.1:${service.port}`,
  );
  assert.equal((await httpGet(port, "/", { "x-env": "prod" })).status, 200);
  assert.equal((await httpGet(port, "/", { "x-env": "dev" })).status, 403);
});

test("rules on HTTP fields are refused at load for a TCP listener, saying why", async () => {
  const cases = [
    ["methods", `to: [{ operation: { methods: ["GET"] } }]`],
    ["paths", `to: [{ operation: { paths: ["/x"] } }]`],
    ["hosts", `to: [{ operation: { hosts: ["a.example"] } }]`],
    ["requestPrincipals", `from: [{ source: { requestPrincipals: ["*"] } }]`],
    ["request.headers[x-env]", `when: [{ key: "request.headers[x-env]", values: ["prod"] }]`],
  ];
  for (const [field, rule] of cases) {
    const file = await policyFile(
      `tcp-${field.replace(/\W/g, "")}.yaml`,
      `policies:\n  - name: http-on-tcp\n    action: ALLOW\n    rules:\n      - ${rule}\n`,
    );
    const proxy = new MeshProxy({
      config: proxyConfig({
        auditLog: join(dir.path, "audit.jsonl"),
        inbound: [{
          name: "tcp-in",
          workload: "photo-backend",
          listen: "127.0.0.1:0",
          forward: "127.0.0.1:9",
          policies: [file],
        }],
      }, dir.path),
      sources,
    });
    await assert.rejects(proxy.start(), (err: Error) => {
      assert.ok(err instanceof PolicyFileError, String(err));
      assert.equal(err.code, "ERR_PROXY_POLICY");
      assert.ok(err.message.includes(file), err.message);
      assert.ok(err.message.includes(`${field} is an HTTP field`), err.message);
      assert.ok(err.message.includes("protocol: tcp"), err.message);
      return true;
    });
  }
});

test("a condition on an attribute the proxy does not provide is refused at load", async () => {
  const file = await policyFile(
    "unknown-key.yaml",
    `policies:\n  - name: typo\n    action: DENY\n    rules:\n      - when: [{ key: "source.ipp", values: ["10.0.0.1"] }]\n`,
  );
  const proxy = new MeshProxy({
    config: proxyConfig({
      auditLog: join(dir.path, "audit.jsonl"),
      inbound: [{
        name: "tcp-in",
        workload: "photo-backend",
        listen: "127.0.0.1:0",
        forward: "127.0.0.1:9",
        policies: [file],
      }],
    }, dir.path),
    sources,
  });
  await assert.rejects(proxy.start(), /unknown attribute "source\.ipp"/);
});

test("a policy file that is not YAML is refused in one complete line that says where", async () => {
  const file = await policyFile("not-yaml.yaml", "policies:\n- name: a\n action: ALLOW\n");
  const proxy = new MeshProxy({
    config: proxyConfig({
      auditLog: join(dir.path, "audit.jsonl"),
      inbound: [{
        name: "tcp-in",
        workload: "photo-backend",
        listen: "127.0.0.1:0",
        forward: "127.0.0.1:9",
        policies: [file],
      }],
    }, dir.path),
    sources,
  });
  await assert.rejects(proxy.start(), (err: Error) => {
    assert.ok(err instanceof PolicyFileError, String(err));
    assert.equal(
      err.message,
      `${file}: not valid YAML: Sequence item without - indicator at line 3, column 1`,
    );
    return true;
  });
});

test("a listen address in use is refused in one line naming the listener", async () => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  closers.push(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  const taken = (holder.address() as AddressInfo).port;
  const proxy = new MeshProxy({
    config: proxyConfig({
      auditLog: join(dir.path, "audit.jsonl"),
      inbound: [{
        name: "busy-in",
        workload: "photo-backend",
        listen: `127.0.0.1:${taken}`,
        forward: "127.0.0.1:9",
      }],
    }, dir.path),
    sources,
  });
  await assert.rejects(
    proxy.start(),
    (err: Error & { code?: string }) =>
      err.code === "ERR_PROXY_LISTEN" &&
      err.message ===
        `cannot listen on 127.0.0.1:${taken}: another process listens there; it is the listen address of the proxy's inbound listener "busy-in"`,
  );
});

test(
  "policies reload on change without dropping connections; a change that denies an open connection's peer closes it",
  {
    timeout: 30_000,
  },
  async () => {
    const echo = await echoServer();
    closers.push(echo.close);
    const allowFrontend = `policies:
  - name: frontend
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
`;
    const file = await policyFile("reload.yaml", allowFrontend);
    const { port, server } = await pair("reload", { policies: [file] }, `127.0.0.1:${echo.port}`);
    const stream = await openStream({ port });
    assert.equal(await stream.send("one"), "one");
    // Still allowed, by a policy under another name: the open connection continues.
    await writeFile(file, allowFrontend.replace("name: frontend", "name: frontend-renamed"));
    await server.reloadPolicies();
    assert.equal(server.metrics.policyReloads.value({ listener: "reload-in", result: "reloaded" }), 1);
    assert.equal(await stream.send("two"), "two");
    // A file that does not parse is refused; the policies in force stay, the connection too.
    await writeFile(file, "policies: [ {");
    await server.reloadPolicies();
    assert.equal(server.metrics.policyReloads.value({ listener: "reload-in", result: "refused" }), 1);
    // Looked at again, the same bad file is not reported again (the periodic reload looks every 2 s).
    await server.reloadPolicies();
    assert.equal(server.metrics.policyReloads.value({ listener: "reload-in", result: "refused" }), 1);
    assert.equal(await stream.send("three"), "three");
    // The periodic reload picks up a change by itself.
    await writeFile(file, allowFrontend.replace(IDS.frontend, IDS.datastore));
    await within(stream.closed, 10_000, "the connection denied by the new policy closed");
    assert.equal(server.metrics.closed.value({ listener: "reload-in", reason: "denied" }), 1);
    assert.equal((await exchange({ port }, "four")).closed, true);
  },
);

test("a dry-run policy is logged and counted, not enforced", { timeout: 30_000 }, async () => {
  const echo = await echoServer();
  closers.push(echo.close);
  const file = await policyFile(
    "dry-run.yaml",
    `policies:
  - name: would-deny-frontend
    action: DENY
    dryRun: true
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
  - name: frontend
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${IDS.frontend}"] } }]
`,
  );
  const { port, server } = await pair("dry-run", { policies: [file] }, `127.0.0.1:${echo.port}`);
  assert.equal((await exchange({ port }, "hello")).reply, "hello");
  await until(async () => (await auditRecords(dir.path)).some((r) => r.listener === "dry-run-in"));
  const record = (await auditRecords(dir.path)).find((r) => r.listener === "dry-run-in");
  assert.equal(record.decision, "allow");
  assert.equal(record.policy, "frontend");
  assert.deepEqual(record.dryRun, {
    decision: "deny",
    reason: "policy",
    policy: "would-deny-frontend",
    ruleIndex: 0,
  });
  assert.equal(
    server.metrics.dryRunDecisions.value({
      listener: "dry-run-in",
      decision: "deny",
      policy: "would-deny-frontend",
    }),
    1,
  );
});

test("HTTP mode: a WebSocket-style upgrade is decided like any request, then piped both ways", {
  timeout: 30_000,
}, async () => {
  const { createServer: createHttpServer } = await import("node:http");
  const service = createHttpServer((_req, res) => res.end("no upgrade"));
  let seenXfcc: string | undefined;
  service.on("upgrade", (req, socket, head: Buffer) => {
    seenXfcc = req.headers["x-forwarded-client-cert"] as string | undefined;
    socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    // Bytes that came with the request head arrive in `head`; the rest through the socket.
    socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => service.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    service.closeAllConnections();
    return new Promise<void>((resolve) => service.close(() => resolve()));
  });
  const file = await policyFile(
    "http-upgrade.yaml",
    `policies:
  - name: chat-only
    action: ALLOW
    rules:
      - to: [{ operation: { paths: ["/chat"] } }]
`,
  );
  const servicePort = (service.address() as { port: number }).port;
  const { port } = await pair(
    "http-upgrade",
    { protocol: "http", policies: [file] },
    `127.0.0.1:${servicePort}`,
  );
  const upgrade = (path: string) =>
    exchange(
      { port },
      `GET ${path} HTTP/1.1\r\nhost: backend\r\nconnection: upgrade\r\nupgrade: echo\r\nx-forwarded-client-cert: URI=forged\r\n\r\nping`,
      3000,
      { untilClosed: path !== "/chat" },
    );
  const allowed = await exchange(
    { port },
    "GET /chat HTTP/1.1\r\nhost: backend\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nping",
    2000,
    { untilClosed: true },
  );
  assert.match(allowed.reply, /^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nping$/);
  assert.match(seenXfcc ?? "", new RegExp(`URI=${IDS.frontend}$`));
  const denied = await upgrade("/admin");
  assert.match(denied.reply, /^HTTP\/1\.1 403 Forbidden/);
  assert.equal(denied.closed, true);
});

test("a policy name used twice is refused, naming the file once or both files", async () => {
  const one = join(dir.path, "dup-one.yaml");
  const two = join(dir.path, "dup-two.yaml");
  const policy =
    "  - name: a\n    action: ALLOW\n    rules:\n      - from: [{ source: { namespaces: [x] } }]\n";
  await writeFile(one, `policies:\n${policy}${policy}`);
  await writeFile(two, `policies:\n${policy}`);
  const load = (files: string[]) =>
    ListenerPolicy.load({ listener: "l", files, protocol: "tcp", defaultAction: "DENY" });
  await assert.rejects(load([one]), (err: Error) => {
    assert.ok(err instanceof PolicyFileError, String(err));
    assert.match(err.message, /policy "a" is defined twice in this file/);
    return true;
  });
  await writeFile(one, `policies:\n${policy}`);
  await assert.rejects(load([one, two]), (err: Error) => {
    assert.match(err.message, new RegExp(`policy "a" is also defined in ${one}`));
    return true;
  });
});
