/**
 * The CA's Kubernetes side, from its configuration: the API client, the pod index behind node
 * authorization, the projected-token authenticator, and, under leader election, the
 * controllers that write to the cluster (service-account Secrets, the Pod Certificates signer,
 * its ClusterTrustBundle, the trust bundle's ConfigMap). Every CA process reads; one at a time writes.
 *
 * @example
 * ```ts
 * import { loadConfig, startKubernetesIntegration } from "meshauth/ca-server";
 * // authorities, store and logger come from the server's setup (see server.ts)
 * const kubernetes = await startKubernetesIntegration(await loadConfig({ path: "ca.yaml" }), { authorities, store, logger });
 * ```
 * @module
 */

import { hostname } from "node:os";
import { KubernetesApi, type Logger } from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";
import type { NodeWorkloads } from "../auth/principal.ts";
import type { CaConfig } from "../config.ts";
import type { CaMetrics } from "../metrics.ts";
import type { CaStore } from "../store/store.ts";
import { ClusterTrustBundlePublisher } from "./cluster-trust-bundle.ts";
import { ControllerIssuer } from "./issuer.ts";
import { LeaderElector } from "./leader-election.ts";
import { PodCertificateSigner } from "./pod-certificate-signer.ts";
import { PodIndex } from "./pod-index.ts";
import { ServiceAccountSecretsController } from "./service-account-secrets.ts";
import { ServiceAccountTokenAuthenticator } from "./token-authenticator.ts";
import { TrustBundleConfigMapPublisher } from "./trust-bundle-config-map.ts";

/** What a running integration offers the rest of the CA. */
export interface KubernetesIntegration {
  /** The client every part of the integration talks to the API server with. */
  api: KubernetesApi;
  /** Node authorization from the API server (when `nodeAuthorization.enabled`). */
  nodeWorkloads?: NodeWorkloads;
  /** The pods of the cluster, when node authorization or the Pod Certificates signer needs them. */
  pods?: PodIndex;
  /** Authenticates service-account tokens with TokenReview. */
  authenticator: ServiceAccountTokenAuthenticator;
  /** The leader election that starts and stops the controllers. */
  elector: LeaderElector;
  /** The leader's controllers while this process leads. */
  readonly controllers: {
    serviceAccountSecrets?: ServiceAccountSecretsController;
    podCertificates?: PodCertificateSigner;
    clusterTrustBundle?: ClusterTrustBundlePublisher;
    trustBundleConfigMap?: TrustBundleConfigMapPublisher;
  };
  /** Stops the controllers, the watches and the election (giving up the Lease if held). */
  close(): Promise<void>;
}

/** Starts what `config.kubernetes` asks for; undefined when it names no API server. */
export async function startKubernetesIntegration(
  config: CaConfig,
  parts: {
    authorities: Authorities;
    store: CaStore;
    logger: Logger;
    identity?: string;
    metrics?: CaMetrics;
    /** The first wait before a controller that failed to start is tried again (doubling to 5 min). Default 5 s. */
    controllerRetryMs?: number;
  },
): Promise<KubernetesIntegration | undefined> {
  const k8s = config.kubernetes;
  if (!k8s?.api) return undefined;
  const { authorities, store, logger } = parts;
  const api = await KubernetesApi.fromOptions({
    kubeconfig: k8s.api.kubeconfig,
    context: k8s.api.context,
    requestTimeoutMs: k8s.api.requestTimeoutSeconds * 1000,
  });
  let pods: PodIndex | undefined;
  if (k8s.nodeAuthorization.enabled) {
    pods = new PodIndex({
      api,
      trustDomain: config.trustDomain,
      logger,
      maxPods: k8s.nodeAuthorization.maxPods,
    });
    pods.start();
  }
  const lookups = pods ?? new PodIndex({ api, trustDomain: config.trustDomain, logger });
  const authenticator = new ServiceAccountTokenAuthenticator({
    api,
    trustDomain: config.trustDomain,
    audiences: k8s.audiences,
    agentServiceAccounts: k8s.nodeAuthorization.enabled ? k8s.nodeAuthorization.agentServiceAccounts : [],
    pods: lookups,
    nodeWorkloads: pods?.nodeWorkloads ?? (() => []),
    confirmNodeWorkload: pods?.confirmNodeWorkload,
  });

  const controllers: KubernetesIntegration["controllers"] = {};
  const issuer = new ControllerIssuer({ authorities, store, logger });
  const elector = new LeaderElector({
    api,
    ...k8s.leaderElection,
    identity: parts.identity ?? `${hostname()}_${process.pid}`,
    logger,
    // Each controller starts on its own: one that cannot (an API the cluster does not serve,
    // RBAC missing) is retried with backoff while the others run, and never costs the Lease.
    onStartedLeading: (signal) => {
      if (k8s.serviceAccountSecrets.enabled) {
        startWithBackoff(
          "service-account Secrets",
          signal,
          logger,
          parts.controllerRetryMs,
          () =>
            new ServiceAccountSecretsController({
              api,
              issuer,
              authorities,
              trustDomain: config.trustDomain,
              settings: k8s.serviceAccountSecrets,
              logger,
              onForeignSecret: () => parts.metrics?.kubernetesConflict("Secret"),
            }),
          (controller) => controllers.serviceAccountSecrets = controller,
        );
      }
      if (k8s.trustBundleConfigMap.enabled) {
        startWithBackoff(
          "trust bundle ConfigMap publisher",
          signal,
          logger,
          parts.controllerRetryMs,
          () => new TrustBundleConfigMapPublisher({ api, authorities, logger, ...k8s.trustBundleConfigMap }),
          (controller) => controllers.trustBundleConfigMap = controller,
        );
      }
      if (k8s.podCertificates.enabled && k8s.podCertificates.clusterTrustBundle) {
        const apiVersion = k8s.podCertificates.clusterTrustBundle;
        startWithBackoff(
          "ClusterTrustBundle publisher",
          signal,
          logger,
          parts.controllerRetryMs,
          () =>
            new ClusterTrustBundlePublisher({
              api,
              authorities,
              signerName: k8s.podCertificates.signerName,
              apiVersion,
              logger,
            }),
          (controller) => controllers.clusterTrustBundle = controller,
        );
      }
      if (k8s.podCertificates.enabled) {
        startWithBackoff(
          "Pod Certificates signer",
          signal,
          logger,
          parts.controllerRetryMs,
          () =>
            new PodCertificateSigner({
              api,
              issuer,
              pods: lookups,
              trustDomain: config.trustDomain,
              settings: k8s.podCertificates,
              logger,
            }),
          (controller) => controllers.podCertificates = controller,
        );
      }
    },
    onStoppedLeading: () => {
      controllers.serviceAccountSecrets = undefined;
      controllers.podCertificates = undefined;
      controllers.clusterTrustBundle = undefined;
      controllers.trustBundleConfigMap = undefined;
    },
  });
  if (k8s.serviceAccountSecrets.enabled || k8s.podCertificates.enabled || k8s.trustBundleConfigMap.enabled) {
    elector.start();
  }

  return {
    api,
    pods,
    nodeWorkloads: pods?.nodeWorkloads,
    authenticator,
    elector,
    controllers,
    async close() {
      await elector.stop();
      pods?.stop();
      api.close();
    },
  };
}

interface Controller {
  start(signal?: AbortSignal): Promise<void>;
  stop(): void;
}

const MAX_CONTROLLER_RETRY_MS = 300_000;

/**
 * Starts the controller `make` builds (handing it to `started`), and builds and starts a new one after a failure, waiting
 * `firstRetryMs` (doubling to 5 min) in between, until `signal` (leadership) aborts.
 */
function startWithBackoff<C extends Controller>(
  name: string,
  signal: AbortSignal,
  logger: Logger,
  firstRetryMs = 5000,
  make: () => C,
  started: (controller: C) => void,
): void {
  let failures = 0;
  const attempt = async () => {
    if (signal.aborted) return;
    const controller = make();
    try {
      await controller.start(signal);
      if (signal.aborted) return;
      started(controller);
      if (failures > 0) {
        logger.info("Kubernetes controller started after failing", { controller: name, failures });
      }
    } catch (err) {
      controller.stop();
      const retryInMs = Math.min(MAX_CONTROLLER_RETRY_MS, firstRetryMs * 2 ** Math.min(failures, 16));
      failures++;
      logger.error("Kubernetes controller failed to start", { controller: name, error: err, retryInMs });
      const timer = setTimeout(() => void attempt(), retryInMs);
      timer.unref?.();
      signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
    }
  };
  void attempt();
}
