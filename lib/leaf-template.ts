/**
 * The X509-SVID leaves of one CA, encoded from a template: everything a leaf of this CA shares
 * with every other (version, signature algorithm, issuer, subject, CA:FALSE, key usage, both
 * EKUs, the authority key identifier) is encoded once, and each leaf fills in only what is its
 * own (serial, validity, public key, subject key identifier, SANs), written into one buffer
 * with no intermediate DER. The bytes are exactly those {@link signCertificate} writes for the
 * same leaf (a test holds the two to it); this is the issuing path, that one the reference.
 * @module
 */

import { contextTag, Tag } from "./asn1/der.ts";
import { bitString, bool, oid, seq, time, tlv } from "./asn1/der-writer.ts";
import { OID } from "./asn1/oids.ts";
import { type CertificateTemplate, leafExtensions } from "./certificate-template.ts";
import type { Signer } from "./x509/signature.ts";

const UTF8 = new TextEncoder();

/** Bytes of a DER length field. */
function lengthSize(length: number): number {
  return length < 0x80 ? 1 : length < 0x100 ? 2 : length < 0x10000 ? 3 : 4;
}

/** Writes a tag and length at `offset`; answers the offset after them. */
function writeHeader(out: Uint8Array, offset: number, tag: number, length: number): number {
  out[offset++] = tag;
  const size = lengthSize(length);
  if (size === 1) out[offset++] = length;
  else {
    out[offset++] = 0x80 | (size - 1);
    for (let i = size - 2; i >= 0; i--) out[offset++] = (length >>> (8 * i)) & 0xff;
  }
  return offset;
}

const headerSize = (length: number) => 1 + lengthSize(length);

/** What differs between two leaves of one CA. */
export type LeafFields = Pick<
  CertificateTemplate,
  "serial" | "notBefore" | "notAfter" | "spki" | "uris" | "dnsNames" | "ipAddresses" | "subjectKeyIdentifier"
>;

/** What every leaf of one CA shares. */
export type LeafProfile = Pick<
  CertificateTemplate,
  "issuer" | "subject" | "keyUsage" | "extendedKeyUsage" | "authorityKeyIdentifier"
>;

/** A CA's leaves for one key usage, from a template (see the module's description). */
export class LeafTemplate {
  readonly #version = tlv(contextTag(0, true), tlv(Tag.INTEGER, new Uint8Array([2])));
  /** signature AlgorithmIdentifier and issuer, side by side in the TBS. */
  readonly #algorithmAndIssuer: Uint8Array;
  readonly #subject: Uint8Array;
  /** BasicConstraints, KeyUsage, EKU: before the subject key identifier. */
  readonly #extensionsBefore: Uint8Array;
  /** AuthorityKeyIdentifier: after it. */
  readonly #extensionsAfter: Uint8Array;
  readonly #sanPrefix: Uint8Array;
  readonly #algorithm: Uint8Array;

  constructor(profile: LeafProfile, readonly signer: Signer) {
    this.#algorithm = signer.algorithmIdentifier;
    this.#algorithmAndIssuer = new Uint8Array([...signer.algorithmIdentifier, ...profile.issuer]);
    this.#subject = profile.subject;
    const { before, after } = leafExtensions(profile);
    this.#extensionsBefore = before;
    this.#extensionsAfter = after;
    // RFC 5280 4.2.1.6: with an empty subject, the SAN is critical.
    this.#sanPrefix = profile.subject.length === 2
      ? new Uint8Array([...oid(OID.subjectAltName), ...bool(true)])
      : oid(OID.subjectAltName);
  }

  /** The TBSCertificate of one leaf. */
  tbs(leaf: LeafFields): Uint8Array {
    const names = [
      ...leaf.uris.map((uri) => [contextTag(6, false), UTF8.encode(uri)] as const),
      ...(leaf.dnsNames ?? []).map((name) => [contextTag(2, false), UTF8.encode(name)] as const),
      ...(leaf.ipAddresses ?? []).map((ip) => [contextTag(7, false), ip] as const),
    ];
    const validity = seq(time(leaf.notBefore), time(leaf.notAfter));
    const ski = leaf.subjectKeyIdentifier;
    const skiValue = headerSize(ski.length) + ski.length;
    const skiExtension = oid(OID.subjectKeyIdentifier).length + headerSize(skiValue) + skiValue;
    let sanList = 0;
    for (const [, value] of names) sanList += headerSize(value.length) + value.length;
    const sanValue = headerSize(sanList) + sanList;
    const sanExtension = names.length ? this.#sanPrefix.length + headerSize(sanValue) + sanValue : 0;
    const extensionList = this.#extensionsBefore.length + headerSize(skiExtension) + skiExtension +
      this.#extensionsAfter.length + (names.length ? headerSize(sanExtension) + sanExtension : 0);
    const extensions = headerSize(extensionList) + extensionList;
    const serial = headerSize(leaf.serial.length) + leaf.serial.length;
    const content = this.#version.length + serial + this.#algorithmAndIssuer.length + validity.length +
      this.#subject.length + leaf.spki.length + headerSize(extensions) + extensions;
    const out = new Uint8Array(headerSize(content) + content);
    let o = writeHeader(out, 0, Tag.SEQUENCE, content);
    const put = (bytes: Uint8Array) => {
      out.set(bytes, o);
      o += bytes.length;
    };
    put(this.#version);
    o = writeHeader(out, o, Tag.INTEGER, leaf.serial.length);
    put(leaf.serial);
    put(this.#algorithmAndIssuer);
    put(validity);
    put(this.#subject);
    put(leaf.spki);
    o = writeHeader(out, o, contextTag(3, true), extensions);
    o = writeHeader(out, o, Tag.SEQUENCE, extensionList);
    put(this.#extensionsBefore);
    o = writeHeader(out, o, Tag.SEQUENCE, skiExtension);
    put(oid(OID.subjectKeyIdentifier));
    o = writeHeader(out, o, Tag.OCTET_STRING, skiValue);
    o = writeHeader(out, o, Tag.OCTET_STRING, ski.length);
    put(ski);
    put(this.#extensionsAfter);
    if (names.length) {
      o = writeHeader(out, o, Tag.SEQUENCE, sanExtension);
      put(this.#sanPrefix);
      o = writeHeader(out, o, Tag.OCTET_STRING, sanValue);
      o = writeHeader(out, o, Tag.SEQUENCE, sanList);
      for (const [tag, value] of names) {
        o = writeHeader(out, o, tag, value.length);
        put(value);
      }
    }
    return out;
  }

  /** Signs one leaf; answers the certificate's DER. */
  async sign(leaf: LeafFields): Promise<Uint8Array> {
    const tbs = this.tbs(leaf);
    const signature = bitString(await this.signer.sign(tbs));
    const content = tbs.length + this.#algorithm.length + signature.length;
    const out = new Uint8Array(headerSize(content) + content);
    let o = writeHeader(out, 0, Tag.SEQUENCE, content);
    out.set(tbs, o);
    out.set(this.#algorithm, o += tbs.length);
    out.set(signature, o + this.#algorithm.length);
    return out;
  }
}
