/**
 * Retrying a failed renewal: capped exponential backoff with jitter. The n-th consecutive
 * failure waits between half and all of `min(max, initial * 2^n)`, so a fleet that failed
 * together (a CA outage) does not come back together, and a CA that asks for a pause
 * (`Retry-After`) gets at least that.
 *
 * @module
 */

/** Bounds of the backoff. */
export interface BackoffOptions {
  /** The first retry waits up to this long. Default 1 s. */
  initialMs?: number;
  /** No retry waits longer. Default 60 s. */
  maxMs?: number;
  /** Random source in [0, 1); tests pass a fixed one. */
  random?: () => number;
}

/** Counts consecutive failures and answers how long to wait before the next attempt. */
export class Backoff {
  #failures = 0;
  /** Starts with no failures counted; `options` are read at each {@link next}. */
  constructor(readonly options: BackoffOptions = {}) {}

  /** Consecutive failures so far. */
  get failures(): number {
    return this.#failures;
  }

  /** Records a failure; answers the wait before the next attempt, at least `atLeastMs`. */
  next(atLeastMs = 0): number {
    const initial = this.options.initialMs ?? 1000;
    const max = this.options.maxMs ?? 60_000;
    const ceiling = Math.min(max, initial * 2 ** Math.min(this.#failures, 30));
    this.#failures++;
    const wait = Math.floor(ceiling / 2 + (this.options.random ?? Math.random)() * ceiling / 2);
    return Math.max(wait, Math.min(atLeastMs, max * 10));
  }

  /** Records a success: the next failure starts from the first step again. */
  reset(): void {
    this.#failures = 0;
  }
}
