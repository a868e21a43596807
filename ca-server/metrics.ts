/**
 * The CA's Prometheus metrics, written in the text exposition format (version 0.0.4) by the
 * same writer as the agent's (`internal/prometheus.ts`):
 * issuances, denials by reason, HTTP responses, an issuance latency histogram, revocations and
 * the expiry of each CA certificate.
 *
 * Each process counts what it served in a {@link CaMetrics}; `/metrics` reports the whole CA
 * process group: the node:cluster workers' counts are merged ({@link mergeSnapshots}), and the
 * revocation count comes from the store, so it includes `meshauth ca revoke` and every process
 * that shares the store. The primary keeps the last counts each worker reported, an exited
 * one's included, so a sum never goes down when a worker is slow to answer or has gone.
 *
 * @example
 * ```ts
 * import { CaMetrics, renderMetrics } from "meshauth/ca-server";
 * const metrics = new CaMetrics();
 * metrics.issued("join-token", 0.0012);
 * console.log(renderMetrics([metrics.snapshot()], { revocationsTotal: 0, caCertificates: [] }));
 * ```
 * @module
 */

import { MetricsRegistry } from "../internal/mod.ts";

const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** One process's counts, as plain JSON (they travel between processes). */
export interface MetricsSnapshot {
  /** Certificates issued, by authentication method. */
  issued: Record<string, number>;
  /** Requests refused, by problem code. */
  denied: Record<string, number>;
  /** Requests refused by a rate limit, by the kind of bucket that refused. */
  rateLimited: Record<string, number>;
  /** Responses, by HTTP status. */
  responses: Record<string, number>;
  /** Issuances at or under each of the histogram's bounds (cumulative, as Prometheus has them). */
  latencyBuckets: number[];
  /** Sum of the issuance latencies, in seconds. */
  latencySum: number;
  /** Number of issuances timed. */
  latencyCount: number;
  /** Kubernetes objects the CA found in its way and left alone, by kind (absent in older snapshots). */
  kubernetesConflicts?: Record<string, number>;
}

/** The counts of a process group: the last each process reported, and how many are running. */
export interface GroupMetrics {
  /** One per process that reported (exited ones' may come added up as one). */
  snapshots: MetricsSnapshot[];
  /** Processes running now. */
  processes: number;
}

/** What the process group reports besides its counts. */
export interface GroupFacts {
  /** Processes running now; the number of snapshots when omitted. */
  processes?: number;
  /** Revocations recorded in the store, by any process; omitted when the store cannot say. */
  revocationsTotal?: number;
  /** The CA certificates whose expiry is reported. */
  caCertificates: { id: string; notAfter: Date }[];
}

function count(map: Record<string, number>, key: string, by = 1): void {
  map[key] = (map[key] ?? 0) + by;
}

/** The counters and the histogram one process updates. */
export class CaMetrics {
  readonly #snapshot: MetricsSnapshot = {
    issued: Object.create(null),
    denied: Object.create(null),
    rateLimited: Object.create(null),
    responses: Object.create(null),
    latencyBuckets: new Array<number>(LATENCY_BUCKETS_SECONDS.length).fill(0),
    latencySum: 0,
    latencyCount: 0,
    kubernetesConflicts: Object.create(null),
  };

  /** One certificate issued to a caller authenticated by `method`, taking `seconds`. */
  issued(method: string, seconds: number): void {
    const s = this.#snapshot;
    count(s.issued, method);
    for (let i = 0; i < LATENCY_BUCKETS_SECONDS.length; i++) {
      if (seconds <= LATENCY_BUCKETS_SECONDS[i]) s.latencyBuckets[i]++;
    }
    s.latencySum += seconds;
    s.latencyCount++;
  }

  /** One request denied, by problem code. */
  denied(code: string): void {
    count(this.#snapshot.denied, code);
  }

  /** An object of `kind` that is not the CA's holds a name the CA would write (warned about once). */
  kubernetesConflict(kind: string): void {
    count(this.#snapshot.kubernetesConflicts!, kind);
  }

  /**
   * One request refused by a rate limit: `bucket` is `address`, `requester`, `identity`,
   * `global` (the whole CA's issuances) or `concurrency` (this process's issuances at once).
   */
  rateLimited(bucket: string): void {
    count(this.#snapshot.rateLimited, bucket);
  }

  /** One HTTP response with `status`. */
  request(status: number): void {
    count(this.#snapshot.responses, String(status));
  }

  /** A copy of the counts so far. */
  snapshot(): MetricsSnapshot {
    return structuredClone(this.#snapshot);
  }
}

/** The counts of several processes added up. */
export function mergeSnapshots(snapshots: readonly MetricsSnapshot[]): MetricsSnapshot {
  const total = new CaMetrics().snapshot();
  for (const s of snapshots) {
    for (const [k, v] of Object.entries(s.issued)) count(total.issued, k, v);
    for (const [k, v] of Object.entries(s.denied)) count(total.denied, k, v);
    // A worker of an earlier version reports no rateLimited.
    for (const [k, v] of Object.entries(s.rateLimited ?? {})) count(total.rateLimited, k, v);
    for (const [k, v] of Object.entries(s.responses)) count(total.responses, k, v);
    s.latencyBuckets.forEach((v, i) => total.latencyBuckets[i] += v);
    total.latencySum += s.latencySum;
    total.latencyCount += s.latencyCount;
    for (const [k, v] of Object.entries(s.kubernetesConflicts ?? {})) count(total.kubernetesConflicts!, k, v);
  }
  return total;
}

/** The metrics of `snapshots` (one per process of the group) in Prometheus text format. */
export function renderMetrics(snapshots: readonly MetricsSnapshot[], facts: GroupFacts): string {
  const s = mergeSnapshots(snapshots);
  const registry = new MetricsRegistry();
  const counter = (name: string, help: string, label: string, values: Record<string, number>) => {
    const metric = registry.counter(name, help);
    for (const [k, v] of Object.entries(values)) metric.inc({ [label]: k }, v);
  };
  counter("meshauth_ca_certificates_issued_total", "Certificates issued.", "method", s.issued);
  counter("meshauth_ca_denials_total", "Requests denied, by reason.", "reason", s.denied);
  counter(
    "meshauth_ca_rate_limited_total",
    "Requests refused by a rate limit, by the bucket that refused.",
    "bucket",
    s.rateLimited,
  );
  counter("meshauth_ca_http_responses_total", "HTTP responses, by status.", "status", s.responses);
  counter(
    "meshauth_ca_kubernetes_conflicts_total",
    "Kubernetes objects that hold a name the CA would write and are not the CA's (left alone), by kind.",
    "kind",
    s.kubernetesConflicts ?? {},
  );
  if (facts.revocationsTotal !== undefined) {
    registry.counter(
      "meshauth_ca_revocations_total",
      "Certificates revoked, by any process sharing the store (the CLI included).",
    ).inc({}, facts.revocationsTotal);
  }
  registry.histogram(
    "meshauth_ca_issuance_duration_seconds",
    "Time to authenticate, sign and record one certificate.",
    LATENCY_BUCKETS_SECONDS,
  ).add({}, { buckets: s.latencyBuckets, sum: s.latencySum, count: s.latencyCount });
  registry.gauge(
    "meshauth_ca_processes",
    "CA processes running; the counters add up every one's, exited ones' included.",
    () => [{ value: facts.processes ?? snapshots.length }],
  );
  registry.gauge(
    "meshauth_ca_certificate_expiry_timestamp_seconds",
    "When each CA certificate in the bundle expires.",
    () =>
      facts.caCertificates.map(({ id, notAfter }) => ({
        labels: { authority: id },
        value: Math.floor(notAfter.getTime() / 1000),
      })),
  );
  return registry.render();
}
