// A simulated node agent: the real agent's renewal logic (renewalMoment with its jitter,
// renewalRetryWait (Backoff with its jitter, the CA's Retry-After paced, a certificate near
// its end retried within a tenth of its life left), eight issuances under way at once, one
// CaClient with one keep-alive mTLS connection as the node), for workloads that are rows in
// memory rather than directories. Each renewal sends a fresh CSR (signed with one of a pool of
// keys: what the CA does with it, parse, verify and sign, is the same as for a new key).
//
// Time is a SimClock: real time plus an offset, which the storm scenario moves forward by the
// CA's outage after replaying what every agent did meanwhile (see fleet.ts).
import { createCsr, type KeyPair, SpiffeId } from "../../mod.ts";
import {
  Backoff,
  type BackoffOptions,
  CaClient,
  type CaCredential,
  CaRequestFailed,
  CaUnavailable,
  ConcurrencyLimit,
  renewalMoment,
} from "../../agent/mod.ts";
import { renewalRetryWait } from "../../agent/lifecycle/backoff.ts";
import { isRefusal, retryAfterMs } from "../../agent/lifecycle/failure.ts";
import type { RenewalOptions } from "../../mod.ts";

/** Real time plus an offset: how the storm compresses the CA's outage. */
export class SimClock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
}

/** One simulated workload: the certificate it holds (on the simulated clock) and its schedule. */
export interface SimWorkload {
  id: SpiffeId;
  agent: SimulatedAgent;
  notBefore: number;
  notAfter: number;
  /** When its next renewal attempt is due (simulated clock). */
  dueAt: number;
  backoff: Backoff;
  /** Set while an attempt is queued or under way. */
  isBusy: boolean;
  /** When its certificate expired without being renewed (simulated clock), if it did. */
  expiredAt?: number;
  /** Simulated milliseconds it spent without a valid certificate. */
  uncoveredMs: number;
  /** Renewals it made since the mark. */
  renewals: number;
}

/** What every renewal attempt ended as, for the report. */
export interface AttemptRecord {
  /** Real time the answer came (ms). */
  at: number;
  /** Request time, queueing in the client included (ms). */
  latencyMs: number;
  outcome: "201" | "429" | "503" | "other" | "unreachable";
  problem?: string;
}

export interface SimulatedAgentOptions {
  node: string;
  client: CaClient;
  credential: CaCredential;
  clock: SimClock;
  keys: KeyPair[];
  renewal: RenewalOptions;
  backoff: BackoffOptions;
  onAttempt: (record: AttemptRecord) => void;
  onRenewed: (workload: SimWorkload) => void;
  /** Issuances under way at once (the agent's default: 8). */
  issuances?: number;
}

export class SimulatedAgent {
  readonly #issuances: ConcurrencyLimit;
  constructor(readonly options: SimulatedAgentOptions) {
    this.#issuances = new ConcurrencyLimit(options.issuances ?? 8);
  }

  /** One renewal attempt of `workload`, as the agent makes it; schedules the next. */
  async renew(workload: SimWorkload): Promise<void> {
    const o = this.options;
    // As the agent: the certificate closest to running out goes first.
    await this.#issuances.run(async () => {
      const keys = o.keys[Math.floor(Math.random() * o.keys.length)];
      const csr = await createCsr({ keys, id: workload.id });
      const started = performance.now();
      try {
        const issued = await o.client.requestCertificate(csr, o.credential);
        o.onAttempt({ at: Date.now(), latencyMs: performance.now() - started, outcome: "201" });
        // The CA's times are real; the simulated clock is ahead of them by its offset.
        workload.notAfter = issued.expiresAt.getTime() + o.clock.offsetMs;
        workload.notBefore = o.clock.now() - 30_000;
        workload.backoff.reset();
        workload.renewals++;
        const held = { notBefore: new Date(workload.notBefore), expiresAt: new Date(workload.notAfter) };
        workload.dueAt = renewalMoment(held, o.renewal, o.clock.now()).getTime();
        o.onRenewed(workload);
      } catch (err) {
        const outcome = err instanceof CaRequestFailed
          ? (err.status === 429 ? "429" : err.status === 503 ? "503" : "other")
          : err instanceof CaUnavailable
          ? "unreachable"
          : "other";
        o.onAttempt({
          at: Date.now(),
          latencyMs: performance.now() - started,
          outcome,
          problem: err instanceof CaRequestFailed ? err.problemCode : (err as Error).message,
        });
        workload.dueAt = o.clock.now() + renewalRetryWait(workload.backoff, {
          retryAfterMs: retryAfterMs(err),
          isRefusal: isRefusal(err),
          certificateMsLeft: workload.notAfter - o.clock.now(),
        });
      }
    }, { priority: workload.notAfter - o.clock.offsetMs });
  }
}
