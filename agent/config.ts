/**
 * The agent's configuration (`meshauth agent --config agent.yaml`): a YAML or JSON file, then
 * `MESHAUTH_*` environment overrides, read by the same reader as the CA's, so every problem is
 * named by its path, a misspelt key is refused, and a bad environment value is named by its
 * variable. Relative paths in the file resolve against the file's directory.
 *
 * A malformed entry of `workloads:` does not stop the agent: it is reported (file and field)
 * and skipped, and the others are served. Every other problem refuses the configuration.
 * Every key is described in `docs/agent.md`.
 *
 * @example
 * ```ts
 * import { loadAgentConfig } from "meshauth/agent";
 * const config = await loadAgentConfig({ path: "agent.yaml", env: process.env });
 * ```
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { KEY_ALGORITHMS, type KeyAlgorithm, TrustDomain } from "../mod.ts";
import {
  type ConfigSources,
  FieldReader,
  isLoopbackHost,
  loadConfigFile,
  type LogLevel,
  type RawConfig,
} from "../internal/mod.ts";
import { type AgentKubernetesConfig, readAgentKubernetes } from "./sources/kubernetes-config.ts";
import { caUrlProblem } from "./ca-client.ts";
import { DEFAULT_DELIVERY_ROOT } from "./delivery/atomic-writer.ts";
import { type ProxyConfig, readProxyConfig } from "./proxy/config.ts";
import type { WorkloadProblem, WorkloadSpec } from "./sources/source.ts";
import {
  problemOf,
  readWorkloadDefaults,
  readWorkloadEntry,
  type WorkloadDefaults,
} from "./sources/workload-entry.ts";

/** The validated configuration. */
export interface AgentConfig {
  /** The trust domain every workload's SPIFFE ID must be in (default `meshauth.local`). */
  trustDomain: string;
  /** How the agent reaches the CA. */
  ca: {
    /** The CA's origin (default `https://localhost:8443`); `http://` only to a loopback address. */
    url: string;
    /** The CA's roots, to verify it before the first bundle is fetched. */
    trustBundleFile: string;
    /** Deadline of one CA request in seconds, from when a connection is free for it (default 10). */
    timeoutSeconds: number;
    /** CA requests in flight at once, whatever the number of workloads (default 4). */
    maxConcurrentRequests: number;
    /** Keep-alive connections per credential: the node SVID, the join token (default 1). */
    connectionsPerCredential: number;
  };
  /** The node's identity, `spiffe://<trustDomain>/node/<name>`, and how it first authenticates. */
  node: {
    /** The node's name: letters, digits, `.`, `_`, `-`. */
    name: string;
    /** The node join token (prefer `joinTokenFile`: a config file is not a secret store). */
    joinToken?: string;
    /** A file holding the join token, read each time one is needed. */
    joinTokenFile?: string;
    /**
     * The agent's projected service-account token (audience-bound, rotated by the kubelet),
     * read each time the node must authenticate without its SVID.
     */
    serviceAccountTokenFile?: string;
    /** The node key's algorithm (default `ECDSA-P256`). */
    keyAlgorithm: KeyAlgorithm;
    /** Lifetime in seconds asked for the node SVID (absent: the CA's default). */
    ttlSeconds?: number;
  };
  /** Where the node SVID, the trust bundle and every workload's key and certificate are kept (0700). */
  stateDir: string;
  /** A directory of drop-in workload files, watched (absent: none). */
  workloadsDir?: string;
  /** Pods and CSI volumes from the Kubernetes API (absent: no Kubernetes). */
  kubernetes?: AgentKubernetesConfig;
  /** Defaults for the fields a workload entry leaves out. */
  workloadDefaults: WorkloadDefaults;
  /** The valid entries of `workloads:`. */
  workloads: WorkloadSpec[];
  /** The entries of `workloads:` that were skipped, and why. */
  workloadProblems: WorkloadProblem[];
  /**
   * When to renew: at `ratio` of a certificate's usable life (default 0.5) less up to `jitter`
   * of it at random (0.1); failures retried after `retryInitialSeconds` (1), doubling up to
   * `retryMaxSeconds` (60).
   */
  renewal: { ratio: number; jitter: number; retryInitialSeconds: number; retryMaxSeconds: number };
  /** Trust bundle and CRLs are fetched on the CA's `max-age`, held between these (5 and 300 s). */
  refresh: { minSeconds: number; maxSeconds: number };
  /** How workloads' files are written. */
  delivery: {
    /** Workload directories written at once (default 16). */
    maxConcurrentWrites: number;
    /** Workload directories must be inside one of these (absolute paths). */
    roots: string[];
  };
  /** The mutual-TLS proxy in front of the node's workloads (absent: no proxy). */
  proxy?: ProxyConfig;
  /** The status port; `statusPage` adds the live page at `/` (loopback only). */
  listen: { host: string; port: number; statusPage: boolean };
  /** The least severe log line written (default `info`). */
  log: { level: LogLevel };
}

/** Environment variables that override the file, and the fields they set. */
export const AGENT_ENV_OVERRIDES: Record<string, string> = {
  MESHAUTH_TRUST_DOMAIN: "trustDomain",
  MESHAUTH_CA_URL: "ca.url",
  MESHAUTH_CA_BUNDLE_FILE: "ca.trustBundleFile",
  MESHAUTH_NODE_NAME: "node.name",
  MESHAUTH_JOIN_TOKEN: "node.joinToken",
  MESHAUTH_JOIN_TOKEN_FILE: "node.joinTokenFile",
  MESHAUTH_SERVICE_ACCOUNT_TOKEN_FILE: "node.serviceAccountTokenFile",
  MESHAUTH_AGENT_STATE_DIR: "stateDir",
  MESHAUTH_AGENT_WORKLOADS_DIR: "workloadsDir",
  MESHAUTH_AGENT_DELIVERY_ROOTS: "delivery.roots",
  MESHAUTH_AGENT_LISTEN_HOST: "listen.host",
  MESHAUTH_AGENT_LISTEN_PORT: "listen.port",
  MESHAUTH_AGENT_STATUS_PAGE: "listen.statusPage",
  MESHAUTH_LOG_LEVEL: "log.level",
};

const TOP_LEVEL = [
  "trustDomain",
  "ca",
  "node",
  "stateDir",
  "workloadsDir",
  "kubernetes",
  "workloadDefaults",
  "workloads",
  "renewal",
  "refresh",
  "delivery",
  "proxy",
  "listen",
  "log",
] as const;

/**
 * Where the agent keeps its state, and where it finds the CA's bundle, when the configuration
 * does not say: absolute, because a service manager starts the agent in `/`.
 */
export const DEFAULT_STATE_DIR = "/var/lib/meshauth/agent";
export const DEFAULT_TRUST_BUNDLE_FILE = "/etc/meshauth/bundle.pem";

function readRoots(fields: FieldReader, value: unknown): string[] {
  if (value === undefined) return [DEFAULT_DELIVERY_ROOT];
  const list = typeof value === "string" ? value.split(",").map((p) => p.trim()).filter(Boolean) : value;
  if (!Array.isArray(list) || list.length === 0) {
    fields.problem("delivery.roots: expected a list of directories (at least one)");
    return [DEFAULT_DELIVERY_ROOT];
  }
  // From the environment a relative path means what it means in the shell; in the file, it is
  // relative to the file.
  const base = fields.fromShell.has("delivery.roots") ? fields.cwd : fields.fileDir;
  return list.map((entry, i) => {
    const path = fields.str(`delivery.roots[${i}]`, entry);
    return isAbsolute(path) ? path : resolve(base, path);
  });
}

/** Reads, overrides and validates. `path` may be omitted (defaults plus environment). */
export function loadAgentConfig(sources: ConfigSources = {}): Promise<AgentConfig> {
  return loadConfigFile(sources, AGENT_ENV_OVERRIDES, (raw, fields) => validate(raw, fields, sources.path));
}

function ratio(fields: FieldReader, path: string, value: unknown, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const n = typeof value === "string" && /^\d*\.?\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !(n >= 0 && n <= max)) {
    fields.problem(`${path}: expected a number from 0 to ${max}, got ${JSON.stringify(value)}`);
    return fallback;
  }
  return n;
}

/**
 * `refresh:`, the bounds on the wait between fetches of the trust bundle and CRLs, whatever the
 * CA's `max-age` says: the agent's, and `meshauth proxy`'s for its CRLs.
 */
export function readRefresh(fields: FieldReader, value: unknown): { minSeconds: number; maxSeconds: number } {
  const raw = fields.obj("refresh", value, ["minSeconds", "maxSeconds"]);
  const refresh = {
    minSeconds: fields.int("refresh.minSeconds", raw.minSeconds, 5, 1, 3600),
    maxSeconds: fields.int("refresh.maxSeconds", raw.maxSeconds, 300, 1, 86400),
  };
  if (refresh.minSeconds > refresh.maxSeconds) {
    fields.problem("refresh.minSeconds: must not exceed refresh.maxSeconds");
  }
  return refresh;
}

/** `log: { level }`, the least severe line written: the agent's, and `meshauth proxy`'s. */
export function readLogLevel(fields: FieldReader, value: unknown): LogLevel {
  const raw = fields.obj("log", value, ["level"]);
  return fields.oneOf("log.level", raw.level, ["debug", "info", "warn", "error"] as const, "info");
}

function validate(raw: RawConfig, fields: FieldReader, file: string | undefined): AgentConfig {
  fields.knownKeys(raw, TOP_LEVEL);
  const str = fields.str.bind(fields);
  const int = fields.int.bind(fields);
  const obj = fields.obj.bind(fields);

  const trustDomainName = str("trustDomain", raw.trustDomain, "meshauth.local");
  let trustDomain: TrustDomain | undefined;
  try {
    trustDomain = TrustDomain.parse(trustDomainName);
  } catch (err) {
    fields.problem(`trustDomain: ${(err as Error).message}`);
  }

  const caRaw = obj("ca", raw.ca, [
    "url",
    "trustBundleFile",
    "timeoutSeconds",
    "maxConcurrentRequests",
    "connectionsPerCredential",
  ]);
  const ca = {
    url: str("ca.url", caRaw.url, "https://localhost:8443"),
    trustBundleFile: fields.path("ca.trustBundleFile", caRaw.trustBundleFile, DEFAULT_TRUST_BUNDLE_FILE),
    timeoutSeconds: int("ca.timeoutSeconds", caRaw.timeoutSeconds, 10, 1, 300),
    maxConcurrentRequests: int("ca.maxConcurrentRequests", caRaw.maxConcurrentRequests, 4, 1, 256),
    connectionsPerCredential: int("ca.connectionsPerCredential", caRaw.connectionsPerCredential, 1, 1, 64),
  };
  const urlProblem = caUrlProblem(ca.url);
  if (urlProblem) fields.problem(`ca.url: ${urlProblem}`);

  const nodeRaw = obj("node", raw.node, [
    "name",
    "joinToken",
    "joinTokenFile",
    "serviceAccountTokenFile",
    "keyAlgorithm",
    "ttlSeconds",
  ]);
  const nodeName = str("node.name", nodeRaw.name);
  if (nodeName && !/^[A-Za-z0-9._-]+$/.test(nodeName)) {
    fields.problem(
      `node.name: a node name may hold letters, digits, ".", "_", "-", got ${JSON.stringify(nodeName)}`,
    );
  }
  const node = {
    name: nodeName,
    joinToken: fields.optionalStr("node.joinToken", nodeRaw.joinToken),
    joinTokenFile: nodeRaw.joinTokenFile === undefined
      ? undefined
      : fields.path("node.joinTokenFile", nodeRaw.joinTokenFile),
    serviceAccountTokenFile: nodeRaw.serviceAccountTokenFile === undefined
      ? undefined
      : fields.path("node.serviceAccountTokenFile", nodeRaw.serviceAccountTokenFile),
    keyAlgorithm: fields.oneOf("node.keyAlgorithm", nodeRaw.keyAlgorithm, KEY_ALGORITHMS, "ECDSA-P256"),
    ttlSeconds: nodeRaw.ttlSeconds === undefined
      ? undefined
      : int("node.ttlSeconds", nodeRaw.ttlSeconds, 0, 60, 366 * 86400),
  };
  const credentials = (["joinToken", "joinTokenFile", "serviceAccountTokenFile"] as const).filter((key) =>
    node[key] !== undefined
  );
  if (credentials.length > 1) {
    fields.problem(
      `node.${
        credentials[0]
      }: give one of node.joinToken, node.joinTokenFile and node.serviceAccountTokenFile, not ${
        credentials.map((key) => `node.${key}`).join(" and ")
      }`,
    );
  }

  const stateDir = fields.path("stateDir", raw.stateDir, DEFAULT_STATE_DIR);
  const workloadsDir = raw.workloadsDir === undefined
    ? undefined
    : fields.path("workloadsDir", raw.workloadsDir);
  const workloadDefaults = readWorkloadDefaults(fields, raw.workloadDefaults);
  const kubernetes = readAgentKubernetes(fields, raw.kubernetes);

  const workloads: WorkloadSpec[] = [];
  const workloadProblems: WorkloadProblem[] = [];
  if (raw.workloads !== undefined && !Array.isArray(raw.workloads)) {
    fields.problem("workloads: expected a list of workload entries");
  } else if (trustDomain) {
    (raw.workloads as unknown[] | undefined ?? []).forEach((entry, i) => {
      // Each entry has its own reader: its problems skip it, they do not refuse the file.
      const entryFields = new FieldReader(fields.fileDir, fields.cwd, fields.fromShell);
      const origin = { source: "static", file, field: `workloads[${i}]` };
      const spec = readWorkloadEntry(entryFields, entry, {
        trustDomain: trustDomain!,
        defaults: workloadDefaults,
        origin,
        prefix: `workloads[${i}]`,
      });
      if (spec) workloads.push(spec);
      for (const text of entryFields.problems) {
        workloadProblems.push({ ...problemOf(origin, text) });
      }
    });
  }

  const renewalRaw = obj("renewal", raw.renewal, [
    "ratio",
    "jitter",
    "retryInitialSeconds",
    "retryMaxSeconds",
  ]);
  const renewal = {
    ratio: ratio(fields, "renewal.ratio", renewalRaw.ratio, 0.5, 0.9),
    jitter: ratio(fields, "renewal.jitter", renewalRaw.jitter, 0.1, 0.5),
    retryInitialSeconds: int("renewal.retryInitialSeconds", renewalRaw.retryInitialSeconds, 1, 1, 3600),
    retryMaxSeconds: int("renewal.retryMaxSeconds", renewalRaw.retryMaxSeconds, 60, 1, 86400),
  };
  if (renewal.ratio <= 0) fields.problem("renewal.ratio: must be above 0");
  if (renewal.jitter >= renewal.ratio) fields.problem("renewal.jitter: must be below renewal.ratio");
  if (renewal.retryInitialSeconds > renewal.retryMaxSeconds) {
    fields.problem("renewal.retryInitialSeconds: must not exceed renewal.retryMaxSeconds");
  }

  const refresh = readRefresh(fields, raw.refresh);

  const deliveryRaw = obj("delivery", raw.delivery, ["maxConcurrentWrites", "roots"]);
  const delivery = {
    maxConcurrentWrites: int("delivery.maxConcurrentWrites", deliveryRaw.maxConcurrentWrites, 16, 1, 256),
    roots: readRoots(fields, deliveryRaw.roots),
  };

  const listenRaw = obj("listen", raw.listen, ["host", "port", "statusPage"]);
  const listen = {
    host: str("listen.host", listenRaw.host, "127.0.0.1"),
    port: int("listen.port", listenRaw.port, 8444, 0, 65535),
    statusPage: fields.bool("listen.statusPage", listenRaw.statusPage, false),
  };
  // The page shows every workload and every authorization decision of the node, unauthenticated.
  if (listen.statusPage && !isLoopbackHost(listen.host)) {
    fields.problem(
      `listen.statusPage: the status page shows the node's workloads and authorization decisions to anyone who reaches it; it is served on a loopback listen.host only, not ${listen.host}`,
    );
  }
  const proxy = raw.proxy === undefined ? undefined : readProxyConfig(fields, raw.proxy, { stateDir });

  const level = readLogLevel(fields, raw.log);

  return {
    trustDomain: trustDomainName,
    ca,
    node,
    stateDir,
    workloadsDir,
    kubernetes,
    workloadDefaults,
    workloads,
    workloadProblems,
    renewal,
    refresh,
    delivery,
    proxy,
    listen,
    log: { level },
  };
}
