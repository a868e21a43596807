/**
 * Certificate revocation lists (RFC 5280 5): strict DER parsing into a read-only model.
 * Whether a CRL applies to a certificate, and whether it is trustworthy, is decided by the
 * validator (`lib/verify/revocation.ts`); this module only reads.
 *
 * @example
 * ```ts
 * import { parseCrl } from "meshauth";
 * const crl = parseCrl(pemText); // "BEGIN X509 CRL" (OpenSSL) or "BEGIN CRL"
 * console.log(crl.thisUpdate, crl.revoked.map((r) => r.serialNumber));
 * ```
 * @module
 */

import {
  childrenOf,
  contentOf,
  contextTag,
  type DerNode,
  encodingOf,
  expectTag,
  parseDer,
  present,
  readBigInt,
  readBoolean,
  readSmallInt,
  readTime,
  sequenceOf,
  Tag,
} from "../asn1/der.ts";
import { OID } from "../asn1/oids.ts";
import { toHex } from "../encoding.ts";
import { MalformedInput } from "../errors.ts";
import { derBlock } from "../pem.ts";
import {
  type AlgorithmIdentifier,
  type DistributionPoint,
  type Extension,
  octetAligned,
  parseAlgorithmIdentifier,
  parseDistributionPoint,
  parseExtensions,
  serialNumberBytes,
} from "./certificate.ts";
import { parseAuthorityKeyIdentifier } from "./extensions.ts";
import { type Name, parseName } from "./name.ts";

/** CRL reason codes (RFC 5280 5.3.1); 7 is unused. */
export const CrlReason = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
/** A CRLReason by name (`keyCompromise`, `superseded`...). */
export type CrlReasonName = keyof typeof CrlReason;

/** One revoked certificate entry. */
export interface RevokedCertificate {
  /** Serial number as lowercase hex of its content octets, as in `Certificate.serialNumber`. */
  serialNumber: string;
  /** When the certificate was revoked. */
  revocationDate: Date;
  /** Why, when the entry carries a reason code. */
  reason?: CrlReasonName;
  /** When the key is known or suspected to have been compromised, if given. */
  invalidityDate?: Date;
  /** The entry's extensions. */
  extensions: Extension[];
}

/** The issuing distribution point extension (RFC 5280 5.2.5). */
export interface IssuingDistributionPoint {
  /** The partition this CRL covers; absent for a CRL of every certificate. */
  distributionPoint?: DistributionPoint;
  /** Only end-entity certificates are listed. */
  onlyContainsUserCerts: boolean;
  /** Only CA certificates are listed. */
  onlyContainsCACerts: boolean;
  /** The reasons covered, as the ReasonFlags bit string, when only some are. */
  onlySomeReasons?: Uint8Array;
  /** The CRL lists certificates of issuers other than its own (meshauth refuses these). */
  indirectCrl: boolean;
  /** Only attribute certificates are listed. */
  onlyContainsAttributeCerts: boolean;
}

/** A parsed CRL. */
export interface Crl {
  /** The whole CRL, DER. */
  der: Uint8Array;
  /** The signed TBSCertList, DER. */
  tbs: Uint8Array;
  /** 1 or 2. */
  version: number;
  /** The outer signature algorithm. */
  signatureAlgorithm: AlgorithmIdentifier;
  /** The signature algorithm inside TBSCertList. */
  tbsSignatureAlgorithm: AlgorithmIdentifier;
  /** The signature bits. */
  signature: Uint8Array;
  /** The CRL issuer's distinguished name. */
  issuer: Name;
  /** When this CRL was issued. */
  thisUpdate: Date;
  /** When the next CRL will be issued; a CRL past it is stale. */
  nextUpdate?: Date;
  /** The revoked certificates. */
  revoked: RevokedCertificate[];
  /** The CRL's extensions. */
  extensions: Extension[];
  /** CRL number (RFC 5280 5.2.3), when present. */
  crlNumber?: bigint;
  /** Key identifier of the authority key identifier extension, when present. */
  authorityKeyIdentifier?: Uint8Array;
  /** Base CRL number of a delta CRL (RFC 5280 5.2.4), when this is one. */
  deltaCrlIndicator?: bigint;
  /** The partition this CRL covers, when it is not complete. */
  issuingDistributionPoint?: IssuingDistributionPoint;
}

const REASON_NAMES = Object.fromEntries(Object.entries(CrlReason).map(([k, v]) => [v, k])) as Record<
  number,
  CrlReasonName
>;

/** Parses one CRL from PEM (`X509 CRL` or `CRL`) or DER. Throws {@link MalformedInput}. */
export function parseCrl(input: string | Uint8Array, what = "CRL"): Crl {
  const der = derBlock(input, ["X509 CRL", "CRL"], what);
  const [tbsNode, sigAlgNode, sigNode, extra] = sequenceOf(parseDer(der, what), what);
  if (!sigNode || extra) throw new MalformedInput(what, "CertificateList must have exactly three fields");
  const tbs = sequenceOf(tbsNode, `${what} tbsCertList`);
  let i = 0;
  let version = 1;
  if (tbs[i]?.tag === Tag.INTEGER) {
    version = readSmallInt(tbs[i++], `${what} version`) + 1;
    // RFC 5280 5.1.2.1: when present the version MUST be v2.
    if (version !== 2) throw new MalformedInput(`${what} version`, `unknown version ${version}`);
  }
  const tbsSignatureAlgorithm = parseAlgorithmIdentifier(tbs[i++], `${what} signature`);
  const issuer = parseName(present(tbs[i++], `${what} issuer`), `${what} issuer`);
  const thisUpdate = readTime(present(tbs[i++], `${what} thisUpdate`), `${what} thisUpdate`, true);
  let nextUpdate: Date | undefined;
  if (tbs[i]?.tag === Tag.UTC_TIME || tbs[i]?.tag === Tag.GENERALIZED_TIME) {
    nextUpdate = readTime(tbs[i++], `${what} nextUpdate`, true);
  }
  const crl: Crl = {
    der,
    tbs: encodingOf(tbsNode),
    version,
    signatureAlgorithm: parseAlgorithmIdentifier(sigAlgNode, `${what} signatureAlgorithm`),
    tbsSignatureAlgorithm,
    signature: octetAligned(sigNode, `${what} signature`),
    issuer,
    thisUpdate,
    nextUpdate,
    revoked: [],
    extensions: [],
  };
  if (tbs[i]?.tag === Tag.SEQUENCE) {
    crl.revoked = sequenceOf(tbs[i++], `${what} revokedCertificates`).map((entry) =>
      parseEntry(entry, version, `${what} revoked entry`)
    );
  }
  if (tbs[i]?.tag === contextTag(0, true)) {
    if (version !== 2) throw new MalformedInput(what, "crlExtensions require v2");
    const [exts, more] = childrenOf(tbs[i++], `${what} crlExtensions`);
    if (!exts || more) throw new MalformedInput(`${what} crlExtensions`, "malformed");
    crl.extensions = parseExtensions(exts, what);
    decodeCrlExtensions(crl, what);
  }
  if (i !== tbs.length) throw new MalformedInput(what, "unexpected fields at the end of tbsCertList");
  return crl;
}

function parseEntry(node: DerNode, version: number, field: string): RevokedCertificate {
  const [serial, date, exts, extra] = sequenceOf(node, field);
  if (!serial || !date || extra) {
    throw new MalformedInput(field, "expected serial, date and optional extensions");
  }
  const entry: RevokedCertificate = {
    serialNumber: toHex(serialNumberBytes(expectTag(serial, Tag.INTEGER, field), field)),
    revocationDate: readTime(date, `${field} revocationDate`, true),
    extensions: [],
  };
  if (exts) {
    if (version !== 2) throw new MalformedInput(field, "crlEntryExtensions require v2");
    entry.extensions = parseExtensions(exts, field);
    for (const ext of entry.extensions) {
      const at = `${field} extension ${ext.oid}`;
      if (ext.oid === OID.reasonCode) {
        const node = expectTag(parseDer(ext.value, at), Tag.ENUMERATED, at);
        const code = readSmallInt(node, at);
        const reason = REASON_NAMES[code];
        if (!reason) throw new MalformedInput(at, `unknown reason code ${code}`);
        // RFC 5280 5.3.1: unspecified SHOULD NOT be encoded; accepted, it means the same.
        entry.reason = reason;
      } else if (ext.oid === OID.invalidityDate) {
        entry.invalidityDate = readTime(expectTag(parseDer(ext.value, at), Tag.GENERALIZED_TIME, at), at);
      }
    }
  }
  return entry;
}

function decodeCrlExtensions(crl: Crl, what: string): void {
  for (const ext of crl.extensions) {
    const field = `${what} extension ${ext.oid}`;
    switch (ext.oid) {
      case OID.crlNumber:
        crl.crlNumber = readCrlNumber(ext.value, field);
        break;
      case OID.deltaCrlIndicator:
        crl.deltaCrlIndicator = readCrlNumber(ext.value, field);
        break;
      case OID.authorityKeyIdentifier:
        // RFC 5280 5.2.1: the same extension as in certificates, read by the same reader.
        crl.authorityKeyIdentifier = parseAuthorityKeyIdentifier(ext.value, field).keyIdentifier;
        break;
      case OID.issuingDistributionPoint:
        crl.issuingDistributionPoint = parseIdp(parseDer(ext.value, field), field);
        break;
    }
  }
}

/** RFC 5280 5.2.3: a non-negative INTEGER of at most 20 octets. */
function readCrlNumber(value: Uint8Array, field: string): bigint {
  const node = expectTag(parseDer(value, field), Tag.INTEGER, field);
  const n = readBigInt(node, field, 21);
  if (n < 0n) throw new MalformedInput(field, "negative CRL number");
  return n;
}

function parseIdp(node: DerNode, field: string): IssuingDistributionPoint {
  const idp: IssuingDistributionPoint = {
    onlyContainsUserCerts: false,
    onlyContainsCACerts: false,
    indirectCrl: false,
    onlyContainsAttributeCerts: false,
  };
  const flag = (f: DerNode) => {
    // DER: DEFAULT FALSE is omitted, so a present flag must be TRUE.
    if (!readBoolean({ ...f, tag: Tag.BOOLEAN }, field)) {
      throw new MalformedInput(field, "explicit FALSE is not DER");
    }
    return true;
  };
  let last = -1;
  for (const f of sequenceOf(node, field)) {
    const number = f.tag & 0x1f;
    if ((f.tag & 0xc0) !== 0x80 || number <= last) throw new MalformedInput(field, "unexpected field order");
    last = number;
    if (f.tag === contextTag(0, true)) {
      // Re-wrap the DistributionPointName so the certificate parser reads it.
      idp.distributionPoint = parseDistributionPoint(
        { tag: Tag.SEQUENCE, start: f.start, contentStart: f.start, end: f.end, buffer: f.buffer },
        field,
      );
    } else if (f.tag === contextTag(1, false)) idp.onlyContainsUserCerts = flag(f);
    else if (f.tag === contextTag(2, false)) idp.onlyContainsCACerts = flag(f);
    else if (f.tag === contextTag(3, false)) idp.onlySomeReasons = contentOf(f);
    else if (f.tag === contextTag(4, false)) idp.indirectCrl = flag(f);
    else if (f.tag === contextTag(5, false)) idp.onlyContainsAttributeCerts = flag(f);
    else throw new MalformedInput(field, `unexpected IssuingDistributionPoint field 0x${f.tag.toString(16)}`);
  }
  const only = [idp.onlyContainsUserCerts, idp.onlyContainsCACerts, idp.onlyContainsAttributeCerts];
  if (only.filter(Boolean).length > 1) throw new MalformedInput(field, "more than one onlyContains flag");
  return idp;
}
