/**
 * A strict DER reader: the only ASN.1 parsing in the core (`der-writer.ts` encodes).
 *
 * The reader refuses BER (indefinite lengths, non-minimal lengths, high tag numbers it does
 * not need) because X.509 signatures cover DER bytes and lenient parsing is where
 * certificate-confusion attacks live. It never copies: nodes point into the input buffer.
 * @module
 */

import { MalformedInput } from "../errors.ts";

/** Universal tags used by X.509. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  NUMERIC_STRING: 0x12,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One TLV inside a buffer. `tag` is the identifier octet (class, constructed bit, number). */
export interface DerNode {
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly contentStart: number;
  /** Offset just past the last content octet. */
  readonly end: number;
  readonly buffer: Uint8Array;
}

/** Context-specific tag number `n`, primitive or constructed. */
export function contextTag(n: number, constructed: boolean): number {
  return 0x80 | (constructed ? 0x20 : 0) | n;
}

export function isConstructed(node: DerNode): boolean {
  return (node.tag & 0x20) !== 0;
}

/** The content octets of a node. */
export function contentOf(node: DerNode): Uint8Array {
  return node.buffer.subarray(node.contentStart, node.end);
}

/** The whole TLV encoding of a node. */
export function encodingOf(node: DerNode): Uint8Array {
  return node.buffer.subarray(node.start, node.end);
}

/** Reads one TLV at `offset`, within `limit`. */
export function readNode(
  buffer: Uint8Array,
  offset = 0,
  limit = buffer.length,
  what = "DER",
): DerNode {
  if (offset >= limit) throw new MalformedInput(what, "unexpected end of data");
  const tag = buffer[offset];
  if ((tag & 0x1f) === 0x1f) throw new MalformedInput(what, "high tag numbers are not supported");
  if ((tag & 0xc0) === 0) {
    // X.690 8.1.2.5 and 10.2: in DER a universal type has one form. SEQUENCE, SET, EXTERNAL,
    // EMBEDDED PDV and CHARACTER STRING are constructed; every other (strings included) is
    // primitive, and tag 0 is end-of-contents, which DER never has.
    const number = tag & 0x1f;
    const constructed = number === 16 || number === 17 || number === 8 || number === 11 || number === 29;
    if (number === 0) throw new MalformedInput(what, "end-of-contents octets are not DER");
    if (((tag & 0x20) !== 0) !== constructed) {
      throw new MalformedInput(
        what,
        `universal tag ${number} must be ${constructed ? "constructed" : "primitive"} in DER`,
      );
    }
  }
  let p = offset + 1;
  if (p >= limit) throw new MalformedInput(what, "truncated length");
  let length = buffer[p++];
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0) throw new MalformedInput(what, "indefinite length is not DER");
    if (count > 4) throw new MalformedInput(what, "length too large");
    if (p + count > limit) throw new MalformedInput(what, "truncated length");
    if (buffer[p] === 0) throw new MalformedInput(what, "non-minimal length encoding");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buffer[p++];
    if (length < 0x80) throw new MalformedInput(what, "non-minimal length encoding");
  }
  const end = p + length;
  if (end > limit) throw new MalformedInput(what, "content runs past the end of its container");
  return { tag, start: offset, contentStart: p, end, buffer };
}

/** Parses a buffer that must hold exactly one TLV: trailing bytes are an error. */
export function parseDer(buffer: Uint8Array, what = "DER"): DerNode {
  const node = readNode(buffer, 0, buffer.length, what);
  if (node.end !== buffer.length) {
    throw new MalformedInput(what, `${buffer.length - node.end} trailing bytes after the DER value`);
  }
  return node;
}

/**
 * The node itself, or MalformedInput naming `field` when it is absent: destructuring a
 * SEQUENCE that a peer made too short yields undefined, which must not reach `.tag`.
 */
export function present(node: DerNode | undefined, field: string): DerNode {
  if (!node) throw new MalformedInput(field, "missing");
  return node;
}

/** The children of a constructed node, in order. */
export function childrenOf(node: DerNode | undefined, what = "DER"): DerNode[] {
  node = present(node, what);
  if (!isConstructed(node)) throw new MalformedInput(what, "expected a constructed value");
  const out: DerNode[] = [];
  let p = node.contentStart;
  while (p < node.end) {
    const child = readNode(node.buffer, p, node.end, what);
    out.push(child);
    p = child.end;
  }
  return out;
}

/** Asserts a node's tag, naming the field in the error. */
export function expectTag(node: DerNode | undefined, tag: number, field: string): DerNode {
  node = present(node, field);
  if (node.tag !== tag) {
    throw new MalformedInput(
      field,
      `expected tag 0x${tag.toString(16)}, found 0x${node.tag.toString(16)}`,
    );
  }
  return node;
}

/** A SEQUENCE's children, checking the tag. */
export function sequenceOf(node: DerNode | undefined, field: string): DerNode[] {
  return childrenOf(expectTag(node, Tag.SEQUENCE, field), field);
}

/**
 * DER INTEGER content as a bigint; refuses non-minimal encodings and more than `maxOctets`.
 * The caller names the bound its field allows (a CRL number: 20 octets and a sign octet), so a
 * peer's 100 KB INTEGER costs one comparison, not seconds of CPU.
 */
export function readBigInt(node: DerNode | undefined, field: string, maxOctets: number): bigint {
  const bytes = integerBytes(node, field, maxOctets);
  // One hex parse: linear, where shifting a byte at a time is quadratic in the length.
  let hex = "";
  for (const b of bytes) hex += HEX[b];
  let value = BigInt(`0x${hex}`);
  if (bytes[0] & 0x80) value -= 1n << BigInt(bytes.length * 8);
  return value;
}
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * DER INTEGER content octets (two's complement, minimal), after checking the encoding and,
 * with `maxOctets`, the length.
 */
export function integerBytes(node: DerNode | undefined, field = "INTEGER", maxOctets = Infinity): Uint8Array {
  node = present(node, field);
  if (node.tag !== Tag.INTEGER && node.tag !== Tag.ENUMERATED && (node.tag & 0xc0) === 0) {
    throw new MalformedInput(field, "expected an INTEGER");
  }
  const bytes = contentOf(node);
  if (bytes.length === 0) throw new MalformedInput(field, "empty INTEGER");
  if (
    bytes.length > 1 &&
    ((bytes[0] === 0 && (bytes[1] & 0x80) === 0) || (bytes[0] === 0xff && (bytes[1] & 0x80) !== 0))
  ) {
    throw new MalformedInput(field, "non-minimal INTEGER encoding");
  }
  if (bytes.length > maxOctets) {
    throw new MalformedInput(field, `INTEGER of ${bytes.length} octets (at most ${maxOctets} here)`);
  }
  return bytes;
}

/** A small non-negative INTEGER (at most 2^31 - 1, so at most 4 octets and a sign octet) as a number. */
export function readSmallInt(node: DerNode | undefined, field = "INTEGER"): number {
  const bytes = integerBytes(node, field);
  if (bytes.length > 5) {
    throw new MalformedInput(field, `integer out of range (INTEGER of ${bytes.length} octets)`);
  }
  let value = 0;
  for (const b of bytes) value = value * 256 + b;
  if (bytes[0] & 0x80 || value > 0x7fffffff) throw new MalformedInput(field, "integer out of range");
  return value;
}

/** OBJECT IDENTIFIER in dotted form. */
export function readOid(node: DerNode | undefined, field = "OBJECT IDENTIFIER"): string {
  node = expectTag(node, Tag.OID, field);
  const bytes = contentOf(node);
  if (bytes.length === 0) throw new MalformedInput(field, "empty OID");
  if (bytes.length > MAX_OID_OCTETS) {
    throw new MalformedInput(field, `OID of ${bytes.length} octets (at most ${MAX_OID_OCTETS})`);
  }
  // The same few dozen OIDs recur in every certificate: remember their text.
  const key = latin1(bytes);
  const known = oidText.get(key);
  if (known) return known;
  const arcs: Array<number | bigint> = [];
  let value = 0;
  let big: bigint | undefined;
  let fresh = true;
  let arcStart = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (fresh && b === 0x80) throw new MalformedInput(field, "non-minimal OID arc");
    if (fresh) arcStart = i;
    fresh = false;
    // A 128-bit UUID arc (2.25) takes 19 octets; longer arcs exist only to cost CPU.
    if (i - arcStart >= MAX_OID_ARC_OCTETS) {
      throw new MalformedInput(field, `OID arc longer than ${MAX_OID_ARC_OCTETS} octets`);
    }
    // Arcs past 2^46 (UUID OIDs under 2.25) continue as bigint.
    if (big === undefined && value >= 2 ** 46) big = BigInt(value);
    if (big === undefined) value = value * 128 + (b & 0x7f);
    else big = (big << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(big ?? value);
      value = 0;
      big = undefined;
      fresh = true;
    } else if (i === bytes.length - 1) {
      throw new MalformedInput(field, "truncated OID arc");
    }
  }
  const head = arcs[0];
  let text: string;
  if (typeof head === "number") {
    const first = head < 80 ? Math.floor(head / 40) : 2;
    text = [first, head - first * 40, ...arcs.slice(1)].join(".");
  } else {
    text = ["2", String(head - 80n), ...arcs.slice(1)].join(".");
  }
  if (oidText.size < 4096) oidText.set(key, text);
  return text;
}
const oidText = new Map<string, string>();
/** Longest OID and longest arc read: far past any registered OID, short of costing CPU. */
const MAX_OID_OCTETS = 256;
const MAX_OID_ARC_OCTETS = 20;

/** BOOLEAN: DER allows only 0x00 and 0xFF. */
export function readBoolean(node: DerNode | undefined, field = "BOOLEAN"): boolean {
  node = expectTag(node, Tag.BOOLEAN, field);
  const bytes = contentOf(node);
  if (bytes.length !== 1 || (bytes[0] !== 0 && bytes[0] !== 0xff)) {
    throw new MalformedInput(field, "BOOLEAN must be one octet, 0x00 or 0xFF");
  }
  return bytes[0] === 0xff;
}

/** BIT STRING: the unused-bit count and the bit bytes. */
export function readBitString(
  node: DerNode | undefined,
  field = "BIT STRING",
): { unusedBits: number; bytes: Uint8Array } {
  node = present(node, field);
  const content = contentOf(node);
  if ((node.tag & 0x1f) !== Tag.BIT_STRING && (node.tag & 0xc0) === 0) {
    throw new MalformedInput(field, "expected a BIT STRING");
  }
  if (content.length === 0) throw new MalformedInput(field, "empty BIT STRING");
  const unusedBits = content[0];
  if (unusedBits > 7 || (content.length === 1 && unusedBits !== 0)) {
    throw new MalformedInput(field, "invalid unused-bit count");
  }
  const bytes = content.subarray(1);
  if (unusedBits && (bytes[bytes.length - 1] & ((1 << unusedBits) - 1)) !== 0) {
    throw new MalformedInput(field, "unused bits must be zero in DER");
  }
  return { unusedBits, bytes };
}

/** Bit `i` (0 = most significant bit of the first byte) of a BIT STRING. */
export function bitAt(bytes: Uint8Array, i: number): boolean {
  const byte = bytes[i >> 3];
  return byte !== undefined && (byte & (0x80 >> (i & 7))) !== 0;
}

const TIME_UTC = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;
const TIME_GENERALIZED = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/**
 * UTCTime or GeneralizedTime in the RFC 5280 4.1.2.5 profile (seconds, `Z`, no fractions).
 * With `utcTimeThrough2049`, a GeneralizedTime for a year 1950 to 2049 is refused, as RFC
 * 5280 4.1.2.5 and 5.1.2.4 require UTCTime there.
 */
export function readTime(node: DerNode | undefined, field = "Time", utcTimeThrough2049 = false): Date {
  node = present(node, field);
  // YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ: anything longer is refused before it is read as text.
  if (node.end - node.contentStart > 15) throw new MalformedInput(field, "time longer than 15 octets");
  const text = latin1(contentOf(node));
  let m: RegExpExecArray | null;
  let year: number;
  if (node.tag === Tag.UTC_TIME) {
    m = TIME_UTC.exec(text);
    if (!m) throw new MalformedInput(field, `UTCTime ${JSON.stringify(text)} is not YYMMDDHHMMSSZ`);
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (node.tag === Tag.GENERALIZED_TIME) {
    m = TIME_GENERALIZED.exec(text);
    if (!m) {
      throw new MalformedInput(
        field,
        `GeneralizedTime ${JSON.stringify(text)} is not YYYYMMDDHHMMSSZ`,
      );
    }
    year = Number(m[1]);
    if (utcTimeThrough2049 && year >= 1950 && year < 2050) {
      throw new MalformedInput(field, `GeneralizedTime for ${year}: dates through 2049 are UTCTime`);
    }
  } else {
    throw new MalformedInput(field, "expected UTCTime or GeneralizedTime");
  }
  const [month, day, hour, minute, second] = m.slice(2).map(Number);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const date = new Date(ms);
  if (
    month < 1 || month > 12 || date.getUTCDate() !== day || hour > 23 || minute > 59 ||
    second > 59 || year < 0
  ) {
    throw new MalformedInput(field, `${JSON.stringify(text)} is not a valid date`);
  }
  if (year < 100) date.setUTCFullYear(year);
  return date;
}

/**
 * Decodes a character string type's content: UTF8String, NumericString, PrintableString and
 * IA5String with their character sets checked, TeletexString as Latin-1 (what issuers mean by it in
 * practice), BMPString and UniversalString without surrogates or code points past U+10FFFF.
 * Anything else is not a string here, whatever its bytes look like.
 */
export function readString(node: DerNode | undefined, field = "string"): string {
  node = present(node, field);
  const bytes = contentOf(node);
  switch (node.tag) {
    case Tag.UTF8_STRING:
      try {
        return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch (cause) {
        throw new MalformedInput(field, "invalid UTF-8", { cause });
      }
    case Tag.NUMERIC_STRING:
      for (const b of bytes) {
        if (b !== 0x20 && (b < 0x30 || b > 0x39)) {
          throw new MalformedInput(field, `NumericString holds 0x${b.toString(16)}, not a digit or space`);
        }
      }
      return latin1(bytes);
    case Tag.PRINTABLE_STRING:
      // X.680 41.4: A-Z a-z 0-9 space ' ( ) + , - . / : = ?
      for (const b of bytes) {
        if (!PRINTABLE[b]) {
          throw new MalformedInput(
            field,
            `PrintableString holds 0x${b.toString(16)}, outside its character set`,
          );
        }
      }
      return latin1(bytes);
    case Tag.IA5_STRING:
      for (const b of bytes) {
        if (b > 0x7f) throw new MalformedInput(field, "IA5String holds a non-ASCII byte");
      }
      return latin1(bytes);
    case Tag.T61_STRING:
      return latin1(bytes);
    case Tag.BMP_STRING: {
      if (bytes.length % 2) throw new MalformedInput(field, "odd-length BMPString");
      const units: number[] = [];
      for (let i = 0; i < bytes.length; i += 2) {
        const unit = (bytes[i] << 8) | bytes[i + 1];
        // UCS-2 has no surrogates: one here would be half of a character or none.
        if (unit >= 0xd800 && unit <= 0xdfff) throw new MalformedInput(field, "BMPString holds a surrogate");
        units.push(unit);
      }
      return fromCodeUnits(units);
    }
    case Tag.UNIVERSAL_STRING: {
      if (bytes.length % 4) throw new MalformedInput(field, "UniversalString length not a multiple of 4");
      const points: number[] = [];
      for (let i = 0; i < bytes.length; i += 4) {
        const point = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
        if (point > 0x10ffff) {
          throw new MalformedInput(field, `UniversalString holds U+${point.toString(16)}, past U+10FFFF`);
        }
        if (point >= 0xd800 && point <= 0xdfff) {
          throw new MalformedInput(field, "UniversalString holds a surrogate");
        }
        points.push(point);
      }
      let s = "";
      for (let i = 0; i < points.length; i += 0x2000) {
        s += String.fromCodePoint(...points.slice(i, i + 0x2000));
      }
      return s;
    }
    default:
      throw new MalformedInput(field, `tag 0x${node.tag.toString(16)} is not a string type`);
  }
}

const PRINTABLE: boolean[] = Array.from(
  { length: 256 },
  (_, b) =>
    (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
    " '()+,-./:=?".includes(String.fromCharCode(b)),
);

function fromCodeUnits(units: number[]): string {
  let s = "";
  for (let i = 0; i < units.length; i += 0x2000) s += String.fromCharCode(...units.slice(i, i + 0x2000));
  return s;
}

/**
 * Checks that a value of type ANY (AlgorithmIdentifier parameters, an otherName's value) is
 * DER throughout: every nested TLV well formed, and every universal primitive the reader
 * knows in its one DER encoding (BOOLEAN, INTEGER, NULL, OID, BIT STRING, times, strings).
 * Other parsers read these fields as opaque bytes; meshauth refuses what the DER rules refuse
 * wherever it is, so what it accepts is one encoding of one value.
 */
export function checkDer(node: DerNode, field = "DER", depth = 0): void {
  if (isConstructed(node)) {
    if (depth >= 32) throw new MalformedInput(field, "nested too deeply");
    for (const child of childrenOf(node, field)) checkDer(child, field, depth + 1);
    return;
  }
  switch (node.tag) {
    case Tag.BOOLEAN:
      readBoolean(node, field);
      return;
    case Tag.INTEGER:
    case Tag.ENUMERATED:
      integerBytes(node, field);
      return;
    case Tag.NULL:
      if (node.end !== node.contentStart) throw new MalformedInput(field, "NULL with content");
      return;
    case Tag.OID:
      readOid(node, field);
      return;
    case Tag.BIT_STRING:
      readBitString(node, field);
      return;
    case Tag.UTC_TIME:
    case Tag.GENERALIZED_TIME:
      readTime(node, field);
      return;
    case Tag.UTF8_STRING:
    case Tag.NUMERIC_STRING:
    case Tag.PRINTABLE_STRING:
    case Tag.IA5_STRING:
    case Tag.BMP_STRING:
    case Tag.UNIVERSAL_STRING:
      readString(node, field);
      return;
  }
}

/** Each byte as the code unit of the same value (ISO 8859-1, byte for byte). */
export function latin1(bytes: Uint8Array): string {
  let s = "";
  // fromCharCode over chunks: one call per 8 KiB instead of one per byte.
  for (let i = 0; i < bytes.length; i += 0x2000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x2000) as unknown as number[]);
  }
  return s;
}
