/**
 * Rate limiting: token buckets, refilled continuously, keyed by what a request is charged to.
 * {@link RateLimiter} keeps the buckets in this process; a CA of several processes shares one
 * set of buckets through a {@link RateLimit} of another kind (the primary's buckets for
 * node:cluster workers, a table for PostgreSQL replicas), so a limit holds for the whole CA and
 * not once per process. {@link LocallyFilteredRateLimit} puts a copy of this process's own
 * requests in front of shared buckets, so a flood from one address is refused without a round
 * trip per request. Shared buckets that can lease tokens ({@link LeasableRateLimit}: the
 * primary's) get a `LeasedRateLimit` (`leased-rate-limit.ts`) in front instead, which spends
 * tokens leased in advance, so a busy key costs no round trip per request.
 *
 * What a request is charged to is {@link requestCharges}' business: its client address before
 * its credentials are looked at; then its requester (a node agent's bucket grows with the
 * workloads placed on its node, so a node renewing a thousand workloads is not held to one
 * workload's rate), the identity it asks for, and for an issuance the whole CA's bucket, which
 * sheds load with `429` and `Retry-After` before the CA saturates.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "meshauth/ca-server";
 * const limiter = new RateLimiter({ requestsPerSecond: 10, burst: 20 });
 * const { allowed, retryAfterSeconds } = limiter.take([{ key: "spiffe://example.org/ns/a/sa/b" }]);
 * ```
 * @module
 */

import type { Principal } from "./auth/principal.ts";

/** A bucket's size and refill rate. */
export interface BucketLimit {
  /** Sustained rate. */
  requestsPerSecond: number;
  /** Bucket size: how many requests may come at once. */
  burst: number;
}

/** Rate limit settings. */
export interface RateLimitOptions extends BucketLimit {
  /**
   * Added to a node agent's bucket for each workload placed on its node: a node with 1,000
   * workloads may renew each of them `burst` times at once and `requestsPerSecond` each
   * sustained. Default 0.1 per second and a burst of 2.
   */
  perWorkload?: BucketLimit;
  /**
   * One bucket for every issuance the whole CA makes (all workers and replicas): over it, an
   * issuance is refused with `429` and `Retry-After` before its body is read. Off by default;
   * size it below the issuance rate the CA's replicas sustain (`npm run bench:fleet`).
   */
  global?: BucketLimit;
  /**
   * Issuances one process handles at once; one more is refused at once with `429` and
   * `Retry-After: 1`, before anything is looked at, so a surge queues at the clients (which back
   * off) rather than in the CA, where every queued request adds to every answer's latency.
   * Default 64.
   */
  maxConcurrentIssuances?: number;
  /** Most keys tracked; the least recently used is forgotten first. Default 100 000. */
  maxKeys?: number;
  /** Clock in milliseconds, for tests. */
  now?: () => number;
}

/** The defaults of {@link RateLimitOptions.perWorkload}. */
export const PER_WORKLOAD_DEFAULT: BucketLimit = { requestsPerSecond: 0.1, burst: 2 };
/** The default of {@link RateLimitOptions.maxConcurrentIssuances}. */
export const MAX_CONCURRENT_ISSUANCES_DEFAULT = 64;
/** The key of the whole CA's issuance bucket. */
export const GLOBAL_KEY = "global:issuance";

/** One token to take: from `key`'s bucket, of size `limit` (the options' own when omitted). */
export interface Charge {
  /** The bucket's key: a client address, a SPIFFE ID, or the whole CA's issuance bucket. */
  key: string;
  /** The bucket's size and rate; the options' own when omitted. */
  limit?: BucketLimit;
}

/** The buckets' answer. */
export interface RateVerdict {
  /** Whether the request may proceed. */
  allowed: boolean;
  /** When refused, how long until every bucket asked has a token again. */
  retryAfterSeconds: number;
  /** When refused, the key whose bucket refused (the one with the longest wait). */
  refusedKey?: string;
}

/** Token buckets, wherever they are kept. */
export interface RateLimit {
  /**
   * Takes one token from each bucket of `charges`, all or none: when any of them is empty,
   * none is taken and the verdict says how long to wait. `refund`, when given, first gets
   * back one token taken for that key before, whatever the verdict: a request's charge moves
   * from its client address to its identity in one operation (one message to the primary,
   * one statement on PostgreSQL).
   */
  take(charges: readonly Charge[], refund?: string): RateVerdict | Promise<RateVerdict>;
}

/** A lease's charge: a {@link Charge}, and how many tokens beyond its one to hand over to spend later. */
export interface LeaseCharge extends Charge {
  /** Tokens wanted beyond the one this request spends. */
  want: number;
}

/** A lease's answer: the verdict for one token of each charge, and what more was handed over. */
export interface Lease extends RateVerdict {
  /** Tokens taken beyond the verdict's one, per charge, in the charges' order. */
  extra: number[];
  /** When refused: milliseconds until the refusing bucket has a token again. */
  waitMs: number;
}

/**
 * Shared buckets that can hand a process tokens in advance. A lease takes one token of each
 * charge, all or none, as {@link RateLimit.take} does, and up to each charge's `want` more from
 * the upper half of its bucket only, shared among `holders` processes: a bucket in its lower
 * half is spent one token per round trip, exactly, so leases never make a key that nears its
 * limit wait for another process's unspent tokens, and never let the processes together spend
 * more than the bucket holds.
 */
export interface LeasableRateLimit extends RateLimit {
  /** Takes one token of each charge, all or none, as `take` does, and leases up to each charge's `want` more. */
  lease(charges: readonly LeaseCharge[], refund?: string): Lease | Promise<Lease>;
  /** Gives back leased tokens that were not spent: `[key, tokens]` pairs. */
  giveBack(tokens: readonly (readonly [string, number])[]): void;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
  /** Its size and rate, as last charged (a refund or a give-back fills it to this burst at most). */
  limit: BucketLimit;
}

/** A bucket's tokens at `nowMs`: what it had, plus what the rate refilled since, up to its burst. */
export function refilled(
  bucket: { tokens: number; updatedMs: number } | undefined,
  nowMs: number,
  limit: BucketLimit,
): number {
  if (!bucket) return limit.burst;
  return Math.min(
    limit.burst,
    bucket.tokens + (Math.max(0, nowMs - bucket.updatedMs) / 1000) * limit.requestsPerSecond,
  );
}

/** How long a bucket holding `tokens` takes to hold one, in whole seconds (at least 1). */
export function secondsUntilToken(tokens: number, limit: BucketLimit): number {
  return Math.max(1, Math.ceil((1 - tokens) / limit.requestsPerSecond));
}

/**
 * What an authenticated request is charged to, after its client address: its requester's
 * bucket, which for a node agent (a principal that may obtain its workloads' identities too)
 * grows by {@link RateLimitOptions.perWorkload} for each workload placed on its node; and for
 * an issuance the whole CA's bucket, when {@link RateLimitOptions.global} is set.
 */
export function requestCharges(
  principal: Principal,
  options: RateLimitOptions,
  isIssuance: boolean,
): Charge[] {
  const workloads = principal.node ? Math.max(0, principal.allowedIds.length - 1) : 0;
  const perWorkload = options.perWorkload ?? PER_WORKLOAD_DEFAULT;
  const charges: Charge[] = [{
    key: principal.requester,
    limit: workloads === 0 ? undefined : {
      requestsPerSecond: options.requestsPerSecond + workloads * perWorkload.requestsPerSecond,
      burst: options.burst + Math.ceil(workloads * perWorkload.burst),
    },
  }];
  if (isIssuance && options.global) charges.push({ key: GLOBAL_KEY, limit: options.global });
  return charges;
}

/** Token buckets in this process. */
export class RateLimiter implements LeasableRateLimit {
  readonly #buckets = new Map<string, Bucket>();
  readonly #options: RateLimitOptions & Required<Pick<RateLimitOptions, "maxKeys" | "now">>;
  readonly #holders: number;

  /** `holders`: how many processes lease from these buckets (see {@link LeasableRateLimit}). */
  constructor(options: RateLimitOptions, holders = 1) {
    this.#options = { maxKeys: 100_000, now: () => Date.now(), ...options };
    this.#holders = Math.max(1, holders);
  }

  take(charges: readonly Charge[], refund?: string): RateVerdict {
    if (refund !== undefined) this.#refund(refund);
    const nowMs = this.#options.now();
    const counted = charges.map((charge) => {
      const limit = charge.limit ?? this.#options;
      return { key: charge.key, limit, tokens: refilled(this.#touch(charge.key), nowMs, limit) };
    });
    let verdict: RateVerdict = { allowed: true, retryAfterSeconds: 0 };
    for (const { key, limit, tokens } of counted) {
      if (tokens >= 1) continue;
      const wait = secondsUntilToken(tokens, limit);
      if (verdict.allowed || wait > verdict.retryAfterSeconds) {
        verdict = { allowed: false, retryAfterSeconds: wait, refusedKey: key };
      }
    }
    for (const { key, limit, tokens } of counted) {
      this.#buckets.set(key, { tokens: verdict.allowed ? tokens - 1 : tokens, updatedMs: nowMs, limit });
    }
    return verdict;
  }

  /** Takes one token of each charge, all or none, and leases up to each charge's `want` more from the upper half of its bucket. */
  lease(charges: readonly LeaseCharge[], refund?: string): Lease {
    const verdict = this.take(charges, refund);
    if (!verdict.allowed) {
      const bucket = this.#buckets.get(verdict.refusedKey!)!;
      const waitMs = ((1 - bucket.tokens) / bucket.limit.requestsPerSecond) * 1000;
      return { ...verdict, extra: charges.map(() => 0), waitMs };
    }
    const extra = charges.map((charge) => {
      const bucket = this.#buckets.get(charge.key)!;
      const upperHalf = bucket.tokens - bucket.limit.burst / 2;
      const wanted = Number.isFinite(charge.want) ? Math.floor(charge.want) : 0;
      const count = Math.max(0, Math.min(wanted, Math.floor(upperHalf / this.#holders)));
      bucket.tokens -= count;
      return count;
    });
    return { ...verdict, extra, waitMs: 0 };
  }

  giveBack(tokens: readonly (readonly [string, number])[]): void {
    for (const [key, count] of tokens) {
      const bucket = this.#buckets.get(key);
      if (bucket && Number.isFinite(count) && count > 0) {
        bucket.tokens = Math.min(bucket.limit.burst, bucket.tokens + count);
      }
    }
  }

  /**
   * The bucket of `key`, taken out of the map: `take` puts it back at the end, so the map's
   * order is least recently used first. A new key past `maxKeys` makes room by forgetting the first.
   */
  #touch(key: string): Bucket | undefined {
    const bucket = this.#buckets.get(key);
    if (bucket) this.#buckets.delete(key);
    else if (this.#buckets.size >= this.#options.maxKeys) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    return bucket;
  }

  /** Gives back a token taken for `key`. */
  #refund(key: string): void {
    this.giveBack([[key, 1]]);
  }
}

/**
 * Shared buckets (another process's or a database's) behind buckets in this process that
 * count this process's own requests. A request whose buckets this process alone has spent is
 * refused here, without asking the shared buckets: an address flooding this process costs it no
 * round trip per request. Everything else is decided by the shared buckets, so the limit still
 * holds for the whole CA. The local buckets count every request they let through (the shared
 * buckets may refuse some); a refund always reaches the shared buckets.
 */
export class LocallyFilteredRateLimit implements RateLimit {
  readonly #local: RateLimiter;

  /** `shared`: the buckets that decide; `options`: the size of this process's own in front of them. */
  constructor(readonly shared: RateLimit, options: RateLimitOptions) {
    this.#local = new RateLimiter(options);
  }

  async take(charges: readonly Charge[], refund?: string): Promise<RateVerdict> {
    const local = this.#local.take(charges, refund);
    if (local.allowed) return await this.shared.take(charges, refund);
    if (refund !== undefined) await this.shared.take([], refund);
    return local;
  }
}
