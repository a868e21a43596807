/**
 * Retrying a failed renewal: capped exponential backoff with jitter. The n-th consecutive
 * failure waits between half and all of `min(max, initial * 2^n)`, so a fleet that failed
 * together (a CA outage) does not come back together. A CA that answers `Retry-After` (429,
 * 503) is pacing its clients, not failing: {@link Backoff.pace} waits what it asked plus a
 * little jitter and does not count a failure, so a workload that failed a few times during an
 * outage is not sent to the back of the line (30 to 60 s) by a CA that asked for 1 s.
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

  /**
   * The CA asked to come back in `retryAfterMs` (`Retry-After`): that plus up to a quarter of
   * it (at most 1 s) of jitter, so the clients it paced together do not return together. Not a
   * failure: the backoff does not grow.
   */
  pace(retryAfterMs: number): number {
    const max = this.options.maxMs ?? 60_000;
    const asked = Math.min(Math.max(0, retryAfterMs), max * 10);
    const jitter = Math.min(asked / 4, 1000) * (this.options.random ?? Math.random)();
    return Math.floor(asked + jitter);
  }

  /** Records a success: the next failure starts from the first step again. */
  reset(): void {
    this.#failures = 0;
  }
}
