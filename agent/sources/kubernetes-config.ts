/**
 * The `kubernetes:` section of the agent's configuration: the API server it reads pods from,
 * the pod source ({@link KubernetesPodSource}) and the CSI node plugin ({@link CsiNodePlugin}).
 * Read with the configuration's one {@link FieldReader}; every key is listed in docs/agent.md.
 *
 * @module
 */

import type { FieldReader } from "../../internal/mod.ts";

/** How a CSI volume's files are kept. */
export type CsiVolumeMedium = "auto" | "memory" | "disk";

/** The validated `kubernetes:` section. */
export interface AgentKubernetesConfig {
  /** The API server; `{}` in a pod means its own service account (in-cluster). */
  api: {
    kubeconfig?: string;
    context?: string;
    requestTimeoutSeconds: number;
  };
  /** Pods of this node that opt in by annotation get a host directory. */
  pods: {
    enabled: boolean;
    /** Each pod's files go to `<directory>/<pod UID>`. */
    directory: string;
  };
  /** The CSI node plugin for ephemeral inline volumes. */
  csi: {
    enabled: boolean;
    driverName: string;
    /** The Unix socket the kubelet (and node-driver-registrar) call. */
    socket: string;
    /** The kubelet's root directory: a target path must be one of its pods' volume paths. */
    kubeletDir: string;
    /** Where each volume's memory file system is mounted before it is bound to its target. */
    dataDir: string;
    medium: CsiVolumeMedium;
    /** How long NodePublishVolume waits for the first certificate before the kubelet retries. */
    publishTimeoutSeconds: number;
    maxVolumes: number;
  };
}

const DRIVER_NAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/;

/** Reads `kubernetes:`; undefined when the section is absent. */
export function readAgentKubernetes(fields: FieldReader, value: unknown): AgentKubernetesConfig | undefined {
  if (value === undefined) return undefined;
  const p = "kubernetes";
  const k = fields.obj(p, value, ["api", "pods", "csi"]);
  const a = fields.obj(`${p}.api`, k.api, ["kubeconfig", "context", "requestTimeoutSeconds"]);
  const api = {
    kubeconfig: a.kubeconfig === undefined ? undefined : fields.path(`${p}.api.kubeconfig`, a.kubeconfig),
    context: fields.optionalStr(`${p}.api.context`, a.context),
    requestTimeoutSeconds: fields.int(`${p}.api.requestTimeoutSeconds`, a.requestTimeoutSeconds, 10, 1, 300),
  };
  const pr = fields.obj(`${p}.pods`, k.pods, ["enabled", "directory"]);
  const pods = {
    enabled: fields.bool(`${p}.pods.enabled`, pr.enabled, false),
    directory: fields.path(`${p}.pods.directory`, pr.directory, "/var/run/meshauth/pods"),
  };
  const c = fields.obj(`${p}.csi`, k.csi, [
    "enabled",
    "driverName",
    "socket",
    "kubeletDir",
    "dataDir",
    "medium",
    "publishTimeoutSeconds",
    "maxVolumes",
  ]);
  const driverName = fields.str(`${p}.csi.driverName`, c.driverName, "meshauth.io");
  if (!DRIVER_NAME.test(driverName)) {
    fields.problem(
      `${p}.csi.driverName: a CSI driver name is at most 63 letters, digits, "-" and ".", got ${
        JSON.stringify(driverName)
      }`,
    );
  }
  const csi = {
    enabled: fields.bool(`${p}.csi.enabled`, c.enabled, false),
    driverName,
    socket: fields.path(`${p}.csi.socket`, c.socket, "/csi/csi.sock"),
    kubeletDir: fields.path(`${p}.csi.kubeletDir`, c.kubeletDir, "/var/lib/kubelet"),
    dataDir: fields.path(`${p}.csi.dataDir`, c.dataDir, "/csi/volumes"),
    medium: fields.oneOf<CsiVolumeMedium>(`${p}.csi.medium`, c.medium, ["auto", "memory", "disk"], "auto"),
    publishTimeoutSeconds: fields.int(`${p}.csi.publishTimeoutSeconds`, c.publishTimeoutSeconds, 60, 1, 600),
    maxVolumes: fields.int(`${p}.csi.maxVolumes`, c.maxVolumes, 1000, 1, 100_000),
  };
  return { api, pods, csi };
}
