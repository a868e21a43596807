/**
 * A limit on how many operations run at once: the agent's guard against a thousand workloads
 * starting together becoming a thousand simultaneous CA requests or a thousand open files.
 * Callers beyond the limit wait in order of priority, then of arrival.
 *
 * @module
 */

import { InvalidArgument } from "../mod.ts";

/** Options of {@link ConcurrencyLimit.run}. */
export interface ConcurrencyRunOptions {
  /** Lower goes first among waiting callers; equals go in order of arrival. Default 0. */
  priority?: number;
  /** Once aborted, a caller still waiting leaves the line. */
  signal?: AbortSignal;
}

/** Runs at most `limit` operations at a time; the rest wait their turn (by priority, then FIFO). */
export class ConcurrencyLimit {
  #running = 0;
  /** Waiting callers, by priority (lowest first), then in arrival order. */
  readonly #waiting: { priority: number; resume: () => void }[] = [];

  /** `limit` is the number of operations that may run at once, a whole number of at least 1. */
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
   * Runs `operation` once a slot is free, and frees the slot when it settles. Waiting callers
   * go in order of `priority` (lowest first; the agent passes a certificate's expiry, so after
   * an outage the one closest to running out is renewed first), then of arrival. Once `signal`
   * aborts, a caller still waiting leaves the line and gets the signal's reason.
   */
  async run<T>(operation: () => Promise<T>, options: ConcurrencyRunOptions = {}): Promise<T> {
    const { priority = 0, signal } = options;
    signal?.throwIfAborted();
    if (this.#running >= this.limit) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(signal!.reason);
        };
        const waiter = {
          priority,
          resume: () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          },
        };
        const waiting = this.#waiting;
        // After the last one of at most the same priority: FIFO among equals.
        let at = waiting.length;
        while (at > 0 && waiting[at - 1].priority > priority) at--;
        waiting.splice(at, 0, waiter);
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
      if (next) next.resume();
      else this.#running--;
    }
  }
}
