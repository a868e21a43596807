/**
 * One CA of several node:cluster processes: the workers keep their rate-limit buckets in the
 * primary and report their metrics through it, so a limit holds for the whole CA (not once per
 * worker) and `/metrics` answers for every worker, whichever one is asked.
 *
 * A worker asks the primary over the cluster's IPC channel: one message per lease of tokens
 * (`LeasedRateLimit` in `leased-rate-limit.ts`: a request's charges (its requester's bucket, and
 * the whole CA's for an issuance) are leased together; a key seen for the first time costs a
 * round trip, a busy one a round trip per lease of up to 64 tokens, and tokens left unspent go
 * back in one message a second), and for `/metrics` one round in
 * which the primary collects a snapshot from every worker. The primary keeps the last snapshot
 * of each worker: one that does not answer within 2 s is reported with its last counts, and
 * an exited one's last counts stay in the sum, so a counter never goes down.
 *
 * @module
 */

import cluster, { type Worker } from "node:cluster";
import { type CaMetrics, type GroupMetrics, mergeSnapshots, type MetricsSnapshot } from "./metrics.ts";
import {
  type Charge,
  type LeasableRateLimit,
  type Lease,
  type LeaseCharge,
  RateLimiter,
  type RateLimitOptions,
  type RateVerdict,
} from "./rate-limit.ts";

const CHANNEL = "meshauth:process-group";
const ASK_TIMEOUT_MS = 5000;
const COLLECT_TIMEOUT_MS = 2000;

type Message =
  | { channel: typeof CHANNEL; kind: "take"; id: number; charges: Charge[]; refund?: string }
  | { channel: typeof CHANNEL; kind: "lease"; id: number; charges: LeaseCharge[]; refund?: string }
  | { channel: typeof CHANNEL; kind: "give-back"; id: number; tokens: [string, number][] }
  | { channel: typeof CHANNEL; kind: "metrics"; id: number }
  | { channel: typeof CHANNEL; kind: "snapshot-request"; id: number }
  | { channel: typeof CHANNEL; kind: "snapshot"; id: number; snapshot: MetricsSnapshot }
  | { channel: typeof CHANNEL; kind: "reply"; id: number; value: unknown };

function isMessage(value: unknown): value is Message {
  return (value as { channel?: unknown } | null)?.channel === CHANNEL;
}

/** A worker's side: asks the primary. */
export class WorkerGroup {
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();

  constructor(readonly metrics: CaMetrics) {
    process.on("message", (message: unknown) => {
      if (!isMessage(message)) return;
      if (message.kind === "snapshot-request") {
        this.#send({ channel: CHANNEL, kind: "snapshot", id: message.id, snapshot: metrics.snapshot() });
      } else if (message.kind === "reply") {
        this.#pending.get(message.id)?.resolve(message.value);
        this.#pending.delete(message.id);
      }
    });
  }

  #send(message: Message): void {
    if (!process.send) throw new Error("not a node:cluster worker");
    process.send(message);
  }

  #ask<T>(
    message:
      | { kind: "take"; charges: Charge[]; refund?: string }
      | { kind: "lease"; charges: LeaseCharge[]; refund?: string }
      | { kind: "metrics" },
  ): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new Error(`the CA's primary process did not answer a ${message.kind} within ${ASK_TIMEOUT_MS} ms`),
        );
      }, ASK_TIMEOUT_MS);
      this.#pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject,
      });
      try {
        this.#send({ channel: CHANNEL, id, ...message } as Message);
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err as Error);
      }
    });
  }

  /** The primary's buckets. */
  rateLimit(): LeasableRateLimit {
    return {
      take: (charges, refund) => this.#ask<RateVerdict>({ kind: "take", charges: [...charges], refund }),
      lease: (charges, refund) => this.#ask<Lease>({ kind: "lease", charges: [...charges], refund }),
      giveBack: (tokens) => {
        try {
          this.#send({
            channel: CHANNEL,
            kind: "give-back",
            id: 0,
            tokens: tokens.map(([key, count]) => [key, count]),
          });
        } catch {
          // The primary has gone: the tokens go with it.
        }
      },
    };
  }

  /** Every worker's counts (this one's included). */
  metricsOfGroup(): Promise<GroupMetrics> {
    return this.#ask<GroupMetrics>({ kind: "metrics" });
  }
}

/**
 * The primary's side: keeps the buckets (leased among `workers` processes) and gathers the
 * workers' metrics.
 */
export function servePrimaryGroup(rateLimit: RateLimitOptions | false, workers = 1): void {
  const limiter = rateLimit === false ? undefined : new RateLimiter(rateLimit, workers);
  /** Each running worker's last snapshot, by worker id. */
  const lastSnapshots = new Map<number, MetricsSnapshot>();
  /** Exited workers' last snapshots, added up. */
  let exited: MetricsSnapshot | undefined;
  let nextCollection = 1;
  const collections = new Map<number, { answered: number; expected: number; finish: () => void }>();
  const reply = (worker: Worker, id: number, value: unknown) => {
    try {
      worker.send({ channel: CHANNEL, kind: "reply", id, value } satisfies Message);
    } catch {
      // The worker has gone; nobody is waiting.
    }
  };
  cluster.on("exit", (worker: Worker) => {
    const last = lastSnapshots.get(worker.id);
    if (!last) return;
    lastSnapshots.delete(worker.id);
    exited = mergeSnapshots(exited ? [exited, last] : [last]);
  });
  cluster.on("message", (worker: Worker, message: unknown) => {
    if (!isMessage(message)) return;
    switch (message.kind) {
      case "take":
        return reply(
          worker,
          message.id,
          limiter?.take(message.charges, message.refund) ?? { allowed: true, retryAfterSeconds: 0 },
        );
      case "lease":
        return reply(
          worker,
          message.id,
          limiter?.lease(message.charges, message.refund) ??
            ({
              allowed: true,
              retryAfterSeconds: 0,
              extra: message.charges.map((charge) => charge.want),
              waitMs: 0,
            } satisfies Lease),
        );
      case "give-back":
        if (Array.isArray(message.tokens)) limiter?.giveBack(message.tokens);
        return;
      case "snapshot": {
        // Kept even when it comes too late for its collection: the next report has it.
        if (worker.isConnected()) lastSnapshots.set(worker.id, message.snapshot);
        const collection = collections.get(message.id);
        if (collection && ++collection.answered === collection.expected) collection.finish();
        return;
      }
      case "metrics": {
        const id = nextCollection++;
        const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w?.isConnected());
        // A worker that does not answer in time (busy, or exiting) is reported with its last counts.
        const timer = setTimeout(() => finish(), COLLECT_TIMEOUT_MS);
        const finish = () => {
          clearTimeout(timer);
          if (!collections.delete(id)) return;
          const snapshots = [...lastSnapshots.values(), ...(exited ? [exited] : [])];
          reply(worker, message.id, { snapshots, processes: workers.length } satisfies GroupMetrics);
        };
        const collection = { answered: 0, expected: workers.length, finish };
        collections.set(id, collection);
        for (const w of workers) {
          try {
            w.send({ channel: CHANNEL, kind: "snapshot-request", id } satisfies Message);
          } catch {
            collection.expected--;
          }
        }
        if (collection.answered >= collection.expected) finish();
        return;
      }
    }
  });
}
