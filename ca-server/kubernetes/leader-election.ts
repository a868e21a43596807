/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
 * with two CA replicas (or several worker processes), one at a time runs the controllers that
 * write to the cluster (service-account Secrets, the Pod Certificates signer, the trust
 * bundle), so that they never issue twice or fight over an object. The holder renews the
 * Lease every `retryPeriodSeconds`; one that cannot renew within `renewDeadlineSeconds` stops
 * leading before another can take over, which happens only after `leaseDurationSeconds`
 * without a renewal. Every write is conditional on the Lease's resource version.
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

/** MicroTime as the API server reads it: RFC 3339 with exactly six fractional digits. */
export function microTime(at: Date): string {
  return at.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Campaigns for a Lease and runs the leader's work while holding it. */
export class LeaderElector {
  readonly #o: Required<Omit<LeaderElectionOptions, "onStoppedLeading">> & LeaderElectionOptions;
  #timer?: ReturnType<typeof setTimeout>;
  #leading?: AbortController;
  #lastRenewed = 0;
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
    if (this.#leading) {
      this.#stepDown("stopping");
      await this.#release().catch((err) =>
        this.#o.logger.warn("releasing the leader Lease failed", { lease: this.#o.name, error: err })
      );
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    const jitter = this.#leading ? 1 : 1 + Math.random() * 0.2;
    this.#timer = setTimeout(() => void this.#tick(), this.#o.retryPeriodSeconds * 1000 * jitter);
    this.#timer.unref?.();
  }

  async #tick(): Promise<void> {
    try {
      const held = await this.#tryAcquireOrRenew();
      if (held) {
        this.#lastRenewed = Date.now();
        if (!this.#leading) this.#startLeading();
      } else if (this.#leading) {
        this.#stepDown("another candidate holds the Lease");
      }
    } catch (err) {
      this.#o.logger.warn("leader election attempt failed", { lease: this.#o.name, error: err });
    }
    // A leader that cannot renew in time stops before the Lease can pass to another.
    if (this.#leading && Date.now() - this.#lastRenewed > this.#o.renewDeadlineSeconds * 1000) {
      this.#stepDown("could not renew the Lease within renewDeadlineSeconds");
    }
    this.#schedule();
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await this.#o.api.get<Lease>(this.#path);
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
        });
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
      await this.#o.api.replace(this.#path, next);
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
    Promise.resolve(this.#o.onStartedLeading(signal)).catch((err) => {
      this.#o.logger.error("the leader's work failed to start", { lease: this.#o.name, error: err });
      if (!signal.aborted) this.#stepDown("its work failed to start");
    });
  }

  #stepDown(why: string): void {
    const leading = this.#leading;
    if (!leading) return;
    this.#leading = undefined;
    this.#o.logger.warn("stopped leading", { lease: this.#o.name, reason: why });
    leading.abort();
    this.#o.onStoppedLeading?.();
  }

  async #release(): Promise<void> {
    const lease = await this.#o.api.get<Lease>(this.#path);
    if (lease.spec?.holderIdentity !== this.#o.identity) return;
    await this.#o.api.replace(this.#path, {
      ...lease,
      spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
    });
  }
}
