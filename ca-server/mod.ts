/**
 * meshauth's certificate authority server: `createCaApp(options)` returns a Hono app (any
 * runtime) serving the `/v1` API (CSR signing, trust bundle, CRL, revocation), with
 * authenticators (join tokens, Kubernetes service-account tokens, mTLS renewal, node agents),
 * stores (embedded file store, PostgreSQL), key managers, and a Node server with TLS.
 *
 * @example
 * ```ts
 * import { loadConfig, startCaServer } from "meshauth/ca-server";
 * const server = await startCaServer(await loadConfig({ env: process.env }));
 * console.log(`CA at ${server.url}`);
 * ```
 * @module
 */

export { type CaApp, type CaAppOptions, createCaApp, type FetchHandler, type RequestContext } from "./app.ts";
export {
  Authorities,
  type AuthoritiesOptions,
  type LoadedAuthority,
  NoActiveAuthority,
} from "./authorities.ts";
export {
  type AuthenticationMethod,
  type Authenticator,
  type Credentials,
  type NodeWorkloadCheck,
  type NodeWorkloads,
  type Principal,
  staticNodeWorkloads,
} from "./auth/principal.ts";
export {
  createJoinToken,
  isJoinToken,
  JoinTokenAuthenticator,
  type JoinTokenAuthenticatorOptions,
  type JoinTokenRequest,
} from "./auth/join-token.ts";
export {
  KubernetesAuthenticator,
  type KubernetesAuthenticatorOptions,
  type TokenReviewOptions,
} from "./auth/kubernetes.ts";
export { fetchTrustingCa, projectedToken } from "./auth/kubernetes-client.ts";
export { MtlsAuthenticator, type MtlsAuthenticatorOptions } from "./auth/mtls.ts";
export { type CaConfig, ConfigError, ENV_OVERRIDES, loadConfig } from "./config.ts";
export { type ConfigSources, type RawConfig } from "../internal/mod.ts";
export {
  type AuthorityRecord,
  type KeyManager,
  MemoryKeyManager,
  type NewAuthority,
  pemSigner,
} from "./keys/key-manager.ts";
export { FileKeyManager, KeyFileError } from "./keys/file-key-manager.ts";
export { nodeCryptoProvider, nodeSigner } from "./keys/node-crypto.ts";
export {
  clientCertificate,
  listen,
  type Listener,
  ListenError,
  type ListenOptions,
  type TimeLimits,
} from "./http-listener.ts";
export { jsonLogger, type Logger, type LogLevel, silentLogger } from "../internal/mod.ts";
export {
  CaMetrics,
  type GroupFacts,
  type GroupMetrics,
  type MetricsSnapshot,
  renderMetrics,
} from "./metrics.ts";
export { type RunningCaServer, startCaServer } from "./server.ts";
export { Problem, type ProblemBody, type ProblemCode, PROBLEMS } from "./problems.ts";
export {
  type BucketLimit,
  type Charge,
  type LeasableRateLimit,
  type Lease,
  type LeaseCharge,
  type RateLimit,
  RateLimiter,
  type RateLimitOptions,
  type RateVerdict,
} from "./rate-limit.ts";
export { LeasedRateLimit, type LeasedRateLimitOptions } from "./leased-rate-limit.ts";
export { runCaServer } from "./workers.ts";
export { CaService, type CaServiceOptions, type IssuanceResult } from "./service.ts";
export { buildAuthenticators, initRoot, loadAuthorities, openKeyManager, openStore } from "./from-config.ts";
export { FileStore, type FileStoreOptions } from "./store/file-store.ts";
export { PostgresStore, type PostgresStoreOptions } from "./store/postgres-store.ts";
export {
  ACCEPTED_REVOCATION_REASONS,
  type AcceptedRevocationReason,
  type AuditEvent,
  type CaStore,
  type CertificateRecord,
  type CrlClaim,
  type CrlStatus,
  type JoinTokenRecord,
  type JoinTokenRole,
  type RevocationOutcome,
  type RevocationRecord,
  type RevocationSelector,
  type SignedCrl,
  StoreError,
} from "./store/store.ts";
export {
  type KubeConfigLike,
  KubernetesApi,
  KubernetesApiError,
  type KubernetesApiOptions,
  KubernetesClientMissing,
  type KubernetesStatus,
  type ObjectMeta,
  type WatchEvent,
} from "../internal/mod.ts";
export { type KubernetesControllersConfig } from "./kubernetes/config.ts";
export { type KubernetesIntegration, startKubernetesIntegration } from "./kubernetes/integration.ts";
export { type LeaderElectionOptions, LeaderElector } from "./kubernetes/leader-election.ts";
export { PodIndex, type PodIndexOptions, type PodObject, type PodRecord } from "./kubernetes/pod-index.ts";
export { Reflector, type ReflectorHandler, type ReflectorOptions } from "../internal/mod.ts";
export {
  ServiceAccountTokenAuthenticator,
  type ServiceAccountTokenAuthenticatorOptions,
} from "./kubernetes/token-authenticator.ts";
export {
  ServiceAccountSecretsController,
  type ServiceAccountSecretsOptions,
  SVID_SECRET_TYPE,
} from "./kubernetes/service-account-secrets.ts";
export {
  PodCertificateSigner,
  type PodCertificateSignerOptions,
} from "./kubernetes/pod-certificate-signer.ts";
export {
  type PodCertificateApiVersion,
  type PodCertificateRequest,
  RequestDenied,
  requestedKey,
  verifyProofOfPossession,
} from "./kubernetes/pod-certificate-request.ts";
export {
  clusterTrustBundleName,
  ClusterTrustBundlePublisher,
  type ClusterTrustBundlePublisherOptions,
} from "./kubernetes/cluster-trust-bundle.ts";
export {
  TrustBundleConfigMapPublisher,
  type TrustBundleConfigMapPublisherOptions,
} from "./kubernetes/trust-bundle-config-map.ts";
export type { TrustBundlePublisherOptions } from "./kubernetes/trust-bundle-publisher.ts";
export {
  type ControllerIssuance,
  ControllerIssuer,
  type ControllerIssuerOptions,
} from "./kubernetes/issuer.ts";
