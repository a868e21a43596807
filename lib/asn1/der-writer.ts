/**
 * A small DER writer: TLVs built straight into one buffer, and the types X.509 needs
 * (INTEGER, OBJECT IDENTIFIER, times, strings, BIT STRINGs). `der.ts` is its reader.
 * @module
 */

import { InvalidArgument } from "../errors.ts";
import { contextTag, Tag } from "./der.ts";

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Encodes one TLV, writing the header and every part of the content straight into one buffer. */
export function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of content) length += part.length;
  const lengthSize = length < 0x80
    ? 1
    : length < 0x100
    ? 2
    : length < 0x10000
    ? 3
    : length < 0x1000000
    ? 4
    : 5;
  const out = new Uint8Array(1 + lengthSize + length);
  out[0] = tag;
  if (lengthSize === 1) out[1] = length;
  else {
    out[1] = 0x80 | (lengthSize - 1);
    for (let i = lengthSize, n = length; i > 1; i--, n = Math.floor(n / 256)) out[i] = n & 0xff;
  }
  let offset = 1 + lengthSize;
  for (const part of content) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export const seq = (...items: Uint8Array[]): Uint8Array => tlv(Tag.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Uint8Array => tlv(Tag.SET, ...items);
export const octetString = (bytes: Uint8Array): Uint8Array => tlv(Tag.OCTET_STRING, bytes);
export const nullValue = (): Uint8Array => new Uint8Array([Tag.NULL, 0]);
export const bool = (value: boolean): Uint8Array => tlv(Tag.BOOLEAN, new Uint8Array([value ? 0xff : 0]));
const UTF8 = new TextEncoder();
export const utf8String = (s: string): Uint8Array => tlv(Tag.UTF8_STRING, UTF8.encode(s));
export const ia5String = (s: string): Uint8Array => tlv(Tag.IA5_STRING, UTF8.encode(s));
export const printableString = (s: string): Uint8Array => tlv(Tag.PRINTABLE_STRING, UTF8.encode(s));

/** Explicitly tagged `[n]` wrapper. */
export const explicit = (n: number, inner: Uint8Array): Uint8Array => tlv(contextTag(n, true), inner);

/** BIT STRING with no unused bits. */
export const bitString = (bytes: Uint8Array): Uint8Array => tlv(Tag.BIT_STRING, new Uint8Array([0]), bytes);

/** BIT STRING of named bits (KeyUsage), DER: trailing zero bits trimmed. */
export function namedBits(bits: readonly number[]): Uint8Array {
  const max = Math.max(...bits);
  const bytes = new Uint8Array((max >> 3) + 1);
  for (const b of bits) bytes[b >> 3] |= 0x80 >> (b & 7);
  const unused = 7 - (max & 7);
  return tlv(Tag.BIT_STRING, new Uint8Array([unused]), bytes);
}

/** INTEGER from a non-negative bigint, or from unsigned big-endian magnitude bytes. */
export function integer(value: bigint | number | Uint8Array): Uint8Array {
  let bytes: Uint8Array;
  if (value instanceof Uint8Array) {
    let i = 0;
    while (i < value.length - 1 && value[i] === 0) i++;
    bytes = value.subarray(i);
  } else {
    let v = BigInt(value);
    if (v < 0n) throw new InvalidArgument("INTEGER", `negative values are not encoded here, got ${v}`);
    const out: number[] = [];
    do {
      out.unshift(Number(v & 0xffn));
      v >>= 8n;
    } while (v > 0n);
    bytes = new Uint8Array(out);
  }
  if (bytes.length === 0) bytes = new Uint8Array([0]);
  if (bytes[0] & 0x80) bytes = concat([new Uint8Array([0]), bytes]);
  return tlv(Tag.INTEGER, bytes);
}

/** OBJECT IDENTIFIER from dotted form. */
export function oid(dotted: string): Uint8Array {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split(".").map((a) => BigInt(a));
  const out: number[] = [];
  const push = (v: bigint) => {
    const chunk: number[] = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...chunk);
  };
  push(arcs[0] * 40n + arcs[1]);
  for (const a of arcs.slice(2)) push(a);
  const encoded = tlv(Tag.OID, new Uint8Array(out));
  oidCache.set(dotted, encoded);
  return encoded;
}
const oidCache = new Map<string, Uint8Array>();

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5). Milliseconds are dropped. */
export function time(date: Date): Uint8Array {
  const y = date.getUTCFullYear();
  const p2 = (n: number) => String(n).padStart(2, "0");
  const rest = `${p2(date.getUTCMonth() + 1)}${p2(date.getUTCDate())}${p2(date.getUTCHours())}${
    p2(date.getUTCMinutes())
  }${p2(date.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) {
    return tlv(Tag.UTC_TIME, UTF8.encode(`${p2(y % 100)}${rest}`));
  }
  return tlv(Tag.GENERALIZED_TIME, UTF8.encode(`${String(y).padStart(4, "0")}${rest}`));
}
