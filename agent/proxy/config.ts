/**
 * The `proxy:` section of `agent.yaml`: outbound listeners (one per upstream service, with the
 * identities allowed to serve it), inbound listeners (one per local service, with its policy
 * files), the default mode, the audit log, TLS settings and limits. Read with the agent's
 * {@link FieldReader}, so every problem is reported by path, all at once, and a misspelt key is
 * refused. Every key is described in `docs/proxy.md`.
 *
 * @example
 * ```ts
 * import { loadProxyConfig } from "meshauth/agent";
 * const proxy = await loadProxyConfig({ path: "agent.yaml" }); // reads only its proxy: section
 * ```
 * @module
 */

import {
  type ConfigSources,
  type FieldReader,
  isLoopbackHost,
  loadConfigFile,
  type RawConfig,
} from "../../internal/mod.ts";
import { join } from "node:path";
import { parseAddress, type SocketAddress } from "./address.ts";

/** STRICT accepts mutual TLS only; PERMISSIVE also plain text on the same port (for migration). */
export type ProxyMode = "STRICT" | "PERMISSIVE";

/** A local listener standing for one upstream service. */
export interface OutboundConfig {
  /** The listener's name in logs, metrics and the audit log. */
  name: string;
  /** The upstream service: its key in the secure-naming table. Defaults to `name`. */
  service: string;
  /** The workload whose SVID is presented to the upstream. */
  workload: string;
  /** Where local clients connect in plain text: a loopback TCP address or a Unix socket. */
  listen: SocketAddress;
  /** The upstream's inbound proxy (mutual TLS). */
  upstream: { host: string; port: number };
  /** Secure naming: the SPIFFE IDs allowed to serve this service. */
  allowedIds: string[];
  /** SNI sent to the upstream, when it wants one. */
  serverName?: string;
}

/** A TLS listener in front of one local service. */
export interface InboundConfig {
  /** The listener's name in logs, metrics and the audit log; unique among listeners. */
  name: string;
  /** The workload whose SVID the listener presents, and whose trust bundle verifies callers. */
  workload: string;
  /** Where peers connect with mutual TLS: a TCP address (a bare port means `0.0.0.0`) or a Unix socket. */
  listen: SocketAddress;
  /** The local service: a TCP address or a Unix socket. */
  forward: SocketAddress;
  /** Whether plain text is accepted beside mutual TLS; the section's `mode` when unset. */
  mode: ProxyMode;
  /** `tcp` (the default) passes bytes; `http` parses HTTP/1.1 requests (method and path rules, XFCC, 403). */
  protocol: "tcp" | "http";
  /** Authorization policy files, in order. */
  policies: string[];
  /** The decision when no ALLOW policy exists. Default `DENY`. */
  defaultAction: "ALLOW" | "DENY";
}

/** Limits and timeouts that apply to every listener. */
export interface ProxyLimits {
  /** Open connections per listener; more are closed at accept. Default 10000. */
  maxConnections: number;
  /** From accept to the first byte relayed: TLS handshake, verification, policy, connect. Default 10. */
  handshakeTimeoutSeconds: number;
  /** Connecting to the upstream or the local service. Default 5. */
  connectTimeoutSeconds: number;
  /**
   * HTTP mode: a request whose local service sends no byte of its answer for this long (before
   * the answer begins or between its bytes) is answered 504 or cut off. Long polls and server-sent
   * events keep going as long as the service sends something within it. Default 300.
   */
  responseIdleTimeoutSeconds: number;
  /** A connection with no byte in either direction for this long is closed. Default 3600. */
  idleTimeoutSeconds: number;
  /** Every open connection's peer is verified again this often (expiry, CRL staleness). Default 60. */
  revalidateIntervalSeconds: number;
  /** HTTP mode: the largest request head. Default 16384. */
  maxHeaderBytes: number;
  /** HTTP mode: the longest wait for a request's head. Default 30. */
  headersTimeoutSeconds: number;
}

/** TLS settings shared by every listener. */
export interface ProxyTlsConfig {
  /** Key exchange groups in order of preference; by default X25519MLKEM768 first where the runtime has it. */
  groups?: string[];
  /** Session resumption (tickets); resumed sessions are verified again all the same. Default true. */
  sessionResumption: boolean;
  /** Lifetime of a session ticket. Default 300. */
  sessionTimeoutSeconds: number;
}

/** The validated `proxy:` section. */
export interface ProxyConfig {
  /** The mode of inbound listeners that do not set their own. Default `STRICT`. */
  mode: ProxyMode;
  /**
   * A peer whose revocation cannot be checked against a current CRL (none held for its
   * authority, or one past its nextUpdate): `best-effort` (the default) accepts it and reports
   * it (audit field, metric, warning); `strict` refuses it with ERR_REVOCATION_UNKNOWN.
   */
  revocation: "best-effort" | "strict";
  /** The append-only JSON-lines audit log; `<stateDir>/proxy-audit.jsonl` by default. */
  auditLog: string;
  /** The audit log is rotated before it grows past this many bytes. Default 64 MiB. */
  auditLogMaxBytes: number;
  /** Rotated audit logs kept (`<auditLog>.1` the newest). Default 4. */
  auditLogMaxFiles: number;
  /**
   * Records about peers without a verified identity are written at most once per source address
   * (IPv6: /64) per this many seconds; the rest are counted in a summary record. Default 10.
   */
  auditUnverifiedIntervalSeconds: number;
  /** How often policy files are read again to pick up changes. Default 2. */
  policyReloadIntervalSeconds: number;
  /** TLS settings of every listener. */
  tls: ProxyTlsConfig;
  /** Limits and timeouts of every listener. */
  limits: ProxyLimits;
  /** Plain-text local listeners, each relaying to one upstream service over mutual TLS. */
  outbound: OutboundConfig[];
  /** Mutual-TLS listeners, each in front of one local service. */
  inbound: InboundConfig[];
}

const TOP = [
  "mode",
  "revocation",
  "auditLog",
  "auditLogMaxBytes",
  "auditLogMaxFiles",
  "auditUnverifiedIntervalSeconds",
  "policyReloadIntervalSeconds",
  "tls",
  "limits",
  "outbound",
  "inbound",
];
const OUTBOUND = ["name", "service", "workload", "listen", "upstream", "allowedIds", "serverName"];
const INBOUND = ["name", "workload", "listen", "forward", "mode", "protocol", "policies", "defaultAction"];
const LIMITS = [
  "maxConnections",
  "handshakeTimeoutSeconds",
  "connectTimeoutSeconds",
  "responseIdleTimeoutSeconds",
  "idleTimeoutSeconds",
  "revalidateIntervalSeconds",
  "maxHeaderBytes",
  "headersTimeoutSeconds",
];
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const DAY = 86400;
const MIB = 1024 * 1024;

/** Where the section sits and what it defaults to. */
export interface ReadProxyConfigOptions {
  /** The section's path in the file, for messages. Default `proxy`; `""` for a file's top level. */
  at?: string;
  /** Keys beside the section's own that the caller reads (a top-level section shares its file). */
  otherKeys?: readonly string[];
  /** The agent's state directory: the audit log defaults to `<stateDir>/proxy-audit.jsonl`. */
  stateDir?: string;
}

/**
 * Validates the `proxy:` section (`raw`) with the agent's reader. Answers the configuration;
 * problems go to `fields` (the caller reports them all at once).
 */
export function readProxyConfig(
  fields: FieldReader,
  raw: unknown,
  options: ReadProxyConfigOptions = {},
): ProxyConfig {
  const at = options.at ?? "proxy";
  // At the top level of a file of its own (`meshauth proxy`), beside that file's other keys.
  const p = at ? `${at}.` : "";
  const known = [...TOP, ...(options.otherKeys ?? [])];
  const section = at ? fields.obj(at, raw, known) : topLevel(fields, raw, known);
  const mode = fields.oneOf(`${p}mode`, section.mode, ["STRICT", "PERMISSIVE"] as const, "STRICT");
  const revocation = fields.oneOf(
    `${p}revocation`,
    section.revocation,
    ["best-effort", "strict"] as const,
    "best-effort",
  );
  const limitsRaw = fields.obj(`${p}limits`, section.limits, LIMITS);
  const limits: ProxyLimits = {
    maxConnections: fields.int(`${p}limits.maxConnections`, limitsRaw.maxConnections, 10_000, 1, 1_000_000),
    handshakeTimeoutSeconds: fields.int(
      `${p}limits.handshakeTimeoutSeconds`,
      limitsRaw.handshakeTimeoutSeconds,
      10,
      1,
      300,
    ),
    connectTimeoutSeconds: fields.int(
      `${p}limits.connectTimeoutSeconds`,
      limitsRaw.connectTimeoutSeconds,
      5,
      1,
      300,
    ),
    responseIdleTimeoutSeconds: fields.int(
      `${p}limits.responseIdleTimeoutSeconds`,
      limitsRaw.responseIdleTimeoutSeconds,
      300,
      1,
      7 * DAY,
    ),
    idleTimeoutSeconds: fields.int(
      `${p}limits.idleTimeoutSeconds`,
      limitsRaw.idleTimeoutSeconds,
      3600,
      1,
      7 * DAY,
    ),
    revalidateIntervalSeconds: fields.int(
      `${p}limits.revalidateIntervalSeconds`,
      limitsRaw.revalidateIntervalSeconds,
      60,
      1,
      DAY,
    ),
    maxHeaderBytes: fields.int(
      `${p}limits.maxHeaderBytes`,
      limitsRaw.maxHeaderBytes,
      16_384,
      1024,
      1_048_576,
    ),
    headersTimeoutSeconds: fields.int(
      `${p}limits.headersTimeoutSeconds`,
      limitsRaw.headersTimeoutSeconds,
      30,
      1,
      3600,
    ),
  };
  const tlsRaw = fields.obj(`${p}tls`, section.tls, [
    "groups",
    "sessionResumption",
    "sessionTimeoutSeconds",
  ]);
  const groups = tlsRaw.groups === undefined ? undefined : fields.strings(`${p}tls.groups`, tlsRaw.groups);
  if (groups !== undefined && (groups.length === 0 || groups.some((g) => !/^[A-Za-z0-9_-]+$/.test(g)))) {
    fields.problem(
      `${p}tls.groups: expected a non-empty list of group names such as X25519MLKEM768, X25519`,
    );
  }
  const tls: ProxyTlsConfig = {
    groups,
    sessionResumption: fields.bool(`${p}tls.sessionResumption`, tlsRaw.sessionResumption, true),
    sessionTimeoutSeconds: fields.int(
      `${p}tls.sessionTimeoutSeconds`,
      tlsRaw.sessionTimeoutSeconds,
      300,
      1,
      DAY,
    ),
  };

  const names = new Set<string>();
  const uniqueName = (path: string, value: unknown): string => {
    const name = fields.str(path, value);
    if (name && !NAME.test(name)) {
      fields.problem(`${path}: letters, digits, ".", "_" and "-", starting with a letter or digit`);
    } else if (name && names.has(name)) {
      fields.problem(`${path}: ${JSON.stringify(name)} names another listener too; names must be unique`);
    }
    names.add(name);
    return name;
  };
  const address = (
    path: string,
    value: unknown,
    defaultHost: string,
    isListen = false,
  ): SocketAddress | undefined => {
    if (value === undefined) {
      fields.problem(`${path}: required`);
      return undefined;
    }
    const parsed = parseAddress(value, defaultHost, (p) => fields.path(path, p), isListen);
    if (typeof parsed === "string") {
      fields.problem(`${path}: ${parsed}`);
      return undefined;
    }
    return parsed;
  };
  const list = (path: string, value: unknown): unknown[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      fields.problem(`${path}: expected a list`);
      return [];
    }
    return value;
  };

  const allowedByService = new Map<string, string[]>();
  const outbound = list(`${p}outbound`, section.outbound).flatMap((entry, i): OutboundConfig[] => {
    const path = `${p}outbound[${i}]`;
    const o = fields.obj(path, entry, OUTBOUND);
    if (typeof entry !== "object" || entry === null) return [];
    const name = uniqueName(`${path}.name`, o.name);
    const service = fields.str(`${path}.service`, o.service, name || "service");
    const workload = fields.str(`${path}.workload`, o.workload);
    const listen = address(`${path}.listen`, o.listen, "127.0.0.1", true);
    // A plain-text entry on another interface would let anyone who reaches it use this workload's identity.
    if (listen && !("path" in listen) && !isLoopbackHost(listen.host)) {
      fields.problem(
        `${path}.listen: an outbound listener accepts plain text and sends it as ${workload}; it must listen on a loopback address or a Unix socket, not ${listen.host}`,
      );
    }
    const upstream = address(`${path}.upstream`, o.upstream, "127.0.0.1");
    if (upstream && "path" in upstream) {
      fields.problem(`${path}.upstream: expected host:port (mutual TLS over TCP)`);
    }
    if (upstream && !("path" in upstream) && upstream.port === 0) {
      fields.problem(`${path}.upstream: port 0 is not a destination`);
    }
    const allowedIds = fields.spiffeIds(`${path}.allowedIds`, o.allowedIds);
    // Secure naming denies by default: a service with no allowed identity could never be reached.
    if (o.allowedIds === undefined || (Array.isArray(o.allowedIds) && o.allowedIds.length === 0)) {
      fields.problem(`${path}.allowedIds: list the SPIFFE IDs allowed to serve ${name || "this service"}`);
    }
    const serverName = fields.optionalStr(`${path}.serverName`, o.serverName);
    if (serverName && !DNS_NAME.test(serverName)) fields.problem(`${path}.serverName: expected a DNS name`);
    // One place for each fact: a service's allowed identities are said once.
    const known = allowedByService.get(service);
    if (known && known.join("\n") !== [...allowedIds].sort().join("\n")) {
      fields.problem(
        `${path}.allowedIds: service ${service} is listed by another outbound listener with other allowed IDs`,
      );
    }
    allowedByService.set(service, [...allowedIds].sort());
    if (!listen || !upstream || "path" in upstream) return [];
    return [{ name, service, workload, listen, upstream, allowedIds, ...(serverName ? { serverName } : {}) }];
  });

  const inbound = list(`${p}inbound`, section.inbound).flatMap((entry, i): InboundConfig[] => {
    const path = `${p}inbound[${i}]`;
    const o = fields.obj(path, entry, INBOUND);
    if (typeof entry !== "object" || entry === null) return [];
    const name = uniqueName(`${path}.name`, o.name);
    const workload = fields.str(`${path}.workload`, o.workload);
    const listen = address(`${path}.listen`, o.listen, "0.0.0.0", true);
    const forward = address(`${path}.forward`, o.forward, "127.0.0.1");
    if (forward && !("path" in forward) && forward.port === 0) {
      fields.problem(`${path}.forward: port 0 is not a destination`);
    }
    const policies = fields.strings(`${path}.policies`, o.policies).map((p, j) =>
      fields.path(`${path}.policies[${j}]`, p)
    );
    const config: InboundConfig = {
      name,
      workload,
      listen: listen ?? { host: "0.0.0.0", port: 0 },
      forward: forward ?? { host: "127.0.0.1", port: 1 },
      mode: fields.oneOf(`${path}.mode`, o.mode, ["STRICT", "PERMISSIVE"] as const, mode),
      protocol: fields.oneOf(`${path}.protocol`, o.protocol, ["tcp", "http"] as const, "tcp"),
      policies,
      defaultAction: fields.oneOf(
        `${path}.defaultAction`,
        o.defaultAction,
        ["ALLOW", "DENY"] as const,
        "DENY",
      ),
    };
    return listen && forward ? [config] : [];
  });

  // A daemon's working directory is no place for its audit log: the state directory is, or the file says where.
  let auditLog = "";
  if (section.auditLog !== undefined || options.stateDir !== undefined) {
    auditLog = fields.path(
      `${p}auditLog`,
      section.auditLog,
      join(options.stateDir ?? "", "proxy-audit.jsonl"),
    );
  } else if (outbound.length + inbound.length > 0) {
    fields.problem(
      at
        ? `${p}auditLog: required (or the agent's stateDir, where it defaults to proxy-audit.jsonl)`
        : `${p}auditLog: required (a writable file: the proxy's audit log)`,
    );
  }
  return {
    mode,
    revocation,
    auditLog,
    auditLogMaxBytes: fields.int(
      `${p}auditLogMaxBytes`,
      section.auditLogMaxBytes,
      64 * MIB,
      64 * 1024,
      1024 * 1024 * MIB,
    ),
    auditLogMaxFiles: fields.int(`${p}auditLogMaxFiles`, section.auditLogMaxFiles, 4, 1, 1000),
    auditUnverifiedIntervalSeconds: fields.int(
      `${p}auditUnverifiedIntervalSeconds`,
      section.auditUnverifiedIntervalSeconds,
      10,
      1,
      3600,
    ),
    policyReloadIntervalSeconds: fields.int(
      `${p}policyReloadIntervalSeconds`,
      section.policyReloadIntervalSeconds,
      2,
      1,
      3600,
    ),
    tls,
    limits,
    outbound,
    inbound,
  };
}

/** A file's top level (a mapping, as `loadConfigFile` guarantees), its unknown keys refused by name. */
function topLevel(fields: FieldReader, raw: unknown, known: readonly string[]): RawConfig {
  fields.knownKeys(raw as RawConfig, known);
  return raw as RawConfig;
}

/**
 * Reads the `proxy:` section of an agent configuration file (the rest of the file is the
 * agent's and is not looked at here). Throws a `ConfigError` listing every problem.
 */
export function loadProxyConfig(sources: ConfigSources = {}): Promise<ProxyConfig> {
  return loadConfigFile(sources, {}, (raw: RawConfig, fields) =>
    readProxyConfig(fields, raw.proxy, {
      stateDir: raw.stateDir === undefined ? undefined : fields.path("stateDir", raw.stateDir),
    }));
}
