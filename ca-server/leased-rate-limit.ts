/**
 * Spending rate-limit tokens leased in advance from shared buckets ({@link LeasableRateLimit}:
 * the CA's primary process keeps them for its workers), so that a busy key costs a round trip
 * per lease instead of one per request.
 *
 * @example
 * ```ts
 * import { LeasedRateLimit, RateLimiter } from "meshauth/ca-server";
 * // The primary's buckets, here in this process; a worker reaches them over IPC.
 * const shared = new RateLimiter({ requestsPerSecond: 100, burst: 200 }, 2);
 * const limit = new LeasedRateLimit(shared);
 * const { allowed } = await limit.take([{ key: "spiffe://example.org/ns/a/sa/b" }]);
 * limit.close();
 * ```
 * @module
 */

import type { Charge, LeasableRateLimit, LeaseCharge, RateLimit, RateVerdict } from "./rate-limit.ts";

/** What a process holds of one key's leased tokens. */
interface Held {
  tokens: number;
  /** Extra tokens to ask for at the next lease: doubles while the key keeps spending its leases. */
  want: number;
  lastLeaseMs: number;
  lastUsedMs: number;
  /** Refused by the shared buckets until then: refused here without asking again. */
  refusedUntilMs: number;
  leasing?: Promise<void>;
}

/** Options of {@link LeasedRateLimit}. */
export interface LeasedRateLimitOptions {
  /** Most tokens one lease asks for beyond the one it needs. Default 64. */
  maxLease?: number;
  /** Tokens unspent this long are given back, in one batch. Default 1000 ms. */
  holdMs?: number;
  /** Most keys held; the least recently used gives its tokens back first. Default 10 000. */
  maxKeys?: number;
  /** The clock in milliseconds, for tests; `Date.now` by default. */
  now?: () => number;
}

/**
 * Spends tokens leased from shared buckets ({@link LeasableRateLimit}): a key seen for the
 * first time, or after a pause, costs one round trip and leases nothing extra; a key that keeps
 * spending its leases gets leases twice as large each time, up to `maxLease`, so a busy key
 * costs a round trip per 64 requests instead of one per request. A request charged to several
 * keys (its requester and the whole CA's issuance bucket) is allowed when every one of them has
 * a token, here or from one lease of those that lack one; it takes none when any is refused. A
 * refusal is remembered for as long as the shared bucket said it stays empty, so a flood is
 * refused here. A refunded token stays here for the key's next request, and whatever is left
 * unspent for `holdMs` goes back to the shared buckets in one message.
 */
export class LeasedRateLimit implements RateLimit {
  readonly #held = new Map<string, Held>();
  readonly #maxLease: number;
  readonly #holdMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  #timer?: ReturnType<typeof setInterval>;

  /** Leases tokens of `shared` (the primary's buckets) in batches, so most requests need no round trip. */
  constructor(readonly shared: LeasableRateLimit, options: LeasedRateLimitOptions = {}) {
    this.#maxLease = options.maxLease ?? 64;
    this.#holdMs = options.holdMs ?? 1000;
    this.#maxKeys = options.maxKeys ?? 10_000;
    this.#now = options.now ?? (() => Date.now());
  }

  take(charges: readonly Charge[], refund?: string): RateVerdict | Promise<RateVerdict> {
    if (refund !== undefined) {
      const held = this.#held.get(refund);
      if (held) held.tokens++;
      else this.shared.giveBack([[refund, 1]]);
    }
    const entries = charges.map((charge) => this.#entry(charge.key));
    const nowMs = this.#now();
    for (const held of entries) held.lastUsedMs = nowMs;
    return this.#fromHeld(charges, entries, nowMs) ?? this.#lease(charges, entries);
  }

  /**
   * The verdict from what is held here, when it needs no round trip: allowed (its tokens taken)
   * when every key holds one, refused when one is known to be refused; else undefined.
   */
  #fromHeld(charges: readonly Charge[], entries: Held[], nowMs: number): RateVerdict | undefined {
    if (entries.every((held) => held.tokens >= 1)) {
      for (const held of entries) held.tokens--;
      return ALLOWED;
    }
    let refused = -1;
    entries.forEach((held, i) => {
      if (
        nowMs < held.refusedUntilMs && (refused < 0 || held.refusedUntilMs > entries[refused].refusedUntilMs)
      ) {
        refused = i;
      }
    });
    if (refused < 0) return undefined;
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((entries[refused].refusedUntilMs - nowMs) / 1000)),
      refusedKey: charges[refused].key,
    };
  }

  /** Gives every unspent token back now (a process that stops serving). */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    const back = [...this.#held].flatMap(([key, held]) =>
      held.tokens >= 1 ? [[key, held.tokens] as [string, number]] : []
    );
    this.#held.clear();
    if (back.length) this.shared.giveBack(back);
  }

  async #lease(charges: readonly Charge[], entries: Held[]): Promise<RateVerdict> {
    // One lease in flight per key: the requests that arrive meanwhile share what it brings.
    for (let pending = leasing(entries); pending; pending = leasing(entries)) {
      await pending;
      const verdict = this.#fromHeld(charges, entries, this.#now());
      if (verdict) return verdict;
    }
    const nowMs = this.#now();
    // The keys that hold a token spend it; the others lease, in one round trip.
    const reserved: Held[] = [];
    const asked: LeaseCharge[] = [];
    const asking: Held[] = [];
    charges.forEach((charge, i) => {
      const held = entries[i];
      if (held.tokens >= 1) {
        held.tokens--;
        reserved.push(held);
        return;
      }
      // A key that spent its last lease within holdMs asks for twice as many; one after a pause, for none.
      held.want = nowMs - held.lastLeaseMs < this.#holdMs
        ? Math.min(this.#maxLease, Math.max(1, held.want * 2))
        : 0;
      held.lastLeaseMs = nowMs;
      asked.push({ key: charge.key, limit: charge.limit, want: held.want });
      asking.push(held);
    });
    let settle!: () => void;
    const inFlight = new Promise<void>((resolve) => settle = resolve);
    for (const held of asking) held.leasing = inFlight;
    try {
      const lease = await this.shared.lease(asked);
      asking.forEach((held, i) => held.tokens += lease.extra[i] ?? 0);
      if (!lease.allowed) {
        for (const held of reserved) held.tokens++;
        const refusedAt = asked.findIndex((charge) => charge.key === lease.refusedKey);
        asking[Math.max(0, refusedAt)].refusedUntilMs = this.#now() + lease.waitMs;
      }
      return {
        allowed: lease.allowed,
        retryAfterSeconds: lease.retryAfterSeconds,
        refusedKey: lease.refusedKey,
      };
    } catch (err) {
      for (const held of reserved) held.tokens++;
      throw err;
    } finally {
      for (const held of asking) held.leasing = undefined;
      settle();
    }
  }

  #entry(key: string): Held {
    let held = this.#held.get(key);
    if (held) {
      // Re-inserted, so the map's order is least recently used first.
      this.#held.delete(key);
      this.#held.set(key, held);
      return held;
    }
    if (this.#held.size >= this.#maxKeys) {
      const [oldKey, old] = this.#held.entries().next().value!;
      this.#held.delete(oldKey);
      if (old.tokens >= 1) this.shared.giveBack([[oldKey, old.tokens]]);
    }
    held = { tokens: 0, want: 0, lastLeaseMs: -Infinity, lastUsedMs: 0, refusedUntilMs: 0 };
    this.#held.set(key, held);
    // Started with the first key, so a process that never leases has no timer.
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#giveBackIdle(), this.#holdMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
    return held;
  }

  #giveBackIdle(): void {
    const nowMs = this.#now();
    const back: [string, number][] = [];
    for (const [key, held] of this.#held) {
      if (nowMs - held.lastUsedMs < this.#holdMs || held.leasing) continue;
      if (nowMs < held.refusedUntilMs) continue;
      if (held.tokens >= 1) back.push([key, held.tokens]);
      this.#held.delete(key);
    }
    if (back.length) this.shared.giveBack(back);
    if (this.#held.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** A lease in flight for one of `entries`, if any. */
function leasing(entries: Held[]): Promise<void> | undefined {
  return entries.find((held) => held.leasing)?.leasing;
}

const ALLOWED: RateVerdict = Object.freeze({ allowed: true, retryAfterSeconds: 0 });
