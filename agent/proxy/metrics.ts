/**
 * The proxy's Prometheus metrics: connections by outcome and transport (plain text is its own
 * series), decisions by policy (dry-run ones apart), open connections closed and why,
 * negotiated key exchange groups, resumed sessions, bytes, policy reloads, credential
 * rotations, and the time from accept to the first relayed byte. They are written by the one
 * Prometheus writer the agent and the CA share, and the agent serves them on its `/metrics`.
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

import { type Counter, type Gauge, type Histogram, MetricsRegistry } from "../../internal/mod.ts";
import type { Crl } from "../../mod.ts";
import { CRL_NEXT_UPDATE } from "../metrics.ts";

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Every metric of the proxy. */
export class ProxyMetrics {
  /** Where the metrics are kept and rendered from. */
  readonly registry = new MetricsRegistry();
  /** Connections by listener, direction, transport (`mtls`, `plaintext`) and outcome. */
  readonly connections: Counter = this.registry.counter(
    "meshauth_proxy_connections_total",
    "Connections accepted, by listener, direction, transport and outcome (allowed, denied, unverified, secure_naming, plaintext_refused, no_credential, over_limit, handshake_failed, upstream_failed).",
    ["listener", "direction", "transport", "outcome"],
  );
  /** Enforced decisions by listener, decision and policy. */
  readonly decisions: Counter = this.registry.counter(
    "meshauth_proxy_decisions_total",
    "Authorization decisions enforced, by listener, decision and deciding policy.",
    ["listener", "decision", "policy"],
  );
  /** What dry-run policies would have decided, by listener, decision and policy. */
  readonly dryRunDecisions: Counter = this.registry.counter(
    "meshauth_proxy_dry_run_decisions_total",
    "Decisions with dry-run policies enforced (logged, not enforced), by listener, decision and policy.",
    ["listener", "decision", "policy"],
  );
  /** Open connections closed by the proxy, by listener and reason. */
  readonly closed: Counter = this.registry.counter(
    "meshauth_proxy_closed_total",
    "Open connections closed by the proxy, by listener and reason (revoked, unverified, secure_naming, denied, idle, handshake_timeout, headers_timeout, shutdown).",
    ["listener", "reason"],
  );
  /** Negotiated key exchange groups (known on outbound connections). */
  readonly tlsGroups: Counter = this.registry.counter(
    "meshauth_proxy_tls_groups_total",
    "TLS key exchange groups negotiated on outbound connections.",
    ["group"],
  );
  /** TLS sessions resumed (and verified again), by listener and direction. */
  readonly resumed: Counter = this.registry.counter(
    "meshauth_proxy_resumed_sessions_total",
    "TLS sessions resumed (and verified again), by listener and direction.",
    ["listener", "direction"],
  );
  /** Bytes relayed, by listener and direction (`from_peer`, `to_peer`). */
  readonly bytes: Counter = this.registry.counter(
    "meshauth_proxy_bytes_total",
    "Bytes relayed, by listener and direction (from_peer, to_peer).",
    ["listener", "direction"],
  );
  /** Policy reloads, by listener and result (`reloaded`, `refused`). */
  readonly policyReloads: Counter = this.registry.counter(
    "meshauth_proxy_policy_reloads_total",
    "Policy reloads by listener and result (reloaded, refused).",
    ["listener", "result"],
  );
  /** New SVIDs put into service, by workload. */
  readonly rotations: Counter = this.registry.counter(
    "meshauth_proxy_credential_rotations_total",
    "New SVIDs put into service, by workload.",
    ["workload"],
  );
  /**
   * Credential files read and not put into service (a sidecar's directory: missing, incomplete,
   * invalid, or a key that does not match its certificate); the credentials in service stay.
   */
  readonly credentialFilesRefused: Counter = this.registry.counter(
    "meshauth_proxy_credential_files_refused_total",
    "Credential files read and refused (the credentials in service stay), by reason (missing, incomplete, invalid, key-mismatch).",
    ["reason"],
  );
  /** New CRLs fetched from the CA by a sidecar (`meshauth proxy` with `ca.url`), by authority. */
  readonly crlUpdates: Counter = this.registry.counter(
    "meshauth_proxy_crl_updates_total",
    "New CRLs fetched from the CA (meshauth proxy with ca.url), by authority.",
    ["authority"],
  );
  /** Trust bundle or CRL changes applied (open connections verified again), by workload. */
  readonly trustChanges: Counter = this.registry.counter(
    "meshauth_proxy_trust_changes_total",
    "Trust bundle or CRL changes applied (open connections verified again), by workload.",
    ["workload"],
  );
  /**
   * Peer verifications (of new connections and of open ones, again) that accepted a peer whose
   * revocation was not checked against a current CRL (`proxy.revocation: best-effort`).
   */
  readonly revocationUnchecked: Counter = this.registry.counter(
    "meshauth_proxy_revocation_unchecked_total",
    "Peers accepted with their revocation not checked against a current CRL (proxy.revocation: best-effort), by workload and reason (unchecked-no-crl, stale-crl); verifications of open connections count again.",
    ["workload", "reason"],
  );
  /** Failures of the proxy's own code while it handled a request (answered 500 or closed, and logged). */
  readonly internalErrors: Counter = this.registry.counter(
    "meshauth_proxy_internal_errors_total",
    "Errors in the proxy's own handling of a connection or request (answered 500 or closed, and logged), by listener.",
    ["listener"],
  );
  /** Audit records about unverified peers folded into a summary record instead of written. */
  readonly auditAggregated: Counter = this.registry.counter(
    "meshauth_proxy_audit_aggregated_records_total",
    "Audit records about peers without a verified identity counted in a summary record instead of written one by one, by listener and reason.",
    ["listener", "reason"],
  );
  /** Seconds from accept to the first relayed byte (handshake, verification, policy, connect), by direction. */
  readonly establishSeconds: Histogram = this.registry.histogram(
    "meshauth_proxy_establish_seconds",
    "From accept to the first relayed byte: handshake, verification, policy and connect, by direction.",
    SECONDS_BUCKETS,
  );

  #crls?: () => ReadonlyMap<string, Crl>;

  /** A gauge read at every scrape. */
  gauge(name: string, help: string, collect: Gauge["collect"]): Gauge {
    return this.registry.gauge(name, help, collect);
  }

  /**
   * Reports `meshauth_proxy_crl_next_update_seconds{authority}` from `crls`, the CRLs a sidecar
   * (`meshauth proxy` with `ca.url`) follows, as the agent reports its own; a later call replaces
   * `crls`. (In the agent, the agent's gauge says it.)
   */
  followCrls(crls: () => ReadonlyMap<string, Crl>): void {
    if (!this.#crls) {
      this.registry.gauge(
        "meshauth_proxy_crl_next_update_seconds",
        CRL_NEXT_UPDATE.help,
        () => CRL_NEXT_UPDATE.samples(this.#crls?.() ?? []),
      );
    }
    this.#crls = crls;
  }

  /** Every metric in the text exposition format. */
  render(): string {
    return this.registry.render();
  }
}
