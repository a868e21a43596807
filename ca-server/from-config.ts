/**
 * From a {@link CaConfig} to the server's parts: the store, the key manager, the first
 * authority (`ca init`), a rotation, and the authenticators. Shared by the CLI and `npm start`.
 *
 * @module
 */

import { mkdir, readFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { CertificateAuthority, type KeyAlgorithm } from "../mod.ts";
import { writeFileAtomic } from "../internal/mod.ts";
import { Authorities } from "./authorities.ts";
import { JoinTokenAuthenticator } from "./auth/join-token.ts";
import { KubernetesAuthenticator } from "./auth/kubernetes.ts";
import { MtlsAuthenticator } from "./auth/mtls.ts";
import { type Authenticator, type NodeWorkloads, staticNodeWorkloads } from "./auth/principal.ts";
import type { CaConfig } from "./config.ts";
import type { KubernetesIntegration } from "./kubernetes/integration.ts";
import { FileKeyManager } from "./keys/file-key-manager.ts";
import { nodeCryptoProvider } from "./keys/node-crypto.ts";
import type { AuthorityRecord, KeyManager } from "./keys/key-manager.ts";
import { FileStore } from "./store/file-store.ts";
import { PostgresStore } from "./store/postgres-store.ts";
import type { CaStore } from "./store/store.ts";

/** Opens the configured store. */
export async function openStore(config: CaConfig): Promise<CaStore> {
  const store = config.store.kind === "postgres"
    ? new PostgresStore({ connectionString: config.store.url, maxConnections: config.store.maxConnections })
    : new FileStore(join(config.dataDir, "store"), { isDurable: config.store.fsync });
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
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, authorities.bundlePem(), 0o644);
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
        tokenReview: k8s.tokenReview && {
          url: k8s.tokenReview.url,
          reviewerToken: (await readFile(k8s.tokenReview.tokenFile, "utf8")).trim(),
          fetch: k8s.tokenReview.caFile ? await fetchTrusting(k8s.tokenReview.caFile) : undefined,
        },
      }),
    );
  }
  list.push(new MtlsAuthenticator({ authorities, store, nodeWorkloads, admins: config.admins }));
  return list;
}

// A fetch over node:https that trusts the API server's CA, for TokenReview calls.
async function fetchTrusting(caFile: string): Promise<typeof fetch> {
  const ca = await readFile(caFile, "utf8");
  return ((input: string | URL | Request, init: RequestInit = {}) =>
    new Promise<Response>((resolvePromise, reject) => {
      const request = httpsRequest(String(input), {
        method: init.method ?? "GET",
        headers: init.headers as Record<string, string>,
        ca,
        timeout: 5000,
      }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on(
          "end",
          () => resolvePromise(new Response(Buffer.concat(chunks), { status: response.statusCode })),
        );
        response.on("error", reject);
      });
      request.on("timeout", () => request.destroy(new Error("TokenReview request timed out")));
      request.on("error", reject);
      request.end(init.body as string | undefined);
    })) as typeof fetch;
}
