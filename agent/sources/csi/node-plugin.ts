/**
 * The agent as a CSI node plugin for ephemeral inline volumes (driver `meshauth.io`), as
 * cert-manager's csi-driver-spiffe is. A pod asks for its identity with a volume
 *
 * ```yaml
 * volumes:
 *   - name: identity
 *     csi: { driver: meshauth.io, readOnly: true }
 * ```
 *
 * and the kubelet calls `NodePublishVolume` on the plugin's Unix socket with the pod's name,
 * namespace, UID and service account (the CSIDriver's `podInfoOnMount`). The plugin checks with
 * the API server that this pod exists with that UID, runs on this node and as that service
 * account; mounts a small tmpfs for the volume and binds it onto the kubelet's target path
 * (read-only when the pod asks so); and hands the volume to the agent as a workload with the
 * identity `spiffe://<td>/ns/<namespace>/sa/<service account>`. The agent makes the key on the
 * node, has the CA sign it, writes the files with the `..data` swap, and keeps them rotated;
 * `NodePublishVolume` answers once the first certificate is in place, so the pod's containers
 * start with their identity. `NodeUnpublishVolume` deletes the files and unmounts everything.
 *
 * Not running as root (or with `medium: disk`), no mount can be made: the files go straight
 * into the target directory, on the kubelet's disk, and a read-only volume is read-only only as
 * far as the pod's `volumeMounts` say. Published volumes are remembered in the state directory,
 * so an agent that restarts keeps serving (and rotating) them.
 *
 * @example
 * ```ts
 * import { CsiNodePlugin } from "meshauth/agent";
 * const csi = new CsiNodePlugin({
 *   api, nodeName: "node-a", trustDomain: "cluster.local", socket: "/csi/csi.sock",
 *   kubeletDir: "/var/lib/kubelet", dataDir: "/csi/volumes", stateDir: "/var/lib/meshauth-agent/csi",
 * });
 * ```
 * @module
 */

import { promises as fs } from "node:fs";
import { isAbsolute, join, normalize, sep } from "node:path";
import { SpiffeId, TrustDomain } from "../../../mod.ts";
import {
  type KubernetesApi,
  KubernetesApiError,
  type Logger,
  type ObjectMeta,
  silentLogger,
  writeFileAtomic,
} from "../../../internal/mod.ts";
import { LAYOUT_NAMES, type LayoutName } from "../../delivery/layouts.ts";
import { COMBINED_FILE_ANNOTATION, LAYOUT_ANNOTATION, securityContextId as id } from "../kubernetes.ts";
import type { CsiVolumeMedium } from "../kubernetes-config.ts";
import type { WorkloadSink, WorkloadSource, WorkloadSpec } from "../source.ts";
import { WORKLOAD_DEFAULTS, type WorkloadDefaults } from "../workload-entry.ts";
import { CsiRpcError, type CsiServer, GrpcStatus, startCsiServer } from "./grpc-server.ts";
import { type NodePublishVolume, type NodeUnpublishVolume, SINGLE_NODE_ACCESS_MODES } from "./messages.ts";
import type { Message } from "./protobuf.ts";
import { bindMount, isMountPoint, mountTmpfs, unmountAndRemove } from "./volume-mounts.ts";

/** Options of {@link CsiNodePlugin}. */
export interface CsiNodePluginOptions {
  /** Reads pods (`get`), to check a publish against the API server. */
  api: KubernetesApi;
  /** This node's name: a publish for a pod on another node is refused; `NodeGetInfo`'s node id. */
  nodeName: string;
  /** The trust domain of the volumes' SPIFFE IDs. */
  trustDomain: TrustDomain | string;
  /** The Unix socket to serve. */
  socket: string;
  /** The CSI driver name (`GetPluginInfo`); the CSIDriver object's name. Default `meshauth.io`. */
  driverName?: string;
  /** The version answered to `GetPluginInfo`. Default `unknown`. */
  vendorVersion?: string;
  /** The kubelet's root directory (`/var/lib/kubelet`): target paths must be in its pods' volumes. */
  kubeletDir: string;
  /** Where each volume's tmpfs is mounted (`<dataDir>/<volume id>`). */
  dataDir: string;
  /** Where published volumes are remembered across restarts (0700). */
  stateDir: string;
  /** `memory` (a tmpfs per volume), `disk` (a plain directory), `auto` (memory when root). */
  medium?: CsiVolumeMedium;
  /** Defaults for what a volume's attributes leave out. Default {@link WORKLOAD_DEFAULTS}. */
  defaults?: WorkloadDefaults;
  /** How long NodePublishVolume waits for the first certificate. Default 60 s. */
  publishTimeoutMs?: number;
  /** Volumes published at once, at most. Default 1,000. */
  maxVolumes?: number;
  /** Where the plugin's log lines go. Default: none. */
  logger?: Logger;
}

/** The volume context keys the kubelet sets with `podInfoOnMount`. */
const POD_NAME = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace";
const POD_UID = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name";
const EPHEMERAL = "csi.storage.k8s.io/ephemeral";
const KUBELET_PREFIX = "csi.storage.k8s.io/";
/** Volume attributes a pod may set (`volumeAttributes`), as the pod source's annotations. */
const ATTRIBUTES = new Set([LAYOUT_ANNOTATION, COMBINED_FILE_ANNOTATION]);

const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const UID = /^[A-Za-z0-9-]{1,64}$/;
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** A published volume, as remembered in the state directory. */
interface VolumeRecord {
  volumeId: string;
  targetPath: string;
  /** Where the files are written: the tmpfs (memory), or the target path itself (disk). */
  directory: string;
  medium: "memory" | "disk";
  isReadOnly: boolean;
  pod: { namespace: string; name: string; uid: string; serviceAccountName: string };
  uid?: number;
  gid?: number;
  layout: LayoutName;
  combinedFile?: string;
}

interface PodObject {
  metadata?: ObjectMeta;
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  };
  status?: { phase?: string };
}

function invalid(message: string): CsiRpcError {
  return new CsiRpcError(GrpcStatus.INVALID_ARGUMENT, message);
}

/**
 * The CSI `volume_mount_group` (a decimal group ID: the kubelet sends the pod's fsGroup there to
 * plugins with VOLUME_MOUNT_GROUP), or undefined when empty. 0 is a group like any other.
 */
function mountGroup(value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  // The securityContext's rule (0 to 2^31 - 1), on a decimal integer and nothing else.
  const gid = /^(0|[1-9][0-9]{0,9})$/.test(value) ? id(Number(value)) : undefined;
  if (gid === undefined) {
    throw invalid(
      `volume_capability.mount.volume_mount_group: ${
        JSON.stringify(value)
      } is not a group ID (0 to 2147483647)`,
    );
  }
  return gid;
}

/** The CSI node plugin: a workload source whose workloads are the volumes published. */
export class CsiNodePlugin implements WorkloadSource {
  readonly name = "csi";
  readonly #o: CsiNodePluginOptions;
  readonly #trustDomain: TrustDomain;
  readonly #volumes = new Map<string, VolumeRecord>();
  /** Volumes with a call under way: a second call for one is answered ABORTED, as CSI allows. */
  readonly #busy = new Set<string>();
  readonly #logger: Logger;
  #sink?: WorkloadSink;
  #server?: CsiServer;
  #isReady = false;

  /** Throws on a bad trust domain; serves nothing until {@link CsiNodePlugin.start}. */
  constructor(options: CsiNodePluginOptions) {
    this.#o = options;
    this.#trustDomain = TrustDomain.from(options.trustDomain);
    this.#logger = options.logger ?? silentLogger;
  }

  /** The socket served. */
  get socket(): string {
    return this.#o.socket;
  }

  /** The volumes published now, by volume id. */
  volumes(): string[] {
    return [...this.#volumes.keys()].sort();
  }

  /** Restores the volumes published before a restart, sends them, and serves the socket. */
  async start(sink: WorkloadSink): Promise<void> {
    this.#sink = sink;
    await fs.mkdir(this.#o.stateDir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.#o.stateDir, 0o700);
    await this.#restore();
    await sink.replace(this.name, this.#specs());
    this.#server = await startCsiServer(this.#o.socket, this.#handlers(), this.#logger);
    this.#isReady = true;
    this.#logger.info("CSI node plugin listening", {
      socket: this.#o.socket,
      driver: this.#driverName,
      medium: this.#medium,
      volumes: this.#volumes.size,
    });
  }

  async stop(): Promise<void> {
    this.#isReady = false;
    await this.#server?.close();
    this.#server = undefined;
  }

  get #driverName(): string {
    return this.#o.driverName ?? "meshauth.io";
  }

  /**
   * The directories this plugin writes into, which the agent takes as delivery roots: the
   * volumes' tmpfs mounts under `dataDir` (memory), or the kubelet's target paths (disk).
   */
  get deliveryRoots(): string[] {
    return [this.#medium === "memory" ? this.#o.dataDir : this.#o.kubeletDir];
  }

  get #medium(): "memory" | "disk" {
    const medium = this.#o.medium ?? "auto";
    if (medium !== "auto") return medium;
    return process.getuid?.() === 0 ? "memory" : "disk";
  }

  #handlers() {
    return {
      Identity: {
        GetPluginInfo: () =>
          Promise.resolve({ name: this.#driverName, vendorVersion: this.#o.vendorVersion ?? "unknown" }),
        // No controller service: ephemeral inline volumes need none.
        GetPluginCapabilities: () => Promise.resolve({ capabilities: [] }),
        Probe: () => Promise.resolve({ ready: { value: this.#isReady } }),
      },
      Node: {
        NodeGetInfo: () => Promise.resolve({ nodeId: this.#o.nodeName }),
        // Neither staging nor stats: a publish does everything, an unpublish undoes it.
        NodeGetCapabilities: () => Promise.resolve({ capabilities: [] }),
        NodePublishVolume: (request: Message) =>
          this.#exclusive(request.volumeId, () => this.#publish(request as unknown as NodePublishVolume)),
        NodeUnpublishVolume: (request: Message) =>
          this.#exclusive(request.volumeId, () => this.#unpublish(request as unknown as NodeUnpublishVolume)),
      },
    };
  }

  async #exclusive(volumeId: unknown, operation: () => Promise<void>): Promise<Message> {
    if (typeof volumeId !== "string" || !VOLUME_ID.test(volumeId)) {
      throw invalid(
        `volume_id: expected letters, digits, ".", "_", "-" (at most 128), got ${JSON.stringify(volumeId)}`,
      );
    }
    if (this.#busy.has(volumeId)) {
      throw new CsiRpcError(GrpcStatus.ABORTED, `an operation on volume ${volumeId} is under way`);
    }
    this.#busy.add(volumeId);
    try {
      await operation();
      return {};
    } finally {
      this.#busy.delete(volumeId);
    }
  }

  /** The target path must be one of the pod's own volume paths under the kubelet's directory. */
  #checkTargetPath(targetPath: string, podUid?: string): void {
    if (
      !targetPath || !isAbsolute(targetPath) || normalize(targetPath) !== targetPath ||
      targetPath.endsWith(sep)
    ) {
      throw invalid(`target_path: expected an absolute, normalized path, got ${JSON.stringify(targetPath)}`);
    }
    const pods = join(this.#o.kubeletDir, "pods") + sep;
    const rest = targetPath.startsWith(pods) ? targetPath.slice(pods.length).split(sep) : [];
    // <kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume name>/mount
    if (rest.length < 4 || rest[1] !== "volumes" || (podUid !== undefined && rest[0] !== podUid)) {
      throw invalid(
        `target_path: ${targetPath} is not a volume path of ${
          podUid ? `pod ${podUid}` : "a pod"
        } under ${pods}`,
      );
    }
  }

  async #publish(request: NodePublishVolume): Promise<void> {
    const started = performance.now();
    const context = request.volumeContext;
    const pod = {
      namespace: context[POD_NAMESPACE] ?? "",
      name: context[POD_NAME] ?? "",
      uid: context[POD_UID] ?? "",
      serviceAccountName: context[SERVICE_ACCOUNT] ?? "",
    };
    if (!pod.namespace || !pod.name || !pod.uid || !pod.serviceAccountName) {
      throw invalid(
        `volume_context lacks the pod's name, namespace, uid or service account: set podInfoOnMount: true on the CSIDriver ${this.#driverName}`,
      );
    }
    if (!UID.test(pod.uid)) throw invalid(`volume_context: ${JSON.stringify(pod.uid)} is not a pod UID`);
    try {
      SpiffeId.fromServiceAccount(this.#trustDomain, pod.namespace, pod.serviceAccountName);
    } catch (err) {
      throw invalid(
        `volume_context: the pod's service account names no SPIFFE ID: ${(err as Error).message}`,
      );
    }
    if (context[EPHEMERAL] !== "true") {
      throw invalid(`${this.#driverName} serves ephemeral inline volumes only (csi: in the pod's volumes)`);
    }
    this.#checkTargetPath(request.targetPath, pod.uid);
    const capability = request.volumeCapability;
    if (!capability?.mount) {
      throw invalid("volume_capability: only mount volumes are served, not block volumes");
    }
    const mode = capability.accessMode?.mode ?? 0;
    if (!SINGLE_NODE_ACCESS_MODES.has(mode)) {
      throw invalid(`volume_capability.access_mode: ${mode} is not a single-node access mode`);
    }
    const attributes = this.#attributes(context);
    const requestedGroup = mountGroup(capability.mount.volumeMountGroup);

    const existing = this.#volumes.get(request.volumeId);
    if (existing) {
      if (existing.targetPath !== request.targetPath || existing.pod.uid !== pod.uid) {
        throw new CsiRpcError(
          GrpcStatus.ALREADY_EXISTS,
          `volume ${request.volumeId} is published at ${existing.targetPath} for pod ${existing.pod.uid}`,
        );
      }
      // A retried publish: the volume is there; answer once its files are.
      await this.#awaitDelivery(existing);
      return;
    }
    if (this.#volumes.size >= (this.#o.maxVolumes ?? 1000)) {
      throw new CsiRpcError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `${this.#volumes.size} volumes are published already`,
      );
    }
    const podObject = await this.#checkPod(pod);
    const security = podObject.spec?.securityContext ?? {};
    const medium = this.#medium;
    const record: VolumeRecord = {
      volumeId: request.volumeId,
      targetPath: request.targetPath,
      directory: medium === "memory" ? join(this.#o.dataDir, request.volumeId) : request.targetPath,
      medium,
      isReadOnly: request.readonly,
      pod,
      uid: id(security.runAsUser),
      // Only the pod-level securityContext is read (containers' own runAsUser are not).
      gid: requestedGroup ?? id(security.fsGroup) ?? id(security.runAsGroup),
      ...attributes,
    };
    try {
      if (medium === "memory") {
        await mountTmpfs(record.directory);
        await bindMount(record.directory, record.targetPath, record.isReadOnly);
      } else {
        await fs.mkdir(record.targetPath, { recursive: true, mode: 0o755 });
      }
      await this.#save(record);
      this.#volumes.set(record.volumeId, record);
      await this.#sink!.replace(this.name, this.#specs());
      await this.#awaitDelivery(record);
    } catch (err) {
      // Nothing stays of a publish that failed: the kubelet retries it from the start.
      await this.#teardown(record).catch((cleanup) =>
        this.#logger.error("cleaning up after a failed publish failed", {
          volumeId: record.volumeId,
          error: cleanup,
        })
      );
      if (err instanceof CsiRpcError) throw err;
      throw new CsiRpcError(
        GrpcStatus.INTERNAL,
        `publishing ${record.volumeId} failed: ${(err as Error).message}`,
      );
    }
    this.#logger.info("CSI volume published", {
      volumeId: record.volumeId,
      pod: `${pod.namespace}/${pod.name}`,
      spiffeId: this.#idOf(record).toString(),
      targetPath: record.targetPath,
      medium,
      seconds: (performance.now() - started) / 1000,
    });
  }

  #attributes(context: Record<string, string>): { layout: LayoutName; combinedFile?: string } {
    const defaults = this.#o.defaults ?? WORKLOAD_DEFAULTS;
    for (const key of Object.keys(context)) {
      if (!key.startsWith(KUBELET_PREFIX) && !ATTRIBUTES.has(key)) {
        throw invalid(
          `volumeAttributes: unknown attribute ${JSON.stringify(key)}; known: ${[...ATTRIBUTES].join(", ")}`,
        );
      }
    }
    const layout = context[LAYOUT_ANNOTATION] ?? defaults.layout;
    if (!(LAYOUT_NAMES as readonly string[]).includes(layout)) {
      throw invalid(
        `volumeAttributes ${LAYOUT_ANNOTATION}: expected one of ${LAYOUT_NAMES.join(", ")}, got ${
          JSON.stringify(layout)
        }`,
      );
    }
    const combinedFile = context[COMBINED_FILE_ANNOTATION] ?? defaults.combinedFile;
    if (combinedFile !== undefined && !FILE_NAME.test(combinedFile)) {
      throw invalid(
        `volumeAttributes ${COMBINED_FILE_ANNOTATION}: a plain file name, not ${
          JSON.stringify(combinedFile)
        }`,
      );
    }
    return { layout: layout as LayoutName, combinedFile };
  }

  /** Refuses a publish for a pod that is not this one, not on this node, or not running as the account it claims. */
  async #checkPod(pod: VolumeRecord["pod"]): Promise<PodObject> {
    const where = `pod ${pod.namespace}/${pod.name}`;
    let object: PodObject;
    try {
      object = await this.#o.api.get<PodObject>(
        `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`,
      );
    } catch (err) {
      if (err instanceof KubernetesApiError && err.isNotFound) {
        throw new CsiRpcError(GrpcStatus.NOT_FOUND, `${where} does not exist`);
      }
      throw new CsiRpcError(
        GrpcStatus.UNAVAILABLE,
        `cannot check ${where} with the API server: ${(err as Error).message}`,
      );
    }
    if (object.metadata?.uid !== pod.uid) {
      throw new CsiRpcError(
        GrpcStatus.PERMISSION_DENIED,
        `${where} has UID ${object.metadata?.uid}, not ${pod.uid}`,
      );
    }
    if (object.spec?.nodeName !== this.#o.nodeName) {
      throw new CsiRpcError(
        GrpcStatus.PERMISSION_DENIED,
        `${where} runs on node ${object.spec?.nodeName ?? "(none)"}, not on this node ${this.#o.nodeName}`,
      );
    }
    const account = object.spec?.serviceAccountName || "default";
    if (account !== pod.serviceAccountName) {
      throw new CsiRpcError(
        GrpcStatus.PERMISSION_DENIED,
        `${where} runs as service account ${account}, not ${pod.serviceAccountName}`,
      );
    }
    const phase = object.status?.phase;
    if (phase === "Succeeded" || phase === "Failed") {
      throw new CsiRpcError(GrpcStatus.FAILED_PRECONDITION, `${where} has finished (${phase})`);
    }
    return object;
  }

  async #awaitDelivery(record: VolumeRecord): Promise<void> {
    const timeoutMs = this.#o.publishTimeoutMs ?? 60_000;
    try {
      await this.#sink!.delivered(this.#workloadName(record), AbortSignal.timeout(timeoutMs));
    } catch (err) {
      // Not final for the kubelet: it retries the publish with backoff.
      throw new CsiRpcError(
        GrpcStatus.UNAVAILABLE,
        `no certificate for ${this.#idOf(record)} within ${timeoutMs / 1000} s: ${(err as Error).message}`,
      );
    }
  }

  async #unpublish(request: NodeUnpublishVolume): Promise<void> {
    this.#checkTargetPath(request.targetPath);
    const record = this.#volumes.get(request.volumeId);
    if (record && record.targetPath !== request.targetPath) {
      // CSI: a volume not published at this target path is answered OK (the call is
      // idempotent), and its publication at its own path is left as it is.
      this.#logger.warn("CSI unpublish at a path the volume is not published at; nothing done", {
        volumeId: request.volumeId,
        targetPath: request.targetPath,
        publishedAt: record.targetPath,
      });
      return;
    }
    try {
      if (record) await this.#teardown(record);
      else {
        // Not known (published before the state was lost): whatever is at the target goes.
        await unmountAndRemove(request.targetPath);
        await unmountAndRemove(join(this.#o.dataDir, request.volumeId));
      }
    } catch (err) {
      throw new CsiRpcError(
        GrpcStatus.INTERNAL,
        `unpublishing ${request.volumeId} failed: ${(err as Error).message}`,
      );
    }
    this.#logger.info("CSI volume unpublished", {
      volumeId: request.volumeId,
      pod: record ? `${record.pod.namespace}/${record.pod.name}` : undefined,
      targetPath: request.targetPath,
    });
  }

  /** Removes the workload (its files), the mounts, the directories and the record. */
  async #teardown(record: VolumeRecord): Promise<void> {
    if (this.#volumes.delete(record.volumeId)) await this.#sink!.replace(this.name, this.#specs());
    await unmountAndRemove(record.targetPath);
    if (record.medium === "memory") await unmountAndRemove(record.directory);
    await fs.rm(this.#recordPath(record.volumeId), { force: true });
  }

  #recordPath(volumeId: string): string {
    return join(this.#o.stateDir, `${volumeId}.json`);
  }

  async #save(record: VolumeRecord): Promise<void> {
    await writeFileAtomic(this.#recordPath(record.volumeId), JSON.stringify(record), 0o600);
  }

  /** Reads the records of an earlier run; a volume whose memory mount is gone (a reboot) is dropped. */
  async #restore(): Promise<void> {
    for (const file of (await fs.readdir(this.#o.stateDir)).sort()) {
      if (!file.endsWith(".json")) continue;
      const path = join(this.#o.stateDir, file);
      let record: VolumeRecord;
      try {
        record = JSON.parse(await fs.readFile(path, "utf8"));
        if (!VOLUME_ID.test(record.volumeId) || `${record.volumeId}.json` !== file) {
          throw new Error("not a volume record");
        }
        this.#checkTargetPath(record.targetPath, record.pod.uid);
      } catch (err) {
        this.#logger.warn("ignoring an unreadable CSI volume record", {
          file: path,
          error: err,
        });
        continue;
      }
      if (record.medium === "memory" && !(await isMountPoint(record.directory))) {
        this.#logger.info("CSI volume gone while the agent was stopped", { volumeId: record.volumeId });
        await unmountAndRemove(record.targetPath).catch(() => {});
        await fs.rm(path, { force: true });
        continue;
      }
      this.#volumes.set(record.volumeId, record);
    }
  }

  #workloadName(record: VolumeRecord): string {
    return `csi.${record.volumeId}`;
  }

  #idOf(record: VolumeRecord): SpiffeId {
    return SpiffeId.fromServiceAccount(
      this.#trustDomain,
      record.pod.namespace,
      record.pod.serviceAccountName,
    );
  }

  #specs(): WorkloadSpec[] {
    const defaults = this.#o.defaults ?? WORKLOAD_DEFAULTS;
    return [...this.#volumes.values()].map((record) => ({
      name: this.#workloadName(record),
      spiffeId: this.#idOf(record),
      directory: record.directory,
      owner: { uid: record.uid, gid: record.gid },
      // Owned by the pod's group alone, the key must be group-readable for the pod to read it.
      keyFileMode: record.uid === undefined && record.gid !== undefined ? 0o640 : defaults.keyFileMode,
      ttlSeconds: defaults.ttlSeconds,
      keyAlgorithm: defaults.keyAlgorithm,
      layout: record.layout,
      combinedFile: record.combinedFile,
      origin: {
        source: this.name,
        field: `volume ${record.volumeId} of pod ${record.pod.namespace}/${record.pod.name}`,
      },
    }));
  }
}
