// The CSI plugin's protobuf codec against protobufjs (through @grpc/proto-loader, reading
// agent/sources/csi/csi.proto): every schema has the proto's fields, numbers and types; random
// messages encoded by one decode to the same by the other, both ways; and hostile bytes are
// refused with ProtobufInvalid, never another error.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import * as protoLoader from "@grpc/proto-loader";
import { MeshAuthError } from "../../mod.ts";
import { CsiRpcError, GrpcStatus } from "../../agent/sources/csi/grpc-server.ts";
import { CSI_METHODS } from "../../agent/sources/csi/messages.ts";
import {
  decodeMessage,
  encodeMessage,
  type MessageSchema,
  ProtobufInvalid,
} from "../../agent/sources/csi/protobuf.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const definition = protoLoader.loadSync(`${ROOT}agent/sources/csi/csi.proto`, {
  keepCase: false,
  longs: Number,
  enums: Number,
  defaults: true,
  oneofs: false,
});

interface MethodCodec {
  requestSerialize(value: unknown): Uint8Array;
  requestDeserialize(bytes: Uint8Array): Record<string, unknown>;
  responseSerialize(value: unknown): Uint8Array;
  responseDeserialize(bytes: Uint8Array): Record<string, unknown>;
}
const method = (service: string, name: string) =>
  (definition[`csi.v1.${service}`] as unknown as Record<string, MethodCodec>)[name];

interface Descriptor {
  name: string;
  field: Array<{ name: string; number: number; label: string; type: string; typeName: string }>;
  nestedType: Descriptor[];
  options?: { mapEntry?: boolean } | null;
}

const TYPES: Record<string, string> = {
  string: "TYPE_STRING",
  bool: "TYPE_BOOL",
  int64: "TYPE_INT64",
  enum: "TYPE_ENUM",
  map: "TYPE_MESSAGE",
};

/** Checks `schema` against the proto's descriptor, recursively; answers the messages checked. */
function compare(schema: MessageSchema, descriptor: Descriptor, path: string): number {
  const fields = descriptor.field;
  assert.deepEqual(
    schema.fields.map((f) => `${f.name}=${f.number}`).sort(),
    fields.map((f) => `${f.name}=${f.number}`).sort(),
    `${path}: field names and numbers`,
  );
  let checked = 1;
  for (const field of schema.fields) {
    const proto = fields.find((f) => f.number === field.number)!;
    const isMap = descriptor.nestedType.find((n) => n.name === proto.typeName)?.options?.mapEntry === true;
    assert.equal(field.type === "map", isMap, `${path}.${field.name}: map or not`);
    assert.equal(
      proto.label === "LABEL_REPEATED" && !isMap,
      field.repeated === true,
      `${path}.${field.name}: repeated or not`,
    );
    if (typeof field.type === "string") {
      assert.equal(proto.type, TYPES[field.type], `${path}.${field.name}: type`);
    } else {
      assert.equal(proto.type, "TYPE_MESSAGE", `${path}.${field.name}: a message`);
      const name = proto.typeName.split(".").at(-1)!;
      const nested = descriptor.nestedType.find((n) => n.name === name) ??
        (definition[`csi.v1.${proto.typeName}`] ?? definition[proto.typeName] ??
          definition[`google.protobuf.${name}`] ?? definition[`csi.v1.${name}`] as unknown as {
            type: Descriptor;
          })?.type as Descriptor | undefined;
      assert.ok(nested, `${path}.${field.name}: ${proto.typeName} found`);
      checked += compare(field.type, nested!, `${path}.${field.name}`);
    }
  }
  return checked;
}

const text = fc.string({ maxLength: 40, unit: "grapheme" });
const map = fc.dictionary(fc.string({ maxLength: 20, unit: "grapheme" }), text, { maxKeys: 5 });
const publishRequest = fc.record({
  volumeId: text,
  publishContext: map,
  stagingTargetPath: text,
  targetPath: text,
  volumeCapability: fc.option(
    fc.record({
      mount: fc.option(
        fc.record({ fsType: text, mountFlags: fc.array(text, { maxLength: 3 }), volumeMountGroup: text }),
        { nil: undefined },
      ),
      accessMode: fc.option(fc.record({ mode: fc.integer({ min: 0, max: 7 }) }), { nil: undefined }),
    }),
    { nil: undefined },
  ),
  readonly: fc.boolean(),
  secrets: map,
  volumeContext: map,
});

/** protobufjs leaves unset messages out (null); the codec leaves them undefined. */
function normalize(value: unknown): unknown {
  if (value === null || value === undefined) return undefined;
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const n = normalize(v);
      if (n !== undefined) out[k] = n;
    }
    return out;
  }
  return value;
}

describe("the CSI protobuf codec", () => {
  test("every schema has csi.proto's field names, numbers and types", () => {
    let checked = 0;
    for (const [service, methods] of Object.entries(CSI_METHODS)) {
      for (const [name, [request, response]] of Object.entries(methods)) {
        for (const schema of [request, response]) {
          const proto = definition[schema.name] as unknown as { type: Descriptor } | undefined;
          assert.ok(proto, `${service}/${name}: ${schema.name} is in csi.proto`);
          checked += compare(schema, proto.type, schema.name);
        }
      }
    }
    assert.ok(checked >= 20, `${checked} messages checked`);
  });

  test("a NodePublishVolumeRequest protobufjs encodes decodes the same, and back", () => {
    const codec = method("Node", "NodePublishVolume");
    const [schema] = CSI_METHODS.Node.NodePublishVolume;
    fc.assert(
      fc.property(publishRequest, (request) => {
        const ours = decodeMessage(schema, codec.requestSerialize(request));
        assert.deepEqual(
          normalize(ours),
          normalize(codec.requestDeserialize(codec.requestSerialize(request))),
        );
        const theirs = codec.requestDeserialize(encodeMessage(schema, ours));
        assert.deepEqual(normalize(theirs), normalize(ours));
      }),
      { numRuns: 300 },
    );
  });

  test("the plugin's answers decode in protobufjs as sent", () => {
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ["Node", "NodeGetInfo", {
        nodeId: "node-a",
        maxVolumesPerNode: 110,
        accessibleTopology: { segments: { zone: "a" } },
      }],
      ["Identity", "Probe", { ready: { value: true } }],
      ["Identity", "Probe", { ready: { value: false } }],
      ["Identity", "GetPluginInfo", { name: "meshauth.io", vendorVersion: "0.1.0", manifest: { a: "b" } }],
      ["Identity", "GetPluginCapabilities", { capabilities: [{ service: { type: 1 } }] }],
      ["Node", "NodeGetCapabilities", { capabilities: [{ rpc: { type: 6 } }, { rpc: { type: 0 } }] }],
    ];
    for (const [service, name, answer] of cases) {
      const [, schema] =
        (CSI_METHODS as unknown as Record<string, Record<string, [MessageSchema, MessageSchema]>>)[
          service
        ][name];
      const decoded = method(service, name).responseDeserialize(encodeMessage(schema, answer));
      assert.deepEqual(normalize(decoded), normalize(answer), `${service}/${name}`);
    }
    // A BoolValue set to false is present (an empty message), not absent.
    const probe = method("Identity", "Probe").responseDeserialize(
      encodeMessage(CSI_METHODS.Identity.Probe[1], { ready: { value: false } }),
    );
    assert.deepEqual(probe.ready, { value: false });
  });

  test("fields a newer kubelet sends are skipped", () => {
    const [schema] = CSI_METHODS.Node.NodeUnpublishVolume;
    const known = encodeMessage(schema, { volumeId: "v", targetPath: "/t" });
    // field 9 varint, field 10 fixed64, field 11 length-delimited, field 12 fixed32
    const extra = Uint8Array.from([
      0x48,
      0x96,
      0x01,
      0x51,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
      0x5a,
      2,
      0x68,
      0x69,
      0x65,
      1,
      2,
      3,
      4,
    ]);
    const decoded = decodeMessage(schema, Uint8Array.from([...known, ...extra]));
    assert.deepEqual(decoded, { volumeId: "v", targetPath: "/t" });
  });

  test("truncated values, wrong wire types, groups and bad UTF-8 are refused with ProtobufInvalid", () => {
    const [schema] = CSI_METHODS.Node.NodeUnpublishVolume;
    const bad: Array<[string, number[]]> = [
      ["a length past the end", [0x0a, 5, 0x61]],
      ["a truncated varint", [0x08, 0x80]],
      ["a string sent as a varint", [0x08, 1]],
      ["a group", [0x0b]],
      ["field number 0", [0x02, 0]],
      ["bad UTF-8", [0x0a, 2, 0xc3, 0x28]],
      ["a varint of 11 bytes", [0x48, ...Array(10).fill(0xff), 0x01]],
    ];
    for (const [what, bytes] of bad) {
      assert.throws(() => decodeMessage(schema, Uint8Array.from(bytes)), ProtobufInvalid, what);
    }
  });

  test("random bytes decode or are refused with ProtobufInvalid, never anything else", () => {
    const [schema] = CSI_METHODS.Node.NodePublishVolume;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeMessage(schema, bytes);
        } catch (err) {
          assert.ok(err instanceof ProtobufInvalid, String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("the CSI plugin's refusals", () => {
  test("a CsiRpcError is a MeshAuthError with the stable code ERR_CSI_RPC and its gRPC status", () => {
    const err = new CsiRpcError(GrpcStatus.INVALID_ARGUMENT, "volume_context lacks the pod's name");
    assert.ok(err instanceof MeshAuthError);
    assert.equal(err.code, "ERR_CSI_RPC");
    assert.equal(CsiRpcError.code, "ERR_CSI_RPC");
    assert.equal(err.name, "CsiRpcError");
    assert.equal(err.status, 3);
  });
});
