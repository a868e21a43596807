/**
 * Per-identity rate limiting: a token bucket per key (a SPIFFE ID, or a client address for
 * requests that fail authentication), refilled continuously. The table of buckets is bounded
 * so a flood of distinct keys cannot exhaust memory.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "meshauth/ca-server";
 * const limiter = new RateLimiter({ requestsPerSecond: 10, burst: 20 });
 * const { allowed, retryAfterSeconds } = limiter.take("spiffe://example.org/ns/a/sa/b");
 * ```
 * @module
 */

/** Rate limit settings. */
export interface RateLimitOptions {
  /** Sustained rate per key. */
  requestsPerSecond: number;
  /** Bucket size: how many requests a key may make at once. */
  burst: number;
  /** Most keys tracked; the least recently used is forgotten first. Default 100 000. */
  maxKeys?: number;
  /** Clock in milliseconds, for tests. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Token buckets keyed by identity. */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #options: Required<RateLimitOptions>;

  constructor(options: RateLimitOptions) {
    this.#options = { maxKeys: 100_000, now: () => Date.now(), ...options };
  }

  /** Takes one token for `key`; when none is left, says how long to wait. */
  take(key: string): { allowed: boolean; retryAfterSeconds: number } {
    const { requestsPerSecond, burst, maxKeys, now } = this.#options;
    const t = now();
    let bucket = this.#buckets.get(key);
    if (bucket) {
      this.#buckets.delete(key);
      bucket.tokens = Math.min(burst, bucket.tokens + ((t - bucket.updatedMs) / 1000) * requestsPerSecond);
      bucket.updatedMs = t;
    } else {
      bucket = { tokens: burst, updatedMs: t };
      if (this.#buckets.size >= maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    this.#buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true, retryAfterSeconds: 0 };
    }
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / requestsPerSecond)),
    };
  }
}
