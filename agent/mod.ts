/**
 * The node agent (`meshauth/agent`): what istio-agent, ztunnel and SPIRE's agent do on a node.
 * It runs once per node (`meshauth agent --config agent.yaml`, see `docs/agent.md`), holds the
 * node's identity, makes each workload's key on the node and has the CA sign its CSR as the
 * node, writes the files atomically into the workload's directory, renews them, and keeps the
 * trust bundle and CRLs current.
 *
 * - {@link NodeAgent}: the agent itself, with every SVID reachable in memory and its changes as
 *   events (for an in-process mTLS proxy). {@link startAgentDaemon} runs it from a
 *   configuration with its status port.
 * - Workload sources: {@link StaticSource}, {@link DirectorySource}, the pods of this node
 *   ({@link KubernetesPodSource}), the CSI node plugin for pod volumes ({@link CsiNodePlugin}),
 *   and the {@link WorkloadSource} interface for others.
 * - Delivery: {@link writeGeneration} (Kubernetes' `..data` swap) and the file layouts.
 * - {@link CaClient} (on undici) and {@link SvidRotator}, to keep one identity fresh in a
 *   program of your own.
 * - The mutual-TLS proxy: {@link MeshProxy}, configured by the `proxy:` section
 *   ({@link loadProxyConfig}), fed by the agent through {@link AgentCredentialSource}, or, as a
 *   sidecar (`meshauth proxy`, {@link loadSidecarConfig}), by a {@link FileCredentialSource} over
 *   the files the agent delivers; and the live status page's data, {@link StatusFeed}.
 *
 * @example
 * ```ts
 * import { CaClient, SvidRotator } from "meshauth/agent";
 * const client = new CaClient({ url: "https://localhost:8443", caCertificatesPem: bundlePem });
 * const rotator = new SvidRotator({
 *   id: "spiffe://meshauth.local/demo",
 *   client,
 *   credential: { kind: "token", token: process.env.MESHAUTH_JOIN_TOKEN },
 *   directory: "/var/run/secrets/meshauth/demo",
 * });
 * await rotator.start(); // svid.pem, svid_key.pem (0600), svid_bundle.pem; renews at ~half-life until stop()
 * ```
 * @module
 */

export {
  CaClient,
  type CaClientOptions,
  type CaCredential,
  type CaEndpoint,
  CaRequestFailed,
  type CaRequestObservation,
  CaUnavailable,
  type CaUnavailableKind,
  checkCredential,
  type IssuedSvid,
  TokenMissing,
  type TrustBundleAnswer,
} from "./ca-client.ts";
export { ConcurrencyLimit, type ConcurrencyRunOptions } from "./concurrency.ts";
export { type HeldSvid, obtainSvid, type SvidRequest } from "./issuance.ts";
export { SvidRotator, type SvidRotatorOptions } from "./rotator.ts";
export {
  type AgentEvent,
  NodeAgent,
  type NodeAgentOptions,
  WorkloadNotDelivered,
  type WorkloadStatus,
} from "./node-agent.ts";
export { AGENT_ENV_OVERRIDES, type AgentConfig, loadAgentConfig } from "./config.ts";
export { type RunningAgent, startAgentDaemon } from "./daemon.ts";
export { AgentSetupError } from "./setup-error.ts";
export { type OpsServer, type OpsTarget, startOpsServer, StatusPortInUse } from "./ops-server.ts";
export {
  type FeedEvent,
  StatusFeed,
  type StatusFeedOptions,
  type StatusSnapshot,
  type WorkloadView,
} from "./status/status-feed.ts";
export {
  AgentMetrics,
  type AgentStatusReader,
  EXPIRY_WARNING_FRACTION,
  type HeldCertificateStatus,
  isExpiring,
} from "./metrics.ts";
export { Counter, Gauge, Histogram, type Labels, type Metric, MetricsRegistry } from "../internal/mod.ts";
export type {
  WorkloadOrigin,
  WorkloadProblem,
  WorkloadSink,
  WorkloadSource,
  WorkloadSpec,
} from "./sources/source.ts";
export { StaticSource } from "./sources/static.ts";
export { DirectorySource, type DirectorySourceOptions } from "./sources/directory.ts";
export {
  COMBINED_FILE_ANNOTATION,
  INJECT_ANNOTATION,
  KubernetesPodSource,
  type KubernetesPodSourceOptions,
  LAYOUT_ANNOTATION,
} from "./sources/kubernetes.ts";
export { type AgentKubernetesConfig, type CsiVolumeMedium } from "./sources/kubernetes-config.ts";
export { CsiNodePlugin, type CsiNodePluginOptions } from "./sources/csi/node-plugin.ts";
export { GrpcMissing } from "./sources/csi/grpc-server.ts";
export { ProtobufInvalid } from "./sources/csi/protobuf.ts";
export {
  type KubeConfigLike,
  KubernetesApi,
  KubernetesApiError,
  type KubernetesApiOptions,
  KubernetesClientMissing,
} from "../internal/mod.ts";
export { WORKLOAD_DEFAULTS, type WorkloadDefaults } from "./sources/workload-entry.ts";
export {
  DeliveryFailed,
  DeliveryRefused,
  type DirectoryOptions,
  type FileOwner,
  isDelivered,
  type PayloadFile,
  readGeneration,
  removeDelivery,
  writeGeneration,
  type WriteOptions,
} from "./delivery/atomic-writer.ts";
export {
  credentialFiles,
  type Credentials,
  type DeliveryOptions,
  type FileLayout,
  LAYOUT_NAMES,
  type LayoutName,
  LAYOUTS,
} from "./delivery/layouts.ts";
export { Backoff, type BackoffOptions } from "./lifecycle/backoff.ts";
export { NodeBootstrapFailed } from "./lifecycle/node-identity.ts";
export { type RenewableCertificate, renewalMoment, usableFrom } from "./lifecycle/renewal.ts";
export {
  type CrlRecord,
  StateDirectoryUnsafe,
  StateStore,
  type TrustRecord,
  type WorkloadRecord,
} from "./lifecycle/state-store.ts";
export { type SocketAddress, type UnixAddress } from "./proxy/address.ts";
export { type AuditRecord } from "./proxy/audit.ts";
export {
  type InboundConfig,
  loadProxyConfig,
  type OutboundConfig,
  type ProxyConfig,
  type ProxyLimits,
  type ProxyMode,
  type ProxyTlsConfig,
} from "./proxy/config.ts";
export { type CredentialSource, type SvidCredential } from "./proxy/credentials.ts";
export { AgentCredentialSource } from "./proxy/agent-credentials.ts";
export {
  type CredentialDirectoryReason,
  CredentialDirectoryUnusable,
  type FileCredentials,
  FileCredentialSource,
  type FileCredentialSourceOptions,
  readCredentialDirectory,
} from "./proxy/file-credentials.ts";
export { loadSidecarConfig, type SidecarConfig } from "./proxy/sidecar-config.ts";
export { ProxyMetrics } from "./proxy/metrics.ts";
export { PolicyFileError } from "./proxy/policy-files.ts";
export { MeshProxy, type MeshProxyOptions } from "./proxy/proxy.ts";
export { ProxyListenError } from "./proxy/unix-socket.ts";
