/**
 * A proto3 wire codec for the few message shapes the CSI node plugin speaks, driven by
 * schemas that mirror `csi.proto` field for field: strings, bools, 64-bit integers, enums,
 * nested and repeated messages, repeated strings and `map<string, string>`. Unknown fields are
 * skipped (a newer kubelet may send more), a field sent with the wrong wire type, a truncated
 * value, a group, or a string that is not UTF-8 is refused with {@link ProtobufInvalid}, and
 * nesting is bounded by the schemas (unknown nested messages are skipped, never parsed).
 * Decoded messages are plain objects with the fields' camelCase names, defaults filled in.
 *
 * @module
 */

import { MeshAuthError } from "../../../mod.ts";

/** The type of one field. */
export type FieldType = "string" | "bool" | "int64" | "enum" | "map" | MessageSchema;

/** One field of a message: its camelCase name, number and type. */
export interface FieldSchema {
  name: string;
  number: number;
  type: FieldType;
  repeated?: boolean;
}

/** A message: its fully qualified name (for errors) and its fields. */
export interface MessageSchema {
  name: string;
  fields: readonly FieldSchema[];
}

/** A decoded message. */
export type Message = Record<string, unknown>;

/** Bytes that are not a valid encoding of the expected message. */
export class ProtobufInvalid extends MeshAuthError {
  /** Stable code of this class: `ERR_PROTOBUF_INVALID`. */
  static override code: string = "ERR_PROTOBUF_INVALID";
  /** `message` names the message type, what was wrong and at which byte. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtobufInvalid";
  }
}

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

function wireTypeOf(type: FieldType): number {
  return type === "bool" || type === "int64" || type === "enum" ? VARINT : LENGTH_DELIMITED;
}

class Reader {
  offset = 0;
  constructor(readonly bytes: Uint8Array, readonly message: string) {}

  get isDone(): boolean {
    return this.offset >= this.bytes.length;
  }

  fail(reason: string): never {
    throw new ProtobufInvalid(`${this.message}: ${reason} at byte ${this.offset}`);
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.offset >= this.bytes.length) this.fail("a truncated varint");
      const byte = this.bytes[this.offset++];
      // Beyond 2^53 precision is lost; no field this codec reads is that large.
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (!(byte & 0x80)) return value;
    }
    return this.fail("a varint longer than 10 bytes");
  }

  bytesOf(): Uint8Array {
    const length = this.varint();
    if (length > this.bytes.length - this.offset) this.fail(`a length of ${length} past the end`);
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  skip(wireType: number): void {
    if (wireType === VARINT) this.varint();
    else if (wireType === LENGTH_DELIMITED) this.bytesOf();
    else if (wireType === FIXED64 || wireType === FIXED32) {
      const size = wireType === FIXED64 ? 8 : 4;
      if (size > this.bytes.length - this.offset) this.fail("a truncated fixed-size value");
      this.offset += size;
    } else this.fail(`wire type ${wireType} (groups are not proto3)`);
  }
}

function defaultOf(field: FieldSchema): unknown {
  if (field.repeated) return [];
  switch (field.type) {
    case "string":
      return "";
    case "bool":
      return false;
    case "int64":
    case "enum":
      return 0;
    case "map":
      return {};
    default:
      return undefined;
  }
}

/** Decodes `bytes` as `schema`. */
export function decodeMessage(schema: MessageSchema, bytes: Uint8Array): Message {
  const reader = new Reader(bytes, schema.name);
  const out: Message = {};
  for (const field of schema.fields) out[field.name] = defaultOf(field);
  const byNumber = new Map(schema.fields.map((f) => [f.number, f]));
  while (!reader.isDone) {
    const tag = reader.varint();
    const number = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (number === 0) reader.fail("field number 0");
    const field = byNumber.get(number);
    if (!field) {
      reader.skip(wireType);
      continue;
    }
    if (wireType !== wireTypeOf(field.type)) {
      reader.fail(`field ${field.name} (${number}) with wire type ${wireType}`);
    }
    const value = readValue(reader, field);
    if (field.type === "map") {
      const [key, entry] = value as [string, string];
      (out[field.name] as Record<string, string>)[key] = entry;
    } else if (field.repeated) (out[field.name] as unknown[]).push(value);
    else out[field.name] = value;
  }
  return out;
}

const MAP_ENTRY: MessageSchema = {
  name: "map entry",
  fields: [{ name: "key", number: 1, type: "string" }, { name: "value", number: 2, type: "string" }],
};

function readValue(reader: Reader, field: FieldSchema): unknown {
  switch (field.type) {
    case "bool":
      return reader.varint() !== 0;
    case "int64":
    case "enum":
      return reader.varint();
    case "string":
      try {
        return utf8.decode(reader.bytesOf());
      } catch (err) {
        if (err instanceof ProtobufInvalid) throw err;
        return reader.fail(`field ${field.name} is not UTF-8`);
      }
    case "map": {
      const entry = decodeMessage(MAP_ENTRY, reader.bytesOf());
      return [entry.key, entry.value];
    }
    default:
      return decodeMessage(field.type, reader.bytesOf());
  }
}

class Writer {
  readonly chunks: Uint8Array[] = [];
  length = 0;

  push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  varint(value: number): void {
    const out: number[] = [];
    // Negative enum values are sign-extended to 64 bits, ten bytes, as protobuf does.
    let v = value < 0 ? 2n ** 64n + BigInt(value) : BigInt(value);
    do {
      const byte = Number(v & 0x7fn);
      v >>= 7n;
      out.push(v > 0n ? byte | 0x80 : byte);
    } while (v > 0n);
    this.push(Uint8Array.from(out));
  }

  tag(number: number, wireType: number): void {
    this.varint(number * 8 + wireType);
  }

  delimited(number: number, bytes: Uint8Array): void {
    this.tag(number, LENGTH_DELIMITED);
    this.varint(bytes.length);
    this.push(bytes);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}

/**
 * Encodes `message` as `schema`. Fields at their default (empty string, false, 0, empty list or
 * map) are left out, as proto3 does; a nested message is written whenever it is present, even
 * empty (that is how a oneof or a wrapper says it is set).
 */
export function encodeMessage(schema: MessageSchema, message: Message): Uint8Array {
  const writer = new Writer();
  for (const field of schema.fields) {
    const value = message[field.name];
    if (value === undefined || value === null) continue;
    if (field.type === "map") {
      for (const [key, entry] of Object.entries(value as Record<string, string>)) {
        writer.delimited(field.number, encodeMessage(MAP_ENTRY, { key, value: entry }));
      }
    } else if (field.repeated) {
      for (const item of value as unknown[]) writeValue(writer, field, item, true);
    } else writeValue(writer, field, value, false);
  }
  return writer.finish();
}

function writeValue(writer: Writer, field: FieldSchema, value: unknown, isRepeated: boolean): void {
  switch (field.type) {
    case "bool":
      if (value || isRepeated) {
        writer.tag(field.number, VARINT);
        writer.varint(value ? 1 : 0);
      }
      return;
    case "int64":
    case "enum":
      if (value !== 0 || isRepeated) {
        writer.tag(field.number, VARINT);
        writer.varint(value as number);
      }
      return;
    case "string":
      if (value !== "" || isRepeated) writer.delimited(field.number, utf8Encoder.encode(value as string));
      return;
    case "map":
      return;
    default:
      writer.delimited(field.number, encodeMessage(field.type, value as Message));
  }
}
