// Test helpers for the CA server: start real CA processes on 127.0.0.1 (ephemeral ports),
// talk to them over HTTP (fetch) or TLS (curl), and make keys, CSRs and tokens.
import { type ChildProcess, execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireRuntime } from "../runtimes/runtimes.mjs";
import { spawnInGroup } from "../support/processes.ts";
import { createCsr, exportPrivateKeyPem, generateKeyPair, type KeyPair } from "../../mod.ts";
import { createJoinToken, FileStore, PostgresStore } from "../../ca-server/mod.ts";
import type { CaStore, JoinTokenRequest } from "../../ca-server/mod.ts";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const TRUST_DOMAIN = "test.example";

declare const Deno: unknown;
/** The Node that runs CA processes: this one under Node, the PATH's under Deno. */
export const NODE = typeof Deno === "undefined" ? process.execPath : "node";
/**
 * The command that runs CA server processes: Node (with tsx), or Bun when
 * `MESHAUTH_TEST_CA_RUNTIME=bun` (npm test's `bun-ca` step runs the server suites so).
 */
export const SERVER_COMMAND: [string, ...string[]] = process.env.MESHAUTH_TEST_CA_RUNTIME === "bun"
  ? [requireRuntime("bun")]
  : [NODE, "--import", "tsx"];

export interface CaProcess {
  url: string;
  port: number;
  pid: number;
  logs: string[];
  stop(): Promise<void>;
  /** Sends `signal` (SIGKILL by default) and waits until the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Runs a command to completion (bounded by `timeoutMs`) and returns its output. */
export function run(
  cmd: string,
  args: string[],
  options: {
    input?: string | Uint8Array;
    timeoutMs?: number;
    cwd?: string;
    env?: Record<string, string | undefined>;
  } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, {
      cwd: options.cwd ?? ROOT,
      env: options.env ?? process.env,
      timeout: options.timeoutMs ?? 30_000,
      maxBuffer: 16 * 1024 * 1024,
      encoding: "utf8",
    }, (err, stdout, stderr) => {
      const code = err
        ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1)
        : 0;
      resolve({ code, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/**
 * Runs the `meshauth` CLI in this process (as `runCli`, output captured): fast, and the same
 * code as the executable. `cliProcess` runs the real executable.
 */
export async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { runCli } = await import("../../cli/main.ts");
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...parts: unknown[]) => out.push(`${parts.join(" ")}\n`);
  console.error = (...parts: unknown[]) => err.push(`${parts.join(" ")}\n`);
  try {
    const code = await runCli(args);
    return { code, stdout: out.join(""), stderr: err.join("") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Runs the `meshauth` CLI in a Node process. */
export function cliProcess(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawnInGroup(NODE, ["--import", "tsx", "cli/main.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => stdout += d);
    child.stderr!.on("data", (d) => stderr += d);
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

/** Starts `meshauth ca serve --config <configPath>` and waits (at most 30 s) until it listens. */
export function startCa(configPath: string, env: Record<string, string> = {}): Promise<CaProcess> {
  return startServer(["cli/main.ts", "ca", "serve", "--config", configPath], env);
}

/** Starts a script of the CA server and waits (at most 30 s) for its "listening" log line. */
export function startServer(args: string[], env: Record<string, string> = {}): Promise<CaProcess> {
  // In a group of its own, killed when this test file's process exits if a test that failed
  // never stopped it (npm test's --test-force-exit ends the file once its tests are done).
  const child: ChildProcess = spawnInGroup(SERVER_COMMAND[0], [...SERVER_COMMAND.slice(1), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
  });
  const logs: string[] = [];
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    let buffered = "";
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`CA did not start within 30s:\n${logs.join("\n")}`));
    }, 30_000);
    const onLine = (line: string) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line);
        if (entry.msg === "listening") {
          clearTimeout(timer);
          resolve({ url: entry.url, port: entry.port, pid: child.pid!, logs, stop, kill });
        }
      } catch {
        // not a log line
      }
    };
    child.stdout!.on("data", (d) => {
      buffered += d;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      lines.forEach(onLine);
    });
    child.stderr!.on("data", (d) => logs.push(String(d)));
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`CA exited with ${code} before listening:\n${logs.join("\n")}`));
    });
  });
}

/** A temporary directory, removed by the returned function. */
export async function tempDir(
  prefix = "meshauth-ca-",
): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Writes a JSON config for a CA in `dir`. */
export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<string> {
  const path = join(dir, "ca.json");
  await writeFile(
    path,
    JSON.stringify({ trustDomain: TRUST_DOMAIN, dataDir: join(dir, "data"), ...config }, null, 2),
  );
  return path;
}

/** Opens the store a config names (for making tokens from the test, as `ca token create` does). */
export async function openTestStore(dir: string, postgresUrl?: string): Promise<CaStore> {
  const store = postgresUrl
    ? new PostgresStore({ connectionString: postgresUrl, maxConnections: 2 })
    : new FileStore(join(dir, "data", "store"));
  await store.open();
  return store;
}

/** Creates a join token directly in a store. */
export async function token(
  store: CaStore,
  request: Partial<JoinTokenRequest> & Pick<JoinTokenRequest, "role">,
): Promise<string> {
  return (await createJoinToken(store, { ttlSeconds: 600, ...request })).token;
}

/** A fresh key and a CSR for `id`. */
export async function csrFor(
  id: string,
  keys?: KeyPair,
): Promise<{ csr: string; keys: KeyPair; keyPem: string }> {
  const k = keys ?? await generateKeyPair("ECDSA-P256");
  return { csr: await createCsr({ keys: k, id }), keys: k, keyPem: await exportPrivateKeyPem(k.privateKey) };
}

/** POSTs JSON to a plain-HTTP CA. */
export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : undefined, headers: response.headers };
}

/** A curl call; returns status, content type and body. */
export async function curl(
  args: string[],
  options: { input?: string | Uint8Array } = {},
): Promise<{ status: number; contentType: string; body: string; stderr: string }> {
  const r = await run(
    "curl",
    ["-sS", "--max-time", "15", "-w", "\n%{http_code}\t%{content_type}", ...args],
    options,
  );
  const cut = r.stdout.lastIndexOf("\n");
  const [status, contentType] = r.stdout.slice(cut + 1).split("\t");
  return {
    status: Number(status),
    contentType: contentType ?? "",
    body: r.stdout.slice(0, cut),
    stderr: r.stderr,
  };
}
