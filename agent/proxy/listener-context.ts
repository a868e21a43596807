/**
 * What every listener of a proxy shares: its settings, logger, metrics, audit log, and the
 * counter that numbers connections. Also the one place a decision is recorded, in the audit
 * log and in the metrics together, so the two never disagree.
 *
 * @module
 */

import type { Server } from "node:net";
import type { Logger } from "../../internal/mod.ts";
import type { PolicyDecision } from "../../mod.ts";
import { formatAddress, type SocketAddress } from "./address.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { UnverifiedAudit } from "./audit-aggregation.ts";
import type { ProxyLimits } from "./config.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { Verdict } from "./policy-files.ts";
import { clearSocketPath, ProxyListenError, setSocketPermissions } from "./unix-socket.ts";

/** Shared by the listeners of one proxy. */
export interface ListenerContext {
  limits: ProxyLimits;
  sessionResumption: boolean;
  sessionTimeoutSeconds: number;
  /** Session ticket keys (48 bytes), made at start, the same for every listener of the proxy. */
  ticketKeys: Uint8Array;
  logger: Logger;
  metrics: ProxyMetrics;
  audit: AuditLog;
  /** Where records about peers without a verified identity go: rate-limited per source. */
  unverifiedAudit: UnverifiedAudit;
  nextConnectionId(): number;
}

/** The decision fields of an audit record, from a verdict. */
export function verdictFields(
  verdict: Verdict,
): Pick<AuditRecord, "decision" | "reason" | "policy" | "ruleIndex" | "dryRun"> {
  const { decision, dryRun } = verdict;
  return {
    decision: decision.allowed ? "allow" : "deny",
    reason: reasonOf(decision),
    ...(decision.policy !== undefined ? { policy: decision.policy, ruleIndex: decision.ruleIndex } : {}),
    ...(dryRun
      ? {
        dryRun: {
          decision: dryRun.allowed ? "allow" as const : "deny" as const,
          reason: reasonOf(dryRun),
          ...(dryRun.policy !== undefined ? { policy: dryRun.policy, ruleIndex: dryRun.ruleIndex } : {}),
        },
      }
      : {}),
  };
}

function reasonOf(decision: PolicyDecision): string {
  return decision.reason === "denied" || decision.reason === "allowed" ? "policy" : decision.reason;
}

/**
 * Records a decision in the audit log and the metrics. A decision about a peer without a
 * verified identity (anyone who can connect can cause one) goes through the per-source limit.
 */
export function recordDecision(context: ListenerContext, record: Omit<AuditRecord, "time">): void {
  const stamped = { time: new Date().toISOString(), ...record };
  if (record.peerId === undefined) context.unverifiedAudit.add(stamped);
  else context.audit.append(stamped);
  const labels = { listener: record.listener, decision: record.decision, policy: record.policy ?? "" };
  context.metrics.decisions.inc(labels);
  if (record.dryRun) {
    context.metrics.dryRunDecisions.inc({
      listener: record.listener,
      decision: record.dryRun.decision,
      policy: record.dryRun.policy ?? "",
    });
  }
}

/**
 * Starts `server` on `address`; resolves with the address it listens on (the port chosen for 0).
 * A Unix socket's path is cleared of a stale socket first, and the socket file gets its mode and
 * owner as soon as it is bound (the bind is synchronous), before the first connection is accepted.
 * With `listener` (`the proxy's inbound listener "web"`), a failed bind is a
 * {@link ProxyListenError} that names it.
 */
export async function listenOn(
  server: Server,
  address: SocketAddress,
  listener?: string,
): Promise<SocketAddress> {
  if ("path" in address) await clearSocketPath(address);
  return new Promise((resolve, reject_) => {
    // A bind that fails says which listener, and what to change, in one line.
    const reject = (error: unknown) => {
      const err = error as NodeJS.ErrnoException;
      if (err instanceof ProxyListenError || !listener) return reject_(err);
      const why = err.code === "EADDRINUSE"
        ? "another process listens there"
        : err.code === "EACCES"
        ? "not permitted (a port under 1024 needs privileges)"
        : err.code === "EADDRNOTAVAIL"
        ? "no interface of this machine has that address"
        : err.message;
      reject_(
        new ProxyListenError(formatAddress(address), `${why}; it is the listen address of ${listener}`, {
          cause: err,
        }),
      );
    };
    server.once("error", reject);
    const onListening = () => {
      server.off("error", reject);
      const bound = server.address();
      resolve(
        typeof bound === "object" && bound !== null ? { host: bound.address, port: bound.port } : address,
      );
    };
    if (!("path" in address)) {
      server.listen({ host: address.host, port: address.port }, onListening);
      return;
    }
    server.listen({ path: address.path }, onListening);
    try {
      setSocketPermissions(address);
    } catch (err) {
      server.off("error", reject);
      server.close();
      reject(err);
    }
  });
}
