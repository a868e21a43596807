/**
 * Where pods run, from the API server: one watch of all pods (list + watch with resource
 * versions, as the {@link Reflector} keeps it), of which the CA keeps five strings per pod,
 * indexed by node. It answers {@link NodeWorkloads} for the node authenticators (an agent on
 * node N may obtain `spiffe://<td>/ns/X/sa/Y` only while a pod running as Y in X is scheduled
 * on N, by `spec.nodeName`), and looks up single pods for the Pod Certificates signer and the
 * agent-token authenticator. Until the cache is synced, or when the cluster has more pods than
 * `maxPods`, a node's pods are listed from the API server with the field selector
 * `spec.nodeName=<node>` instead: the answer is never made from an incomplete cache.
 *
 * A pod scheduled a moment ago may not have reached the cache yet; for an identity the cache
 * does not give a node, {@link PodIndex.confirmNodeWorkload} asks the API server (that node's
 * pods, one list), rate-limited per node (a small burst, then one a second), so an agent asking
 * for identities it does not have cannot make the CA hammer the API server.
 *
 * @example
 * ```ts
 * import { KubernetesApi, PodIndex, silentLogger } from "meshauth/ca-server";
 * const pods = new PodIndex({ api: await KubernetesApi.fromOptions(), trustDomain: "cluster.local", logger: silentLogger });
 * pods.start();
 * const ids = await pods.nodeWorkloads("node-a"); // ["spiffe://cluster.local/ns/photo-ns/sa/photo-frontend", ...]
 * ```
 * @module
 */

import { SpiffeId } from "../../mod.ts";
import {
  type KubernetesApi,
  KubernetesApiError,
  type ListResult,
  type Logger,
  type ObjectMeta,
  Reflector,
} from "../../internal/mod.ts";
import type { NodeWorkloadCheck, NodeWorkloads } from "../auth/principal.ts";
import { Problem } from "../problems.ts";

/** What the CA keeps of a pod. */
export interface PodRecord {
  /** The pod's namespace. */
  namespace: string;
  /** The pod's name. */
  name: string;
  /** The pod's UID, which a new pod of the same name does not share. */
  uid: string;
  /** The node the pod is scheduled on. */
  nodeName: string;
  /** The service account the pod runs as. */
  serviceAccountName: string;
  /** `Pending`, `Running`, ... (`Succeeded` and `Failed` pods are not kept). */
  phase: string;
}

/** The parts of a Pod the index reads. */
export interface PodObject {
  /** Name, namespace and UID. */
  metadata?: ObjectMeta;
  /** The node and service account. */
  spec?: { nodeName?: string; serviceAccountName?: string };
  /** The pod's phase. */
  status?: { phase?: string };
}

/** Options of {@link PodIndex}. */
export interface PodIndexOptions {
  /** The client the pods are listed and watched with. */
  api: KubernetesApi;
  /** The CA's trust domain, for the workloads' SPIFFE IDs. */
  trustDomain: string;
  /** Where the watch's trouble is logged. */
  logger: Logger;
  /** The most pods cached; beyond it nodes are answered by per-node lists. Default 200,000. */
  maxPods?: number;
  /** A node's pods listed from the API server at most this many (bounds one answer). Default 2,000. */
  maxPodsPerNode?: number;
  /** After the burst, one live list of a node's pods for cache misses per this long. Default 1 s. */
  liveLookupIntervalMs?: number;
  /** Live lists of one node's pods for cache misses allowed at once. Default 3. */
  liveLookupBurst?: number;
}

const MAX_LIVE_LOOKUPS_REMEMBERED = 10_000;

/** A pod that has finished no longer holds its identity. */
function isDone(phase: string | undefined): boolean {
  return phase === "Succeeded" || phase === "Failed";
}

/** The record of a pod placed on a node and not finished; undefined otherwise. */
export function podRecord(pod: PodObject): PodRecord | undefined {
  const nodeName = pod.spec?.nodeName;
  if (!nodeName || !pod.metadata?.name || !pod.metadata.namespace || isDone(pod.status?.phase)) {
    return undefined;
  }
  return {
    namespace: pod.metadata.namespace,
    name: pod.metadata.name,
    uid: pod.metadata.uid ?? "",
    nodeName,
    // A pod that names no service account runs as "default".
    serviceAccountName: pod.spec?.serviceAccountName || "default",
    phase: pod.status?.phase ?? "Pending",
  };
}

/** Pods by node, from one cluster-wide watch. */
export class PodIndex {
  readonly #o: PodIndexOptions;
  readonly #reflector: Reflector<PodRecord>;
  readonly #byNode = new Map<string, Set<string>>();
  readonly #liveLookups = new Map<
    string,
    { tokens: number; refilledAt: number; inFlight?: Promise<Set<string>> }
  >();
  /** Counts, for tests and diagnostics. */
  readonly stats = { liveLookups: 0 };

  /** An index of the cluster's pods; `start` begins watching. */
  constructor(options: PodIndexOptions) {
    this.#o = options;
    this.#reflector = new Reflector<PodRecord>({
      api: options.api,
      name: "pods",
      path: "/api/v1/pods",
      project: (object) => podRecord(object as PodObject),
      maxObjects: options.maxPods ?? 200_000,
      logger: options.logger,
      handler: {
        upsert: (key, pod, previous) => {
          if (previous && previous.nodeName !== pod.nodeName) this.#unindex(key, previous);
          let keys = this.#byNode.get(pod.nodeName);
          if (!keys) this.#byNode.set(pod.nodeName, keys = new Set());
          keys.add(key);
        },
        remove: (key, pod) => this.#unindex(key, pod),
      },
    });
  }

  #unindex(key: string, pod: PodRecord): void {
    const keys = this.#byNode.get(pod.nodeName);
    keys?.delete(key);
    if (keys?.size === 0) this.#byNode.delete(pod.nodeName);
  }

  /** The reflector underneath (its stats, its sync state). */
  get reflector(): Reflector<PodRecord> {
    return this.#reflector;
  }

  /** Begins listing and watching the pods. */
  start(): void {
    this.#reflector.start();
  }

  /** Stops watching. */
  stop(): void {
    this.#reflector.stop();
  }

  /** True when answers come from the cache. */
  get isCacheComplete(): boolean {
    return this.#reflector.isSynced && !this.#reflector.isOverflowed;
  }

  /** The pods scheduled on `node` and not finished. */
  async podsOn(node: string): Promise<PodRecord[]> {
    if (this.isCacheComplete) {
      return [...this.#byNode.get(node) ?? []].map((key) => this.#reflector.get(key)!).filter(Boolean);
    }
    return await this.#listPodsOn(node);
  }

  async #listPodsOn(node: string): Promise<PodRecord[]> {
    const pods: PodRecord[] = [];
    let continueToken: string | undefined;
    const max = this.#o.maxPodsPerNode ?? 2000;
    do {
      const page = await this.#o.api.get<ListResult<PodObject>>("/api/v1/pods", {
        fieldSelector: `spec.nodeName=${node}`,
        limit: 500,
        continue: continueToken,
      });
      for (const item of page.items ?? []) {
        const record = podRecord(item);
        if (record && record.nodeName === node) pods.push(record);
      }
      continueToken = page.metadata?.continue || undefined;
    } while (continueToken && pods.length < max);
    return pods;
  }

  #idsOf(pods: readonly PodRecord[]): Set<string> {
    const ids = new Set<string>();
    for (const pod of pods) {
      try {
        ids.add(
          SpiffeId.fromServiceAccount(this.#o.trustDomain, pod.namespace, pod.serviceAccountName).toString(),
        );
      } catch {
        // A name that cannot be part of a SPIFFE ID grants nothing.
      }
    }
    return ids;
  }

  /**
   * The SPIFFE IDs of the pods on `node`: `spiffe://<td>/ns/<namespace>/sa/<service account>`.
   * Pass it as the node authenticators' {@link NodeWorkloads}.
   */
  readonly nodeWorkloads: NodeWorkloads = async (node) => {
    let pods: PodRecord[];
    try {
      pods = await this.podsOn(node);
    } catch (err) {
      throw new Problem(
        "ERR_NOT_READY",
        `listing the pods of node ${node} failed: ${(err as Error).message}`,
      );
    }
    return [...this.#idsOf(pods)];
  };

  /**
   * Whether a pod running as `id` is on `node` by the API server itself, for an identity the
   * cache does not give the node (a pod scheduled a moment ago). Questions about one node
   * share a list in flight, and lists per node are rate-limited (beyond the limit: false).
   * Pass it as the node authenticators' `confirmNodeWorkload`.
   */
  readonly confirmNodeWorkload: NodeWorkloadCheck = async (node, id) => {
    // Without a complete cache, nodeWorkloads has just listed the node's pods live.
    if (!this.isCacheComplete) return false;
    let lookup = this.#liveLookups.get(node);
    if (!lookup?.inFlight) {
      // A token bucket per node: a burst (several pods scheduled at once), then one a period.
      const now = Date.now();
      const intervalMs = this.#o.liveLookupIntervalMs ?? 1000;
      const burst = this.#o.liveLookupBurst ?? 3;
      const tokens = lookup ? Math.min(burst, lookup.tokens + (now - lookup.refilledAt) / intervalMs) : burst;
      if (tokens < 1) return false;
      if (!lookup && this.#liveLookups.size >= MAX_LIVE_LOOKUPS_REMEMBERED) {
        for (const [name, old] of this.#liveLookups) {
          if (!old.inFlight && now - old.refilledAt >= burst * intervalMs) this.#liveLookups.delete(name);
        }
        if (this.#liveLookups.size >= MAX_LIVE_LOOKUPS_REMEMBERED) return false;
      }
      this.stats.liveLookups++;
      const inFlight = this.#listPodsOn(node).then((pods) => this.#idsOf(pods));
      lookup = { tokens: tokens - 1, refilledAt: now, inFlight };
      this.#liveLookups.set(node, lookup);
      const settled = lookup;
      // Questions asked while the list runs share it.
      void inFlight.catch(() => {}).finally(() => settled.inFlight = undefined);
    }
    try {
      return (await lookup.inFlight!).has(id);
    } catch (err) {
      this.#o.logger.warn("listing a node's pods for a cache miss failed", { node, error: err });
      return false;
    }
  };

  /** One pod, read from the API server (authoritative: for decisions about that pod alone). */
  async getPod(namespace: string, name: string): Promise<(PodObject & { metadata: ObjectMeta }) | undefined> {
    try {
      return await this.#o.api.get(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
      );
    } catch (err) {
      if (err instanceof KubernetesApiError && err.isNotFound) return undefined;
      throw err;
    }
  }
}
