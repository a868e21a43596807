/**
 * The mesh's CA, in a process of its own with a data directory of its own, as it runs in a
 * namespace of its own on Kubernetes: `meshauth ca serve --config ca.yaml`, spawned with an IPC
 * channel so that it stops when npm start does, however npm start ends. Before it starts, its
 * root is made (what `meshauth ca init` does) with a join token for the node and one for the
 * administrator (what `meshauth ca token create` does).
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import {
  type CaConfig,
  createJoinToken,
  initRoot,
  loadAuthorities,
  loadConfig,
  openKeyManager,
  openStore,
} from "../../ca-server/mod.ts";
import { writeTrustBundle } from "../../ca-server/from-config.ts";
import { type MeshLayout, NODE } from "./layout.ts";

const CLI = fileURLToPath(new URL("../../cli/main.ts", import.meta.url));

/** The CA's root and tokens, made before it serves. */
export interface PreparedCa {
  config: CaConfig;
  nodeToken: string;
  adminToken: string;
  rootId: string;
}

/** `meshauth ca init` and two `meshauth ca token create`, in this process. */
export async function prepareCa(layout: MeshLayout): Promise<PreparedCa> {
  // The file only: the reader's MESHAUTH_* variables are for their own CA, not this one.
  const config = await loadConfig({ path: layout.caConfig });
  const keyManager = openKeyManager(config);
  const root = await initRoot(config, keyManager);
  await writeTrustBundle(config, await loadAuthorities(config, keyManager));
  const store = await openStore(config);
  try {
    const node = await createJoinToken(store, { role: "node", node: NODE, ttlSeconds: 600 });
    const admin = await createJoinToken(store, { role: "admin", ttlSeconds: 86400, isSingleUse: false });
    return { config, nodeToken: node.token, adminToken: admin.token, rootId: root.id };
  } finally {
    await store.close();
  }
}

/** The CA process. */
export interface CaProcess {
  url: string;
  pid: number;
  /** Resolves with the exit code once it exited. */
  exited: Promise<number | null>;
  /** SIGTERM, and the wait for its exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/** Starts the CA and resolves once it listens; its JSON log lines go to `layout.caLog`. */
export function startCaProcess(layout: MeshLayout, timeoutMs = 30_000): Promise<CaProcess> {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("MESHAUTH_")),
  );
  const tsx = createRequire(import.meta.url).resolve("tsx");
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", tsx, CLI, "ca", "serve", "--config", layout.caConfig],
    { env, stdio: ["ignore", "pipe", "pipe", "ipc"] },
  );
  const log = createWriteStream(layout.caLog, { flags: "a", mode: 0o600 });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      log.end();
      resolve(code);
    })
  );
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    let buffered = "";
    let stderr = "";
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`the CA did not listen within ${timeoutMs / 1000} s; its log: ${layout.caLog}`));
    }, timeoutMs);
    child.stdout!.on("data", (chunk) => {
      log.write(chunk);
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        try {
          const entry = JSON.parse(line);
          if (entry.msg === "listening") {
            clearTimeout(timer);
            resolve({ url: entry.url, pid: child.pid!, exited, stop });
          }
        } catch {
          // not a log line
        }
      }
    });
    child.stderr!.on("data", (chunk) => {
      log.write(chunk);
      stderr += chunk;
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(
        new Error(`the CA exited with ${code} before listening: ${stderr.trim() || `see ${layout.caLog}`}`),
      );
    });
  });
}
