/**
 * A controller's work queue, as client-go's: each key is queued at most once however often it
 * is added, a key being worked on is not worked on twice at once (an add meanwhile queues it
 * again for after), keys can be added for later (renewals), and a key whose work failed is
 * retried with capped exponential backoff. Work runs with bounded concurrency.
 *
 * @module
 */

import type { Logger } from "../../internal/mod.ts";

/** Options of {@link WorkQueue}. */
export interface WorkQueueOptions {
  /** Does the work for one key; a throw retries it with backoff. */
  work: (key: string) => Promise<void>;
  logger: Logger;
  name: string;
  /** Keys worked on at once. Default 2. */
  concurrency?: number;
  /** Retry backoff bounds. Defaults 1 s and 60 s. */
  minRetryMs?: number;
  maxRetryMs?: number;
}

/** A deduplicating, delaying, retrying queue of keys. */
export class WorkQueue {
  readonly #o: WorkQueueOptions;
  readonly #queued = new Set<string>();
  readonly #order: string[] = [];
  readonly #active = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #timers = new Map<string, { at: number; timer: ReturnType<typeof setTimeout> }>();
  readonly #failures = new Map<string, number>();
  readonly #idleWaiters: Array<() => void> = [];
  #running = 0;
  #stopped = false;

  constructor(options: WorkQueueOptions) {
    this.#o = options;
  }

  /** Queues `key` now. */
  add(key: string): void {
    if (this.#stopped) return;
    const pending = this.#timers.get(key);
    if (pending) {
      clearTimeout(pending.timer);
      this.#timers.delete(key);
    }
    if (this.#active.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#order.push(key);
    this.#pump();
  }

  /** Queues `key` after `delayMs`, unless it is due sooner already. */
  addAfter(key: string, delayMs: number): void {
    if (this.#stopped) return;
    if (delayMs <= 0) return this.add(key);
    const at = Date.now() + delayMs;
    const pending = this.#timers.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    // setTimeout holds at most 2^31-1 ms; a later key is re-armed when that fires.
    const timer = setTimeout(() => {
      this.#timers.delete(key);
      if (Date.now() + 1000 < at) this.addAfter(key, at - Date.now());
      else this.add(key);
    }, Math.min(delayMs, 2 ** 31 - 1));
    timer.unref?.();
    this.#timers.set(key, { at, timer });
  }

  /** Keys waiting, being worked on, or scheduled. */
  get length(): number {
    return this.#queued.size + this.#active.size + this.#timers.size;
  }

  /** Resolves when nothing is queued or running (scheduled keys do not count). */
  idle(): Promise<void> {
    if (this.#queued.size === 0 && this.#active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Drops everything queued and scheduled; work in progress finishes. */
  stop(): void {
    this.#stopped = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    this.#queued.clear();
    this.#order.length = 0;
  }

  #pump(): void {
    const concurrency = this.#o.concurrency ?? 2;
    while (this.#running < concurrency && this.#order.length > 0) {
      const key = this.#order.shift()!;
      this.#queued.delete(key);
      this.#active.add(key);
      this.#running++;
      void this.#run(key);
    }
  }

  async #run(key: string): Promise<void> {
    let retryMs: number | undefined;
    try {
      await this.#o.work(key);
      this.#failures.delete(key);
    } catch (err) {
      const failures = (this.#failures.get(key) ?? 0) + 1;
      this.#failures.set(key, failures);
      const min = this.#o.minRetryMs ?? 1000;
      const max = this.#o.maxRetryMs ?? 60_000;
      retryMs = Math.min(max, min * 2 ** Math.min(failures - 1, 16)) * (0.75 + Math.random() / 2);
      this.#o.logger.warn("Kubernetes controller work failed", {
        controller: this.#o.name,
        key,
        attempt: failures,
        retryInMs: Math.round(retryMs),
        error: err,
      });
    } finally {
      this.#active.delete(key);
      this.#running--;
    }
    if (this.#dirty.delete(key)) this.add(key);
    else if (retryMs !== undefined) this.addAfter(key, retryMs);
    this.#pump();
    if (this.#queued.size === 0 && this.#active.size === 0) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }
}
