/**
 * The CSI messages the node plugin speaks, as schemas for the codec in `protobuf.ts`, each one
 * field for field the message of the same name in `csi.proto` (package `csi.v1`), and the
 * methods of the Identity and Node services that use them.
 *
 * @module
 */

import type { MessageSchema } from "./protobuf.ts";

const EMPTY = (name: string): MessageSchema => ({ name: `csi.v1.${name}`, fields: [] });

export const GetPluginInfoRequest = EMPTY("GetPluginInfoRequest");
export const GetPluginInfoResponse: MessageSchema = {
  name: "csi.v1.GetPluginInfoResponse",
  fields: [
    { name: "name", number: 1, type: "string" },
    { name: "vendorVersion", number: 2, type: "string" },
    { name: "manifest", number: 3, type: "map" },
  ],
};

export const GetPluginCapabilitiesRequest = EMPTY("GetPluginCapabilitiesRequest");
const PluginCapabilityService: MessageSchema = {
  name: "csi.v1.PluginCapability.Service",
  fields: [{ name: "type", number: 1, type: "enum" }],
};
const PluginCapabilityVolumeExpansion: MessageSchema = {
  name: "csi.v1.PluginCapability.VolumeExpansion",
  fields: [{ name: "type", number: 1, type: "enum" }],
};
const PluginCapability: MessageSchema = {
  name: "csi.v1.PluginCapability",
  fields: [
    { name: "service", number: 1, type: PluginCapabilityService },
    { name: "volumeExpansion", number: 2, type: PluginCapabilityVolumeExpansion },
  ],
};
export const GetPluginCapabilitiesResponse: MessageSchema = {
  name: "csi.v1.GetPluginCapabilitiesResponse",
  fields: [{ name: "capabilities", number: 1, type: PluginCapability, repeated: true }],
};

export const ProbeRequest = EMPTY("ProbeRequest");
const BoolValue: MessageSchema = {
  name: "google.protobuf.BoolValue",
  fields: [{ name: "value", number: 1, type: "bool" }],
};
export const ProbeResponse: MessageSchema = {
  name: "csi.v1.ProbeResponse",
  fields: [{ name: "ready", number: 1, type: BoolValue }],
};

const MountVolume: MessageSchema = {
  name: "csi.v1.VolumeCapability.MountVolume",
  fields: [
    { name: "fsType", number: 1, type: "string" },
    { name: "mountFlags", number: 2, type: "string", repeated: true },
    { name: "volumeMountGroup", number: 3, type: "string" },
  ],
};
const AccessMode: MessageSchema = {
  name: "csi.v1.VolumeCapability.AccessMode",
  fields: [{ name: "mode", number: 1, type: "enum" }],
};
const VolumeCapability: MessageSchema = {
  name: "csi.v1.VolumeCapability",
  fields: [
    { name: "block", number: 1, type: EMPTY("VolumeCapability.BlockVolume") },
    { name: "mount", number: 2, type: MountVolume },
    { name: "accessMode", number: 3, type: AccessMode },
  ],
};

/** `VolumeCapability.AccessMode.Mode` values that publish a volume to one node. */
export const SINGLE_NODE_ACCESS_MODES = new Set([
  1, // SINGLE_NODE_WRITER
  2, // SINGLE_NODE_READER_ONLY
  6, // SINGLE_NODE_SINGLE_WRITER
  7, // SINGLE_NODE_MULTI_WRITER
]);

export const NodePublishVolumeRequest: MessageSchema = {
  name: "csi.v1.NodePublishVolumeRequest",
  fields: [
    { name: "volumeId", number: 1, type: "string" },
    { name: "publishContext", number: 2, type: "map" },
    { name: "stagingTargetPath", number: 3, type: "string" },
    { name: "targetPath", number: 4, type: "string" },
    { name: "volumeCapability", number: 5, type: VolumeCapability },
    { name: "readonly", number: 6, type: "bool" },
    { name: "secrets", number: 7, type: "map" },
    { name: "volumeContext", number: 8, type: "map" },
  ],
};
export const NodePublishVolumeResponse = EMPTY("NodePublishVolumeResponse");

export const NodeUnpublishVolumeRequest: MessageSchema = {
  name: "csi.v1.NodeUnpublishVolumeRequest",
  fields: [
    { name: "volumeId", number: 1, type: "string" },
    { name: "targetPath", number: 2, type: "string" },
  ],
};
export const NodeUnpublishVolumeResponse = EMPTY("NodeUnpublishVolumeResponse");

export const NodeGetCapabilitiesRequest = EMPTY("NodeGetCapabilitiesRequest");
const NodeServiceCapabilityRpc: MessageSchema = {
  name: "csi.v1.NodeServiceCapability.RPC",
  fields: [{ name: "type", number: 1, type: "enum" }],
};
const NodeServiceCapability: MessageSchema = {
  name: "csi.v1.NodeServiceCapability",
  fields: [{ name: "rpc", number: 1, type: NodeServiceCapabilityRpc }],
};
export const NodeGetCapabilitiesResponse: MessageSchema = {
  name: "csi.v1.NodeGetCapabilitiesResponse",
  fields: [{ name: "capabilities", number: 1, type: NodeServiceCapability, repeated: true }],
};

export const NodeGetInfoRequest = EMPTY("NodeGetInfoRequest");
const Topology: MessageSchema = {
  name: "csi.v1.Topology",
  fields: [{ name: "segments", number: 1, type: "map" }],
};
export const NodeGetInfoResponse: MessageSchema = {
  name: "csi.v1.NodeGetInfoResponse",
  fields: [
    { name: "nodeId", number: 1, type: "string" },
    { name: "maxVolumesPerNode", number: 2, type: "int64" },
    { name: "accessibleTopology", number: 3, type: Topology },
  ],
};

/** A decoded NodePublishVolumeRequest. */
export interface NodePublishVolume {
  volumeId: string;
  publishContext: Record<string, string>;
  stagingTargetPath: string;
  targetPath: string;
  volumeCapability?: {
    block?: Record<string, never>;
    mount?: { fsType: string; mountFlags: string[]; volumeMountGroup: string };
    accessMode?: { mode: number };
  };
  readonly: boolean;
  secrets: Record<string, string>;
  volumeContext: Record<string, string>;
}

/** A decoded NodeUnpublishVolumeRequest. */
export interface NodeUnpublishVolume {
  volumeId: string;
  targetPath: string;
}

/** The RPCs served: service, method, request and response. */
export const CSI_METHODS = {
  Identity: {
    GetPluginInfo: [GetPluginInfoRequest, GetPluginInfoResponse],
    GetPluginCapabilities: [GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse],
    Probe: [ProbeRequest, ProbeResponse],
  },
  Node: {
    NodePublishVolume: [NodePublishVolumeRequest, NodePublishVolumeResponse],
    NodeUnpublishVolume: [NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse],
    NodeGetCapabilities: [NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse],
    NodeGetInfo: [NodeGetInfoRequest, NodeGetInfoResponse],
  },
} as const;
