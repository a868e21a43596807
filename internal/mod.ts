/**
 * The internal entry: what `ca-server/` and `agent/` share that is not meshauth's public API.
 * Core helpers they need beyond `mod.ts` (codecs, public-key parsing, the WebCrypto signer and
 * provider), authority ids, durable file replacement, the JSON logger, the configuration
 * reader and Prometheus metrics. The package's `exports` do not
 * name it, so users cannot depend on it; the build links it to the same core as `mod.ts`, so
 * `instanceof` and caches mean one thing across entries.
 *
 * @module
 */

export { type KeyRequest, parseKeyRequest, publicKeyAlgorithm } from "../lib/csr.ts";
export { bytesEqual, fromBase64Url, fromHex, toBase64Url, toHex } from "../lib/encoding.ts";
export { parseSubjectPublicKeyInfo, type SubjectPublicKeyInfo } from "../lib/x509/certificate.ts";
export { type EcPublicJwk, ecPublicJwk } from "../lib/x509/public-key.ts";
export { keySigner } from "../lib/x509/signature.ts";
export { webCryptoProvider } from "../lib/x509/crypto-provider.ts";
export { authorityIdOf } from "./authority-id.ts";
export { peerChain, type PeerChainLimits } from "./peer-chain.ts";
export { removeStaleTemporaries, syncDirectory, writeFileAtomic } from "./atomic-file.ts";
export { codeOf, errorLine, jsonLogger, type Logger, type LogLevel, silentLogger } from "./logger.ts";
export { isBearerToken } from "./bearer-token.ts";
export { isLoopbackHost } from "./loopback.ts";
export { writeFailureOf } from "./write-failures.ts";
export {
  ConfigError,
  type ConfigSources,
  FieldReader,
  loadConfigFile,
  parseDocument,
  type RawConfig,
} from "./config-file.ts";
export { Counter, Gauge, Histogram, type Labels, type Metric, MetricsRegistry } from "./prometheus.ts";
export {
  type KubeConfigLike,
  KubernetesApi,
  KubernetesApiError,
  type KubernetesApiOptions,
  KubernetesClientMissing,
  type KubernetesStatus,
  type ListResult,
  type ObjectMeta,
  type WatchEvent,
} from "./kubernetes/api.ts";
export { Reflector, type ReflectorHandler, type ReflectorOptions } from "./kubernetes/reflector.ts";
