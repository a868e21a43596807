// The edge example's "Run it", as a reader would follow it: the development CA of `npm run ca`
// (TLS, its bundle in .meshauth/bundle.pem), the README's `export` line, and each of its
// runtime lines (Deno with --cert, Bun with NODE_EXTRA_CA_CERTS, workerd through
// examples/edge/workerd.mjs and a service binding), each started for real. Every entry must
// say /healthz ok once it has the bundle, answer 200 with the caller's SPIFFE ID for an SVID
// the CA issued (by the commands `npm run ca` prints), and 401 without one.
// This file spawns processes, so it runs where node:child_process exists (Node, Deno, Bun),
// not inside workerd.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { RUNTIME_BINARIES, skipUnlessRuntime } from "../runtimes/runtimes.mjs";

const root = new URL("../..", import.meta.url).pathname;
const STARTUP_TIMEOUT_MS = 30_000;
const DEMO_ID = "spiffe://meshauth.local/demo";
/** The CA runs on Node, as `npm run ca` does, whichever runtime runs this file. */
const NODE = "Deno" in globalThis || "Bun" in globalThis ? "node" : process.execPath;

/** The README's "Run it" block: its `export` settings and its runtime lines. */
function runIt(): { env: Record<string, string>; lines: string[] } {
  const readme = readFileSync(join(root, "examples/edge/README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Run it"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)![1].split("\n").map((l) => l.replace(/\s+#.*$/, ""));
  const exportLine = block.find((l) => l.startsWith("export "))!;
  const env = Object.fromEntries(
    exportLine.slice(7).split(/\s+/).map((kv) => kv.split("=") as [string, string]),
  );
  const lines = block.filter((l) => /examples\/edge\//.test(l));
  assert.equal(lines.length, 3, `three runtime lines in the README's Run it:\n${block.join("\n")}`);
  return { env, lines };
}

interface Started {
  child: ChildProcess;
  output: () => string;
}

function start(command: string, env: Record<string, string>): Started {
  // Each line runs in its own process group, so stopping it stops what it started (workerd).
  const child = spawn("sh", ["-c", command], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let log = "";
  child.stdout?.on("data", (chunk) => (log += chunk));
  child.stderr?.on("data", (chunk) => (log += chunk));
  return { child, output: () => log.slice(-4_000) };
}

function stop({ child }: Started): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => kill("SIGKILL"), 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    kill("SIGTERM");
  });
}

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

async function waitFor(check: () => Promise<boolean> | boolean, what: string, started: Started) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (started.child.exitCode !== null) {
      throw new Error(`${what}: the process exited with ${started.child.exitCode}:\n${started.output()}`);
    }
    try {
      if (await check()) return;
    } catch {
      // not answering yet
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  throw new Error(`${what} within ${STARTUP_TIMEOUT_MS} ms:\n${started.output()}`);
}

let workDir = "";
let ca: Started | undefined;
let caPort = 0;
let demoChainPem = "";

before(async () => {
  workDir = mkdtempSync(join(tmpdir(), "meshauth-edge-entries-"));
  ca = start(`${JSON.stringify(NODE)} --import tsx cli/dev-ca.ts`, {
    MESHAUTH_DATA_DIR: join(workDir, ".meshauth"),
    MESHAUTH_LISTEN_PORT: "0",
  });
  await waitFor(() => ca!.output().includes("Stop with Ctrl-C"), "npm run ca's CA did not start", ca);
  const printed = ca.output();
  caPort = Number(/https:\/\/127\.0\.0\.1:(\d+)/.exec(printed)![1]);
  // The commands npm run ca prints get the demo identity's key and certificate.
  const commands = printed.slice(printed.indexOf("# 1."), printed.indexOf("Stop with Ctrl-C"));
  mkdirSync(join(workDir, "demo"));
  await new Promise<void>((resolve, reject) =>
    execFile("sh", ["-c", commands], { cwd: join(workDir, "demo") }, (err, _out, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve();
    })
  );
  demoChainPem = readFileSync(join(workDir, "demo", "demo.crt"), "utf8");
});

after(async () => {
  if (ca) await stop(ca);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

async function checkEntry(line: string) {
  const { env } = runIt();
  const port = await freePort();
  // The README's own values, with this test's CA port and data directory.
  const command = line.replaceAll(".meshauth/", `${join(workDir, ".meshauth")}/`);
  const settings = Object.fromEntries(
    Object.entries(env).map(([name, value]) => [name, value.replace(":8443/", `:${caPort}/`)]),
  );
  const started = start(command, {
    ...settings,
    PORT: String(port),
    NO_COLOR: "1",
    // The runtimes npm test installs stand for the reader's deno and bun.
    PATH: `${dirname(RUNTIME_BINARIES.deno)}:${process.env.PATH}`,
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      async () => {
        const response = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) });
        const body = await response.json();
        return response.status === 200 && body.status === "ok";
      },
      `${base}/healthz did not say ok`,
      started,
    );
    const xfcc = `Chain="${encodeURIComponent(demoChainPem)}"`;
    const allowed = await fetch(`${base}/whoami`, {
      headers: { "x-forwarded-client-cert": xfcc },
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(allowed.status, 200, `${await allowed.clone().text()}\n${started.output()}`);
    assert.equal((await allowed.json()).id, DEMO_ID);
    const anonymous = await fetch(`${base}/whoami`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(anonymous.status, 401);
    assert.equal((await anonymous.json()).code, "ERR_CLIENT_CERT_MISSING");
  } finally {
    await stop(started);
  }
}

describe("edge example: the README's Run it, against npm run ca's CA", { timeout: 180_000 }, () => {
  const { lines } = runIt();
  const lineFor = (needle: string) => lines.find((l) => l.includes(needle))!;

  test("deno.ts under Deno, trusting the CA with --cert", {
    skip: skipUnlessRuntime("deno"),
    timeout: 60_000,
  }, () => checkEntry(lineFor("deno.ts")));

  test("bun.ts under Bun, trusting the CA with NODE_EXTRA_CA_CERTS", {
    skip: skipUnlessRuntime("bun"),
    timeout: 60_000,
  }, () => checkEntry(lineFor("bun.ts")));

  test("worker.ts in workerd (workerd.mjs), the CA behind a service binding over TLS", {
    skip: skipUnlessRuntime("workerd"),
    timeout: 60_000,
  }, () => checkEntry(lineFor("workerd.mjs")));
});
