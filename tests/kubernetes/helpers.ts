// A cluster for the Kubernetes tests: the API test server with the manifests of
// examples/kubernetes/ applied (so RBAC is what they grant: the system, the demo, and unless
// `stock` the optional features), two nodes, and helpers to make pods and to act as a
// component with only its own service account's permissions.
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CertificateAuthority } from "../../mod.ts";
import { Authorities, FileStore, KubernetesApi, MemoryKeyManager } from "../../ca-server/mod.ts";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeApiServer, type KubeApiServerOptions } from "../support/kube-api/server.ts";
import type { KubeObject } from "../support/kube-api/resources.ts";
import { tempDir } from "../ca-server/helpers.ts";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const TRUST_DOMAIN = "cluster.local";

export interface TestCluster {
  server: KubeApiServer;
  nodes: Record<string, string>;
  admin: KubernetesApi;
  /** A kubeconfig for a component that authenticates as `namespace/serviceAccount`. */
  kubeconfigFor(namespace: string, serviceAccount: string): Promise<string>;
  /** A client with only that service account's permissions. */
  clientFor(namespace: string, serviceAccount: string): Promise<KubernetesApi>;
  /** A running pod on `node`, as `serviceAccount`. */
  pod(namespace: string, name: string, serviceAccount: string, node: string): Promise<KubeObject>;
  stop(): Promise<void>;
}

/** The manifest files of examples/kubernetes/ in the order of docs/kubernetes.md: the system, the demo, the options. */
export function exampleManifests(options: { stock?: boolean } = {}): string[] {
  const base = join(ROOT, "examples/kubernetes");
  const dirs = options.stock
    ? [base, join(base, "demo")]
    : [base, join(base, "demo"), join(base, "optional")];
  return dirs.filter((dir) => existsSync(dir)).flatMap((dir) =>
    readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort().map((f) => join(dir, f))
  );
}

/**
 * Starts the API test server and applies examples/kubernetes/ to it: with `stock`, only what a
 * cluster with no feature gates takes (the system and the demo, not optional/).
 */
export async function startCluster(
  options: KubeApiServerOptions & { stock?: boolean } = {},
): Promise<TestCluster> {
  const server = await new KubeApiServer({
    ...options,
    bookmarkIntervalMs: options.bookmarkIntervalMs ?? 500,
  })
    .start();
  for (const file of exampleManifests(options)) await server.apply(readFileSync(file, "utf8"));
  const nodes: Record<string, string> = {};
  for (const name of ["node-a", "node-b"]) {
    nodes[name] = server.seed({ apiVersion: "v1", kind: "Node", metadata: { name } }).metadata.uid!;
  }
  const load = (path: string) => {
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    return new KubernetesApi(kc);
  };
  const admin = load(server.writeKubeconfig(server.adminToken));
  const kubeconfigFor = async (namespace: string, serviceAccount: string) =>
    server.writeKubeconfig(await server.tokenFor({ namespace, serviceAccount, expirationSeconds: 3600 }));
  return {
    server,
    nodes,
    admin,
    kubeconfigFor,
    clientFor: async (namespace, serviceAccount) => load(await kubeconfigFor(namespace, serviceAccount)),
    async pod(namespace, name, serviceAccount, node) {
      const created = await admin.create<KubeObject>(`/api/v1/namespaces/${namespace}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace },
        spec: {
          nodeName: node,
          serviceAccountName: serviceAccount,
          containers: [{ name: "app", image: "app" }],
        },
        status: { phase: "Running" },
      });
      return created;
    },
    async stop() {
      admin.close();
      await server.stop();
    },
  };
}

/** A CA with a fresh root in memory and a file store in a temporary directory. */
export async function testAuthorities(trustDomain = TRUST_DOMAIN) {
  const dir = await tempDir("meshauth-k8s-ca-");
  const keyManager = new MemoryKeyManager();
  const root = await CertificateAuthority.createRoot({ trustDomain, ttlSeconds: 30 * 86400 });
  const exported = await root.exportPem();
  await keyManager.add({
    certificateChainPem: exported.certificateChainPem,
    privateKeyPem: exported.privateKeyPem,
    activeFrom: new Date(Date.now() - 60_000),
  });
  const authorities = await Authorities.load(keyManager, { trustDomain });
  const store = new FileStore(join(dir.path, "store"));
  await store.open();
  return {
    authorities,
    keyManager,
    store,
    dir: dir.path,
    async close() {
      await store.close();
      await dir.remove();
    },
  };
}

/** Polls `check` until it returns a value (not undefined), for at most `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/** Runs openssl with `input` on stdin; answers the exit code and output. */
export function openssl(args: string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile("openssl", args, { timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, out: `${stdout}${stderr}` });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}
