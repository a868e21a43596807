/**
 * Rate limiting: a token bucket per key (a SPIFFE ID, or a client address), refilled
 * continuously. {@link RateLimiter} keeps the buckets in this process; a CA of several
 * processes shares one set of buckets through a {@link RateLimit} of another kind (the
 * primary's buckets for node:cluster workers, a table for PostgreSQL replicas), so the limit
 * holds for the whole CA and not once per process. {@link LocallyFilteredRateLimit} puts a
 * copy of this process's own requests in front of shared buckets, so a flood from one address
 * is refused without a round trip per request. Shared buckets that can lease tokens
 * ({@link LeasableRateLimit}: the primary's) get a `LeasedRateLimit` (`leased-rate-limit.ts`)
 * in front instead, which spends tokens leased in advance, so a busy key costs no round trip
 * per request.
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
  /** Whether the request may proceed. */
  allowed: boolean;
  /** When refused, how long until a token is back. */
  retryAfterSeconds: number;
}

/** Token buckets, wherever they are kept. */
export interface RateLimit {
  /** Takes one token for `key`; when none is left, says how long to wait. */
  take(key: string): RateVerdict | Promise<RateVerdict>;
  /**
   * Gives back the token taken for `from` and takes one for `to`, as one operation (one
   * message to the primary, one statement on PostgreSQL): a request's charge moves from its
   * client address to the identity it authenticated as. `from` gets its token back whatever
   * the verdict, which is `to`'s.
   */
  exchange(from: string, to: string): RateVerdict | Promise<RateVerdict>;
}

/** A lease's answer: the verdict for one token, and how many more were handed over to spend later. */
export interface Lease extends RateVerdict {
  /** Tokens taken beyond the one the verdict is for. */
  extra: number;
  /** When refused: milliseconds until the bucket has a token again. */
  waitMs: number;
}

/**
 * Shared buckets that can hand a process tokens in advance. A lease takes one token, as
 * {@link RateLimit.take} does, and up to `want` more from the upper half of the bucket only,
 * shared among `holders` processes: a bucket in its lower half is spent one token per round
 * trip, exactly, so leases never make a key that nears its limit wait for another process's
 * unspent tokens, and never let the processes together spend more than the bucket holds.
 */
export interface LeasableRateLimit extends RateLimit {
  /** Takes one token as `take` does, and leases up to `want` more from the upper half of the bucket. */
  lease(key: string, want: number): Lease | Promise<Lease>;
  /** Gives back leased tokens that were not spent: `[key, tokens]` pairs. */
  giveBack(tokens: [string, number][]): void;
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
export class RateLimiter implements LeasableRateLimit {
  readonly #buckets = new Map<string, Bucket>();
  readonly #options: Required<RateLimitOptions>;
  readonly #holders: number;

  /** `holders`: how many processes lease from these buckets (see {@link LeasableRateLimit}). */
  constructor(options: RateLimitOptions, holders = 1) {
    this.#options = { maxKeys: 100_000, now: () => Date.now(), ...options };
    this.#holders = Math.max(1, holders);
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

  /** Takes one token for `key`, and leases up to `want` more from the upper half of its bucket. */
  lease(key: string, want: number): Lease {
    const verdict = this.take(key);
    const bucket = this.#buckets.get(key)!;
    if (!verdict.allowed) {
      return { ...verdict, extra: 0, waitMs: ((1 - bucket.tokens) / this.#options.requestsPerSecond) * 1000 };
    }
    const upperHalf = bucket.tokens - this.#options.burst / 2;
    const wanted = Number.isFinite(want) ? Math.floor(want) : 0;
    const extra = Math.max(0, Math.min(wanted, Math.floor(upperHalf / this.#holders)));
    bucket.tokens -= extra;
    return { ...verdict, extra, waitMs: 0 };
  }

  giveBack(tokens: [string, number][]): void {
    for (const [key, count] of tokens) {
      const bucket = this.#buckets.get(key);
      if (bucket && Number.isFinite(count) && count > 0) {
        bucket.tokens = Math.min(this.#options.burst, bucket.tokens + count);
      }
    }
  }

  exchange(from: string, to: string): RateVerdict {
    this.refund(from);
    return this.take(to);
  }

  /** Gives back a token taken for `key`. */
  refund(key: string): void {
    const bucket = this.#buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.#options.burst, bucket.tokens + 1);
  }
}

/**
 * Shared buckets (another process's or a database's) behind buckets in this process that
 * count this process's own requests. A key whose requests to this process alone have spent
 * its bucket is refused here, without asking the shared buckets: an address flooding this
 * process costs it no round trip per request. Everything else is decided by the shared
 * buckets, so the limit still holds for the whole CA. The local buckets count every request
 * they let through (the shared buckets may refuse some), and give a token back when
 * {@link exchange} moves a request's charge on.
 */
export class LocallyFilteredRateLimit implements RateLimit {
  readonly #local: RateLimiter;

  constructor(readonly shared: RateLimit, options: RateLimitOptions) {
    this.#local = new RateLimiter(options);
  }

  async take(key: string): Promise<RateVerdict> {
    const local = this.#local.take(key);
    if (!local.allowed) return local;
    return await this.shared.take(key);
  }

  async exchange(from: string, to: string): Promise<RateVerdict> {
    this.#local.refund(from);
    return await this.shared.exchange(from, to);
  }
}
