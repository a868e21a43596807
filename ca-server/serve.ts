/**
 * Running the CA as a process: one server, or `workers` of them sharing the port through
 * `node:cluster` (the embedded store and PostgreSQL are both safe for several processes),
 * stopped cleanly on SIGINT and SIGTERM.
 *
 * @module
 */

import cluster from "node:cluster";
import { createServer } from "node:net";
import type { CaConfig } from "./config.ts";
import type { Logger } from "./logger.ts";
import { type RunningCaServer, startCaServer } from "./node-server.ts";

/**
 * Serves until a signal arrives. In the primary of a multi-worker setup, forks the workers
 * and returns once they all listen; `onListening` gets the URL either way.
 */
export async function runCaServer(
  config: CaConfig,
  logger: Logger,
  onListening?: (url: string) => void,
): Promise<void> {
  if (config.workers > 1 && cluster.isPrimary) {
    await runPrimary(config, logger, onListening);
    return;
  }
  let server: RunningCaServer;
  try {
    server = await startCaServer(config, { logger });
  } catch (err) {
    logger.error("CA server failed to start", { error: err });
    process.exitCode = 1;
    if (cluster.isWorker) process.exit(1);
    return;
  }
  if (cluster.isWorker) process.send?.({ listening: server.url });
  else onListening?.(server.url);
  const stop = async (signal: string) => {
    logger.info("stopping", { signal });
    await server.close().catch((err) => logger.error("error while stopping", { error: err }));
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  if (cluster.isWorker) process.once("disconnect", () => void stop("disconnect"));
}

async function runPrimary(
  config: CaConfig,
  logger: Logger,
  onListening?: (url: string) => void,
): Promise<void> {
  let stopping = false;
  // Node's workers share the primary's socket, so port 0 is one port for all. Bun's listen on
  // their own sockets with SO_REUSEPORT, so the primary picks the port they all take.
  const isBun = "Bun" in globalThis;
  const env = isBun && config.listen.port === 0
    ? { MESHAUTH_LISTEN_PORT: String(await freePort(config.listen.host)) }
    : {};
  const workers = Array.from({ length: config.workers }, () => cluster.fork(env));
  let listening = 0;
  await new Promise<void>((resolve, reject) => {
    for (const worker of workers) {
      worker.on("message", (message: { listening?: string }) => {
        if (message?.listening && ++listening === workers.length) {
          onListening?.(message.listening);
          resolve();
        }
      });
      worker.on("exit", (code) => {
        if (stopping) return;
        logger.error("CA worker exited", { pid: worker.process.pid, code });
        if (listening < workers.length) {
          reject(new Error(`a CA worker exited with code ${code} while starting`));
        } else {
          stopping = true;
          for (const w of workers) w.kill("SIGTERM");
          process.exitCode = 1;
        }
      });
    }
  }).catch((err) => {
    stopping = true;
    for (const w of workers) w.kill("SIGTERM");
    throw err;
  });
  const stop = (signal: string) => {
    stopping = true;
    logger.info("stopping workers", { signal });
    for (const w of workers) w.kill("SIGTERM");
    const deadline = setTimeout(() => process.exit(0), 5000);
    deadline.unref();
    cluster.on("exit", () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

/** A port free on `host` right now. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer().once("error", reject).listen(0, host, () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}
