/**
 * The configuration of `meshauth proxy --config proxy.yaml`, the proxy run on its own beside one
 * workload (a Kubernetes sidecar): where its credentials are delivered (`credentials:`), the CA
 * whose CRLs it follows (`ca:`, optional), its ops port and log level, and, at the top level,
 * the very keys of the agent's `proxy:` section (`inbound:`, `outbound:`, `mode`, `auditLog`,
 * `limits`...), read by the same reader. Every key is described in `docs/proxy.md`.
 *
 * @example
 * ```ts
 * import { loadSidecarConfig } from "meshauth/agent";
 * const config = await loadSidecarConfig({ path: "proxy.yaml" });
 * ```
 * @module
 */

import {
  type ConfigSources,
  type FieldReader,
  loadConfigFile,
  type LogLevel,
  type RawConfig,
} from "../../internal/mod.ts";
import { caUrlProblem } from "../ca-client.ts";
import { readLogLevel, readRefresh } from "../config.ts";
import { LAYOUT_NAMES, type LayoutName } from "../delivery/layouts.ts";
import { type ProxyConfig, readProxyConfig } from "./config.ts";

/** The validated `proxy.yaml`. */
export interface SidecarConfig {
  /** The delivered directory the SVID, key and bundle are read from, and its layout. */
  credentials: { dir: string; layout: LayoutName };
  /** The CA whose CRLs are followed; absent: no CRLs (revocation unchecked, see `revocation`). */
  ca?: {
    /** The CA's origin, as the agent's `ca.url`. */
    url: string;
    /** Roots to verify the CA's serving certificate with; default: the delivered trust bundle. */
    trustBundleFile?: string;
    /** Deadline of one CA request in seconds (default 10). */
    timeoutSeconds: number;
  };
  /** CRLs are fetched on the CA's `max-age`, held between these (5 and 300 s), as the agent's `refresh`. */
  refresh: { minSeconds: number; maxSeconds: number };
  /** The ops port: `/healthz`, `/readyz` and `/metrics` (default 127.0.0.1:15020). */
  listen: { host: string; port: number };
  /** The least severe log line written (default `info`). */
  log: { level: LogLevel };
  /** The listeners, policies, audit log, TLS settings and limits: the agent's `proxy:` keys. */
  proxy: ProxyConfig;
}

const SIDECAR_KEYS = ["credentials", "ca", "refresh", "listen", "log"] as const;

function validate(raw: RawConfig, fields: FieldReader): SidecarConfig {
  const credentialsRaw = fields.obj("credentials", raw.credentials, ["dir", "layout"]);
  if (raw.credentials === undefined) fields.problem("credentials.dir: required");
  const credentials = {
    dir: raw.credentials === undefined ? "" : fields.path("credentials.dir", credentialsRaw.dir),
    layout: fields.oneOf("credentials.layout", credentialsRaw.layout, LAYOUT_NAMES, "istio"),
  };
  let ca: SidecarConfig["ca"];
  if (raw.ca !== undefined) {
    const caRaw = fields.obj("ca", raw.ca, ["url", "trustBundleFile", "timeoutSeconds"]);
    const url = fields.str("ca.url", caRaw.url);
    const problem = url ? caUrlProblem(url) : undefined;
    if (problem) fields.problem(`ca.url: ${problem}`);
    ca = {
      url,
      ...(caRaw.trustBundleFile === undefined
        ? {}
        : { trustBundleFile: fields.path("ca.trustBundleFile", caRaw.trustBundleFile) }),
      timeoutSeconds: fields.int("ca.timeoutSeconds", caRaw.timeoutSeconds, 10, 1, 300),
    };
  }
  const refresh = readRefresh(fields, raw.refresh);
  const listenRaw = fields.obj("listen", raw.listen, ["host", "port"]);
  const listen = {
    host: fields.str("listen.host", listenRaw.host, "127.0.0.1"),
    port: fields.int("listen.port", listenRaw.port, 15020, 0, 65535),
  };
  const level = readLogLevel(fields, raw.log);
  const proxy = readProxyConfig(fields, raw, { at: "", otherKeys: SIDECAR_KEYS });
  if (proxy.inbound.length + proxy.outbound.length === 0) {
    fields.problem("inbound: a proxy with no inbound and no outbound listener has nothing to do");
  }
  // One delivered directory, one SVID: every listener presents it, so they all name one workload
  // (a second name would be presented, and printed by --check, as an identity it is not).
  const firstListenerOf = new Map<string, string>();
  for (const [kind, listeners] of [["inbound", proxy.inbound], ["outbound", proxy.outbound]] as const) {
    for (const l of listeners) {
      if (l.workload && !firstListenerOf.has(l.workload)) {
        firstListenerOf.set(l.workload, `${kind} ${l.name}`);
      }
    }
  }
  if (firstListenerOf.size > 1) {
    fields.problem(
      `workload: the listeners name ${firstListenerOf.size} workloads (${
        [...firstListenerOf].map(([workload, listener]) => `${workload} by ${listener}`).join(", ")
      }); a sidecar presents the one SVID in credentials.dir, so every listener must name the same workload`,
    );
  }
  // Without a CA the sidecar holds no CRL, and strict refuses every peer whose revocation is unchecked.
  if (proxy.revocation === "strict" && ca === undefined) {
    fields.problem(
      "revocation: strict needs ca.url to fetch CRLs (without a ca: section no CRL is held and every peer would be refused)",
    );
  }
  return { credentials, ca, refresh, listen, log: { level }, proxy };
}

/** Reads and validates `proxy.yaml`; throws a `ConfigError` listing every problem. */
export function loadSidecarConfig(sources: ConfigSources = {}): Promise<SidecarConfig> {
  return loadConfigFile(sources, {}, validate);
}
