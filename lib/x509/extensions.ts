/**
 * Certificate extensions (RFC 5280 4.2): the decoders that turn the raw extension list of a
 * certificate into the fields of the `Certificate` model, and the types of those fields.
 * @module
 */

import {
  bitAt,
  childrenOf,
  contentOf,
  contextTag,
  type DerNode,
  encodingOf,
  expectTag,
  parseDer,
  present,
  readBitString,
  readBoolean,
  readOid,
  readSmallInt,
  sequenceOf,
  Tag,
} from "../asn1/der.ts";
import { OID } from "../asn1/oids.ts";
import { MalformedInput } from "../errors.ts";
import { type Certificate, serialNumberBytes } from "./certificate.ts";
import { type GeneralName, parseGeneralName, parseGeneralNames } from "./general-name.ts";
import { parseRdn } from "./name.ts";

/** Key usage bits by name (RFC 5280 4.2.1.3). */
export const KeyUsage = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
  encipherOnly: 7,
  decipherOnly: 8,
} as const;
/** A key usage by name (`digitalSignature`, `keyCertSign`...). */
export type KeyUsageName = keyof typeof KeyUsage;

/** A GeneralSubtree of a name constraint. */
export interface GeneralSubtree {
  /** The subtree's root: a DNS domain, an IP network (address and mask), a URI host, a mailbox or domain, a DN. */
  base: GeneralName;
  /** Always 0 in a conforming certificate (RFC 5280 4.2.1.10). */
  minimum: number;
  /** Always absent in a conforming certificate. */
  maximum?: number;
}

/** A DistributionPoint of the CRL distribution points extension (RFC 5280 4.2.1.13). */
export interface DistributionPoint {
  /** Where the CRL is, as names (URIs in practice). */
  fullName?: GeneralName[];
  /** A name relative to the CRL issuer's, DER (meshauth does not match these). */
  relativeName?: Uint8Array;
  /** The reasons this point's CRL covers (ReasonFlags bit string), when only some. */
  reasons?: Uint8Array;
  /** Who issues the CRL, when not the certificate's issuer (an indirect CRL). */
  crlIssuer?: GeneralName[];
}

/**
 * Decodes the extensions the core uses into the fields of `cert`, strictly: a present
 * extension that is malformed, empty where RFC 5280 requires content, or out of order throws
 * {@link MalformedInput} naming the extension.
 */
export function decodeExtensions(cert: Certificate, what: string): void {
  for (const ext of cert.extensions) {
    const field = `${what} extension ${ext.oid}`;
    switch (ext.oid) {
      case OID.basicConstraints: {
        const f = sequenceOf(parseDer(ext.value, field), field);
        let ca = false;
        let k = 0;
        if (f[k]?.tag === Tag.BOOLEAN) {
          ca = readBoolean(f[k++], field);
          if (!ca) throw new MalformedInput(field, "explicit cA FALSE is not DER");
        }
        let pathLength: number | undefined;
        if (f[k]?.tag === Tag.INTEGER) pathLength = readSmallInt(f[k++], field);
        if (k !== f.length) throw new MalformedInput(field, "unexpected fields");
        cert.basicConstraints = { ca, pathLength };
        break;
      }
      case OID.keyUsage: {
        const { bytes } = readBitString(expectTag(parseDer(ext.value, field), Tag.BIT_STRING, field), field);
        cert.keyUsage = new Set(KEY_USAGE_NAMES.filter((name) => bitAt(bytes, KeyUsage[name])));
        // RFC 5280 4.2.1.3: when the extension appears, at least one bit MUST be set.
        if (cert.keyUsage.size === 0) throw new MalformedInput(field, "keyUsage with no bit set");
        break;
      }
      case OID.extKeyUsage: {
        const ids = sequenceOf(parseDer(ext.value, field), field).map((n) => readOid(n, field));
        if (ids.length === 0) throw new MalformedInput(field, "empty ExtKeyUsageSyntax");
        cert.extendedKeyUsage = ids;
        break;
      }
      case OID.subjectAltName: {
        const names = parseGeneralNames(expectTag(parseDer(ext.value, field), Tag.SEQUENCE, field), field);
        if (names.length === 0) throw new MalformedInput(field, "empty subjectAltName");
        cert.subjectAltName = names;
        break;
      }
      case OID.subjectKeyIdentifier:
        cert.subjectKeyIdentifier = contentOf(expectTag(parseDer(ext.value, field), Tag.OCTET_STRING, field));
        break;
      case OID.authorityKeyIdentifier: {
        const aki = parseAuthorityKeyIdentifier(ext.value, field);
        cert.authorityKeyIdentifier = aki.keyIdentifier;
        cert.authorityCertIssuer = aki.authorityCertIssuer;
        cert.authorityCertSerialNumber = aki.authorityCertSerialNumber;
        break;
      }
      case OID.certificatePolicies: {
        const ids = sequenceOf(parseDer(ext.value, field), field).map((info) => {
          const [id] = sequenceOf(info, field);
          return readOid(present(id, field), field);
        });
        if (ids.length === 0) throw new MalformedInput(field, "empty certificatePolicies");
        if (new Set(ids).size !== ids.length) throw new MalformedInput(field, "a policy appears twice");
        cert.certificatePolicies = ids;
        break;
      }
      case OID.policyMappings: {
        const pairs = sequenceOf(parseDer(ext.value, field), field).map((m) => {
          const [from, to, extra] = sequenceOf(m, field);
          if (!from || !to || extra) throw new MalformedInput(field, "malformed policy mapping");
          return { issuerDomainPolicy: readOid(from, field), subjectDomainPolicy: readOid(to, field) };
        });
        if (pairs.length === 0) throw new MalformedInput(field, "empty policyMappings");
        cert.policyMappings = pairs;
        break;
      }
      case OID.policyConstraints: {
        const constraints: { requireExplicitPolicy?: number; inhibitPolicyMapping?: number } = {};
        let last = -1;
        for (const f of sequenceOf(parseDer(ext.value, field), field)) {
          const number = f.tag & 0x1f;
          if ((f.tag & 0xe0) !== 0x80 || number > 1 || number <= last) {
            throw new MalformedInput(field, "unexpected PolicyConstraints field");
          }
          last = number;
          const value = readSmallInt({ ...f, tag: Tag.INTEGER }, field);
          if (number === 0) constraints.requireExplicitPolicy = value;
          else constraints.inhibitPolicyMapping = value;
        }
        // RFC 5280 4.2.1.11: the two fields MUST NOT both be absent.
        if (last < 0) throw new MalformedInput(field, "empty PolicyConstraints");
        cert.policyConstraints = constraints;
        break;
      }
      case OID.inhibitAnyPolicy:
        cert.inhibitAnyPolicy = readSmallInt(
          expectTag(parseDer(ext.value, field), Tag.INTEGER, field),
          field,
        );
        break;
      case OID.nameConstraints:
        cert.nameConstraints = parseNameConstraints(parseDer(ext.value, field), field);
        break;
      case OID.crlDistributionPoints: {
        const points = sequenceOf(parseDer(ext.value, field), field).map((dp) =>
          parseDistributionPoint(dp, field)
        );
        if (points.length === 0) throw new MalformedInput(field, "empty CRLDistributionPoints");
        cert.crlDistributionPoints = points;
        break;
      }
      case OID.authorityInfoAccess: {
        // RFC 5280 4.2.2.1: SEQUENCE SIZE (1..MAX) OF AccessDescription.
        const descriptions = sequenceOf(parseDer(ext.value, field), field).map((ad) => {
          const [method, location, extra] = sequenceOf(ad, field);
          if (!method || !location || extra) throw new MalformedInput(field, "malformed AccessDescription");
          return { method: readOid(method, field), location: parseGeneralName(location, field) };
        });
        if (descriptions.length === 0) throw new MalformedInput(field, "empty AuthorityInfoAccessSyntax");
        cert.authorityInfoAccess = descriptions;
        break;
      }
    }
  }
}

/** The fields of an AuthorityKeyIdentifier extension (RFC 5280 4.2.1.1), each optional. */
export interface AuthorityKeyIdentifier {
  keyIdentifier?: Uint8Array;
  authorityCertIssuer?: GeneralName[];
  /** Content octets of the serial number. */
  authorityCertSerialNumber?: Uint8Array;
}

/**
 * Parses an AuthorityKeyIdentifier extension's value, in certificates and CRLs alike:
 * `[0] keyIdentifier`, `[1] authorityCertIssuer`, `[2] authorityCertSerialNumber`, each at
 * most once and in that order, nothing else (a repeated keyIdentifier must not replace the
 * first, which would let two readers see two keys).
 */
export function parseAuthorityKeyIdentifier(value: Uint8Array, field: string): AuthorityKeyIdentifier {
  const aki: AuthorityKeyIdentifier = {};
  let last = -1;
  for (const f of sequenceOf(parseDer(value, field), field)) {
    const number = f.tag & 0x1f;
    if (number <= last) throw new MalformedInput(field, "AuthorityKeyIdentifier fields out of order");
    last = number;
    if (f.tag === contextTag(0, false)) aki.keyIdentifier = contentOf(f);
    else if (f.tag === contextTag(1, true)) aki.authorityCertIssuer = parseGeneralNames(f, field);
    else if (f.tag === contextTag(2, false)) {
      aki.authorityCertSerialNumber = serialNumberBytes({ ...f, tag: Tag.INTEGER }, field);
    } else throw new MalformedInput(field, "unexpected AuthorityKeyIdentifier field");
  }
  return aki;
}

function parseNameConstraints(
  node: DerNode,
  field: string,
): { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] } {
  const out: { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] } = {};
  // [0] permittedSubtrees, then [1] excludedSubtrees, each at most once: a second list must
  // not replace the first, which would drop the names it excludes.
  let last = -1;
  for (const part of sequenceOf(node, field)) {
    const number = part.tag & 0x1f;
    if ((part.tag !== contextTag(0, true) && part.tag !== contextTag(1, true)) || number <= last) {
      throw new MalformedInput(field, `unexpected NameConstraints field 0x${part.tag.toString(16)}`);
    }
    last = number;
    const subtrees = childrenOf(part, field).map((st) => {
      const [base, ...rest] = sequenceOf(st, field);
      const subtree: GeneralSubtree = {
        base: parseGeneralName(present(base, field), field),
        minimum: 0,
      };
      let previous = -1;
      for (const r of rest) {
        const n = r.tag & 0x1f;
        if ((r.tag !== contextTag(0, false) && r.tag !== contextTag(1, false)) || n <= previous) {
          throw new MalformedInput(field, "unexpected GeneralSubtree field");
        }
        previous = n;
        const value = readSmallInt({ ...r, tag: Tag.INTEGER }, field);
        if (n === 0) {
          // DER: minimum is DEFAULT 0, so an encoded 0 is not DER.
          if (value === 0) {
            throw new MalformedInput(field, "GeneralSubtree minimum 0 is DEFAULT, not encoded in DER");
          }
          subtree.minimum = value;
        } else subtree.maximum = value;
      }
      return subtree;
    });
    // RFC 5280 4.2.1.10: a present subtree list must not be empty.
    if (subtrees.length === 0) throw new MalformedInput(field, "empty GeneralSubtrees");
    if (number === 0) out.permitted = subtrees;
    else out.excluded = subtrees;
  }
  if (!out.permitted && !out.excluded) throw new MalformedInput(field, "empty NameConstraints");
  return out;
}

/**
 * Parses a DistributionPoint (RFC 5280 4.2.1.13; also the name part of a CRL's issuing
 * distribution point): `[0] distributionPoint`, `[1] reasons`, `[2] cRLIssuer`, each at most
 * once and in that order, nothing else; the name is `[0] fullName` or `[1]
 * nameRelativeToCRLIssuer`. A field it does not know is refused, not skipped: a verifier
 * that skips one may read a different scope than the CRL issuer meant.
 */
export function parseDistributionPoint(
  node: DerNode,
  field: string,
  requireNameOrIssuer = true,
): DistributionPoint {
  const dp: DistributionPoint = {};
  let last = -1;
  for (const f of sequenceOf(node, field)) {
    const number = f.tag & 0x1f;
    if ((f.tag & 0xc0) !== 0x80 || number > 2 || number <= last) {
      throw new MalformedInput(field, `unexpected DistributionPoint field 0x${f.tag.toString(16)}`);
    }
    last = number;
    if (f.tag === contextTag(0, true)) {
      const [name, extra] = childrenOf(f, field);
      if (!name || extra) throw new MalformedInput(field, "distributionPoint must hold one name");
      if (name.tag === contextTag(0, true)) {
        dp.fullName = parseGeneralNames(name, field);
        if (dp.fullName.length === 0) throw new MalformedInput(field, "empty fullName");
      } else if (name.tag === contextTag(1, true)) {
        parseRdn(name, field);
        dp.relativeName = encodingOf(name);
      } else {throw new MalformedInput(
          field,
          "distributionPoint name is neither fullName nor a relative name",
        );}
    } else if (f.tag === contextTag(1, false)) {
      dp.reasons = readBitString(f, field).bytes;
    } else if (f.tag === contextTag(2, true)) {
      dp.crlIssuer = parseGeneralNames(f, field);
      if (dp.crlIssuer.length === 0) throw new MalformedInput(field, "empty cRLIssuer");
    } else {
      throw new MalformedInput(field, `unexpected DistributionPoint field 0x${f.tag.toString(16)}`);
    }
  }
  if (requireNameOrIssuer && !dp.fullName && !dp.relativeName && !dp.crlIssuer) {
    throw new MalformedInput(field, "a DistributionPoint needs a distributionPoint or cRLIssuer");
  }
  return dp;
}

const KEY_USAGE_NAMES = Object.keys(KeyUsage) as KeyUsageName[];
