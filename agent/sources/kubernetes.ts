/**
 * Workloads from the pods on this node: the agent watches the pods whose `spec.nodeName` is
 * its node (one list and watch with that field selector, resumed and relisted as the
 * {@link Reflector} does), and each pod that opts in with the annotation
 * `meshauth.io/inject: "true"` gets its service account's identity,
 * `spiffe://<td>/ns/<namespace>/sa/<service account>`, in a host directory of its own,
 * `<directory>/<pod UID>`, which the pod mounts (a `hostPath` volume with
 * `subPathExpr: $(POD_UID)`). When the pod goes (deleted, or finished), its files go too.
 *
 * Files are owned as the pod runs: by its `securityContext.runAsUser` (key 0600), or, with only
 * an `fsGroup` (or `runAsGroup`), by that group (key 0640), so a non-root container can read
 * them. `meshauth.io/layout` (`istio`, `spiffe-helper`) and `meshauth.io/combined-file` pick the
 * file names. A pod whose annotations are malformed is reported and skipped.
 *
 * The CSI volume ({@link CsiNodePlugin}) needs no hostPath in the pod and is the better choice;
 * this source serves clusters where a CSI driver cannot be installed.
 *
 * @example
 * ```ts
 * import { KubernetesPodSource } from "meshauth/agent";
 * const source = new KubernetesPodSource({
 *   api, nodeName: "node-a", trustDomain: "cluster.local", directory: "/var/run/meshauth/pods",
 * });
 * ```
 * @module
 */

import { join } from "node:path";
import { SpiffeId, TrustDomain } from "../../mod.ts";
import {
  type KubernetesApi,
  type Logger,
  type ObjectMeta,
  Reflector,
  silentLogger,
} from "../../internal/mod.ts";
import { LAYOUT_NAMES, type LayoutName } from "../delivery/layouts.ts";
import type { WorkloadProblem, WorkloadSink, WorkloadSource, WorkloadSpec } from "./source.ts";
import { WORKLOAD_DEFAULTS, type WorkloadDefaults } from "./workload-entry.ts";

/** The annotation a pod opts in with (value `"true"`). */
export const INJECT_ANNOTATION = "meshauth.io/inject";
/** The annotation that picks the file names (`istio` or `spiffe-helper`). */
export const LAYOUT_ANNOTATION = "meshauth.io/layout";
/** The annotation that asks for one more file with the chain and the key together. */
export const COMBINED_FILE_ANNOTATION = "meshauth.io/combined-file";

/** Options of {@link KubernetesPodSource}. */
export interface KubernetesPodSourceOptions {
  /** Lists and watches the pods. */
  api: KubernetesApi;
  /** This node's name: only pods with this `spec.nodeName` are served. */
  nodeName: string;
  /** The trust domain of the pods' SPIFFE IDs. */
  trustDomain: TrustDomain | string;
  /** The base directory on the host; each pod's files go to `<directory>/<pod UID>`. */
  directory: string;
  /** Defaults for what a pod's annotations leave out. Default {@link WORKLOAD_DEFAULTS}. */
  defaults?: WorkloadDefaults;
  /** Where the source's log lines go. Default: none. */
  logger?: Logger;
  /** How long {@link KubernetesPodSource.start} waits for the first list. Default 60 s. */
  syncTimeoutMs?: number;
  /** The most pods of this node kept. Default 10,000. */
  maxPods?: number;
}

/** The parts of a Pod this source reads. */
interface PodObject {
  metadata?: ObjectMeta;
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  };
  status?: { phase?: string };
}

/** What is kept of an annotated pod. */
interface PodEntry {
  namespace: string;
  name: string;
  uid: string;
  serviceAccountName: string;
  annotations: Record<string, string>;
  runAsUser?: number;
  gid?: number;
}

const UID = /^[A-Za-z0-9-]{1,64}$/;
// Kubernetes validates a securityContext's user and group IDs as 0 to 2^31 - 1.
const ID_MAX = 2 ** 31 - 1;

/** A user or group ID of a pod's securityContext; undefined when absent or out of range (0 is an ID). */
export function securityContextId(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= ID_MAX
    ? value
    : undefined;
}

/** The pods of one node that opt in, as workloads. */
export class KubernetesPodSource implements WorkloadSource {
  readonly name = "kubernetes";
  readonly #o: KubernetesPodSourceOptions;
  readonly #trustDomain: TrustDomain;
  readonly #reflector: Reflector<PodEntry>;
  readonly #reported = new Set<string>();
  #sink?: WorkloadSink;
  #isReportQueued = false;

  /** Throws on a bad trust domain; watches nothing until {@link KubernetesPodSource.start}. */
  constructor(options: KubernetesPodSourceOptions) {
    this.#o = options;
    this.#trustDomain = TrustDomain.from(options.trustDomain);
    this.#reflector = new Reflector<PodEntry>({
      api: options.api,
      name: `pods on ${options.nodeName}`,
      path: "/api/v1/pods",
      // RBAC cannot narrow a watch to one node's pods; the field selector does.
      fieldSelector: `spec.nodeName=${options.nodeName}`,
      project: (object) => this.#project(object as PodObject),
      maxObjects: options.maxPods ?? 10_000,
      logger: options.logger ?? silentLogger,
      handler: {
        upsert: () => this.#queueReport(),
        remove: () => this.#queueReport(),
        synced: () => this.#queueReport(),
      },
    });
  }

  /** Lists this node's pods, sends their workloads, then keeps them current until stopped. */
  async start(sink: WorkloadSink): Promise<void> {
    this.#sink = sink;
    this.#reflector.start();
    try {
      // An incomplete set would make the agent delete the files of pods it has not seen yet.
      await this.#reflector.synced(this.#o.syncTimeoutMs ?? 60_000);
    } catch (err) {
      this.#reflector.stop();
      throw err;
    }
    await this.#report();
  }

  stop(): Promise<void> {
    this.#reflector.stop();
    return Promise.resolve();
  }

  /** The pods it serves now (`namespace/name`), for status pages and tests. */
  pods(): string[] {
    return this.#reflector.entries().map(([key]) => key).sort();
  }

  #project(pod: PodObject): PodEntry | undefined {
    const metadata = pod.metadata;
    const annotations = metadata?.annotations ?? {};
    if (annotations[INJECT_ANNOTATION] !== "true") return undefined;
    // The field selector already says so; a pod on another node is never served all the same.
    if (pod.spec?.nodeName !== this.#o.nodeName) return undefined;
    if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") return undefined;
    if (!metadata?.namespace || !metadata.name || !metadata.uid || !UID.test(metadata.uid)) return undefined;
    const security = pod.spec.securityContext ?? {};
    return {
      namespace: metadata.namespace,
      name: metadata.name,
      uid: metadata.uid,
      serviceAccountName: pod.spec.serviceAccountName || "default",
      annotations: Object.fromEntries(
        Object.entries(annotations).filter(([key]) => key.startsWith("meshauth.io/")),
      ),
      runAsUser: securityContextId(security.runAsUser),
      gid: securityContextId(security.fsGroup) ?? securityContextId(security.runAsGroup),
    };
  }

  #queueReport(): void {
    if (this.#isReportQueued || !this.#reflector.isSynced) return;
    this.#isReportQueued = true;
    // A relist upserts every pod at once: one report for all of them.
    queueMicrotask(() => {
      this.#isReportQueued = false;
      void this.#report();
    });
  }

  async #report(): Promise<void> {
    const sink = this.#sink;
    if (!sink) return;
    const specs: WorkloadSpec[] = [];
    const problems = new Set<string>();
    for (const [, pod] of this.#reflector.entries()) {
      const spec = this.#spec(pod, (problem) => {
        const key = `${pod.uid}|${problem.field}|${problem.message}`;
        problems.add(key);
        if (!this.#reported.has(key)) sink.problem(problem);
      });
      if (spec) specs.push(spec);
    }
    this.#reported.clear();
    for (const key of problems) this.#reported.add(key);
    await sink.replace(this.name, specs);
  }

  #spec(pod: PodEntry, problem: (p: WorkloadProblem) => void): WorkloadSpec | undefined {
    const origin = { source: this.name, field: `pod ${pod.namespace}/${pod.name}` };
    const defaults = this.#o.defaults ?? WORKLOAD_DEFAULTS;
    let spiffeId: SpiffeId;
    try {
      spiffeId = SpiffeId.fromServiceAccount(this.#trustDomain, pod.namespace, pod.serviceAccountName);
    } catch (err) {
      problem({
        ...origin,
        message: `its service account cannot name a SPIFFE ID: ${(err as Error).message}`,
      });
      return undefined;
    }
    let layout: LayoutName = defaults.layout;
    const askedLayout = pod.annotations[LAYOUT_ANNOTATION];
    if (askedLayout !== undefined) {
      if (!(LAYOUT_NAMES as readonly string[]).includes(askedLayout)) {
        problem({
          ...origin,
          field: `${origin.field} ${LAYOUT_ANNOTATION}`,
          message: `expected one of ${LAYOUT_NAMES.join(", ")}, got ${JSON.stringify(askedLayout)}`,
        });
        return undefined;
      }
      layout = askedLayout as LayoutName;
    }
    const combinedFile = pod.annotations[COMBINED_FILE_ANNOTATION] ?? defaults.combinedFile;
    if (combinedFile !== undefined && !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(combinedFile)) {
      problem({
        ...origin,
        field: `${origin.field} ${COMBINED_FILE_ANNOTATION}`,
        message: `a plain file name, not ${JSON.stringify(combinedFile)}`,
      });
      return undefined;
    }
    const uid = pod.runAsUser ?? defaults.uid;
    const gid = pod.gid ?? defaults.gid;
    return {
      name: `pod-${pod.uid}`,
      spiffeId,
      directory: join(this.#o.directory, pod.uid),
      owner: { uid, gid },
      // Owned by the pod's group alone, the key must be group-readable for the pod to read it.
      keyFileMode: uid === undefined && gid !== undefined ? 0o640 : defaults.keyFileMode,
      ttlSeconds: defaults.ttlSeconds,
      keyAlgorithm: defaults.keyAlgorithm,
      layout,
      combinedFile,
      origin,
    };
  }
}
