/**
 * How a long-running command (`meshauth agent`, `meshauth proxy`) starts and stops: SIGTERM and
 * SIGINT are handled from the moment it starts. A stop once it runs closes it; a stop while it is
 * still starting (an agent bootstrapping against a CA that does not answer yet) exits at once,
 * with the same last log line, since neither writes a file that an exit at any moment would
 * leave half-written (every one is replaced atomically, as it must be against a SIGKILL anyway).
 *
 * @module
 */

import type { Logger } from "../internal/mod.ts";

/** What a command runs: closed at the first SIGTERM or SIGINT. */
export interface Closable {
  close(): Promise<void>;
}

/** Options of {@link runUntilSignal}. */
export interface RunUntilSignalOptions {
  /** Where a stop while starting is logged ("stopped", `whileStarting: true`). */
  logger: Logger;
  /** Ends the process after a stop while starting. Default: `process.exit`. */
  exit?: (code: number) => void;
}

/**
 * Runs `start()` and holds what it started until SIGTERM or SIGINT, then closes it; answers the
 * signal once closed. A start that throws removes the handlers and throws.
 */
export async function runUntilSignal(
  start: () => Promise<Closable>,
  options: RunUntilSignalOptions,
): Promise<NodeJS.Signals> {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let running: Closable | undefined;
  let stopped!: (signal: NodeJS.Signals) => void;
  const isStopped = new Promise<NodeJS.Signals>((resolve) => stopped = resolve);
  const stop = (signal: NodeJS.Signals) => {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
    if (running) {
      void running.close().then(() => stopped(signal));
    } else {
      // The same last line as a stop once running: an operator sees that it stopped cleanly.
      options.logger.info("stopped", { signal, whileStarting: true });
      exit(0);
    }
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  try {
    running = await start();
  } catch (err) {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
    throw err;
  }
  return await isStopped;
}
