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

  /** Runs `operation` once a slot is free, and frees the slot when it settles. */
  async run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#running >= this.limit) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
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
