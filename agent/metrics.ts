/**
 * The agent's Prometheus metrics: certificates held and seconds to expiry per workload,
 * renewals and failures by cause, expiry warnings, trust bundle and CRL updates, each held
 * CRL's age and time to its nextUpdate, delivery
 * failures, skipped workload entries, and the latency of each kind of CA request. Gauges are
 * read from the agent when scraped.
 *
 * @example
 * ```ts
 * import { AgentMetrics } from "meshauth/agent";
 * const metrics = new AgentMetrics();
 * console.log(metrics.render());
 * ```
 * @module
 */

import { type Counter, type Histogram, MetricsRegistry } from "../internal/mod.ts";
import type { Crl } from "../mod.ts";
import type { CaRequestObservation } from "./ca-client.ts";

const LATENCY_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const QUEUE_BUCKETS_SECONDS = [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Seconds until each held CRL's nextUpdate, by authority: what the agent's
 * `meshauth_agent_crl_next_update_seconds` and `meshauth proxy`'s
 * `meshauth_proxy_crl_next_update_seconds` report, alike.
 */
export const CRL_NEXT_UPDATE = {
  help:
    "Seconds until each held CRL's nextUpdate, by authority (negative: stale, the CA not reached since; " +
    "peers of that authority are then accepted unchecked for new revocations, or refused under revocation: strict).",
  samples: (crls: Iterable<readonly [string, Crl]>): { labels: { authority: string }; value: number }[] =>
    [...crls].flatMap(([authority, crl]) =>
      crl.nextUpdate
        ? [{ labels: { authority }, value: Math.round((crl.nextUpdate.getTime() - Date.now()) / 1000) }]
        : []
    ),
};

/** A certificate the agent holds, as the gauges report it. */
export interface HeldCertificateStatus {
  /** The workload's name (the node's own name for the node SVID). */
  workload: string;
  /** The SPIFFE ID the certificate carries. */
  spiffeId: string;
  /** The start of the certificate's validity. */
  notBefore: Date;
  /** The end of the certificate's validity. */
  notAfter: Date;
}

/** What the gauges read at scrape time. */
export interface AgentStatusReader {
  /** The number of workloads configured on the node. */
  workloadCount(): number;
  /** The certificate delivered to each workload that has one. */
  certificates(): Iterable<HeldCertificateStatus>;
  /** The node's own SVID, once it has one. */
  node(): HeldCertificateStatus | undefined;
  /** The sequence number of the trust bundle delivered, once the CA has given one. */
  trustBundleSequence(): number | undefined;
  /** The CA's clock minus this node's, in seconds, once the CA has answered. */
  clockOffsetSeconds?(): number | undefined;
  /** The CRLs held, by authority id. */
  crls?(): ReadonlyMap<string, Crl>;
}

/** The fraction of its lifetime left under which a certificate is reported as expiring. */
export const EXPIRY_WARNING_FRACTION = 0.2;

/** Counters and histograms the agent updates; gauges read through {@link AgentMetrics.attach}. */
export class AgentMetrics {
  /** Where the metrics are kept and rendered from. */
  readonly registry = new MetricsRegistry();
  #status?: AgentStatusReader;

  /** Certificates obtained, by kind (`workload`, `node`) and reason. */
  readonly renewals: Counter = this.registry.counter(
    "meshauth_agent_renewals_total",
    "Certificates obtained, by kind (workload, node) and reason (initial, renewal, revoked, changed, expired, requested).",
  );
  /** Failed attempts to obtain a certificate, by kind and cause. */
  readonly renewalFailures: Counter = this.registry.counter(
    "meshauth_agent_renewal_failures_total",
    "Failed attempts to obtain a certificate, by kind and cause (ERR_* problem code, http_<status>, " +
      "timeout, connect, tls, answer, aborted).",
  );
  /** Failed writes of a workload's files, by cause (errno or `ERR_*` code). */
  readonly deliveryFailures: Counter = this.registry.counter(
    "meshauth_agent_delivery_failures_total",
    "Failed writes of a workload's files (previous files kept), by cause (errno or ERR_* code).",
  );
  /** Certificates that came within 20% of their lifetime of expiring without being renewed. */
  readonly expiryWarnings: Counter = this.registry.counter(
    "meshauth_agent_expiry_warnings_total",
    "Certificates that came within 20% of their lifetime of expiring without being renewed.",
  );
  /** Trust bundle changes fetched from the CA. */
  readonly trustBundleUpdates: Counter = this.registry.counter(
    "meshauth_agent_trust_bundle_updates_total",
    "Trust bundle changes fetched from the CA.",
  );
  /** New CRLs fetched from the CA, by authority. */
  readonly crlUpdates: Counter = this.registry.counter(
    "meshauth_agent_crl_updates_total",
    "New CRLs fetched from the CA, by authority.",
  );
  /** Held certificates found in a CRL (each is re-issued at once). */
  readonly revocations: Counter = this.registry.counter(
    "meshauth_agent_revoked_certificates_total",
    "Held certificates found in a CRL (each is re-issued at once).",
  );
  /** Workload entries skipped as malformed or conflicting, by source. */
  readonly workloadProblems: Counter = this.registry.counter(
    "meshauth_agent_workload_problems_total",
    "Workload entries skipped as malformed or conflicting, by source.",
  );
  /** Seconds of each CA request, by endpoint and outcome, from leaving the queue to the answer. */
  readonly caRequests: Histogram = this.registry.histogram(
    "meshauth_agent_ca_request_duration_seconds",
    "CA requests by endpoint and outcome (HTTP status or failure kind), from leaving the queue to the answer.",
    LATENCY_BUCKETS_SECONDS,
  );
  /** Seconds each CA request waited for a free connection and a request slot, by endpoint. */
  readonly caQueue: Histogram = this.registry.histogram(
    "meshauth_agent_ca_request_queue_seconds",
    "Time CA requests waited for their turn (a free connection and a request slot), by endpoint.",
    QUEUE_BUCKETS_SECONDS,
  );

  /** Registers the gauges: no workloads and no certificates until {@link AgentMetrics.attach}. */
  constructor() {
    const status = () => this.#status;
    this.registry.gauge("meshauth_agent_workloads", "Workloads configured on this node.", () => [
      { value: status()?.workloadCount() ?? 0 },
    ]);
    this.registry.gauge(
      "meshauth_agent_certificates",
      "Workload certificates held and delivered that are valid now.",
      () => {
        const now = Date.now();
        let count = 0;
        for (const c of status()?.certificates() ?? []) if (c.notAfter.getTime() > now) count++;
        return [{ value: count }];
      },
    );
    this.registry.gauge(
      "meshauth_agent_certificates_expiring",
      "Certificates within 20% of their lifetime of expiring (renewal is overdue).",
      () => {
        let count = 0;
        for (const c of status()?.certificates() ?? []) if (isExpiring(c)) count++;
        return [{ value: count }];
      },
    );
    this.registry.gauge(
      "meshauth_agent_certificate_expiry_seconds",
      "Seconds until the certificate delivered to each workload expires (negative: expired).",
      () =>
        [...(status()?.certificates() ?? [])].map((c) => ({
          labels: { workload: c.workload, spiffe_id: c.spiffeId },
          value: Math.round((c.notAfter.getTime() - Date.now()) / 1000),
        })),
    );
    this.registry.gauge(
      "meshauth_agent_node_certificate_expiry_seconds",
      "Seconds until the node's own SVID expires.",
      () => {
        const node = status()?.node();
        return node ? [{ value: Math.round((node.notAfter.getTime() - Date.now()) / 1000) }] : [];
      },
    );
    this.registry.gauge(
      "meshauth_agent_clock_offset_seconds",
      "The CA's clock minus this node's, from the Date of the CA's answers (0 within 2 s).",
      () => {
        const offset = status()?.clockOffsetSeconds?.();
        return offset === undefined ? [] : [{ value: offset }];
      },
    );
    const crls = () => [...(status()?.crls?.() ?? [])];
    this.registry.gauge(
      "meshauth_agent_crl_next_update_seconds",
      CRL_NEXT_UPDATE.help,
      () => CRL_NEXT_UPDATE.samples(crls()),
    );
    this.registry.gauge(
      "meshauth_agent_crl_age_seconds",
      "Seconds since each held CRL's thisUpdate, by authority.",
      () =>
        crls().map(([authority, crl]) => ({
          labels: { authority },
          value: Math.round((Date.now() - crl.thisUpdate.getTime()) / 1000),
        })),
    );
    this.registry.gauge(
      "meshauth_agent_trust_bundle_sequence",
      "Sequence number of the trust bundle delivered.",
      () => {
        const sequence = status()?.trustBundleSequence();
        return sequence === undefined ? [] : [{ value: sequence }];
      },
    );
  }

  /** Where the gauges read from. */
  attach(status: AgentStatusReader): void {
    this.#status = status;
  }

  /** Records one CA request (pass as the client's `onResponse`). */
  readonly caRequest = (observation: CaRequestObservation): void => {
    this.caRequests.observe(
      { endpoint: observation.endpoint, outcome: observation.outcome },
      observation.seconds,
    );
    this.caQueue.observe({ endpoint: observation.endpoint }, observation.queuedSeconds);
  };

  /** The metrics in the Prometheus text format. */
  render(): string {
    return this.registry.render();
  }
}

/** True when `certificate` has less than 20% of its lifetime left. */
export function isExpiring(certificate: { notBefore: Date; notAfter: Date }, now = Date.now()): boolean {
  const lifetime = certificate.notAfter.getTime() - certificate.notBefore.getTime();
  return certificate.notAfter.getTime() - now < lifetime * EXPIRY_WARNING_FRACTION;
}
