// Independent peers through the proxy: OpenSSL's s_client and curl present a meshauth SVID to
// an inbound listener (and verify the proxy's own SVID with the trust bundle, as any TLS client
// would), and Debian's redis-server is reached through an outbound/inbound pair by redis-cli
// and redis-benchmark, with a Unix socket as the local leg.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { MeshProxy } from "../../agent/mod.ts";
import {
  echoServer,
  httpEcho,
  IDS,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  type TestSvid,
  until,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let client: TestSvid;
let proxy: MeshProxy;
let port: (name: string) => number;
let redis: ChildProcess | undefined;
let redisClients: MeshProxy;
let redisPort: number;
const closers: (() => Promise<void>)[] = [];

/** Runs `cmd` with `input` on stdin (kept open) until its output matches `until`; answers the output. */
function runUntil(
  cmd: string,
  args: string[],
  input: string,
  done: RegExp,
  timeoutMs = 15_000,
): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    const finish = () => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      resolve(output);
    };
    const timer = setTimeout(finish, timeoutMs);
    const onData = (d: Buffer) => {
      output += d;
      if (done.test(output)) finish();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", finish);
    child.stdin.on("error", () => {});
    child.stdin.write(input);
  });
}

function run(
  cmd: string,
  args: string[],
  input?: string,
  timeoutMs = 30_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 8 * 1024 * 1024 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      },
    );
    // A command that exits before reading its input must not crash the test with EPIPE.
    child.stdin?.on("error", () => {});
    child.stdin?.end(input ?? "");
  });
}

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  client = await ca.issue(IDS.frontend);
  await writeFile(join(dir.path, "client.crt"), client.certificateChainPem);
  await writeFile(join(dir.path, "client.key"), client.privateKeyPem, { mode: 0o600 });
  await writeFile(join(dir.path, "bundle.pem"), ca.bundle().toPem());
  const echo = await echoServer();
  const web = await httpEcho("photo-backend");
  closers.push(echo.close, web.close);
  const sources = {
    // An IP SAN too, so that curl can check the address it dialled as well as the chain.
    server: new TestSource(await ca.issue(IDS.backend, 3600, ["127.0.0.1"]), ca.bundle()),
    client: new TestSource(client, ca.bundle()),
    datastore: new TestSource(await ca.issue(IDS.datastore), ca.bundle()),
  };
  ({ proxy, port } = await startProxy(
    {
      inbound: [
        {
          name: "echo-in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        },
        {
          name: "web-in",
          workload: "server",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${web.port}`,
          protocol: "http",
          defaultAction: "ALLOW",
        },
      ],
    },
    dir.path,
    sources,
  ));
  closers.push(() => proxy.stop());

  const socket = join(dir.path, "redis.sock");
  redis = spawn("redis-server", [
    "--port",
    "0",
    "--unixsocket",
    socket,
    "--unixsocketperm",
    "700",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir.path,
  ], { stdio: "ignore" });
  await until(async () => (await run("redis-cli", ["-s", socket, "PING"])).stdout.trim() === "PONG", 10_000);
  const servers = await startProxy(
    {
      inbound: [{
        name: "redis-in",
        workload: "datastore",
        listen: "127.0.0.1:0",
        forward: `unix:${socket}`,
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
        name: "redis-out",
        workload: "client",
        listen: "127.0.0.1:0",
        upstream: `127.0.0.1:${servers.port("redis-in")}`,
        allowedIds: [IDS.datastore],
      }],
    },
    dir.path,
    sources,
  );
  redisClients = clients.proxy;
  closers.push(() => clients.proxy.stop());
  redisPort = clients.port("redis-out");
});

after(async () => {
  for (const close of closers.reverse()) await close();
  if (redis && redis.exitCode === null) {
    const exited = new Promise((resolve) => redis!.once("exit", resolve));
    redis.kill("SIGTERM");
    await exited;
  }
  await dir?.remove();
});

test(
  "openssl s_client with a meshauth SVID talks through the inbound listener, and verifies the proxy's SVID",
  {
    timeout: 30_000,
  },
  async () => {
    const output = await runUntil(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${port("echo-in")}`,
        "-cert",
        join(dir.path, "client.crt"),
        "-key",
        join(dir.path, "client.key"),
        // s_client sends only the first certificate of -cert; the SVID's intermediate goes with -cert_chain.
        "-cert_chain",
        join(dir.path, "client.crt"),
        "-CAfile",
        join(dir.path, "bundle.pem"),
        "-verify_return_error",
        "-ign_eof",
      ],
      "hello from openssl\n",
      /Verify return code[^\n]*\n[\s\S]*hello from openssl/,
    );
    assert.match(output, /Verify return code: 0 \(ok\)/);
    assert.match(output, /TLSv1\.3/);
    // The line came back after the handshake report: it went through the proxy to the echo service.
    assert.match(output, /Verify return code: 0 \(ok\)[\s\S]*hello from openssl/);
  },
);

test("openssl s_client without a client certificate gets nothing through", { timeout: 30_000 }, async () => {
  const { stdout } = await run("openssl", [
    "s_client",
    "-connect",
    `127.0.0.1:${port("echo-in")}`,
    "-CAfile",
    join(dir.path, "bundle.pem"),
    "-ign_eof",
  ], "no certificate\n");
  assert.doesNotMatch(stdout.split("---").at(-1) ?? "", /no certificate/);
});

test("curl with a meshauth certificate gets an HTTP answer, and the service sees its SPIFFE ID in XFCC", {
  timeout: 30_000,
}, async () => {
  const { code, stdout, stderr } = await run("curl", [
    "-sS",
    "--max-time",
    "10",
    "--cacert",
    join(dir.path, "bundle.pem"),
    "--cert",
    join(dir.path, "client.crt"),
    "--key",
    join(dir.path, "client.key"),
    `https://127.0.0.1:${port("web-in")}/photos/1`,
  ]);
  assert.equal(code, 0, stderr);
  const answer = JSON.parse(stdout);
  assert.equal(answer.url, "/photos/1");
  assert.match(answer.headers["x-forwarded-client-cert"], new RegExp(`URI=${IDS.frontend}$`));
});

test(
  "redis-cli reaches Debian's redis-server through an outbound/inbound pair",
  { timeout: 30_000 },
  async () => {
    const set = await run("redis-cli", ["-p", String(redisPort), "SET", "photo:1", "sunset.jpg"]);
    assert.equal(set.stdout.trim(), "OK", set.stderr);
    const get = await run("redis-cli", ["-p", String(redisPort), "GET", "photo:1"]);
    assert.equal(get.stdout.trim(), "sunset.jpg");
  },
);

test("redis-benchmark runs through the pair without an error", { timeout: 60_000 }, async () => {
  const { code, stdout, stderr } = await run(
    "redis-benchmark",
    [
      "-p",
      String(redisPort),
      "-n",
      "2000",
      "-c",
      "8",
      "-t",
      "set,get",
      "-q",
    ],
    undefined,
    50_000,
  );
  assert.equal(code, 0, stderr);
  assert.match(stdout, /SET: [\d.]+ requests per second/);
  assert.match(stdout, /GET: [\d.]+ requests per second/);
  assert.doesNotMatch(stdout + stderr, /error/i);
  assert.ok(redisClients.metrics.connections.sum({ listener: "redis-out", outcome: "allowed" }) >= 16);
});
