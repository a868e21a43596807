/**
 * Encodes the certificates and CRLs the CA signs: the X509-SVID leaf profile, CA
 * certificates, and v2 CRLs (RFC 5280 4 and 5; SPIFFE X509-SVID spec 4).
 * @module
 */

import { contextTag } from "./asn1/der.ts";
import {
  bitString,
  bool,
  concat,
  explicit,
  integer,
  namedBits,
  octetString,
  oid,
  seq,
  time,
  tlv,
} from "./asn1/der-writer.ts";
import { OID } from "./asn1/oids.ts";
import { toHex } from "./encoding.ts";
import { KeyUsage, type KeyUsageName } from "./x509/certificate.ts";
import { CrlReason, type CrlReasonName } from "./x509/crl.ts";
import { type CryptoProvider, webCryptoProvider } from "./x509/crypto-provider.ts";
import type { Signer } from "./x509/signature.ts";
import { dnsName, ipName, uriName } from "./x509/general-name.ts";

/** What differs between the certificates the CA signs. */
export interface CertificateTemplate {
  serial: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  /** `undefined` for a leaf (CA:FALSE); a CA with an optional path length otherwise. */
  ca?: { pathLength?: number };
  keyUsage: KeyUsageName[];
  extendedKeyUsage?: string[];
  uris: string[];
  dnsNames?: string[];
  /** IP address SANs, 4 or 16 bytes each. */
  ipAddresses?: Uint8Array[];
  subjectKeyIdentifier: Uint8Array;
  authorityKeyIdentifier?: Uint8Array;
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), bool(true), octetString(value)) : seq(oid(id), octetString(value));
}

// A CA signs the same few extensions again and again (CA:FALSE, one key usage, both EKUs, its
// own key identifier); they are encoded once. Keys are small strings from a fixed vocabulary,
// so the map stays small; it is bounded anyway.
const encoded = new Map<string, Uint8Array>();
const ENCODED_LIMIT = 256;
function once(key: string, encode: () => Uint8Array): Uint8Array {
  let der = encoded.get(key);
  if (!der) {
    der = encode();
    if (encoded.size >= ENCODED_LIMIT) encoded.clear();
    encoded.set(key, der);
  }
  return der;
}
function authorityKeyIdExtension(keyId: Uint8Array): Uint8Array {
  return once(
    `aki:${toHex(keyId)}`,
    () => extension(OID.authorityKeyIdentifier, false, seq(tlv(contextTag(0, false), keyId))),
  );
}

/**
 * The extensions a certificate shares with every other of its kind from one CA, encoded (each
 * once per process): BasicConstraints, KeyUsage and EKU come before the subject key
 * identifier, the AuthorityKeyIdentifier after it.
 */
export function sharedExtensions(
  t: Pick<CertificateTemplate, "ca" | "keyUsage" | "extendedKeyUsage" | "authorityKeyIdentifier">,
): { before: Uint8Array[]; after: Uint8Array[] } {
  return {
    before: [
      // RFC 5280 4.2.1.9: CA:FALSE is the DEFAULT, so a leaf's BasicConstraints is an empty SEQUENCE.
      once(`bc:${t.ca ? `ca:${t.ca.pathLength ?? ""}` : "leaf"}`, () =>
        extension(
          OID.basicConstraints,
          true,
          t.ca
            ? seq(bool(true), ...(t.ca.pathLength === undefined ? [] : [integer(t.ca.pathLength)]))
            : seq(),
        )),
      once(
        `ku:${t.keyUsage.join(",")}`,
        () => extension(OID.keyUsage, true, namedBits(t.keyUsage.map((k) => KeyUsage[k]))),
      ),
      ...(t.extendedKeyUsage
        ? [once(
          `eku:${t.extendedKeyUsage.join(",")}`,
          () => extension(OID.extKeyUsage, false, seq(...t.extendedKeyUsage!.map(oid))),
        )]
        : []),
    ],
    after: t.authorityKeyIdentifier ? [authorityKeyIdExtension(t.authorityKeyIdentifier)] : [],
  };
}

/** A leaf's {@link sharedExtensions}, each list as one run of bytes. */
export function leafExtensions(
  t: Pick<CertificateTemplate, "keyUsage" | "extendedKeyUsage" | "authorityKeyIdentifier">,
): { before: Uint8Array; after: Uint8Array } {
  const { before, after } = sharedExtensions(t);
  return { before: concat(before), after: concat(after) };
}

/**
 * Signs a certificate from a template and returns its DER. The CA signs its leaves from a
 * `LeafTemplate` (`leaf-template.ts`), which writes the same bytes; this is the reference.
 */
export async function signCertificate(template: CertificateTemplate, signer: Signer): Promise<Uint8Array> {
  const t = template;
  const sans = [
    ...t.uris.map(uriName),
    ...(t.dnsNames ?? []).map(dnsName),
    ...(t.ipAddresses ?? []).map(ipName),
  ];
  const subjectIsEmpty = t.subject.length === 2;
  const { before, after } = sharedExtensions(t);
  const extensions = [
    ...before,
    extension(OID.subjectKeyIdentifier, false, octetString(t.subjectKeyIdentifier)),
    ...after,
    ...(sans.length ? [extension(OID.subjectAltName, subjectIsEmpty, seq(...sans))] : []),
  ];
  const tbs = seq(
    explicit(0, integer(2)),
    tlv(0x02, t.serial),
    signer.algorithmIdentifier,
    t.issuer,
    seq(time(t.notBefore), time(t.notAfter)),
    t.subject,
    t.spki,
    explicit(3, seq(...extensions)),
  );
  return seq(tbs, signer.algorithmIdentifier, bitString(await signer.sign(tbs)));
}

/** A revocation to list in a CRL. */
export interface Revocation {
  /** Serial number as hex (as `issue` returns it). */
  serialNumber: string;
  /** When the certificate was revoked. */
  revokedAt: Date;
  /** Why, as a CRLReason name; the CRL entry carries no reason code when absent. */
  reason?: RevocationReason;
}

/** CRLReason (RFC 5280 5.3.1) by name. */
export type RevocationReason = CrlReasonName;

/** The names of every {@link RevocationReason}. */
export const REVOCATION_REASONS = Object.keys(CrlReason) as RevocationReason[];

/** Signs a v2 CRL and returns its DER. */
export async function signCrl(
  crl: {
    issuer: Uint8Array;
    thisUpdate: Date;
    nextUpdate: Date;
    revoked: { serial: Uint8Array; revokedAt: Date; reason?: RevocationReason }[];
    crlNumber: bigint;
    authorityKeyIdentifier: Uint8Array;
  },
  signer: Signer,
): Promise<Uint8Array> {
  const entries = crl.revoked.map((r) =>
    seq(
      tlv(0x02, r.serial),
      time(r.revokedAt),
      // RFC 5280 5.3.1: omit reasonCode rather than encode "unspecified".
      ...(r.reason && r.reason !== "unspecified"
        ? [seq(extension(OID.reasonCode, false, tlv(0x0a, new Uint8Array([CrlReason[r.reason]]))))]
        : []),
    )
  );
  const tbs = seq(
    integer(1),
    signer.algorithmIdentifier,
    crl.issuer,
    time(crl.thisUpdate),
    time(crl.nextUpdate),
    ...(entries.length ? [seq(...entries)] : []),
    explicit(
      0,
      seq(
        extension(
          OID.authorityKeyIdentifier,
          false,
          seq(tlv(contextTag(0, false), crl.authorityKeyIdentifier)),
        ),
        extension(OID.crlNumber, false, integer(crl.crlNumber)),
      ),
    ),
  );
  return seq(tbs, signer.algorithmIdentifier, bitString(await signer.sign(tbs)));
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bits. */
export function keyIdentifier(
  publicKeyBits: Uint8Array,
  provider: CryptoProvider = webCryptoProvider,
): Promise<Uint8Array> {
  return provider.digest("SHA-1", publicKeyBits);
}

const serialPool = new Uint8Array(4096);
let serialPoolOffset = serialPool.length;

/** A random positive serial number of 128 bits' length (CA/B BR 7.1: at least 64 random bits). */
export function randomSerial(): Uint8Array {
  // Drawn from a pool filled 4 KiB at a time: one getRandomValues call per issuance cost
  // more than the rest of the serial's handling. Serials are public; no byte is used twice.
  if (serialPoolOffset + 16 > serialPool.length) {
    crypto.getRandomValues(serialPool);
    serialPoolOffset = 0;
  }
  const serial = serialPool.slice(serialPoolOffset, serialPoolOffset += 16);
  serial[0] &= 0x7f;
  if (serial[0] === 0) serial[0] = 0x01;
  return serial;
}
