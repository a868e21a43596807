/**
 * X.509 certificate parsing (RFC 5280 4.1) into a read-only model the validator and the CA
 * share. Parsing is strict DER; extensions are decoded once, here.
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
  integerBytes,
  parseDer,
  readBitString,
  readBoolean,
  readOid,
  readSmallInt,
  readTime,
  Tag,
} from "../asn1/der.ts";
import { OID } from "../asn1/oids.ts";
import { toHex } from "../encoding.ts";
import { MalformedInput } from "../errors.ts";
import { derBlocks } from "../pem.ts";
import { type GeneralName, parseGeneralName, parseGeneralNames } from "./general-name.ts";
import { type Name, parseName } from "./name.ts";

/** AlgorithmIdentifier: the OID and the DER of its parameters, if any. */
export interface AlgorithmIdentifier {
  oid: string;
  parameters?: Uint8Array;
  der: Uint8Array;
}

/** One extension as it appears in the certificate. */
export interface Extension {
  oid: string;
  critical: boolean;
  value: Uint8Array;
}

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
export type KeyUsageName = keyof typeof KeyUsage;

/** A GeneralSubtree of a name constraint. */
export interface GeneralSubtree {
  base: GeneralName;
  minimum: number;
  maximum?: number;
}

/** A DistributionPoint of the CRL distribution points extension (RFC 5280 4.2.1.13). */
export interface DistributionPoint {
  fullName?: GeneralName[];
  relativeName?: Uint8Array;
  reasons?: Uint8Array;
  crlIssuer?: GeneralName[];
}

/** A parsed certificate. Raw encodings are kept for signatures and matching. */
export interface Certificate {
  der: Uint8Array;
  tbs: Uint8Array;
  version: number;
  /** Serial number content octets (two's complement, as encoded). */
  serialBytes: Uint8Array;
  /** Serial number as lowercase hex of its content octets. */
  serialNumber: string;
  signatureAlgorithm: AlgorithmIdentifier;
  tbsSignatureAlgorithm: AlgorithmIdentifier;
  signature: Uint8Array;
  issuer: Name;
  subject: Name;
  notBefore: Date;
  notAfter: Date;
  /** DER of SubjectPublicKeyInfo. */
  spki: Uint8Array;
  publicKeyAlgorithm: AlgorithmIdentifier;
  publicKey: Uint8Array;
  issuerUniqueId?: Uint8Array;
  subjectUniqueId?: Uint8Array;
  extensions: Extension[];
  basicConstraints?: { ca: boolean; pathLength?: number };
  /** Key usage bits asserted, undefined when the extension is absent. */
  keyUsage?: Set<KeyUsageName>;
  /** EKU OIDs, undefined when the extension is absent. */
  extendedKeyUsage?: string[];
  subjectAltName?: GeneralName[];
  subjectKeyIdentifier?: Uint8Array;
  authorityKeyIdentifier?: Uint8Array;
  /** authorityCertIssuer of the AKI extension, when present. */
  authorityCertIssuer?: GeneralName[];
  /** authorityCertSerialNumber of the AKI extension (content octets), when present. */
  authorityCertSerialNumber?: Uint8Array;
  /** Policy OIDs of the certificate policies extension (RFC 5280 4.2.1.4). */
  certificatePolicies?: string[];
  /** Policy mappings (RFC 5280 4.2.1.5), issuer domain to subject domain. */
  policyMappings?: Array<{ issuerDomainPolicy: string; subjectDomainPolicy: string }>;
  /** Policy constraints (RFC 5280 4.2.1.11): skip counts, each optional. */
  policyConstraints?: { requireExplicitPolicy?: number; inhibitPolicyMapping?: number };
  /** inhibitAnyPolicy skip count (RFC 5280 4.2.1.14). */
  inhibitAnyPolicy?: number;
  nameConstraints?: { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] };
  crlDistributionPoints?: DistributionPoint[];
  /** Authority information access (RFC 5280 4.2.2.1): access method OID and location. */
  authorityInfoAccess?: Array<{ method: string; location: GeneralName }>;
}

/** Parses one or more certificates from PEM text or one from DER bytes. */
export function parseCertificates(input: string | Uint8Array, what = "certificate"): Certificate[] {
  return derBlocks(input, ["CERTIFICATE"], what).map((der) => parseCertificate(der, what));
}

const KEY_USAGE_NAMES = Object.keys(KeyUsage) as KeyUsageName[];

/** Parses one DER certificate. Throws {@link MalformedInput} with the offending field. */
export function parseCertificate(der: Uint8Array, what = "certificate"): Certificate {
  const root = parseDer(der, what);
  const [tbsNode, sigAlgNode, sigNode, extra] = sequenceChildren(root, what);
  if (!sigNode || extra) throw new MalformedInput(what, "Certificate must have exactly three fields");
  const tbs = sequenceChildren(tbsNode, `${what} tbsCertificate`);
  let i = 0;
  let version = 1;
  if (tbs[0]?.tag === contextTag(0, true)) {
    const [v, more] = childrenOf(tbs[0], `${what} version`);
    if (!v || more) throw new MalformedInput(`${what} version`, "malformed");
    version = readSmallInt(expectTag(v, Tag.INTEGER, `${what} version`), `${what} version`) + 1;
    // DER: DEFAULT values are omitted, so an explicit v1 is an encoding error.
    if (version === 1) throw new MalformedInput(`${what} version`, "explicit v1 is not DER");
    if (version > 3) throw new MalformedInput(`${what} version`, `unknown version ${version}`);
    i++;
  }
  const serialNode = expectTag(tbs[i++], Tag.INTEGER, `${what} serialNumber`);
  const serialBytes = integerBytes(serialNode, `${what} serialNumber`);
  const tbsSignatureAlgorithm = parseAlgorithmIdentifier(tbs[i++], `${what} signature`);
  const issuer = parseName(tbs[i++] ?? missing(`${what} issuer`), `${what} issuer`);
  // RFC 5280 4.1.2.4: the issuer field MUST contain a non-empty distinguished name.
  if (issuer.rdns.length === 0) throw new MalformedInput(`${what} issuer`, "empty issuer name");
  const validity = sequenceChildren(tbs[i++], `${what} validity`);
  if (validity.length !== 2) throw new MalformedInput(`${what} validity`, "must hold two times");
  const notBefore = readTime(validity[0], `${what} notBefore`);
  const notAfter = readTime(validity[1], `${what} notAfter`);
  const subject = parseName(tbs[i++] ?? missing(`${what} subject`), `${what} subject`);
  const spkiNode = tbs[i++];
  const [pkAlgNode, pkNode, pkExtra] = sequenceChildren(spkiNode, `${what} subjectPublicKeyInfo`);
  if (!pkNode || pkExtra) throw new MalformedInput(`${what} subjectPublicKeyInfo`, "malformed");
  const publicKeyAlgorithm = parseAlgorithmIdentifier(pkAlgNode, `${what} public key algorithm`);
  const publicKey = octetAligned(pkNode, `${what} public key`);

  const cert: Certificate = {
    der,
    tbs: encodingOf(tbsNode),
    version,
    serialBytes,
    serialNumber: toHex(serialBytes),
    signatureAlgorithm: parseAlgorithmIdentifier(sigAlgNode, `${what} signatureAlgorithm`),
    tbsSignatureAlgorithm,
    signature: octetAligned(sigNode, `${what} signature`),
    issuer,
    subject,
    notBefore,
    notAfter,
    spki: encodingOf(spkiNode),
    publicKeyAlgorithm,
    publicKey,
    extensions: [],
  };
  if (tbs[i]?.tag === contextTag(1, false)) {
    if (version < 2) throw new MalformedInput(what, "issuerUniqueID requires v2 or v3");
    cert.issuerUniqueId = contentOf(tbs[i++]);
  }
  if (tbs[i]?.tag === contextTag(2, false)) {
    if (version < 2) throw new MalformedInput(what, "subjectUniqueID requires v2 or v3");
    cert.subjectUniqueId = contentOf(tbs[i++]);
  }
  if (tbs[i]?.tag === contextTag(3, true)) {
    if (version !== 3) throw new MalformedInput(what, "extensions require v3");
    const [exts, more] = childrenOf(tbs[i++], `${what} extensions`);
    if (!exts || more) throw new MalformedInput(`${what} extensions`, "malformed");
    cert.extensions = parseExtensions(exts, what);
    decodeExtensions(cert, what);
  }
  if (i !== tbs.length) throw new MalformedInput(what, "unexpected fields at the end of tbsCertificate");
  return cert;
}

/**
 * A BIT STRING that carries whole octets (a signature or a public key): an unused-bit count
 * other than zero would give one signature several encodings of the same certificate.
 */
export function octetAligned(node: DerNode | undefined, field: string): Uint8Array {
  const { unusedBits, bytes } = readBitString(expectTag(node, Tag.BIT_STRING, field), field);
  if (unusedBits !== 0) throw new MalformedInput(field, "BIT STRING of whole octets has unused bits");
  return bytes;
}

/** Parses an Extensions SEQUENCE; refuses an empty list and duplicate OIDs (RFC 5280 4.2). */
export function parseExtensions(node: DerNode, what: string): Extension[] {
  const list = sequenceChildren(node, `${what} extensions`);
  if (list.length === 0) throw new MalformedInput(`${what} extensions`, "empty Extensions");
  const seen = new Set<string>();
  return list.map((ext) => {
    const f = sequenceChildren(ext, `${what} extension`);
    const id = readOid(f[0] ?? missing(`${what} extension`), `${what} extension`);
    if (seen.has(id)) throw new MalformedInput(`${what} extensions`, `duplicate extension ${id}`);
    seen.add(id);
    let critical = false;
    let k = 1;
    if (f[k]?.tag === Tag.BOOLEAN) {
      critical = readBoolean(f[k++], `${what} extension ${id} critical`);
      // DER: DEFAULT FALSE must be omitted.
      if (!critical) {
        throw new MalformedInput(`${what} extension ${id}`, "explicit critical FALSE is not DER");
      }
    }
    const value = expectTag(f[k++], Tag.OCTET_STRING, `${what} extension ${id} value`);
    if (k !== f.length) throw new MalformedInput(`${what} extension ${id}`, "extra fields");
    return { oid: id, critical, value: contentOf(value) };
  });
}

function decodeExtensions(cert: Certificate, what: string): void {
  for (const ext of cert.extensions) {
    const field = `${what} extension ${ext.oid}`;
    switch (ext.oid) {
      case OID.basicConstraints: {
        const f = sequenceChildren(parseDer(ext.value, field), field);
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
        const ids = sequenceChildren(parseDer(ext.value, field), field).map((n) => readOid(n, field));
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
        // RFC 5280 4.2.1.1: [0] keyIdentifier, [1] authorityCertIssuer, [2] serial, in order.
        let last = -1;
        for (const f of sequenceChildren(parseDer(ext.value, field), field)) {
          const number = f.tag & 0x1f;
          if (number <= last) throw new MalformedInput(field, "AuthorityKeyIdentifier fields out of order");
          last = number;
          if (f.tag === contextTag(0, false)) cert.authorityKeyIdentifier = contentOf(f);
          else if (f.tag === contextTag(1, true)) cert.authorityCertIssuer = parseGeneralNames(f, field);
          else if (f.tag === contextTag(2, false)) {
            cert.authorityCertSerialNumber = integerBytes({ ...f, tag: Tag.INTEGER }, field);
          } else throw new MalformedInput(field, "unexpected AuthorityKeyIdentifier field");
        }
        break;
      }
      case OID.certificatePolicies: {
        const ids = sequenceChildren(parseDer(ext.value, field), field).map((info) => {
          const [id] = sequenceChildren(info, field);
          return readOid(id ?? missing(field), field);
        });
        if (ids.length === 0) throw new MalformedInput(field, "empty certificatePolicies");
        if (new Set(ids).size !== ids.length) throw new MalformedInput(field, "a policy appears twice");
        cert.certificatePolicies = ids;
        break;
      }
      case OID.policyMappings: {
        const pairs = sequenceChildren(parseDer(ext.value, field), field).map((m) => {
          const [from, to, extra] = sequenceChildren(m, field);
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
        for (const f of sequenceChildren(parseDer(ext.value, field), field)) {
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
        const points = sequenceChildren(parseDer(ext.value, field), field).map((dp) =>
          parseDistributionPoint(dp, field)
        );
        if (points.length === 0) throw new MalformedInput(field, "empty CRLDistributionPoints");
        cert.crlDistributionPoints = points;
        break;
      }
      case OID.authorityInfoAccess: {
        // RFC 5280 4.2.2.1: SEQUENCE SIZE (1..MAX) OF AccessDescription.
        const descriptions = sequenceChildren(parseDer(ext.value, field), field).map((ad) => {
          const [method, location, extra] = sequenceChildren(ad, field);
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

function parseNameConstraints(
  node: DerNode,
  field: string,
): { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] } {
  const out: { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] } = {};
  for (const part of sequenceChildren(node, field)) {
    const subtrees = childrenOf(part, field).map((st) => {
      const [base, ...rest] = sequenceChildren(st, field);
      const subtree: GeneralSubtree = {
        base: parseGeneralName(base ?? missing(field), field),
        minimum: 0,
      };
      for (const r of rest) {
        const value = readSmallInt({ ...r, tag: Tag.INTEGER }, field);
        if (r.tag === contextTag(0, false)) subtree.minimum = value;
        else if (r.tag === contextTag(1, false)) subtree.maximum = value;
        else throw new MalformedInput(field, "unexpected GeneralSubtree field");
      }
      return subtree;
    });
    // RFC 5280 4.2.1.10: a present subtree list must not be empty.
    if (subtrees.length === 0) throw new MalformedInput(field, "empty GeneralSubtrees");
    if (part.tag === contextTag(0, true)) out.permitted = subtrees;
    else if (part.tag === contextTag(1, true)) out.excluded = subtrees;
    else throw new MalformedInput(field, "unexpected NameConstraints field");
  }
  if (!out.permitted && !out.excluded) throw new MalformedInput(field, "empty NameConstraints");
  return out;
}

/** Parses a DistributionPoint (also used by the CRL issuing distribution point). */
export function parseDistributionPoint(node: DerNode, field: string): DistributionPoint {
  const dp: DistributionPoint = {};
  for (const f of sequenceChildren(node, field)) {
    if (f.tag === contextTag(0, true)) {
      const [name] = childrenOf(f, field);
      if (name?.tag === contextTag(0, true)) dp.fullName = parseGeneralNames(name, field);
      else if (name?.tag === contextTag(1, true)) dp.relativeName = encodingOf(name);
    } else if (f.tag === contextTag(1, false)) dp.reasons = contentOf(f);
    else if (f.tag === contextTag(2, true)) dp.crlIssuer = parseGeneralNames(f, field);
  }
  return dp;
}

/** Parses an AlgorithmIdentifier. */
export function parseAlgorithmIdentifier(node: DerNode | undefined, field: string): AlgorithmIdentifier {
  const [id, params, extra] = sequenceChildren(node, field);
  if (!id || extra) throw new MalformedInput(field, "malformed AlgorithmIdentifier");
  return {
    oid: readOid(id, field),
    parameters: params ? encodingOf(params) : undefined,
    der: encodingOf(node!),
  };
}

function sequenceChildren(node: DerNode | undefined, field: string): DerNode[] {
  return childrenOf(expectTag(node, Tag.SEQUENCE, field), field);
}

function missing(field: string): never {
  throw new MalformedInput(field, "missing");
}

/** The extension with this OID, if present. */
export function extensionOf(cert: Certificate, oid: string): Extension | undefined {
  return cert.extensions.find((e) => e.oid === oid);
}

/** The URI SANs of a certificate. */
export function uriSans(cert: Certificate): string[] {
  return (cert.subjectAltName ?? []).flatMap((n) => (n.type === "uri" ? [n.value] : []));
}

/** True when the certificate is self-issued (RFC 5280 6.1: subject and issuer match). */
export function isSelfIssued(cert: Certificate): boolean {
  return cert.subject.key === cert.issuer.key;
}
