/**
 * The proxy's Prometheus metrics (text exposition format 0.0.4): connections by outcome and
 * transport (plain text is its own series), decisions by policy (dry-run ones apart), open
 * connections closed and why, negotiated key exchange groups, resumed sessions, bytes, policy
 * reloads, credential rotations, and the time from accept to the first relayed byte.
 *
 * @example
 * ```ts
 * import { ProxyMetrics } from "meshauth/agent";
 * const metrics = new ProxyMetrics();
 * metrics.connections.inc({ listener: "datastore", direction: "inbound", transport: "mtls", outcome: "allowed" });
 * console.log(metrics.render());
 * ```
 * @module
 */

/** Label values by label name. */
export type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  return entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
}

/** A counter per label set; the family names its labels, in the order they are written. */
export class CounterFamily {
  readonly #series = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[]) {}

  /** The series of `labels` (cheap to find: counters are bumped on every connection). */
  #key(labels: Labels): string {
    let key = "";
    for (const name of this.labelNames) key += `${labels[name] ?? ""}\u0000`;
    return key;
  }

  /** Adds `amount` (default 1). */
  inc(labels: Labels, amount = 1): void {
    const key = this.#key(labels);
    const series = this.#series.get(key);
    if (series) series.value += amount;
    else {
      const ordered: Labels = {};
      for (const name of this.labelNames) ordered[name] = labels[name] ?? "";
      this.#series.set(key, { labels: ordered, value: amount });
    }
  }

  /** The value of one series; 0 when it was never incremented. */
  value(labels: Labels): number {
    return this.#series.get(this.#key(labels))?.value ?? 0;
  }

  /** The sum over every series whose labels include `match`. */
  sum(match: Labels = {}): number {
    let total = 0;
    for (const { labels, value } of this.#series.values()) {
      if (Object.entries(match).every(([k, v]) => labels[k] === v)) total += value;
    }
    return total;
  }

  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    for (const { labels, value } of this.#series.values()) {
      lines.push(`${this.name}${labelText(labels)} ${value}`);
    }
  }
}

/** Observations in fixed buckets, per label set. */
export class HistogramFamily {
  readonly #series = new Map<string, { labels: Labels; buckets: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, readonly bounds: readonly number[]) {}

  observe(labels: Labels, value: number): void {
    const key = labelText(labels);
    let series = this.#series.get(key);
    if (!series) {
      this.#series.set(
        key,
        series = { labels, buckets: this.bounds.map(() => 0), sum: 0, count: 0 },
      );
    }
    for (let i = 0; i < this.bounds.length; i++) if (value <= this.bounds[i]) series.buckets[i]++;
    series.sum += value;
    series.count++;
  }

  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const { labels, buckets, sum, count } of this.#series.values()) {
      this.bounds.forEach((le, i) => {
        lines.push(`${this.name}_bucket${labelText({ ...labels, le: String(le) })} ${buckets[i]}`);
      });
      lines.push(
        `${this.name}_bucket${labelText({ ...labels, le: "+Inf" })} ${count}`,
        `${this.name}_sum${labelText(labels)} ${sum}`,
        `${this.name}_count${labelText(labels)} ${count}`,
      );
    }
  }
}

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Every metric of the proxy. */
export class ProxyMetrics {
  /** Connections by listener, direction, transport (`mtls`, `plaintext`) and outcome. */
  readonly connections = new CounterFamily(
    "meshauth_proxy_connections_total",
    "Connections accepted, by listener, direction, transport and outcome (allowed, denied, unverified, secure_naming, plaintext_refused, no_credential, over_limit, handshake_failed, upstream_failed).",
    ["listener", "direction", "transport", "outcome"],
  );
  /** Enforced decisions by listener, decision and policy. */
  readonly decisions = new CounterFamily(
    "meshauth_proxy_decisions_total",
    "Authorization decisions enforced, by listener, decision and deciding policy.",
    ["listener", "decision", "policy"],
  );
  /** What dry-run policies would have decided, by listener, decision and policy. */
  readonly dryRunDecisions = new CounterFamily(
    "meshauth_proxy_dry_run_decisions_total",
    "Decisions with dry-run policies enforced (logged, not enforced), by listener, decision and policy.",
    ["listener", "decision", "policy"],
  );
  /** Open connections closed by the proxy, by listener and reason. */
  readonly closed = new CounterFamily(
    "meshauth_proxy_closed_total",
    "Open connections closed by the proxy, by listener and reason (revoked, unverified, secure_naming, denied, idle, handshake_timeout, headers_timeout, shutdown).",
    ["listener", "reason"],
  );
  /** Negotiated key exchange groups (known on outbound connections). */
  readonly tlsGroups = new CounterFamily(
    "meshauth_proxy_tls_groups_total",
    "TLS key exchange groups negotiated on outbound connections.",
    ["group"],
  );
  readonly resumed = new CounterFamily(
    "meshauth_proxy_resumed_sessions_total",
    "TLS sessions resumed (and verified again), by listener and direction.",
    ["listener", "direction"],
  );
  readonly bytes = new CounterFamily(
    "meshauth_proxy_bytes_total",
    "Bytes relayed, by listener and direction (from_peer, to_peer).",
    ["listener", "direction"],
  );
  readonly policyReloads = new CounterFamily(
    "meshauth_proxy_policy_reloads_total",
    "Policy reloads by listener and result (reloaded, refused).",
    ["listener", "result"],
  );
  readonly rotations = new CounterFamily(
    "meshauth_proxy_credential_rotations_total",
    "New SVIDs put into service, by workload.",
    ["workload"],
  );
  readonly trustChanges = new CounterFamily(
    "meshauth_proxy_trust_changes_total",
    "Trust bundle or CRL changes applied (open connections verified again), by workload.",
    ["workload"],
  );
  /** Audit records about unverified peers folded into a summary record instead of written. */
  readonly auditAggregated = new CounterFamily(
    "meshauth_proxy_audit_aggregated_records_total",
    "Audit records about peers without a verified identity counted in a summary record instead of written one by one, by listener and reason.",
    ["listener", "reason"],
  );
  /** Failures of the proxy's own code while it handled a request (answered 500 or closed, and logged). */
  readonly internalErrors = new CounterFamily(
    "meshauth_proxy_internal_errors_total",
    "Errors in the proxy's own handling of a connection or request (answered 500 or closed, and logged), by listener.",
    ["listener"],
  );
  readonly establishSeconds = new HistogramFamily(
    "meshauth_proxy_establish_seconds",
    "From accept to the first relayed byte: handshake, verification, policy and connect, by direction.",
    SECONDS_BUCKETS,
  );
  readonly #gauges: { name: string; help: string; collect: () => Iterable<[Labels, number]> }[] = [];

  /** A gauge read at every scrape. */
  gauge(name: string, help: string, collect: () => Iterable<[Labels, number]>): void {
    this.#gauges.push({ name, help, collect });
  }

  /** Every metric in the text exposition format. */
  render(): string {
    const lines: string[] = [];
    for (
      const family of [
        this.connections,
        this.decisions,
        this.dryRunDecisions,
        this.closed,
        this.tlsGroups,
        this.resumed,
        this.bytes,
        this.policyReloads,
        this.rotations,
        this.trustChanges,
        this.internalErrors,
        this.auditAggregated,
      ]
    ) family.render(lines);
    this.establishSeconds.render(lines);
    for (const gauge of this.#gauges) {
      lines.push(`# HELP ${gauge.name} ${gauge.help}`, `# TYPE ${gauge.name} gauge`);
      for (const [labels, value] of gauge.collect()) lines.push(`${gauge.name}${labelText(labels)} ${value}`);
    }
    return `${lines.join("\n")}\n`;
  }
}
