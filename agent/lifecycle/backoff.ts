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

/** A still-valid certificate's renewal is retried at least this often, as a fraction of its life left. */
export const RETRY_FRACTION_OF_LIFE_LEFT = 0.1;
/** ... but not more often than this, so an outage near a certificate's end is not a tight loop. */
export const MIN_RENEWAL_RETRY_MS = 1000;

/** What a failed renewal attempt tells {@link renewalRetryWait}. */
export interface RenewalFailure {
  /** The CA's `Retry-After`, in milliseconds (0: none). */
  retryAfterMs: number;
  /** The CA refused (a 4xx other than 408 and 429): the `Retry-After`, if any, is not pacing. */
  isRefusal?: boolean;
  /** Wait at least this long (a refusal's slower pace), unless the certificate needs it sooner. */
  atLeastMs?: number;
  /** What is left of the certificate in use (≤ 0 or undefined: none valid). */
  certificateMsLeft?: number;
}

/**
 * How long to wait before the next attempt to renew, the one rule the agent (and the fleet
 * bench's simulated agent) follow: a `Retry-After` on an answer that is not a refusal (429,
 * 503) is paced ({@link Backoff.pace}); anything else counts a failure ({@link Backoff.next}).
 * A certificate still valid is retried within a tenth of what is left of it, at least
 * {@link MIN_RENEWAL_RETRY_MS} apart: a backoff grown during an outage, or a long Retry-After,
 * would otherwise let it expire between two attempts. The CA checks its rate limits before it
 * reads a request's body, so these retries cost it little when it is busy.
 */
export function renewalRetryWait(backoff: Backoff, failure: RenewalFailure): number {
  const wait = !failure.isRefusal && failure.retryAfterMs > 0
    ? backoff.pace(failure.retryAfterMs)
    : backoff.next(Math.max(failure.retryAfterMs, failure.atLeastMs ?? 0));
  const msLeft = failure.certificateMsLeft ?? 0;
  if (msLeft <= 0) return wait;
  return Math.min(wait, Math.max(MIN_RENEWAL_RETRY_MS, Math.floor(msLeft * RETRY_FRACTION_OF_LIFE_LEFT)));
}
