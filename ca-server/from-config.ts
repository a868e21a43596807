/**
 * From a {@link CaConfig} to the server's parts: the store, the key manager, the first
 * authority (`ca init`), a rotation, and the authenticators. Shared by the CLI, `npm run ca` and `npm start`.
 *
 * @module
 */

import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { CertificateAuthority, type KeyAlgorithm } from "../mod.ts";
import { type Logger, writeFileAtomic } from "../internal/mod.ts";
import { Authorities } from "./authorities.ts";
import { JoinTokenAuthenticator } from "./auth/join-token.ts";
import { KubernetesAuthenticator } from "./auth/kubernetes.ts";
import { fetchTrustingCa, projectedToken } from "./auth/kubernetes-client.ts";
import { MtlsAuthenticator } from "./auth/mtls.ts";
import { type Authenticator, type NodeWorkloads, staticNodeWorkloads } from "./auth/principal.ts";
import type { CaConfig } from "./config.ts";
import type { KubernetesIntegration } from "./kubernetes/integration.ts";
import { FileKeyManager } from "./keys/file-key-manager.ts";
import { nodeCryptoProvider } from "./keys/node-crypto.ts";
import type { AuthorityRecord, KeyManager } from "./keys/key-manager.ts";
import { FileStore } from "./store/file-store.ts";
import { PostgresStore } from "./store/postgres-store.ts";
import { type CaStore, writeFailure } from "./store/store.ts";

/**
 * Opens the configured store. A short-lived process (the CLI) passes `isCompacting: false`:
 * compacting the file store is the servers' work.
 */
export async function openStore(
  config: CaConfig,
  options: { logger?: Logger; isCompacting?: boolean } = {},
): Promise<CaStore> {
  const store = config.store.kind === "postgres"
    ? new PostgresStore({ connectionString: config.store.url, maxConnections: config.store.maxConnections })
    : new FileStore(join(config.dataDir, "store"), {
      isDurable: config.store.fsync,
      segmentBytes: config.store.segmentBytes,
      keepSegments: config.store.keepSegments,
      retainExpiredSeconds: config.store.retainExpiredSeconds,
      isCompacting: options.isCompacting,
      logger: options.logger,
    });
  await store.open();
  return store;
}

/** The configured key manager. */
export function openKeyManager(config: CaConfig): KeyManager {
  return new FileKeyManager(config.keys.dir);
}

/** Loads the authorities with the configured issuance policy. */
export function loadAuthorities(config: CaConfig, keyManager: KeyManager): Promise<Authorities> {
  return Authorities.load(keyManager, {
    trustDomain: config.trustDomain,
    policy: {
      defaultTtlSeconds: config.issuance.defaultTtlSeconds,
      maxTtlSeconds: config.issuance.maxTtlSeconds,
    },
    crypto: nodeCryptoProvider,
  });
}

/** Where the CA keeps a copy of its trust bundle for clients: `<dataDir>/bundle.pem`. */
export function trustBundlePath(config: CaConfig): string {
  return join(config.dataDir, "bundle.pem");
}

/** Writes the trust bundle (every published root) to {@link trustBundlePath}; answers the path. */
export async function writeTrustBundle(config: CaConfig, authorities: Authorities): Promise<string> {
  const path = trustBundlePath(config);
  try {
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, authorities.bundlePem(), 0o644);
  } catch (err) {
    throw writeFailure(err, path);
  }
  return path;
}

/** Creates a self-signed root and stores it as an authority that signs from now. */
export async function initRoot(
  config: CaConfig,
  keyManager: KeyManager,
  options: { keyAlgorithm?: KeyAlgorithm; ttlSeconds?: number; activeFrom?: Date } = {},
): Promise<AuthorityRecord> {
  const root = await CertificateAuthority.createRoot({
    trustDomain: config.trustDomain,
    keyAlgorithm: options.keyAlgorithm ?? config.ca.keyAlgorithm,
    ttlSeconds: options.ttlSeconds ?? config.ca.ttlSeconds,
  });
  const exported = await root.exportPem();
  return await keyManager.add({
    certificateChainPem: exported.certificateChainPem,
    privateKeyPem: exported.privateKeyPem,
    activeFrom: options.activeFrom ?? new Date(),
  });
}

/**
 * The authenticators the configuration asks for, in the order they are tried. With a running
 * Kubernetes integration, projected tokens are reviewed by the API server, and a node's
 * workloads are those of the configuration's `nodes` table and the pods scheduled on it.
 */
export async function buildAuthenticators(
  config: CaConfig,
  store: CaStore,
  authorities: Authorities,
  kubernetes?: KubernetesIntegration,
): Promise<Authenticator[]> {
  const table = staticNodeWorkloads(config.nodes);
  const fromPods = kubernetes?.nodeWorkloads;
  const nodeWorkloads: NodeWorkloads = fromPods
    ? async (node) => [...new Set([...await table(node), ...await fromPods(node)])]
    : table;
  const list: Authenticator[] = [
    new JoinTokenAuthenticator({
      store,
      trustDomain: config.trustDomain,
      nodeWorkloads,
      crypto: nodeCryptoProvider,
    }),
  ];
  const k8s = config.kubernetes;
  if (kubernetes) {
    list.push(kubernetes.authenticator);
  } else if (k8s && !k8s.api) {
    list.push(
      new KubernetesAuthenticator({
        trustDomain: config.trustDomain,
        issuer: k8s.issuer,
        audiences: k8s.audiences,
        jwks: k8s.jwksFile ? JSON.parse(await readFile(k8s.jwksFile, "utf8")) : undefined,
        jwksUrl: k8s.jwksUrl,
        jwksFetch: k8s.jwksCaFile ? fetchTrustingCa(await readFile(k8s.jwksCaFile, "utf8")) : undefined,
        tokenReview: k8s.tokenReview && {
          url: k8s.tokenReview.url,
          // Read at start (a missing file fails the start), then again whenever it is rotated.
          reviewerToken: checkedToken(projectedToken(k8s.tokenReview.tokenFile)),
          fetch: k8s.tokenReview.caFile
            ? fetchTrustingCa(await readFile(k8s.tokenReview.caFile, "utf8"))
            : undefined,
        },
      }),
    );
  }
  list.push(
    new MtlsAuthenticator({
      authorities,
      store,
      nodeWorkloads,
      confirmNodeWorkload: kubernetes?.pods?.confirmNodeWorkload,
      admins: config.admins,
    }),
  );
  return list;
}

function checkedToken<R extends () => string>(read: R): R {
  read();
  return read;
}
