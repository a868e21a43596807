/**
 * X.501 distinguished names: parsing, RFC 5280 7.1 comparison keys, and encoding.
 * @module
 */

import { childrenOf, type DerNode, encodingOf, expectTag, readOid, readString, Tag } from "../asn1/der.ts";
import { oid, printableString, seq, set, utf8String } from "../asn1/der-writer.ts";
import { OID } from "../asn1/oids.ts";
import { InvalidArgument, MalformedInput } from "../errors.ts";
import { prepareString, prohibitedCodePoint } from "./string-prep.ts";

/** One attribute of a relative distinguished name. */
export interface NameAttribute {
  /** The attribute type's OID (`2.5.4.3` for commonName). */
  type: string;
  /** The string tag the value was encoded with. */
  tag: number;
  /** The value as text. */
  value: string;
}

/**
 * A parsed Name. `key` compares names the way RFC 5280 7.1 asks: RDN by RDN, each value
 * prepared by RFC 4518 (case folded, NFKC, invisible characters and insignificant spaces
 * removed; see `string-prep.ts`).
 */
export interface Name {
  /** The Name's DER. */
  der: Uint8Array;
  /** The RDNs in order, each a set of attribute type and value pairs. */
  rdns: NameAttribute[][];
  /** The comparison key of each RDN, in order (`rdnKey`), computed once at parse. */
  rdnKeys: string[];
  /** The comparison key of the whole name: the RDN keys joined. */
  key: string;
}

const SHORT: Record<string, string> = {
  [OID.commonName]: "CN",
  [OID.countryName]: "C",
  [OID.organizationName]: "O",
  [OID.organizationalUnitName]: "OU",
  [OID.serialNumber]: "serialNumber",
  [OID.emailAddress]: "emailAddress",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "0.9.2342.19200300.100.1.25": "DC",
};

/**
 * Parses a Name (SEQUENCE OF RDN, each a SET OF AttributeTypeAndValue). Every value must be
 * a character string ({@link readString}: the DirectoryString types, IA5String, NumericString),
 * as OpenSSL requires too: a NULL or VisibleString read as text would compare unlike the
 * string it imitates and slip past a directoryName constraint. A multi-valued RDN must be in
 * DER SET OF order.
 */
export function parseName(node: DerNode, field = "Name"): Name {
  expectTag(node, Tag.SEQUENCE, field);
  const rdns: NameAttribute[][] = [];
  for (const rdn of childrenOf(node, field)) rdns.push(parseRdn(expectTag(rdn, Tag.SET, field), field));
  const rdnKeys = rdns.map(rdnKey);
  return { der: encodingOf(node), rdns, rdnKeys, key: rdnKeys.join(",") };
}

/**
 * Parses the attributes of one RelativeDistinguishedName (a SET OF AttributeTypeAndValue,
 * whatever tag it carries: a CRL distribution point names one with an implicit `[1]`).
 */
export function parseRdn(rdn: DerNode, field = "Name"): NameAttribute[] {
  const attrs = childrenOf(rdn, field);
  if (attrs.length === 0) throw new MalformedInput(field, "empty RelativeDistinguishedName");
  // X.690 11.6: SET OF elements in ascending order of their encodings.
  for (let k = 1; k < attrs.length; k++) {
    if (compareEncodings(encodingOf(attrs[k - 1]), encodingOf(attrs[k])) > 0) {
      throw new MalformedInput(field, "RelativeDistinguishedName SET OF is not in DER order");
    }
  }
  return attrs.map((atv) => {
    const [type, value, extra] = childrenOf(expectTag(atv, Tag.SEQUENCE, field), field);
    if (!type || !value || extra) throw new MalformedInput(field, "bad AttributeTypeAndValue");
    return { type: readOid(type, field), tag: value.tag, value: readString(value, field) };
  });
}

/** X.690 11.6: octet strings compared with the shorter padded with zero octets at its end. */
function compareEncodings(a: Uint8Array, b: Uint8Array): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The comparison key of one relative distinguished name (RFC 5280 7.1): attribute order does
 * not matter, and values of any string type compare by their RFC 4518 prepared form. A value
 * RFC 4518 cannot prepare (it holds a prohibited code point) keeps its exact characters under
 * a separate marker, so it equals only the same characters and never a prepared value; name
 * constraints refuse such a name outright ({@link unpreparableValue}).
 */
export function rdnKey(rdn: readonly NameAttribute[]): string {
  return rdn.map((a) => {
    const prepared = prepareString(a.value);
    return prepared === undefined
      ? `${a.type}!${JSON.stringify(a.value)}`
      : `${a.type}=${JSON.stringify(prepared)}`;
  }).sort().join("+");
}

/**
 * The first attribute value of `name` that RFC 4518 string preparation refuses, with the
 * code point that makes it fail, or undefined when every value can be compared.
 */
export function unpreparableValue(name: Name): { attribute: NameAttribute; codePoint: string } | undefined {
  for (const rdn of name.rdns) {
    for (const attribute of rdn) {
      const codePoint = prohibitedCodePoint(attribute.value);
      if (codePoint) return { attribute, codePoint };
    }
  }
  return undefined;
}

/** The values of every attribute of `type` in a name, in order (e.g. all common names). */
export function attributeValues(name: Name, type: string): string[] {
  return name.rdns.flatMap((rdn) => rdn.filter((a) => a.type === type).map((a) => a.value));
}

/** A readable one-line form, e.g. `O=example.org, CN=root`. */
export function formatName(name: Name): string {
  return name.rdns.map((rdn) => rdn.map((a) => `${SHORT[a.type] ?? a.type}=${a.value}`).join("+"))
    .join(", ");
}

/** Encodes a Name from attributes in order, each its own RDN, as UTF8String values. */
export function encodeName(attributes: ReadonlyArray<readonly [type: string, value: string]>): Uint8Array {
  return seq(
    ...attributes.map(([type, value]) =>
      set(seq(oid(type), type === OID.countryName ? printableString(value) : utf8String(value)))
    ),
  );
}

/** Name attribute OIDs by the short names users write in `subject` options. */
export const NAME_ATTRIBUTE: Readonly<Record<string, string>> = {
  CN: OID.commonName,
  C: OID.countryName,
  O: OID.organizationName,
  OU: OID.organizationalUnitName,
  serialNumber: OID.serialNumber,
};

/**
 * Encodes a subject from attributes by short name (`O`, `OU`, `CN`, `C`, `serialNumber`),
 * in the order given; an unknown name is refused with {@link InvalidArgument}.
 */
export function encodeSubject(attributes: Record<string, string>): Uint8Array {
  return encodeName(
    Object.entries(attributes).map(([name, value]) => {
      const type = NAME_ATTRIBUTE[name];
      if (!type) {
        throw new InvalidArgument(
          "subject",
          `unknown attribute ${name}; use one of ${Object.keys(NAME_ATTRIBUTE).join(", ")}`,
        );
      }
      if (typeof value !== "string" || value === "") {
        throw new InvalidArgument("subject", `attribute ${name} needs a non-empty string value`);
      }
      return [type, value] as const;
    }),
  );
}
