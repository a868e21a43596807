/**
 * The agent as a process: from an {@link AgentConfig} to a running {@link NodeAgent} with its
 * sources, its CA client and its status port. `meshauth agent` calls this and stops it on
 * SIGTERM or SIGINT; the status port's listener keeps the process alive meanwhile.
 *
 * @example
 * ```ts
 * import { loadAgentConfig, startAgentDaemon } from "meshauth/agent";
 * const running = await startAgentDaemon(await loadAgentConfig({ path: "agent.yaml", env: process.env }));
 * process.once("SIGTERM", () => running.close());
 * ```
 * @module
 */

import { readFile } from "node:fs/promises";
import { jsonLogger, type Logger } from "../internal/mod.ts";
import { CaClient } from "./ca-client.ts";
import type { AgentConfig } from "./config.ts";
import { AgentMetrics } from "./metrics.ts";
import { NodeAgent } from "./node-agent.ts";
import { startOpsServer } from "./ops-server.ts";
import { DirectorySource } from "./sources/directory.ts";
import type { WorkloadSource } from "./sources/source.ts";
import { StaticSource } from "./sources/static.ts";
import { MeshAuthError } from "../mod.ts";

/** A running agent process. */
export interface RunningAgent {
  agent: NodeAgent;
  /** The status port (`/healthz`, `/readyz`, `/metrics`). */
  statusUrl: string;
  statusPort: number;
  /** Stops renewing, closes the status port and the CA connections. Files stay. */
  close(): Promise<void>;
}

/** A file the configuration names cannot be read. */
export class AgentSetupError extends MeshAuthError {
  static override code = "ERR_AGENT_SETUP";
  override name = "AgentSetupError";
  override code = AgentSetupError.code;
}

async function readTokenFile(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, "utf8")).trim() || undefined;
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return undefined;
    throw new AgentSetupError(`cannot read node.joinTokenFile ${path}: ${(err as Error).message}`);
  }
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
  const { joinToken, joinTokenFile } = config.node;
  const agent = new NodeAgent({
    trustDomain: config.trustDomain,
    nodeName: config.node.name,
    bootstrapToken: () => joinToken ?? (joinTokenFile ? readTokenFile(joinTokenFile) : undefined),
    client,
    trustBundlePem: bundlePem,
    stateDir: config.stateDir,
    sources,
    deliveryRoots: config.delivery.roots,
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
  let isRunning = true;
  // The status port answers from the start: /healthz while the node bootstraps, /readyz 503.
  const ops = await startOpsServer(
    {
      readiness: () => agent.readiness(),
      isRunning: () => isRunning,
      renderMetrics: () => metrics.render(),
    },
    config.listen.host,
    config.listen.port,
  );
  logger.info("listening", { url: ops.url, port: ops.port, host: ops.host });
  try {
    await agent.start();
  } catch (err) {
    await ops.close();
    throw err;
  }
  logger.info("agent started", {
    nodeId: agent.nodeId.toString(),
    ca: config.ca.url,
    stateDir: config.stateDir,
    workloads: agent.workloads().length,
    workloadsDir: config.workloadsDir,
  });
  let closing: Promise<void> | undefined;
  return {
    agent,
    statusUrl: ops.url,
    statusPort: ops.port,
    close() {
      closing ??= (async () => {
        isRunning = false;
        await agent.stop();
        await ops.close();
        logger.info("stopped", {});
      })();
      return closing;
    },
  };
}
