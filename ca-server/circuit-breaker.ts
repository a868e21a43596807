/**
 * A circuit breaker for a service the CA calls while it answers a request (the Kubernetes
 * TokenReview API): after `failures` failed calls in a row it opens, and for `cooldownMs` no
 * call is made: each request is refused at once with `503 ERR_NOT_READY` and a `Retry-After`.
 * Then one call goes through; if it succeeds the breaker closes, if not it opens again for
 * twice as long (up to `maxCooldownMs`). So an API server that is down, slow or throttling
 * (429) is not asked once more for every request the CA gets, and clients learn when to retry.
 * Used around each TokenReview call and each PostgreSQL statement: `admit()`, the call, then
 * `succeeded()` or `failed()`.
 *
 * @module
 */

import { Problem } from "./problems.ts";

/** Options of {@link CircuitBreaker}. */
export interface CircuitBreakerOptions {
  /** Failed calls in a row that open the breaker. Default 5. */
  failures?: number;
  /** How long it stays open the first time. Default 1 s. */
  cooldownMs?: number;
  /** The longest it stays open, however often the trial call fails. Default 30 s. */
  maxCooldownMs?: number;
  /** The error a refusal throws; a `503 ERR_NOT_READY` Problem by default. */
  refuse?: (message: string, retryAfterSeconds: number) => Error;
  /** Clock in milliseconds, for tests. */
  now?: () => number;
}

/** Stops calling a service that keeps failing (see the module's description). */
export class CircuitBreaker {
  readonly #threshold: number;
  readonly #firstCooldownMs: number;
  readonly #maxCooldownMs: number;
  readonly #now: () => number;
  readonly #refuse: (message: string, retryAfterSeconds: number) => Error;
  #failures = 0;
  #cooldownMs: number;
  #openUntilMs = 0;
  #isTrying = false;

  /** `service` names what is called, for the refusal's message. */
  constructor(readonly service: string, options: CircuitBreakerOptions = {}) {
    this.#threshold = options.failures ?? 5;
    this.#firstCooldownMs = this.#cooldownMs = options.cooldownMs ?? 1000;
    this.#maxCooldownMs = options.maxCooldownMs ?? 30_000;
    this.#now = options.now ?? (() => Date.now());
    this.#refuse = options.refuse ??
      ((message, retryAfterSeconds) => new Problem("ERR_NOT_READY", message, { retryAfterSeconds }));
  }

  /**
   * Throws (a `503 ERR_NOT_READY` Problem by default) while the breaker is open, or while its
   * trial call runs; otherwise the caller makes its call and reports how it went.
   */
  admit(): void {
    if (this.#failures < this.#threshold) return;
    const waitMs = this.#openUntilMs - this.#now();
    if (waitMs > 0 || this.#isTrying) {
      const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
      throw this.#refuse(
        `${this.service} failed ${this.#failures} times in a row; it is not asked again for ${retryAfterSeconds}s`,
        retryAfterSeconds,
      );
    }
    this.#isTrying = true;
  }

  /** The call succeeded: the breaker closes. */
  succeeded(): void {
    this.#failures = 0;
    this.#cooldownMs = this.#firstCooldownMs;
    this.#isTrying = false;
  }

  /** The call failed (no answer, a 5xx, a 429, or a refusal of the CA's own credentials). */
  failed(): void {
    const wasTrial = this.#isTrying;
    this.#isTrying = false;
    if (++this.#failures < this.#threshold) return;
    if (wasTrial) this.#cooldownMs = Math.min(this.#maxCooldownMs, this.#cooldownMs * 2);
    this.#openUntilMs = this.#now() + this.#cooldownMs;
  }
}
