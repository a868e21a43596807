/**
 * GeneralName (RFC 5280 4.2.1.6): the names in SAN, name constraints and CRL distribution
 * points.
 * @module
 */

import {
  checkDer,
  childrenOf,
  contentOf,
  contextTag,
  type DerNode,
  encodingOf,
  isConstructed,
  present,
  readOid,
  readString,
  Tag,
} from "../asn1/der.ts";
import { tlv } from "../asn1/der-writer.ts";
import { MalformedInput } from "../errors.ts";
import { type Name, parseName } from "./name.ts";

const UTF8 = new TextEncoder();

/** A decoded GeneralName. IP addresses are raw bytes (4 or 16, or 8/32 in name constraints). */
export type GeneralName =
  | { type: "dns"; value: string }
  | { type: "uri"; value: string }
  | { type: "email"; value: string }
  | { type: "ip"; value: Uint8Array }
  | { type: "directory"; value: Name }
  | { type: "other"; tag: number; oid?: string; der: Uint8Array };

/**
 * Parses one GeneralName. Each choice must carry the constructed bit its type calls for
 * (IMPLICIT tagging keeps the underlying type's form): a primitive `[4]` or a constructed
 * `[2]` is refused, as OpenSSL refuses it, rather than passed on as "other", which would let
 * verifiers disagree about what names a certificate holds. IA5String forms must be ASCII;
 * otherName and registeredID must hold what their types say.
 */
export function parseGeneralName(node: DerNode | undefined, field = "GeneralName"): GeneralName {
  node = present(node, field);
  const number = node.tag & 0x1f;
  if ((node.tag & 0xc0) !== 0x80 || number > 8) {
    throw new MalformedInput(field, `unknown GeneralName tag 0x${node.tag.toString(16)}`);
  }
  // otherName, x400Address, directoryName, ediPartyName are SEQUENCE or CHOICE types.
  const constructed = number === 0 || number === 3 || number === 4 || number === 5;
  if (isConstructed(node) !== constructed) {
    throw new MalformedInput(
      field,
      `GeneralName [${number}] must be ${constructed ? "constructed" : "primitive"}`,
    );
  }
  switch (number) {
    case 1:
      return { type: "email", value: ia5(node, field) };
    case 2:
      return { type: "dns", value: ia5(node, field) };
    case 6:
      return { type: "uri", value: ia5(node, field) };
    case 7:
      return { type: "ip", value: contentOf(node) };
    case 4: {
      const [inner, extra] = childrenOf(node, field);
      if (!inner || extra) throw new MalformedInput(field, "directoryName must hold one Name");
      return { type: "directory", value: parseName(inner, field) };
    }
    case 0: {
      // AnotherName ::= SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY }
      const [typeId, value, extra] = childrenOf(node, field);
      if (!value || extra || value.tag !== contextTag(0, true) || childrenOf(value, field).length !== 1) {
        throw new MalformedInput(field, "otherName must hold a type-id and one [0] value");
      }
      checkDer(value, field);
      return { type: "other", tag: 0, oid: readOid(typeId, field), der: encodingOf(node) };
    }
    case 5: {
      // EDIPartyName ::= SEQUENCE { nameAssigner [0] DirectoryString OPTIONAL,
      //                             partyName [1] DirectoryString } (a CHOICE, so explicit)
      const fields = childrenOf(node, field);
      const strings = (f: DerNode | undefined, n: number) => {
        if (f?.tag !== contextTag(n, true)) return false;
        const [value, extra] = childrenOf(f, field);
        if (!value || extra) return false;
        readString(value, field);
        return true;
      };
      const assigner = strings(fields[0], 0) ? 1 : 0;
      if (!strings(fields[assigner], 1) || fields.length !== assigner + 1) {
        throw new MalformedInput(field, "ediPartyName must hold an optional [0] and a [1] DirectoryString");
      }
      return { type: "other", tag: 5, der: encodingOf(node) };
    }
    case 3:
      // ORAddress is a large structure meshauth never reads; it must be DER all the same.
      checkDer(node, field);
      return { type: "other", tag: 3, der: encodingOf(node) };
    case 8:
      return {
        type: "other",
        tag: 8,
        oid: readOid({ ...node, tag: Tag.OID }, field),
        der: encodingOf(node),
      };
    default:
      return { type: "other", tag: number, der: encodingOf(node) };
  }
}

/** An IMPLICIT-tagged IA5String (rfc822Name, dNSName, URI), read as the string type it is. */
function ia5(node: DerNode, field: string): string {
  return readString({ ...node, tag: Tag.IA5_STRING }, field);
}

/** Parses a GeneralNames SEQUENCE. */
export function parseGeneralNames(node: DerNode, field = "GeneralNames"): GeneralName[] {
  return childrenOf(node, field).map((n) => parseGeneralName(n, field));
}

/** Encodes a URI GeneralName. */
export const uriName = (uri: string): Uint8Array => tlv(contextTag(6, false), UTF8.encode(uri));
/** Encodes a DNS GeneralName. */
export const dnsName = (name: string): Uint8Array => tlv(contextTag(2, false), UTF8.encode(name));
/** Encodes an IP GeneralName. */
export const ipName = (bytes: Uint8Array): Uint8Array => tlv(contextTag(7, false), bytes);

/**
 * Formats an IP address's bytes (4 or 16) in canonical text: dotted decimal, or RFC 5952
 * section 4 for IPv6 (lowercase, no leading zeros, the longest run of two or more zero
 * groups compressed to `::`, the first such run on a tie).
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length !== 16) return Array.from(bytes).join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/** Parses an IPv4 or IPv6 address into bytes, or returns undefined if it is neither. */
export function parseIp(text: string): Uint8Array | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p, i) => p > 255 || (v4[i + 1].length > 1 && v4[i + 1][0] === "0"))) return undefined;
    return new Uint8Array(parts);
  }
  if (!text.includes(":")) return undefined;
  let head = text;
  let tail = "";
  let tailV4: Uint8Array | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tailV4 = parseIp(text.slice(lastColon + 1));
    if (!tailV4 || tailV4.length !== 4) return undefined;
    text = text.slice(0, lastColon + 1) + "0:0";
  }
  const double = text.indexOf("::");
  if (double !== text.lastIndexOf("::")) return undefined;
  [head, tail] = double >= 0 ? [text.slice(0, double), text.slice(double + 2)] : [text, ""];
  const parse = (s: string) => (s === "" ? [] : s.split(":"));
  const h = parse(head);
  const t = parse(tail);
  const groups = [...h, ...t];
  if (groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  if (double < 0 ? groups.length !== 8 : groups.length > 7) return undefined;
  const out = new Uint8Array(16);
  const fill = (gs: string[], at: number) =>
    gs.forEach((g, i) => {
      const v = parseInt(g, 16);
      out[(at + i) * 2] = v >> 8;
      out[(at + i) * 2 + 1] = v & 0xff;
    });
  fill(h, 0);
  fill(t, 8 - t.length);
  if (tailV4) out.set(tailV4, 12);
  return out;
}
