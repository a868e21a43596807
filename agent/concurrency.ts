/**
 * A limit on how many operations run at once: the agent's guard against a thousand workloads
 * starting together becoming a thousand simultaneous CA requests or a thousand open files.
 * Callers beyond the limit wait in arrival order.
 *
 * @module
 */

import { InvalidArgument } from "../mod.ts";

/** Runs at most `limit` operations at a time; the rest wait their turn (FIFO). */
export class ConcurrencyLimit {
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidArgument("limit", `expected a whole number of at least 1, got ${limit}`);
    }
  }

  /** Operations running now. */
  get running(): number {
    return this.#running;
  }

  /** Operations waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `operation` once a slot is free, and frees the slot when it settles. Once `signal`
   * aborts, a caller still waiting leaves the line and gets the signal's reason.
   */
  async run<T>(operation: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    if (this.#running >= this.limit) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(signal!.reason);
        };
        const waiter = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        this.#waiting.push(waiter);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    } else {
      this.#running++;
    }
    try {
      return await operation();
    } finally {
      const next = this.#waiting.shift();
      // The slot passes straight to the next caller, so `running` never dips and overshoots.
      if (next) next();
      else this.#running--;
    }
  }
}
