/**
 * X.509 certificate parsing (RFC 5280 4.1) into a read-only model the validator and the CA
 * share. Parsing is strict DER; extensions are decoded once, by `extensions.ts`.
 * @module
 */

import {
  checkDer,
  childrenOf,
  contentOf,
  contextTag,
  type DerNode,
  encodingOf,
  expectTag,
  integerBytes,
  parseDer,
  present,
  readBitString,
  readBoolean,
  readOid,
  readSmallInt,
  readTime,
  sequenceOf,
  Tag,
} from "../asn1/der.ts";
import { OID } from "../asn1/oids.ts";
import { toHex } from "../encoding.ts";
import { describeValue, InvalidArgument, MalformedInput } from "../errors.ts";
import { derBlocks } from "../pem.ts";
import {
  decodeExtensions,
  type DistributionPoint,
  type GeneralSubtree,
  KeyUsage,
  type KeyUsageName,
} from "./extensions.ts";
import type { GeneralName } from "./general-name.ts";
import { type Name, parseName } from "./name.ts";
import { checkEcPoint } from "./public-key.ts";

export { decodeExtensions, type DistributionPoint, type GeneralSubtree, KeyUsage, type KeyUsageName };
export { parseDistributionPoint } from "./extensions.ts";

/** AlgorithmIdentifier: the OID and the DER of its parameters, if any. */
export interface AlgorithmIdentifier {
  /** The algorithm's OID. */
  oid: string;
  /** DER of the parameters, when present. */
  parameters?: Uint8Array;
  /** DER of the whole AlgorithmIdentifier, for byte-for-byte comparison. */
  der: Uint8Array;
}

/** One extension as it appears in the certificate. */
export interface Extension {
  /** The extension's OID. */
  oid: string;
  /** Whether a validator that does not process it must refuse the certificate. */
  critical: boolean;
  /** The extnValue's contents, DER. */
  value: Uint8Array;
}

/** A parsed certificate. Raw encodings are kept for signatures and matching. */
export interface Certificate {
  /** The whole certificate, DER. */
  der: Uint8Array;
  /** The signed TBSCertificate, DER. */
  tbs: Uint8Array;
  /** The X.509 version: 1, 2 or 3. */
  version: number;
  /** Serial number content octets (two's complement, as encoded). */
  serialBytes: Uint8Array;
  /** Serial number as lowercase hex of its content octets. */
  serialNumber: string;
  /** The outer signature algorithm. */
  signatureAlgorithm: AlgorithmIdentifier;
  /** The signature algorithm inside TBSCertificate; RFC 5280 requires it to equal the outer one. */
  tbsSignatureAlgorithm: AlgorithmIdentifier;
  /** The signature bits. */
  signature: Uint8Array;
  /** The issuer's distinguished name. */
  issuer: Name;
  /** The subject's distinguished name; empty (no RDNs) for most SVIDs. */
  subject: Name;
  /** Start of the validity period. */
  notBefore: Date;
  /** End of the validity period (inclusive). */
  notAfter: Date;
  /** DER of SubjectPublicKeyInfo. */
  spki: Uint8Array;
  /** The public key's algorithm and parameters (the curve of an EC key). */
  publicKeyAlgorithm: AlgorithmIdentifier;
  /** The subjectPublicKey bits. */
  publicKey: Uint8Array;
  /** Deprecated issuerUniqueID (v2), when present. */
  issuerUniqueId?: Uint8Array;
  /** Deprecated subjectUniqueID (v2), when present. */
  subjectUniqueId?: Uint8Array;
  /** Every extension, in certificate order, decoded or not. */
  extensions: Extension[];
  /** Basic constraints (RFC 5280 4.2.1.9): whether a CA, and its path length limit. */
  basicConstraints?: { ca: boolean; pathLength?: number };
  /** Key usage bits asserted, undefined when the extension is absent. */
  keyUsage?: Set<KeyUsageName>;
  /** EKU OIDs, undefined when the extension is absent. */
  extendedKeyUsage?: string[];
  /** Subject alternative names (RFC 5280 4.2.1.6). */
  subjectAltName?: GeneralName[];
  /** Subject key identifier (RFC 5280 4.2.1.2). */
  subjectKeyIdentifier?: Uint8Array;
  /** keyIdentifier of the authority key identifier extension (RFC 5280 4.2.1.1). */
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
  /** Name constraints (RFC 5280 4.2.1.10): the permitted and excluded subtrees. */
  nameConstraints?: { permitted?: GeneralSubtree[]; excluded?: GeneralSubtree[] };
  /** CRL distribution points (RFC 5280 4.2.1.13). */
  crlDistributionPoints?: DistributionPoint[];
  /** Authority information access (RFC 5280 4.2.2.1): access method OID and location. */
  authorityInfoAccess?: Array<{ method: string; location: GeneralName }>;
}

/**
 * Parses one or more certificates from PEM text or one from DER bytes (a Uint8Array). Throws
 * {@link MalformedInput} for bytes that are not a certificate, {@link UnsupportedAlgorithm} for
 * a compressed EC key, {@link InvalidArgument} for an input of another type.
 */
export function parseCertificates(input: string | Uint8Array, what = "certificate"): Certificate[] {
  return derBlocks(input, ["CERTIFICATE"], what).map((der) => parseCertificate(der, what));
}

/**
 * Parses one DER certificate (a Uint8Array, a Node Buffer included). Throws
 * {@link MalformedInput} with the offending field, {@link UnsupportedAlgorithm} for a
 * compressed EC key, or {@link InvalidArgument} for an input that is not a Uint8Array (PEM
 * text is {@link parseCertificates}'s).
 */
export function parseCertificate(der: Uint8Array, what = "certificate"): Certificate {
  if (!(der instanceof Uint8Array)) {
    const hint = typeof der === "string"
      ? "; parseCertificates reads PEM text"
      : (der as unknown) instanceof ArrayBuffer
      ? "; wrap an ArrayBuffer in new Uint8Array()"
      : "";
    throw new InvalidArgument(what, `expected DER bytes (a Uint8Array), got ${describeValue(der)}${hint}`);
  }
  const root = parseDer(der, what);
  const [tbsNode, sigAlgNode, sigNode, extra] = sequenceOf(root, what);
  if (!sigNode || extra) throw new MalformedInput(what, "Certificate must have exactly three fields");
  const tbs = sequenceOf(tbsNode, `${what} tbsCertificate`);
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
  const serialBytes = serialNumberBytes(serialNode, `${what} serialNumber`);
  const tbsSignatureAlgorithm = parseAlgorithmIdentifier(tbs[i++], `${what} signature`);
  const issuer = parseName(present(tbs[i++], `${what} issuer`), `${what} issuer`);
  // RFC 5280 4.1.2.4: the issuer field MUST contain a non-empty distinguished name.
  if (issuer.rdns.length === 0) throw new MalformedInput(`${what} issuer`, "empty issuer name");
  const validity = sequenceOf(tbs[i++], `${what} validity`);
  if (validity.length !== 2) throw new MalformedInput(`${what} validity`, "must hold two times");
  // RFC 5280 4.1.2.5: through 2049 a validity date is UTCTime, as in CRLs (5.1.2.4).
  const notBefore = readTime(validity[0], `${what} notBefore`, true);
  const notAfter = readTime(validity[1], `${what} notAfter`, true);
  const subject = parseName(present(tbs[i++], `${what} subject`), `${what} subject`);
  const spkiNode = tbs[i++];
  const { algorithm: publicKeyAlgorithm, publicKey } = readSubjectPublicKeyInfo(spkiNode, what);

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
    cert.issuerUniqueId = uniqueIdentifier(tbs[i++], `${what} issuerUniqueID`);
  }
  if (tbs[i]?.tag === contextTag(2, false)) {
    if (version < 2) throw new MalformedInput(what, "subjectUniqueID requires v2 or v3");
    cert.subjectUniqueId = uniqueIdentifier(tbs[i++], `${what} subjectUniqueID`);
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
 * Most serial number octets parsed. RFC 5280 4.1.2.2 allows 20 (21 with a sign octet) and the
 * validator holds issued certificates to that; parsing tolerates a little more (non-conforming
 * issuers exist, and a trust anchor's serial is never used), and no more, so the length a peer
 * chooses never drives work.
 */
export const MAX_SERIAL_OCTETS = 32;

/** A serial number's content octets (certificates, CRL entries, AKI), bounded. */
export function serialNumberBytes(node: DerNode, field: string): Uint8Array {
  const bytes = integerBytes(node, field);
  if (bytes.length > MAX_SERIAL_OCTETS) {
    throw new MalformedInput(
      field,
      `serial number of ${bytes.length} octets (at most ${MAX_SERIAL_OCTETS} are read)`,
    );
  }
  return bytes;
}

/** UniqueIdentifier ::= BIT STRING, tagged IMPLICIT: its content must be a BIT STRING's. */
function uniqueIdentifier(node: DerNode, field: string): Uint8Array {
  readBitString({ ...node, tag: Tag.BIT_STRING }, field);
  return contentOf(node);
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
  const list = sequenceOf(node, `${what} extensions`);
  if (list.length === 0) throw new MalformedInput(`${what} extensions`, "empty Extensions");
  const seen = new Set<string>();
  return list.map((ext) => {
    const f = sequenceOf(ext, `${what} extension`);
    const id = readOid(present(f[0], `${what} extension`), `${what} extension`);
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

/** A SubjectPublicKeyInfo (RFC 5280 4.1.2.7): the key's algorithm and the key itself. */
export interface SubjectPublicKeyInfo {
  /** The key's algorithm and parameters (the curve of an EC key). */
  algorithm: AlgorithmIdentifier;
  /** The subjectPublicKey bits, whole octets: an EC point, an RSAPublicKey, an Ed25519 key. */
  publicKey: Uint8Array;
}

/**
 * Parses a SubjectPublicKeyInfo (DER) as a certificate's is parsed; `what` names it in errors.
 * An EC key's point must have one of RFC 5480's forms, and be uncompressed (`checkEcPoint`).
 */
export function parseSubjectPublicKeyInfo(spki: Uint8Array, what = "public key"): SubjectPublicKeyInfo {
  return readSubjectPublicKeyInfo(parseDer(spki, what), what);
}

function readSubjectPublicKeyInfo(node: DerNode | undefined, what: string): SubjectPublicKeyInfo {
  const [algorithmNode, keyNode, extra] = sequenceOf(node, `${what} subjectPublicKeyInfo`);
  if (!keyNode || extra) throw new MalformedInput(`${what} subjectPublicKeyInfo`, "malformed");
  const spki = {
    algorithm: parseAlgorithmIdentifier(algorithmNode, `${what} public key algorithm`),
    publicKey: octetAligned(keyNode, `${what} public key`),
  };
  if (spki.algorithm.oid === OID.ecPublicKey) checkEcPoint(spki, `${what} public key`);
  return spki;
}

/** Parses an AlgorithmIdentifier. */
export function parseAlgorithmIdentifier(node: DerNode | undefined, field: string): AlgorithmIdentifier {
  const [id, params, extra] = sequenceOf(node, field);
  if (!id || extra) throw new MalformedInput(field, "malformed AlgorithmIdentifier");
  if (params) checkDer(params, `${field} parameters`);
  return {
    oid: readOid(id, field),
    parameters: params ? encodingOf(params) : undefined,
    der: encodingOf(node!),
  };
}

/** The extension with this OID, if present. */
export function extensionOf(cert: Certificate, oid: string): Extension | undefined {
  return cert.extensions.find((e) => e.oid === oid);
}

/** The URI SANs of a certificate. */
export function uriSans(cert: Certificate): string[] {
  return (cert.subjectAltName ?? []).flatMap((n) => (n.type === "uri" ? [n.value] : []));
}

/**
 * True when `value` has the shape {@link parseCertificate} answers: a caller may hand in a
 * certificate it parsed before, and anything else in its place is refused before any field
 * of it is read.
 */
export function isParsedCertificate(value: unknown): value is Certificate {
  const c = value as Partial<Certificate> | null;
  const isName = (n: unknown) => {
    const name = n as Partial<Name> | null;
    return typeof name === "object" && name !== null && typeof name.key === "string" &&
      Array.isArray(name.rdns) && Array.isArray(name.rdnKeys) && name.der instanceof Uint8Array;
  };
  return typeof c === "object" && c !== null && c.der instanceof Uint8Array && c.tbs instanceof Uint8Array &&
    c.spki instanceof Uint8Array && c.publicKey instanceof Uint8Array && c.signature instanceof Uint8Array &&
    c.serialBytes instanceof Uint8Array && typeof c.serialNumber === "string" &&
    typeof c.version === "number" &&
    c.notBefore instanceof Date && c.notAfter instanceof Date && isName(c.subject) && isName(c.issuer) &&
    Array.isArray(c.extensions) && typeof c.publicKeyAlgorithm?.oid === "string" &&
    typeof c.signatureAlgorithm?.oid === "string" && typeof c.tbsSignatureAlgorithm?.oid === "string";
}

/** True when the certificate is self-issued (RFC 5280 6.1: subject and issuer match). */
export function isSelfIssued(cert: Certificate): boolean {
  return cert.subject.key === cert.issuer.key;
}
