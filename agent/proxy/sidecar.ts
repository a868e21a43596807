/**
 * `meshauth proxy` at run time: the {@link MeshProxy} of a `proxy.yaml`, fed by a
 * {@link FileCredentialSource} over the delivered directory (one workload, which every listener
 * names: each presents its SVID), the CA's CRLs followed by the agent's own refresher when `ca.url` is set,
 * and the ops port (`/healthz`, `/readyz` while the SVID in service is valid, `/metrics`).
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { type Logger, silentLogger } from "../../internal/mod.ts";
import { CaClient } from "../ca-client.ts";
import type { HeldCertificate } from "../lifecycle/trust-refresh.ts";
import { TrustRefresher } from "../lifecycle/trust-refresh.ts";
import { type OpsServer, startOpsServer } from "../ops-server.ts";
import { AgentSetupError } from "../setup-error.ts";
import { FileCredentialSource } from "./file-credentials.ts";
import { MeshProxy } from "./proxy.ts";
import type { SidecarConfig } from "./sidecar-config.ts";

/** A running `meshauth proxy`. */
export interface RunningSidecar {
  proxy: MeshProxy;
  source: FileCredentialSource;
  ops: OpsServer;
  /** Closes the listeners and open connections, stops following the files and the CA. */
  close(): Promise<void>;
}

/** Options of {@link startProxySidecar}. */
export interface ProxySidecarOptions {
  /** Where it logs. Default: nowhere. */
  logger?: Logger;
  /** What `/readyz` compares the SVID's notAfter with (milliseconds). Default: `Date.now`. */
  clock?: { now(): number };
}

/** Starts the proxy, its credentials and its ops port. Throws when a listener or the ops port cannot listen. */
export async function startProxySidecar(
  config: SidecarConfig,
  options: ProxySidecarOptions = {},
): Promise<RunningSidecar> {
  const logger = options.logger ?? silentLogger;
  const clock = options.clock ?? Date;
  // A file the configuration names stops the start, as the agent's does: read once it ran, a
  // failure would leave the sidecar ready and following no CRL at all.
  let caRootsPem: string | undefined;
  if (config.ca?.trustBundleFile) {
    try {
      caRootsPem = await readFile(config.ca.trustBundleFile, "utf8");
    } catch (err) {
      throw new AgentSetupError(
        `cannot read the CA's trust bundle (ca.trustBundleFile in proxy.yaml) ${config.ca.trustBundleFile}: ${
          (err as { code?: string }).code ?? (err as Error).message
        }`,
      );
    }
  }
  const proxy = new MeshProxy({ config: config.proxy, logger });
  const source = new FileCredentialSource({
    directory: config.credentials.dir,
    layout: config.credentials.layout,
    logger,
    metrics: proxy.metrics,
  });
  const workloads = new Set([...config.proxy.inbound, ...config.proxy.outbound].map((l) => l.workload));
  for (const workload of workloads) proxy.setSource(workload, source);
  let isRunning = true;
  let isListening = false;
  // Ready while the SVID in service is valid now, as the agent holds a workload ready (its
  // notAfter later than now): past it every peer refuses the handshake, until the agent's next
  // delivery is read (a read verifies the chain, its validity included, before using it).
  const credentialsWaitedFor = (): string[] => {
    const current = source.credentials;
    if (!current) return [`credentials in ${config.credentials.dir}`];
    if (current.expiresAt.getTime() > clock.now()) return [];
    return [
      `a valid SVID in ${config.credentials.dir}: the one in service (serial ${current.serialNumber}) expired at ${current.expiresAt.toISOString()}`,
    ];
  };
  const ops = await startOpsServer(
    {
      isRunning: () => isRunning,
      readiness: () => {
        const waitingFor = [...credentialsWaitedFor(), ...(isListening ? [] : ["the listeners"])];
        return { isReady: waitingFor.length === 0, waitingFor };
      },
      renderMetrics: () => proxy.metrics.render(),
    },
    config.listen.host,
    config.listen.port,
    "listen.port in proxy.yaml",
    "ops port",
  );
  let crls: Promise<CrlFollower | undefined> | undefined;
  // The CA is followed once the credentials are there: their bundle verifies it and its CRLs.
  const followCa = () => {
    if (!config.ca || crls || !source.credentials) return;
    source.off("change", followCa);
    crls = CrlFollower.start(config, caRootsPem, source, proxy, logger).catch((err) => {
      logger.error("following the CA's CRLs failed; tried again at the next change of the credentials", {
        error: err,
      });
      crls = undefined;
      if (isRunning) source.on("change", followCa);
      return undefined;
    });
  };
  try {
    source.on("change", followCa);
    await source.start();
    await proxy.start();
    isListening = true;
    followCa();
  } catch (err) {
    // The credentials may have come, and the CA's CRLs been followed, before a listener failed.
    isRunning = false;
    source.off("change", followCa);
    await (await crls)?.stop();
    source.close();
    await proxy.stop();
    await ops.close();
    throw err;
  }
  logger.info("proxy sidecar started", {
    credentials: config.credentials.dir,
    workload: [...workloads][0],
    // The identity presented is the delivered SVID's, whatever the workload is called.
    spiffeId: source.credentials?.id.toString(),
    ops: ops.url,
    ca: config.ca?.url,
  });
  return {
    proxy,
    source,
    ops,
    close: async () => {
      isRunning = false;
      isListening = false;
      source.off("change", followCa);
      await (await crls)?.stop();
      source.close();
      await proxy.stop();
      await ops.close();
    },
  };
}

/** The CA's CRLs for the authority of the sidecar's own SVID (and its peers'), by the agent's refresher. */
class CrlFollower {
  private constructor(readonly refresher: TrustRefresher, readonly client: CaClient) {}

  static async start(
    config: SidecarConfig,
    trustBundleFilePem: string | undefined,
    source: FileCredentialSource,
    proxy: MeshProxy,
    logger: Logger,
  ): Promise<CrlFollower> {
    const ca = config.ca!;
    // The CA is verified with the roots named, or those delivered (the CA's own roots).
    const caRootsPem = trustBundleFilePem ?? source.credentials!.trustBundlePem;
    const client = new CaClient({
      url: ca.url,
      caCertificatesPem: caRootsPem,
      timeoutMs: ca.timeoutSeconds * 1000,
    });
    // One object per SVID: the refresher remembers each one's authority by identity.
    let held: HeldCertificate | undefined;
    const heldNow = (): HeldCertificate[] => {
      const current = source.credentials;
      if (!current) return [];
      if (held?.serialNumber !== current.serialNumber) {
        held = {
          certificateChainPem: current.certificateChainPem,
          serialNumber: current.serialNumber,
          expiresAt: current.expiresAt,
        };
      }
      return [held];
    };
    const credentials = source.credentials!;
    const refresher = new TrustRefresher({
      client,
      trustDomain: credentials.id.trustDomain,
      bootstrapBundlePem: caRootsPem,
      minRefreshMs: config.refresh.minSeconds * 1000,
      maxRefreshMs: config.refresh.maxSeconds * 1000,
      logger,
      metrics: { crlUpdates: proxy.metrics.crlUpdates },
      heldCertificates: heldNow,
      onBundle: () => {},
      onCrl: (authority, crl, revoked) => {
        logger.info("CRL updated", {
          authority,
          crlNumber: crl.crlNumber?.toString(),
          entries: revoked.size,
        });
        source.setCrls([...refresher.crls().values()]);
      },
      onCrlsDropped: () => source.setCrls([...refresher.crls().values()]),
    });
    proxy.metrics.followCrls(() => refresher.crls());
    await refresher.load();
    // CRLs are checked against the delivered roots (the CA's, unless ca.trustBundleFile says otherwise).
    refresher.adoptBundle(credentials.trustBundlePem);
    source.setCrlFetcher((chainPem) => refresher.followPeer(chainPem));
    let serial = source.credentials?.serialNumber;
    source.on("change", () => {
      const current = source.credentials;
      if (!current) return;
      refresher.adoptBundle(current.trustBundlePem);
      // A new SVID may come from a new authority, whose CRL is then followed at once.
      if (current.serialNumber !== serial) {
        serial = current.serialNumber;
        void refresher.refreshCrls();
      }
    });
    void refresher.refreshCrls();
    return new CrlFollower(refresher, client);
  }

  async stop(): Promise<void> {
    await this.refresher.stop();
    await this.client.close();
  }
}
