/**
 * The agent's mutual-TLS proxy: every outbound and inbound listener of the `proxy:`
 * configuration, the workloads whose SVIDs they present, the secure-naming table, the
 * policies (re-read on change), the audit log and the metrics. The agent hands it one
 * {@link CredentialSource} per workload; the proxy follows each source's changes.
 *
 * @example
 * ```ts
 * import { loadProxyConfig, MeshProxy } from "meshauth/agent";
 * const proxy = new MeshProxy({
 *   config: await loadProxyConfig({ path: "agent.yaml" }),
 *   sources: new Map([["photo-backend", photoBackendSource], ["datastore", datastoreSource]]),
 * });
 * await proxy.start();
 * console.log(proxy.addresses()); // { datastore: { host: "127.0.0.1", port: 15002 }, ... }
 * ```
 * @module
 */

import { randomBytes } from "node:crypto";
import { SecureNaming } from "../../mod.ts";
import { ConfigError, isLoopbackHost, type Logger, silentLogger } from "../../internal/mod.ts";
import { formatAddress, type SocketAddress } from "./address.ts";
import { AuditLog, type AuditRecord } from "./audit.ts";
import { UnverifiedAudit } from "./audit-aggregation.ts";
import type { ProxyConfig } from "./config.ts";
import type { CredentialSource } from "./credentials.ts";
import { InboundListener } from "./inbound.ts";
import type { ListenerContext } from "./listener-context.ts";
import { ProxyMetrics } from "./metrics.ts";
import { OutboundListener } from "./outbound.ts";
import { ListenerPolicy } from "./policy-files.ts";
import { defaultGroups, POST_QUANTUM_GROUP, resolveGroups } from "./tls-settings.ts";
import { ProxyWorkload } from "./workload.ts";

/** Options of {@link MeshProxy}. */
export interface MeshProxyOptions {
  /** The listeners, TLS settings, limits and audit log (the `proxy:` section, or one made in code). */
  config: ProxyConfig;
  /** Each workload's credentials, by workload name; more can be attached later with {@link MeshProxy.setSource}. */
  sources?: ReadonlyMap<string, CredentialSource> | Record<string, CredentialSource>;
  /** Where the proxy's log lines go. Default: none. */
  logger?: Logger;
  /** The metrics the proxy updates. Default: its own. */
  metrics?: ProxyMetrics;
}

/** The proxy. */
export class MeshProxy {
  /** The configuration it was made with. */
  readonly config: ProxyConfig;
  /** The metrics it updates (`options.metrics`, or its own). */
  readonly metrics: ProxyMetrics;
  /** The secure-naming table: which identities may serve which outbound service. */
  readonly naming: SecureNaming;
  /** The TLS key exchange groups offered, in order: `tls.groups`, or this runtime's defaults. */
  readonly groups: readonly string[];
  readonly #logger: Logger;
  readonly #audit: AuditLog;
  readonly #unverifiedAudit: UnverifiedAudit;
  readonly #workloads = new Map<string, ProxyWorkload>();
  readonly #inbound: InboundListener[] = [];
  readonly #outbound: OutboundListener[] = [];
  /** Each listener's last refused reload, by its message: reported once until it changes. */
  readonly #refusedReloads = new Map<string, string>();
  readonly #pendingSources: Map<string, CredentialSource>;
  #revalidateTimer?: ReturnType<typeof setInterval>;
  #reloadTimer?: ReturnType<typeof setInterval>;
  #isStarted = false;
  #connectionIds = 0;

  /**
   * Throws a `ConfigError` for an outbound listener on a TCP address that is not loopback: it
   * accepts plain text and sends it with the workload's identity, so anyone who reaches it could
   * use that identity. (`loadProxyConfig` and the agent's configuration refuse it too; a
   * configuration made in code is checked here.)
   */
  constructor(options: MeshProxyOptions) {
    const offLoopback = options.config.outbound.filter((o) =>
      !("path" in o.listen) && !isLoopbackHost(o.listen.host)
    );
    if (offLoopback.length) {
      throw new ConfigError(
        "MeshProxy",
        offLoopback.map((o) =>
          `outbound ${o.name}: listen must be a loopback address or a Unix socket, not ${
            formatAddress(o.listen)
          } (it accepts plain text and sends it as ${o.workload})`
        ),
      );
    }
    this.config = options.config;
    this.#logger = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? new ProxyMetrics();
    this.#audit = new AuditLog(this.config.auditLog, {
      maxBytes: this.config.auditLogMaxBytes,
      maxFiles: this.config.auditLogMaxFiles,
    });
    this.#unverifiedAudit = new UnverifiedAudit({
      intervalMs: this.config.auditUnverifiedIntervalSeconds * 1000,
      write: (record) => this.#audit.append(record),
      folded: (record) =>
        this.metrics.auditAggregated.inc({ listener: record.listener, reason: record.reason }),
    });
    this.groups = resolveGroups(this.config.tls.groups);
    this.naming = new SecureNaming(
      Object.fromEntries(this.config.outbound.map((o) => [o.service, o.allowedIds])),
    );
    const sources = options.sources ?? new Map<string, CredentialSource>();
    this.#pendingSources = new Map(sources instanceof Map ? sources : Object.entries(sources));
    this.metrics.gauge(
      "meshauth_proxy_open_connections",
      "Connections open now, by listener and direction.",
      () => [
        ...this.#inbound.map((l) => ({
          labels: { listener: l.name, direction: "inbound" },
          value: l.connectionCount,
        })),
        ...this.#outbound.map((l) => ({
          labels: { listener: l.name, direction: "outbound" },
          value: l.connectionCount,
        })),
      ],
    );
    this.metrics.gauge(
      "meshauth_proxy_buffered_bytes",
      "Bytes the proxy holds for open connections (read, not yet written on), by listener.",
      () =>
        [...this.#inbound, ...this.#outbound].map((l) => ({
          labels: { listener: l.name },
          value: l.bufferedBytes,
        })),
    );
    this.metrics.gauge(
      "meshauth_proxy_post_quantum_offered",
      `1 when ${POST_QUANTUM_GROUP} is offered first, 0 when only classical groups are.`,
      () => [{ value: this.groups[0] === POST_QUANTUM_GROUP ? 1 : 0 }],
    );
    this.metrics.gauge(
      "meshauth_proxy_audit_dropped_records",
      "Audit records dropped because the disk did not keep up.",
      () => [{ value: this.#audit.dropped }],
    );
  }

  /**
   * Loads the policies (a bad file refuses the start, with the reason), opens the audit log and
   * starts every listener.
   */
  async start(): Promise<void> {
    if (this.#isStarted) return;
    const config = this.config;
    const policies = await Promise.all(config.inbound.map((inbound) =>
      ListenerPolicy.load({
        listener: inbound.name,
        files: inbound.policies,
        protocol: inbound.protocol,
        defaultAction: inbound.defaultAction,
      })
    ));
    await this.#audit.open();
    const context: ListenerContext = {
      limits: config.limits,
      sessionResumption: config.tls.sessionResumption,
      sessionTimeoutSeconds: config.tls.sessionTimeoutSeconds,
      ticketKeys: randomBytes(48),
      logger: this.#logger,
      metrics: this.metrics,
      audit: this.#audit,
      unverifiedAudit: this.#unverifiedAudit,
      nextConnectionId: () => ++this.#connectionIds,
    };
    for (const [name, source] of this.#pendingSources) this.#workload(name).attach(source);
    this.#pendingSources.clear();
    config.inbound.forEach((inbound, i) => {
      this.#inbound.push(
        new InboundListener(inbound, this.#workload(inbound.workload), policies[i], context),
      );
    });
    for (const outbound of config.outbound) {
      this.#outbound.push(
        new OutboundListener(outbound, this.#workload(outbound.workload), this.naming, context),
      );
    }
    this.#isStarted = true;
    try {
      await Promise.all([...this.#inbound, ...this.#outbound].map((l) => l.listen()));
    } catch (err) {
      await this.stop();
      throw err;
    }
    const groups = defaultGroups();
    this.#logger.info("proxy listening", {
      listeners: Object.fromEntries(Object.entries(this.addresses()).map(([k, v]) => [k, v])),
      groups: this.groups,
      postQuantum: this.groups[0] === POST_QUANTUM_GROUP,
      runtimeOffersPostQuantum: groups.isPostQuantum,
    });
    this.#revalidateTimer = setInterval(
      () => void this.revalidate(),
      config.limits.revalidateIntervalSeconds * 1000,
    );
    this.#revalidateTimer.unref?.();
    this.#reloadTimer = setInterval(
      () => void this.reloadPolicies(),
      config.policyReloadIntervalSeconds * 1000,
    );
    this.#reloadTimer.unref?.();
  }

  /** Where each listener listens, by name. */
  addresses(): Record<string, SocketAddress> {
    const out: Record<string, SocketAddress> = {};
    for (const listener of [...this.#inbound, ...this.#outbound]) {
      if (listener.address) out[listener.name] = listener.address;
    }
    return out;
  }

  /** Bytes held for open connections now, over every listener: bounded by backpressure. */
  bufferedBytes(): number {
    return [...this.#inbound, ...this.#outbound].reduce((sum, l) => sum + l.bufferedBytes, 0);
  }

  /**
   * Calls `listener` with every audit record (each authorization decision) as it is made, in
   * this process, besides the audit log file; answers a function that unsubscribes. A status
   * page follows the decisions this way.
   */
  subscribe(listener: (record: AuditRecord) => void): () => void {
    return this.#audit.subscribe(listener);
  }

  /** Attaches (or, with undefined, detaches) a workload's credentials. */
  setSource(workload: string, source: CredentialSource | undefined): void {
    if (!this.#isStarted) {
      if (source) this.#pendingSources.set(workload, source);
      else this.#pendingSources.delete(workload);
      return;
    }
    this.#workload(workload).attach(source);
  }

  /** Replaces the identities allowed to serve an outbound service; open connections are checked again. */
  async setAllowedIds(service: string, ids: readonly string[]): Promise<void> {
    this.naming.set(service, ids);
    await Promise.all(this.#outbound.filter((l) => l.config.service === service).map((l) => l.revalidate()));
  }

  /** Verifies every open connection again now (SVID, naming, policy). */
  async revalidate(): Promise<void> {
    await Promise.all([...this.#inbound, ...this.#outbound].map((l) => l.revalidate()));
  }

  /**
   * Reads every policy file again; listeners whose policies changed check their open
   * connections against them. A file that no longer loads is reported and the policies in
   * force stay.
   */
  async reloadPolicies(): Promise<void> {
    await Promise.all(this.#inbound.map(async (listener) => {
      let changed: boolean;
      try {
        changed = await listener.policy.reload();
      } catch (err) {
        // Said once for each bad version of the files, not at every look (every 2 s by default).
        const message = (err as Error).message;
        if (this.#refusedReloads.get(listener.name) === message) return;
        this.#refusedReloads.set(listener.name, message);
        this.metrics.policyReloads.inc({ listener: listener.name, result: "refused" });
        this.#logger.error("policy reload refused; the policies in force stay", {
          listener: listener.name,
          error: err,
        });
        return;
      }
      this.#refusedReloads.delete(listener.name);
      if (!changed) return;
      this.metrics.policyReloads.inc({ listener: listener.name, result: "reloaded" });
      this.#logger.info("policies reloaded", {
        listener: listener.name,
        policies: listener.policy.policyNames,
      });
      await listener.revalidate();
    }));
  }

  /** Stops every listener, closes open connections and the audit log. */
  async stop(): Promise<void> {
    clearInterval(this.#revalidateTimer);
    clearInterval(this.#reloadTimer);
    await Promise.all([...this.#inbound, ...this.#outbound].map((l) => l.close()));
    this.#inbound.length = 0;
    this.#outbound.length = 0;
    for (const workload of this.#workloads.values()) workload.detach();
    this.#unverifiedAudit.flush();
    await this.#audit.close();
    this.#isStarted = false;
  }

  #workload(name: string): ProxyWorkload {
    let workload = this.#workloads.get(name);
    if (!workload) {
      workload = new ProxyWorkload(name, this.groups, this.#logger, this.metrics, this.config.revocation);
      this.#workloads.set(name, workload);
    }
    return workload;
  }
}
