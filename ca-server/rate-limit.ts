/**
 * Rate limiting: a token bucket per key (a SPIFFE ID, or a client address), refilled
 * continuously. {@link RateLimiter} keeps the buckets in this process; a CA of several
 * processes shares one set of buckets through a {@link RateLimit} of another kind (the
 * primary's buckets for node:cluster workers, a table for PostgreSQL replicas), so the limit
 * holds for the whole CA and not once per process.
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

/** A bucket's answer. */
export interface RateVerdict {
  allowed: boolean;
  /** When refused, how long until a token is back. */
  retryAfterSeconds: number;
}

/** Token buckets, wherever they are kept. */
export interface RateLimit {
  /** Takes one token for `key`; when none is left, says how long to wait. */
  take(key: string): RateVerdict | Promise<RateVerdict>;
  /** Gives back a token taken for `key` (a request that turned out not to count). */
  refund(key: string): void | Promise<void>;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** The token-bucket rule, shared by every implementation: refill, then take one if there is one. */
export function takeToken(
  bucket: Bucket | undefined,
  nowMs: number,
  options: Pick<RateLimitOptions, "requestsPerSecond" | "burst">,
): { bucket: Bucket; verdict: RateVerdict } {
  const { requestsPerSecond, burst } = options;
  const tokens = bucket
    ? Math.min(burst, bucket.tokens + (Math.max(0, nowMs - bucket.updatedMs) / 1000) * requestsPerSecond)
    : burst;
  if (tokens >= 1) {
    return {
      bucket: { tokens: tokens - 1, updatedMs: nowMs },
      verdict: { allowed: true, retryAfterSeconds: 0 },
    };
  }
  return {
    bucket: { tokens, updatedMs: nowMs },
    verdict: { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / requestsPerSecond)) },
  };
}

/** Token buckets keyed by identity, in this process. */
export class RateLimiter implements RateLimit {
  readonly #buckets = new Map<string, Bucket>();
  readonly #options: Required<RateLimitOptions>;

  constructor(options: RateLimitOptions) {
    this.#options = { maxKeys: 100_000, now: () => Date.now(), ...options };
  }

  take(key: string): RateVerdict {
    const { maxKeys, now } = this.#options;
    const previous = this.#buckets.get(key);
    if (previous) this.#buckets.delete(key);
    else if (this.#buckets.size >= maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
    const { bucket, verdict } = takeToken(previous, now(), this.#options);
    // Re-inserted, so the map's order is least recently used first.
    this.#buckets.set(key, bucket);
    return verdict;
  }

  refund(key: string): void {
    const bucket = this.#buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.#options.burst, bucket.tokens + 1);
  }
}
