/**
 * Running the CA as a process: one server, or `workers` of them sharing the port through
 * `node:cluster` (the embedded store and PostgreSQL are both safe for several processes, and
 * the primary keeps the workers' rate limits and gathers their metrics: `process-group.ts`),
 * stopped cleanly on SIGINT and SIGTERM. SIGHUP reads the authorities again at once (after
 * `meshauth ca rotate`), in every worker.
 *
 * @module
 */

import cluster, { type Worker } from "node:cluster";
import { MeshAuthError } from "../mod.ts";
import type { CaConfig } from "./config.ts";
import { errorLine, type Logger } from "../internal/mod.ts";
import { servePrimaryGroup } from "./process-group.ts";
import { checkCaCanStart, type RunningCaServer, startCaServer } from "./server.ts";

/**
 * Serves until a signal arrives. In the primary of a multi-worker setup, forks the workers
 * and returns once they all listen; `onListening` gets the URL either way.
 */
export async function runCaServer(
  config: CaConfig,
  logger: Logger,
  onListening?: (url: string) => void | Promise<void>,
): Promise<void> {
  if (config.workers > 1 && cluster.isPrimary) {
    await runPrimary(config, logger, onListening);
    return;
  }
  const held = holdStopSignals();
  const release = held.release;
  let server: RunningCaServer;
  try {
    server = await startCaServer(config, { logger });
  } catch (err) {
    release();
    process.exitCode = 1;
    if (cluster.isWorker) {
      // The primary says it, once for all the workers that fail alike.
      const send = process.send?.bind(process);
      if (send) send({ startFailed: startFailureLine(err, logger) }, undefined, {}, () => process.exit(1));
      else process.exit(1);
      return;
    }
    console.error(`meshauth: ${startFailureLine(err, logger)}`);
    return;
  }
  try {
    if (cluster.isWorker) process.send?.({ listening: server.url });
    else await onListening?.(server.url);
  } catch (err) {
    release();
    throw err;
  }
  let stopping: Promise<void> | undefined;
  const stop = (signal: string) =>
    stopping ??= (async () => {
      logger.info("stopping", { signal });
      await server.close().catch((err) => logger.error("error while stopping", { error: err }));
      // The last line, as the agent's and the proxy's: the server closed.
      logger.info("stopped", { signal });
      process.exit(0);
    })();
  // Handlers stay installed while the server stops: with `once`, a second Ctrl-C would find none
  // and kill the process in the middle of its close.
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  release();
  if (held.signal()) void stop(held.signal()!);
  process.on("SIGHUP", () => {
    logger.info("reloading authorities", { signal: "SIGHUP" });
    void server.reloadAuthorities();
  });
  // A worker, or a server its parent spawned with an IPC channel (npm start's mesh), stops
  // when the channel closes: the parent is gone, however it ended.
  if (cluster.isWorker || process.connected) process.once("disconnect", () => void stop("disconnect"));
}

/**
 * A start that fails for a reason the operator can fix (a port in use, a trust domain that
 * does not match the keys) is one line that says what to change; anything else is also
 * logged with its details.
 */
function startFailureLine(err: unknown, logger: Logger): string {
  if (err instanceof MeshAuthError && err.code !== "ERR_MESHAUTH") return errorLine(err);
  logger.error("CA server failed to start", { error: err });
  return `the CA server failed to start: ${String((err as Error)?.message ?? err).split("\n")[0]}`;
}

/**
 * Holds SIGINT and SIGTERM while a server starts (it logs "listening" before its caller has
 * installed the handlers that stop it): without a handler a signal would kill the process
 * mid-start, with no "stopping" or "stopped". The caller acts on the held signal once its own
 * handlers are in, and releases these either way.
 */
function holdStopSignals(): { signal: () => string | undefined; release: () => void } {
  let held: string | undefined;
  const hold = (signal: string) => {
    held ??= signal;
  };
  process.on("SIGINT", hold);
  process.on("SIGTERM", hold);
  return {
    signal: () => held,
    release: () => {
      process.off("SIGINT", hold);
      process.off("SIGTERM", hold);
    },
  };
}

async function runPrimary(
  config: CaConfig,
  logger: Logger,
  onListening?: (url: string) => void | Promise<void>,
): Promise<void> {
  let stopping = false;
  const held = holdStopSignals();
  // Each worker would find these alike; found here, they are said once, before any fork.
  await checkCaCanStart(config).catch((err) => {
    held.release();
    throw err;
  });
  // The workers' shared rate-limit buckets and metrics live here.
  servePrimaryGroup(config.rateLimit, config.workers);
  const workers: Worker[] = [];
  let listening = 0;
  /** Forks `count` workers and resolves with the URL once they all listen. */
  const fork = (count: number, env: Record<string, string>) =>
    new Promise<string>((resolve, reject) => {
      let started = 0;
      for (let i = 0; i < count; i++) {
        const worker = cluster.fork(env);
        workers.push(worker);
        let startFailure: string | undefined;
        worker.on("message", (message: { listening?: string; startFailed?: string }) => {
          if (message?.startFailed) startFailure = message.startFailed;
          if (!message?.listening) return;
          listening++;
          if (++started === count) resolve(message.listening);
        });
        worker.on("exit", (code) => {
          if (stopping) return;
          if (listening < config.workers) {
            // Every worker fails alike (they share the configuration): the first says why,
            // and the others, stopped with it, say nothing. Its reason may still be on the
            // way when its exit is seen: the channel closes after the last message.
            stopping = true;
            const fail = () =>
              reject(new Error(startFailure ?? `a CA worker exited with code ${code} while starting`));
            if (worker.isConnected()) worker.once("disconnect", fail);
            else fail();
          } else {
            logger.error("CA worker exited", { pid: worker.process.pid, code });
            stopping = true;
            for (const w of workers) w.kill("SIGTERM");
            process.exitCode = 1;
          }
        });
      }
    });
  try {
    let url: string;
    // Node's workers share the primary's socket, so port 0 is one port for all. Bun's each
    // bind their own with SO_REUSEPORT: the first takes a port, and the others join it.
    if ("Bun" in globalThis && config.listen.port === 0) {
      const first = await fork(1, {});
      url = await fork(config.workers - 1, { MESHAUTH_LISTEN_PORT: new URL(first).port });
    } else {
      url = await fork(config.workers, {});
    }
    await onListening?.(url);
  } catch (err) {
    held.release();
    stopping = true;
    for (const w of workers) w.kill("SIGTERM");
    throw err;
  }
  let isStopRequested = false;
  const stop = (signal: string) => {
    if (isStopRequested) return;
    isStopRequested = true;
    stopping = true;
    logger.info("stopping workers", { signal });
    for (const w of workers) w.kill("SIGTERM");
    const deadline = setTimeout(() => {
      // Those left stop when the channel closes, as the primary exits.
      logger.info("stopped", { signal, workersStillStopping: Object.keys(cluster.workers ?? {}).length });
      process.exit(0);
    }, 5000);
    deadline.unref();
    cluster.on("exit", () => {
      if (Object.keys(cluster.workers ?? {}).length > 0) return;
      logger.info("stopped", { signal });
      process.exit(0);
    });
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  held.release();
  if (held.signal()) stop(held.signal()!);
  process.on("SIGHUP", () => {
    for (const w of workers) if (!w.isDead()) w.process.kill("SIGHUP");
  });
}
