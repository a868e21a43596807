/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
 * with two CA replicas (or several worker processes), one at a time runs the controllers that
 * write to the cluster (service-account Secrets, the Pod Certificates signer, the trust
 * bundle), so that they never issue twice or fight over an object. The holder renews the
 * Lease every `retryPeriodSeconds`; one that cannot renew within `renewDeadlineSeconds` stops
 * leading before another can take over, which happens only after `leaseDurationSeconds`
 * without a renewal. Every write is conditional on the Lease's resource version.
 *
 * The deadline holds whatever the network does: each attempt is abandoned (its requests
 * aborted) at the deadline, as client-go's context does, and a timer of its own steps the
 * leader down at `renewDeadlineSeconds` after the start of its last successful renewal, even
 * while an attempt hangs. A leader whose work fails to start releases the Lease, so another
 * replica may try, and waits before campaigning again (a lease duration, doubling to 5 min).
 *
 * @module
 */

import { type KubernetesApi, KubernetesApiError, type Logger, type ObjectMeta } from "../../internal/mod.ts";

/** Settings of {@link LeaderElector}. */
export interface LeaderElectionOptions {
  /** The client the Lease is read and written with. */
  api: KubernetesApi;
  /** The namespace of the Lease. */
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** This candidate's identity (pod name and process id). */
  identity: string;
  /** How long a Lease not renewed keeps others from taking over. Default 15 s. */
  leaseDurationSeconds?: number;
  /** How long the leader keeps leading without a successful renewal. Default 10 s. */
  renewDeadlineSeconds?: number;
  /** How often the Lease is renewed or tried. Default 2 s. */
  retryPeriodSeconds?: number;
  /** Where elections and takeovers are logged. */
  logger: Logger;
  /** Called when this candidate starts leading; the signal aborts when it stops. */
  onStartedLeading: (signal: AbortSignal) => void | Promise<void>;
  /** Called when this candidate stops leading. */
  onStoppedLeading?: () => void;
}

interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: ObjectMeta;
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

const MAX_WORK_BACKOFF_MS = 300_000;

/** `promise`, or a rejection as soon as `signal` aborts (the promise is then left to settle alone). */
function abandonOnAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error("abandoned at the renew deadline"));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error("abandoned at the renew deadline"));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** MicroTime as the API server reads it: RFC 3339 with exactly six fractional digits. */
export function microTime(at: Date): string {
  return at.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Campaigns for a Lease and runs the leader's work while holding it. */
export class LeaderElector {
  readonly #o: Required<Omit<LeaderElectionOptions, "onStoppedLeading">> & LeaderElectionOptions;
  #timer?: ReturnType<typeof setTimeout>;
  #deadlineTimer?: ReturnType<typeof setTimeout>;
  #attempt?: AbortController;
  #leading?: AbortController;
  #workFailures = 0;
  #campaignAfter = 0;
  #observed?: { holder?: string; renewTime?: string; at: number };
  #stopped = true;

  /** A candidate for `options.name`; `start` joins the election. Throws when the durations are not in decreasing order. */
  constructor(options: LeaderElectionOptions) {
    this.#o = {
      leaseDurationSeconds: 15,
      renewDeadlineSeconds: 10,
      retryPeriodSeconds: 2,
      ...options,
    };
    if (!(this.#o.leaseDurationSeconds > this.#o.renewDeadlineSeconds)) {
      throw new Error("leaseDurationSeconds must exceed renewDeadlineSeconds");
    }
    if (!(this.#o.renewDeadlineSeconds > this.#o.retryPeriodSeconds)) {
      throw new Error("renewDeadlineSeconds must exceed retryPeriodSeconds");
    }
  }

  /** Whether this candidate leads now. */
  get isLeader(): boolean {
    return this.#leading !== undefined;
  }

  get #path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.#o.namespace}/leases/${this.#o.name}`;
  }

  /** Joins the election; a second call does nothing. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#tick();
  }

  /** Stops campaigning; a leader steps down and releases the Lease so another takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#attempt?.abort();
    if (this.#leading) {
      this.#stepDown("stopping");
      await this.#release().catch((err) =>
        this.#o.logger.warn("releasing the leader Lease failed", { lease: this.#o.name, error: err })
      );
    }
  }

  #schedule(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#stopped) return;
    const jitter = this.#leading ? 1 : 1 + Math.random() * 0.2;
    const delayMs = Math.max(this.#o.retryPeriodSeconds * 1000 * jitter, this.#campaignAfter - Date.now());
    this.#timer = setTimeout(() => void this.#tick(), delayMs);
    this.#timer.unref?.();
  }

  async #tick(): Promise<void> {
    const startedAt = Date.now();
    // An attempt ends by the renew deadline, its requests aborted, whatever the network does.
    const attempt = new AbortController();
    this.#attempt = attempt;
    const deadline = setTimeout(() => attempt.abort(), this.#o.renewDeadlineSeconds * 1000);
    try {
      const held = await abandonOnAbort(this.#tryAcquireOrRenew(attempt.signal), attempt.signal);
      if (this.#stopped) return;
      if (held && !this.#leading && Date.now() < this.#campaignAfter) {
        // An attempt begun before the work failed: not campaigning yet.
        await this.#release(attempt.signal);
      } else if (held) {
        this.#armStepDown(startedAt);
        if (!this.#leading) this.#startLeading();
      } else if (this.#leading) {
        this.#stepDown("another candidate holds the Lease");
      }
    } catch (err) {
      this.#o.logger.warn("leader election attempt failed", { lease: this.#o.name, error: err });
    } finally {
      clearTimeout(deadline);
      if (this.#attempt === attempt) this.#attempt = undefined;
    }
    this.#schedule();
  }

  /**
   * A leader that cannot renew in time stops before the Lease can pass to another: another
   * candidate saw this renewal no sooner than the attempt began, and waits a whole lease
   * duration (longer than the renew deadline) from then.
   */
  #armStepDown(renewalStartedAt: number): void {
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    const delayMs = renewalStartedAt + this.#o.renewDeadlineSeconds * 1000 - Date.now();
    this.#deadlineTimer = setTimeout(() => {
      this.#deadlineTimer = undefined;
      this.#attempt?.abort();
      this.#stepDown("could not renew the Lease within renewDeadlineSeconds");
    }, Math.max(0, delayMs));
    this.#deadlineTimer.unref?.();
  }

  async #tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await this.#o.api.get<Lease>(this.#path, {}, { signal });
    } catch (err) {
      if (!(err instanceof KubernetesApiError && err.isNotFound)) throw err;
    }
    const me = this.#o.identity;
    if (!lease) {
      try {
        await this.#o.api.create(`/apis/coordination.k8s.io/v1/namespaces/${this.#o.namespace}/leases`, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: this.#o.name, namespace: this.#o.namespace },
          spec: {
            holderIdentity: me,
            leaseDurationSeconds: this.#o.leaseDurationSeconds,
            acquireTime: microTime(now),
            renewTime: microTime(now),
            leaseTransitions: 0,
          },
        }, { signal });
        return true;
      } catch (err) {
        if (err instanceof KubernetesApiError && err.isConflict) return false;
        throw err;
      }
    }
    const spec = lease.spec ?? {};
    // Expiry is judged by when this candidate last saw the record change, on its own clock, as
    // client-go does: clocks of different machines need not agree.
    if (
      !this.#observed || this.#observed.holder !== spec.holderIdentity ||
      this.#observed.renewTime !== spec.renewTime
    ) {
      this.#observed = { holder: spec.holderIdentity, renewTime: spec.renewTime, at: Date.now() };
    }
    const holder = spec.holderIdentity;
    const duration = (spec.leaseDurationSeconds ?? this.#o.leaseDurationSeconds) * 1000;
    const isExpired = Date.now() > this.#observed.at + duration;
    if (holder && holder !== me && !isExpired) return false;
    const isTakeover = holder !== me;
    const next: Lease = {
      ...lease,
      spec: {
        holderIdentity: me,
        leaseDurationSeconds: this.#o.leaseDurationSeconds,
        acquireTime: isTakeover ? microTime(now) : spec.acquireTime ?? microTime(now),
        renewTime: microTime(now),
        leaseTransitions: (spec.leaseTransitions ?? 0) + (isTakeover && holder ? 1 : 0),
      },
    };
    try {
      await this.#o.api.replace(this.#path, next, { signal });
      if (isTakeover) {
        this.#o.logger.info("took over the leader Lease", { lease: this.#o.name, previous: holder ?? null });
      }
      return true;
    } catch (err) {
      if (err instanceof KubernetesApiError && err.isConflict) return false;
      throw err;
    }
  }

  #startLeading(): void {
    this.#leading = new AbortController();
    this.#o.logger.info("leading", { lease: this.#o.name, identity: this.#o.identity });
    const signal = this.#leading.signal;
    // A synchronous throw is a failure to start as much as a rejection.
    new Promise<void>((resolve) => resolve(this.#o.onStartedLeading(signal))).then(() => {
      if (!signal.aborted) this.#workFailures = 0;
    }, (err) => {
      if (signal.aborted) return;
      // Starting again at once would fail again (an API the cluster does not serve, RBAC
      // missing) and re-list everything each time: release the Lease, so another replica may
      // try, and wait before campaigning again.
      const waitMs = Math.min(
        MAX_WORK_BACKOFF_MS,
        this.#o.leaseDurationSeconds * 1000 * 2 ** Math.min(this.#workFailures, 16),
      );
      this.#workFailures++;
      this.#campaignAfter = Date.now() + waitMs;
      this.#o.logger.error("the leader's work failed to start", {
        lease: this.#o.name,
        error: err,
        campaignAgainInMs: waitMs,
      });
      this.#stepDown("its work failed to start");
      void this.#release().catch((releaseErr) =>
        this.#o.logger.warn("releasing the leader Lease failed", { lease: this.#o.name, error: releaseErr })
      );
      if (this.#timer) clearTimeout(this.#timer);
      this.#schedule();
    });
  }

  #stepDown(why: string): void {
    const leading = this.#leading;
    if (!leading) return;
    this.#leading = undefined;
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    this.#o.logger.warn("stopped leading", { lease: this.#o.name, reason: why });
    leading.abort();
    this.#o.onStoppedLeading?.();
  }

  async #release(signal?: AbortSignal): Promise<void> {
    const lease = await this.#o.api.get<Lease>(this.#path, {}, { signal });
    if (lease.spec?.holderIdentity !== this.#o.identity) return;
    await this.#o.api.replace(this.#path, {
      ...lease,
      spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
    }, { signal });
  }
}
