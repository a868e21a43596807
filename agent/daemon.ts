/**
 * The agent as a process: from an {@link AgentConfig} to a running {@link NodeAgent} with its
 * sources, its CA client, its mutual-TLS proxy (the `proxy:` section, fed by the agent's SVIDs)
 * and its status port (the agent's and the proxy's metrics on one `/metrics`, and the live
 * status page when asked). `meshauth agent` calls this and stops it on SIGTERM or SIGINT; the
 * status port's listener keeps the process alive meanwhile.
 *
 * @example
 * ```ts
 * import { loadAgentConfig, startAgentDaemon } from "meshauth/agent";
 * const running = await startAgentDaemon(await loadAgentConfig({ path: "agent.yaml", env: process.env }));
 * process.once("SIGTERM", () => running.close());
 * ```
 * @module
 */

import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { jsonLogger, KubernetesApi, type Logger } from "../internal/mod.ts";
import { CaClient, TokenMissing } from "./ca-client.ts";
import type { AgentConfig } from "./config.ts";
import { AgentMetrics } from "./metrics.ts";
import { NodeAgent } from "./node-agent.ts";
import { startOpsServer } from "./ops-server.ts";
import { AgentCredentialSource } from "./proxy/agent-credentials.ts";
import { MeshProxy } from "./proxy/proxy.ts";
import { StatusFeed } from "./status/status-feed.ts";
import { CsiNodePlugin } from "./sources/csi/node-plugin.ts";
import { DirectorySource } from "./sources/directory.ts";
import { KubernetesPodSource } from "./sources/kubernetes.ts";
import type { WorkloadSource } from "./sources/source.ts";
import { StaticSource } from "./sources/static.ts";
import { AgentSetupError } from "./setup-error.ts";

/** A running agent process. */
export interface RunningAgent {
  /** The agent, renewing its workloads' SVIDs. */
  agent: NodeAgent;
  /** The proxy of the `proxy:` section, listening (absent without one). */
  proxy?: MeshProxy;
  /** What the status page shows (absent unless `listen.statusPage`). */
  statusFeed?: StatusFeed;
  /** The status port (`/healthz`, `/readyz`, `/metrics`). */
  statusUrl: string;
  /** The status port's number (the one picked when `listen.port` is 0). */
  statusPort: number;
  /** Stops the proxy and renewing, closes the status port and the CA connections. Files stay. */
  close(): Promise<void>;
}

/**
 * Reads a token file each time it is needed: a kubelet or an operator may have replaced it.
 * A file that is absent, unreadable or empty is a missing token that names the file.
 */
async function readTokenFile(key: string, path: string): Promise<string> {
  let token: string;
  try {
    token = (await readFile(path, "utf8")).trim();
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new TokenMissing(
      code === "ENOENT"
        ? `${key} ${path} does not exist`
        : `${key} ${path} cannot be read (${code ?? (err as Error).message})`,
    );
  }
  if (!token) throw new TokenMissing(`${key} ${path} is empty`);
  return token;
}

/** The Kubernetes sources the configuration asks for, on one API client. */
async function kubernetesSources(
  config: AgentConfig,
  logger: Logger,
): Promise<{ sources: WorkloadSource[]; roots: string[]; api?: KubernetesApi }> {
  const k8s = config.kubernetes;
  if (!k8s || (!k8s.pods.enabled && !k8s.csi.enabled)) return { sources: [], roots: [] };
  const api = await KubernetesApi.fromOptions({
    kubeconfig: k8s.api.kubeconfig,
    context: k8s.api.context,
    requestTimeoutMs: k8s.api.requestTimeoutSeconds * 1000,
  });
  const sources: WorkloadSource[] = [];
  // The pods' and the CSI volumes' directories are the agent's own: delivery roots besides
  // delivery.roots, so that neither has to be listed twice.
  const roots: string[] = [];
  if (k8s.pods.enabled) {
    roots.push(k8s.pods.directory);
    sources.push(
      new KubernetesPodSource({
        api,
        nodeName: config.node.name,
        trustDomain: config.trustDomain,
        directory: k8s.pods.directory,
        defaults: config.workloadDefaults,
        logger,
      }),
    );
  }
  if (k8s.csi.enabled) {
    const plugin = new CsiNodePlugin({
      api,
      nodeName: config.node.name,
      trustDomain: config.trustDomain,
      socket: k8s.csi.socket,
      driverName: k8s.csi.driverName,
      vendorVersion: packageVersion(),
      kubeletDir: k8s.csi.kubeletDir,
      dataDir: k8s.csi.dataDir,
      stateDir: join(config.stateDir, "csi-volumes"),
      medium: k8s.csi.medium,
      defaults: config.workloadDefaults,
      publishTimeoutMs: k8s.csi.publishTimeoutSeconds * 1000,
      maxVolumes: k8s.csi.maxVolumes,
      logger,
    });
    roots.push(...plugin.deliveryRoots);
    sources.push(plugin);
  }
  return { sources, roots, api };
}

/** meshauth's version, from its package.json (beside the sources, or above dist/agent/). */
function packageVersion(): string {
  for (const path of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8"));
      if (pkg.name === "meshauth") return pkg.version;
    } catch {
      // not there: the other layout
    }
  }
  return "unknown";
}

/** Starts the agent that `config` describes. */
export async function startAgentDaemon(
  config: AgentConfig,
  options: { logger?: Logger } = {},
): Promise<RunningAgent> {
  const logger = options.logger ?? jsonLogger({ level: config.log.level });
  const metrics = new AgentMetrics();
  const isTls = config.ca.url.startsWith("https:");
  let bundlePem: string | undefined;
  try {
    bundlePem = await readFile(config.ca.trustBundleFile, "utf8");
  } catch (err) {
    if (isTls) {
      throw new AgentSetupError(
        `cannot read the CA's trust bundle (ca.trustBundleFile) ${config.ca.trustBundleFile}: ${
          (err as { code?: string }).code ?? (err as Error).message
        }`,
      );
    }
  }
  const client = new CaClient({
    url: config.ca.url,
    caCertificatesPem: bundlePem,
    timeoutMs: config.ca.timeoutSeconds * 1000,
    maxConcurrentRequests: config.ca.maxConcurrentRequests,
    connectionsPerCredential: config.ca.connectionsPerCredential,
  });
  // Plain HTTP is allowed to a loopback CA only; there the bundle may come from the CA itself.
  bundlePem ??= await client.trustBundlePem();

  const sources: WorkloadSource[] = [new StaticSource(config.workloads, config.workloadProblems)];
  if (config.workloadsDir) {
    sources.push(
      new DirectorySource({
        directory: config.workloadsDir,
        trustDomain: config.trustDomain,
        defaults: config.workloadDefaults,
      }),
    );
  }
  const kubernetes = await kubernetesSources(config, logger);
  sources.push(...kubernetes.sources);
  const { joinToken, joinTokenFile, serviceAccountTokenFile } = config.node;
  const agent = new NodeAgent({
    trustDomain: config.trustDomain,
    nodeName: config.node.name,
    bootstrapToken: () =>
      joinToken ??
        (joinTokenFile
          ? readTokenFile("node.joinTokenFile", joinTokenFile)
          : serviceAccountTokenFile
          ? readTokenFile("node.serviceAccountTokenFile", serviceAccountTokenFile)
          : undefined),
    client,
    trustBundlePem: bundlePem,
    stateDir: config.stateDir,
    sources,
    deliveryRoots: [...config.delivery.roots, ...kubernetes.roots],
    nodeKeyAlgorithm: config.node.keyAlgorithm,
    nodeTtlSeconds: config.node.ttlSeconds,
    renewal: { ratio: config.renewal.ratio, jitter: config.renewal.jitter },
    backoff: {
      initialMs: config.renewal.retryInitialSeconds * 1000,
      maxMs: config.renewal.retryMaxSeconds * 1000,
    },
    minRefreshSeconds: config.refresh.minSeconds,
    maxRefreshSeconds: config.refresh.maxSeconds,
    maxConcurrentWrites: config.delivery.maxConcurrentWrites,
    logger,
    metrics,
    // The status port's listener keeps the process alive.
    keepAlive: false,
  });
  const proxy = config.proxy && new MeshProxy({ config: config.proxy, logger });
  // One source per workload the listeners name; a workload not there yet (a pod to come) has
  // its listeners refuse connections until the agent holds its SVID.
  const credentialSources = [
    ...new Set([...(proxy?.config.inbound ?? []), ...(proxy?.config.outbound ?? [])].map((l) => l.workload)),
  ].map((workload) => new AgentCredentialSource(agent, workload));
  for (const source of credentialSources) proxy!.setSource(source.workload, source);
  const statusFeed = config.listen.statusPage ? new StatusFeed({ agent, proxy }) : undefined;
  let isRunning = true;
  // The status port answers from the start: /healthz while the node bootstraps, /readyz 503.
  const ops = await startOpsServer(
    {
      readiness: () => agent.readiness(),
      isRunning: () => isRunning,
      renderMetrics: () => proxy ? metrics.render() + proxy.metrics.render() : metrics.render(),
      statusFeed,
    },
    config.listen.host,
    config.listen.port,
  );
  logger.info("listening", { url: ops.url, port: ops.port, host: ops.host, statusPage: !!statusFeed });
  const stopProxy = async () => {
    await proxy?.stop();
    for (const source of credentialSources) source.close();
    statusFeed?.close();
  };
  try {
    // Listeners open before the first SVID: until then they refuse connections, and each
    // workload's listeners take its SVID the moment the agent holds it.
    await proxy?.start();
    await agent.start();
  } catch (err) {
    await stopProxy();
    await ops.close();
    kubernetes.api?.close();
    throw err;
  }
  logger.info("agent started", {
    nodeId: agent.nodeId.toString(),
    ca: config.ca.url,
    stateDir: config.stateDir,
    workloads: agent.workloads().length,
    workloadsDir: config.workloadsDir,
    kubernetes: kubernetes.sources.map((source) => source.name),
    proxyListeners: proxy && Object.keys(proxy.addresses()).length,
  });
  let closing: Promise<void> | undefined;
  return {
    agent,
    proxy,
    statusFeed,
    statusUrl: ops.url,
    statusPort: ops.port,
    close() {
      closing ??= (async () => {
        isRunning = false;
        await stopProxy();
        await agent.stop();
        await ops.close();
        kubernetes.api?.close();
        logger.info("stopped", {});
      })();
      return closing;
    },
  };
}
