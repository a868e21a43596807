/**
 * The node agent (`meshauth/agent`): what istio-agent does next to workloads. Today it keeps
 * an identity's X509-SVID fresh against the CA server and delivers it as files; workload
 * sources (static configuration, Kubernetes) and the mTLS proxy build on these pieces.
 *
 * @example
 * ```ts
 * import { CaClient, SvidRotator } from "meshauth/agent";
 * const client = new CaClient({ url: "https://127.0.0.1:8443", caCertificatesPem: bundlePem });
 * const rotator = new SvidRotator({
 *   id: "spiffe://cluster.local/ns/default/sa/photos",
 *   client,
 *   credential: { kind: "token", token: process.env.MESHAUTH_JOIN_TOKEN! },
 *   directory: "/var/run/secrets/meshauth/photos",
 * });
 * await rotator.start(); // writes svid.pem, svid_key.pem (0600), bundle.pem; renews at ~half-life
 * ```
 * @module
 */

export {
  CaClient,
  type CaClientOptions,
  type CaCredential,
  CaRequestFailed,
  CaUnavailable,
  type IssuedSvid,
} from "./ca-client.ts";
export { type HeldSvid, SvidRotator, type SvidRotatorOptions } from "./rotator.ts";
export { DEFAULT_SVID_FILE_NAMES, type SvidFileNames, type SvidFiles, writeSvidFiles } from "./svid-files.ts";
export { writeFileAtomic } from "../internal/mod.ts";
export { type SocketAddress } from "./proxy/address.ts";
export { type AuditRecord } from "./proxy/audit.ts";
export {
  type InboundConfig,
  loadProxyConfig,
  type OutboundConfig,
  type ProxyConfig,
  type ProxyLimits,
  type ProxyMode,
  type ProxyTlsConfig,
  readProxyConfig,
} from "./proxy/config.ts";
export { type CredentialSource, type SvidCredential } from "./proxy/credentials.ts";
export { ProxyMetrics } from "./proxy/metrics.ts";
export { PolicyFileError } from "./proxy/policy-files.ts";
export { MeshProxy, type MeshProxyOptions } from "./proxy/proxy.ts";
