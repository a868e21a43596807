// The edge example's runtime entries, started for real: examples/edge/deno.ts under Deno,
// examples/edge/bun.ts under Bun and examples/edge/worker.ts under workerd (Node
// compatibility off, the CA reached through a service binding). Each fetches the bundle from
// a CA stub on 127.0.0.1 and must answer 200 for a valid SVID and 401 without one.
// This file spawns processes, so it runs where node:child_process exists (Node, Deno, Bun),
// not inside workerd.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as esbuild from "esbuild";
import { requireRuntime, skipUnlessRuntime } from "../runtimes/runtimes.mjs";
import { CertificateAuthority, createCsr, generateKeyPair, SpiffeId } from "../../mod.ts";

const root = new URL("../..", import.meta.url).pathname;
const TD = "example.org";
const WEB = SpiffeId.fromServiceAccount(TD, "default", "web");
const STARTUP_TIMEOUT_MS = 30_000;

let caServer: Server | undefined;
let bundleUrl = "";
let caPort = 0;
let webChainPem = "";
let workDir = "";

before(async () => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const intermediate = await ca.createIntermediate({ ttlSeconds: 86_400 });
  const keys = await generateKeyPair();
  webChainPem = (await intermediate.issue(await createCsr({ keys, id: WEB }), { id: WEB })).chainPem;
  const jwks = JSON.stringify(ca.bundle().toJwks());
  caServer = createServer((req, res) => {
    if (req.url === "/v1/bundle") res.writeHead(200, { "content-type": "application/json" }).end(jwks);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => caServer!.listen(0, "127.0.0.1", resolve));
  caPort = (caServer.address() as AddressInfo).port;
  bundleUrl = `http://127.0.0.1:${caPort}/v1/bundle`;
  workDir = mkdtempSync(join(tmpdir(), "meshauth-edge-entries-"));
});

after(async () => {
  await new Promise((resolve) => caServer?.close(resolve) ?? resolve(undefined));
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface Started {
  child: ChildProcess;
  output: () => string;
}

function start(command: string, args: string[], env: Record<string, string>): Started {
  const child = spawn(command, args, {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout?.on("data", (chunk) => (log += chunk));
  child.stderr?.on("data", (chunk) => (log += chunk));
  return { child, output: () => log.slice(-4_000) };
}

function stop({ child }: Started): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

async function waitForHealth(base: string, started: Started): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (started.child.exitCode !== null) {
      throw new Error(`the entry exited with ${started.child.exitCode}:\n${started.output()}`);
    }
    try {
      const response = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) });
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  throw new Error(`${base} did not answer within ${STARTUP_TIMEOUT_MS} ms:\n${started.output()}`);
}

async function checkEntry(base: string, started: Started): Promise<void> {
  try {
    await waitForHealth(base, started);
    const xfcc = `Chain="${encodeURIComponent(webChainPem)}"`;
    const allowed = await fetch(`${base}/whoami`, {
      headers: { "x-forwarded-client-cert": xfcc },
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(allowed.status, 200, `${await allowed.clone().text()}\n${started.output()}`);
    assert.equal((await allowed.json()).id, WEB.toString());
    const anonymous = await fetch(`${base}/whoami`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(anonymous.status, 401);
    assert.equal((await anonymous.json()).code, "ERR_CLIENT_CERT_MISSING");
  } finally {
    await stop(started);
  }
}

const env = () => ({ MESHAUTH_TRUST_DOMAIN: TD, MESHAUTH_BUNDLE_URL: bundleUrl });

describe("edge example entries", { timeout: 120_000 }, () => {
  test(
    "deno.ts serves the edge app under Deno",
    { skip: skipUnlessRuntime("deno"), timeout: 60_000 },
    async () => {
      const port = await freePort();
      const started = start(requireRuntime("deno"), [
        "run",
        "--allow-net",
        "--allow-env",
        "examples/edge/deno.ts",
      ], {
        ...env(),
        PORT: String(port),
        NO_COLOR: "1",
      });
      await checkEntry(`http://127.0.0.1:${port}`, started);
    },
  );

  test(
    "bun.ts serves the edge app under Bun",
    { skip: skipUnlessRuntime("bun"), timeout: 60_000 },
    async () => {
      const port = await freePort();
      const started = start(requireRuntime("bun"), ["--no-install", "examples/edge/bun.ts"], {
        ...env(),
        PORT: String(port),
      });
      await checkEntry(`http://127.0.0.1:${port}`, started);
    },
  );

  test("worker.ts serves the edge app under workerd, the CA behind a service binding", {
    skip: skipUnlessRuntime("workerd"),
    timeout: 60_000,
  }, async () => {
    await esbuild.build({
      entryPoints: [join(root, "examples/edge/worker.ts")],
      outfile: join(workDir, "edge.js"),
      bundle: true,
      format: "esm",
      platform: "neutral",
      conditions: ["workerd", "worker", "browser"],
      mainFields: ["module", "main"],
      keepNames: true,
      logLevel: "silent",
    });
    const port = await freePort();
    writeFileSync(
      join(workDir, "edge.capnp"),
      `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "ca", external = (address = "127.0.0.1:${caPort}", http = ())),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "edge") ],
);
const edge :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "edge.js") ],
  compatibilityDate = "2026-11-01",
  compatibilityFlags = ["no_nodejs_compat", "no_nodejs_compat_v2"],
  bindings = [
    (name = "MESHAUTH_TRUST_DOMAIN", text = "${TD}"),
    (name = "MESHAUTH_BUNDLE_URL", text = "http://ca.internal/v1/bundle"),
    (name = "CA", service = "ca"),
  ],
);
`,
    );
    const started = start(requireRuntime("workerd"), ["serve", join(workDir, "edge.capnp")], {});
    await checkEntry(`http://127.0.0.1:${port}`, started);
  });
});
