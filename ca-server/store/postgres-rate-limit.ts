/**
 * Token buckets in PostgreSQL (`meshauth_rate_limits`), shared by every replica on one
 * database: the rule of `RateLimiter` in `rate-limit.ts` as one statement on a row per key. The
 * statement locks the rows it charges (and the one it refunds) in key order, so concurrent
 * statements on any replica are ordered by the rows' locks and never deadlock, decides from
 * the locked rows whether every bucket has a token, and writes them all: a request is charged
 * to its requester, its identity and the whole CA's bucket at once or not at all.
 *
 * @module
 */

import type pg from "pg";
import {
  type BucketLimit,
  type Charge,
  type RateLimit,
  type RateLimitOptions,
  type RateVerdict,
  secondsUntilToken,
} from "../rate-limit.ts";

/** Runs one statement (the store's query, which turns failures into StoreErrors). */
export type Query = (text: string, values: unknown[]) => Promise<pg.QueryResult<Record<string, any>>>;

// $1 keys, $2 bursts, $3 rates, $4 costs (1: take a token, -1: give one back). A key with no
// row is a full bucket. A row created meanwhile by another statement (a key's first use on
// two replicas at once) is overwritten by the second writer: at most one token is lost, once.
const TAKE = `
WITH wanted AS (
  SELECT w.key, w.burst, w.rate, w.cost
  FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int[]) AS w(key, burst, rate, cost)
), locked AS (
  SELECT b.key, b.tokens, b.updated_at FROM meshauth_rate_limits b
  WHERE b.key = ANY($1::text[]) ORDER BY b.key FOR UPDATE
), counted AS (
  SELECT w.key, w.burst, w.cost,
    coalesce(least(w.burst, l.tokens + extract(epoch FROM now() - l.updated_at)::float8 * w.rate), w.burst)
      AS tokens
  FROM wanted w LEFT JOIN locked l USING (key)
), verdict AS (
  SELECT coalesce(bool_and(tokens >= 1), true) AS allowed FROM counted WHERE cost > 0
)
INSERT INTO meshauth_rate_limits AS b (key, tokens, last_allowed, updated_at)
  SELECT c.key,
    CASE WHEN c.cost < 0 THEN least(c.burst, c.tokens + 1)
         WHEN v.allowed THEN c.tokens - 1
         ELSE c.tokens END,
    v.allowed, now()
  FROM counted c CROSS JOIN verdict v
  ORDER BY c.key
ON CONFLICT (key) DO UPDATE SET
  tokens = excluded.tokens, last_allowed = excluded.last_allowed, updated_at = excluded.updated_at
RETURNING b.key, b.tokens, b.last_allowed`;

// Buckets full again for a minute are forgotten; they would start full anyway.
const FORGET_AFTER_SECONDS = 60;

/** Token buckets in `meshauth_rate_limits`. */
export class PostgresRateLimit implements RateLimit {
  #lastPruneMs = 0;
  constructor(readonly query: Query, readonly options: RateLimitOptions) {}

  async take(charges: readonly Charge[], refund?: string): Promise<RateVerdict> {
    this.#prune();
    const limits = new Map<string, BucketLimit>();
    for (const charge of charges) limits.set(charge.key, charge.limit ?? this.options);
    const keys = [...limits.keys()];
    const rows = keys.map((key) => ({ key, limit: limits.get(key)!, cost: 1 }));
    if (refund !== undefined && !limits.has(refund)) {
      rows.push({ key: refund, limit: this.options, cost: -1 });
    }
    if (rows.length === 0) return { allowed: true, retryAfterSeconds: 0 };
    const { rows: buckets } = await this.query(TAKE, [
      rows.map((r) => r.key),
      rows.map((r) => r.limit.burst),
      rows.map((r) => r.limit.requestsPerSecond),
      rows.map((r) => r.cost),
    ]);
    if (buckets.length === 0 || buckets[0].last_allowed) return { allowed: true, retryAfterSeconds: 0 };
    let verdict: RateVerdict = { allowed: false, retryAfterSeconds: 0 };
    for (const bucket of buckets) {
      const limit = limits.get(bucket.key);
      if (!limit || Number(bucket.tokens) >= 1) continue;
      const wait = secondsUntilToken(Number(bucket.tokens), limit);
      if (wait > verdict.retryAfterSeconds) {
        verdict = { allowed: false, retryAfterSeconds: wait, refusedKey: bucket.key };
      }
    }
    return verdict.refusedKey ? verdict : { allowed: false, retryAfterSeconds: 1, refusedKey: keys[0] };
  }

  #prune(): void {
    const nowMs = Date.now();
    if (nowMs - this.#lastPruneMs < 60_000) return;
    this.#lastPruneMs = nowMs;
    // A bucket is full again after burst / rate; the slowest of the kinds of bucket decides.
    const kinds = [this.options, this.options.perWorkload, this.options.global].filter((l) =>
      l !== undefined
    );
    const fullAfter = Math.max(...kinds.map((l) => l.burst / l.requestsPerSecond)) + FORGET_AFTER_SECONDS;
    this.query(
      "DELETE FROM meshauth_rate_limits WHERE updated_at < now() - make_interval(secs => $1)",
      [fullAfter],
    ).catch(() => {});
  }
}
