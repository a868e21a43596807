/**
 * Token buckets in PostgreSQL (`meshauth_rate_limits`), shared by every replica on one
 * database: the rule of `takeToken` in `rate-limit.ts` as one statement on a row per key, so
 * the row's lock orders concurrent takes of one key on any replica. An exchange (a token back
 * to one key, one taken from another) is one statement too.
 *
 * @module
 */

import type pg from "pg";
import type { RateLimit, RateLimitOptions, RateVerdict } from "../rate-limit.ts";

/** Runs one statement (the store's query, which turns failures into StoreErrors). */
export type Query = (text: string, values: unknown[]) => Promise<pg.QueryResult<Record<string, any>>>;

// The bucket's tokens now ($2 the burst, $3 the rate), from the row as it was (SET reads old values).
const REFILLED =
  "least($2::float8, b.tokens + extract(epoch FROM now() - b.updated_at)::float8 * $3::float8)";

// Takes a token for $1 ($2 the burst, $3 the rate).
const TAKE = `INSERT INTO meshauth_rate_limits AS b (key, tokens, last_allowed, updated_at)
    VALUES ($1, $2::float8 - 1, true, now())
  ON CONFLICT (key) DO UPDATE SET
    tokens = CASE WHEN ${REFILLED} >= 1 THEN ${REFILLED} - 1 ELSE ${REFILLED} END,
    last_allowed = ${REFILLED} >= 1,
    updated_at = now()
  RETURNING b.tokens, b.last_allowed`;

// Buckets full again for a minute are forgotten; they would start full anyway.
const FORGET_AFTER_SECONDS = 60;

/** Token buckets in `meshauth_rate_limits`. */
export class PostgresRateLimit implements RateLimit {
  #lastPruneMs = 0;
  constructor(readonly query: Query, readonly options: RateLimitOptions) {}

  take(key: string): Promise<RateVerdict> {
    return this.#take(TAKE, key);
  }

  exchange(from: string, to: string): Promise<RateVerdict> {
    // The refund runs as part of the same statement (a data-modifying WITH always runs).
    return this.#take(
      `WITH refund AS (
         UPDATE meshauth_rate_limits SET tokens = least($2::float8, tokens + 1) WHERE key = $4
       ) ${TAKE}`,
      to,
      from,
    );
  }

  /** Runs `statement`, which takes a token for `key` and may give one back to `from` ($4). */
  async #take(statement: string, key: string, from?: string): Promise<RateVerdict> {
    const { requestsPerSecond, burst } = this.options;
    this.#prune();
    const values = [key, burst, requestsPerSecond, ...(from === undefined ? [] : [from])];
    const { rows: [bucket] } = await this.query(statement, values);
    if (bucket.last_allowed) return { allowed: true, retryAfterSeconds: 0 };
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((1 - Number(bucket.tokens)) / requestsPerSecond)),
    };
  }

  #prune(): void {
    const nowMs = Date.now();
    if (nowMs - this.#lastPruneMs < 60_000) return;
    this.#lastPruneMs = nowMs;
    const fullAfter = this.options.burst / this.options.requestsPerSecond + FORGET_AFTER_SECONDS;
    this.query(
      "DELETE FROM meshauth_rate_limits WHERE updated_at < now() - make_interval(secs => $1)",
      [fullAfter],
    ).catch(() => {});
  }
}
