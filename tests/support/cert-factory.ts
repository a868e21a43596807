/**
 * Test-only certificate and CRL factory: builds real, signed X.509 certificates and CRLs with
 * the core's DER writers, so validation tests use the bytes a CA would produce, including
 * deliberately broken ones (missing extensions, tampered signatures, odd constraints).
 * @module
 */

import { contextTag } from "../../lib/asn1/der.ts";
import {
  bitString,
  bool,
  explicit,
  integer,
  namedBits,
  octetString,
  oid,
  seq,
  time,
  tlv,
} from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { encodePem } from "../../lib/pem.ts";
import { generateKeyPair, type KeyAlgorithm, type KeyPair } from "../../lib/keys.ts";
import {
  type Certificate,
  KeyUsage,
  type KeyUsageName,
  parseCertificate,
} from "../../lib/x509/certificate.ts";
import { dnsName } from "../../lib/x509/general-name.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { keySigner, type Signer } from "../../lib/x509/signature.ts";

/** An extension to add as is. */
export interface RawExtension {
  oid: string;
  critical?: boolean;
  value: Uint8Array;
}

/** What to put in a test certificate. Defaults make a valid CA (with `ca`) or leaf. */
export interface CertSpec {
  /** Common name of the subject; `""` for an empty subject. */
  name: string;
  /** The issuing certificate; absent for a self-signed root. */
  issuer?: Pick<Issued, "signer" | "subject" | "ski">;
  keyAlgorithm?: KeyAlgorithm;
  keys?: KeyPair;
  serial?: bigint;
  notBefore?: Date;
  notAfter?: Date;
  ca?: boolean;
  pathLen?: number;
  keyUsage?: KeyUsageName[] | null;
  extendedKeyUsage?: string[];
  /** Encoded GeneralNames (use `dnsName`, `uriName`, `ipName` from lib/x509/general-name.ts). */
  sans?: Uint8Array[];
  sanCritical?: boolean;
  nameConstraints?: { permitted?: Uint8Array[]; excluded?: Uint8Array[] };
  crlDistributionPoint?: string;
  extensions?: RawExtension[];
  /** Standard extensions to leave out. */
  omit?: Array<"basicConstraints" | "keyUsage" | "ski" | "aki">;
  /**
   * Encodings to use as they are, for malformed certificates: subject Name, Validity, serial
   * INTEGER, SubjectPublicKeyInfo (the certificate is still signed, and issues, with `keys`).
   */
  raw?: { subject?: Uint8Array; validity?: Uint8Array; serial?: Uint8Array; spki?: Uint8Array };
  /** An X.509 v1 certificate: no version field, no extensions. */
  v1?: boolean;
}

/** A certificate the factory made, with what it takes to issue under it. */
export interface Issued {
  cert: Certificate;
  der: Uint8Array;
  pem: string;
  keys: KeyPair;
  signer: Signer;
  subject: Uint8Array;
  ski: Uint8Array;
}

const HOUR = 3600_000;
let nextSerial = 0x1000n;

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), bool(true), octetString(value)) : seq(oid(id), octetString(value));
}

async function keyId(spki: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", spki.slice())).slice(0, 20);
}

/** Issues a certificate per `spec`, signed by `spec.issuer` (or self-signed). */
export async function issue(spec: CertSpec): Promise<Issued> {
  const built = await build(spec);
  return { ...built, cert: parseCertificate(built.der) };
}

/** Signs a certificate per `spec` without parsing it: for encodings the parser must refuse. */
export async function issueUnparsed(spec: CertSpec): Promise<Omit<Issued, "cert">> {
  return await build(spec);
}

async function build(spec: CertSpec): Promise<Omit<Issued, "cert">> {
  const keys = spec.keys ?? await generateKeyPair(spec.keyAlgorithm ?? "ECDSA-P256");
  const signer = await keySigner(keys.privateKey, keys.publicKey);
  const issuerSigner = spec.issuer?.signer ?? signer;
  const subject = spec.raw?.subject ?? (spec.name === "" ? seq() : encodeName([[OID.commonName, spec.name]]));
  const ski = await keyId(signer.spki);
  const omit = new Set(spec.omit ?? []);
  const ca = spec.ca ?? false;
  const exts: Uint8Array[] = [];
  if (!omit.has("basicConstraints")) {
    const fields = [
      ...(ca ? [bool(true)] : []),
      ...(spec.pathLen !== undefined ? [integer(spec.pathLen)] : []),
    ];
    exts.push(extension(OID.basicConstraints, true, seq(...fields)));
  }
  const usage = spec.keyUsage === undefined
    ? (ca ? ["keyCertSign", "cRLSign"] : ["digitalSignature"])
    : spec.keyUsage;
  if (usage && !omit.has("keyUsage")) {
    exts.push(extension(OID.keyUsage, true, namedBits(usage.map((u) => KeyUsage[u as KeyUsageName]))));
  }
  if (spec.extendedKeyUsage) {
    exts.push(extension(OID.extKeyUsage, false, seq(...spec.extendedKeyUsage.map(oid))));
  }
  if (!omit.has("ski")) exts.push(extension(OID.subjectKeyIdentifier, false, octetString(ski)));
  if (spec.issuer && !omit.has("aki")) {
    exts.push(extension(OID.authorityKeyIdentifier, false, seq(tlv(contextTag(0, false), spec.issuer.ski))));
  }
  if (spec.sans?.length) {
    exts.push(extension(OID.subjectAltName, spec.sanCritical ?? spec.name === "", seq(...spec.sans)));
  }
  if (spec.nameConstraints) {
    const subtrees = (names: Uint8Array[]) => names.map((n) => seq(n));
    const parts = [
      ...(spec.nameConstraints.permitted
        ? [tlv(contextTag(0, true), ...subtrees(spec.nameConstraints.permitted))]
        : []),
      ...(spec.nameConstraints.excluded
        ? [tlv(contextTag(1, true), ...subtrees(spec.nameConstraints.excluded))]
        : []),
    ];
    exts.push(extension(OID.nameConstraints, true, seq(...parts)));
  }
  if (spec.crlDistributionPoint) {
    const uri = tlv(contextTag(6, false), new TextEncoder().encode(spec.crlDistributionPoint));
    const dp = seq(explicit(0, tlv(contextTag(0, true), uri)));
    exts.push(extension(OID.crlDistributionPoints, false, seq(dp)));
  }
  for (const e of spec.extensions ?? []) exts.push(extension(e.oid, e.critical ?? false, e.value));
  const notBefore = spec.notBefore ?? new Date(Date.now() - HOUR);
  const notAfter = spec.notAfter ?? new Date(Date.now() + 24 * HOUR);
  const tbs = seq(
    ...(spec.v1 ? [] : [explicit(0, integer(2))]),
    spec.raw?.serial ?? integer(spec.serial ?? nextSerial++),
    issuerSigner.algorithmIdentifier,
    spec.issuer?.subject ?? subject,
    spec.raw?.validity ?? seq(time(notBefore), time(notAfter)),
    subject,
    spec.raw?.spki ?? signer.spki,
    ...(exts.length && !spec.v1 ? [explicit(3, seq(...exts))] : []),
  );
  const der = seq(tbs, issuerSigner.algorithmIdentifier, bitString(await issuerSigner.sign(tbs)));
  return { der, pem: encodePem("CERTIFICATE", der), keys, signer, subject, ski };
}

/** Flips one bit of the signature: the certificate still parses but no longer verifies. */
export function tamper(issued: Issued): Uint8Array {
  const der = issued.der.slice();
  der[der.length - 5] ^= 0x01;
  return der;
}

/** What to put in a test CRL. */
export interface CrlSpec {
  revoked?: Array<{ serial: bigint | Uint8Array; date?: Date; reasonCode?: number }>;
  thisUpdate?: Date;
  nextUpdate?: Date | null;
  crlNumber?: bigint | null;
  crlNumberCritical?: boolean;
  /** Sign with these keys instead of the issuer's (a forged CRL). */
  signer?: Signer;
  extensions?: RawExtension[];
}

/** Issues a v2 CRL under `issuer`, as PEM (`X509 CRL`). */
export async function issueCrl(issuer: Issued, spec: CrlSpec = {}): Promise<string> {
  const signer = spec.signer ?? issuer.signer;
  const entries = (spec.revoked ?? []).map((r) =>
    seq(
      r.serial instanceof Uint8Array ? tlv(0x02, r.serial) : integer(r.serial),
      time(r.date ?? new Date(Date.now() - HOUR)),
      ...(r.reasonCode !== undefined
        ? [seq(extension(OID.reasonCode, false, tlv(0x0a, new Uint8Array([r.reasonCode]))))]
        : []),
    )
  );
  const exts: Uint8Array[] = [
    extension(OID.authorityKeyIdentifier, false, seq(tlv(contextTag(0, false), issuer.ski))),
  ];
  if (spec.crlNumber !== null) {
    exts.push(extension(OID.crlNumber, spec.crlNumberCritical ?? false, integer(spec.crlNumber ?? 1n)));
  }
  for (const e of spec.extensions ?? []) exts.push(extension(e.oid, e.critical ?? false, e.value));
  const nextUpdate = spec.nextUpdate === undefined ? new Date(Date.now() + 24 * HOUR) : spec.nextUpdate;
  const tbs = seq(
    integer(1),
    signer.algorithmIdentifier,
    issuer.subject,
    time(spec.thisUpdate ?? new Date(Date.now() - HOUR)),
    ...(nextUpdate ? [time(nextUpdate)] : []),
    ...(entries.length ? [seq(...entries)] : []),
    explicit(0, seq(...exts)),
  );
  const der = seq(tbs, signer.algorithmIdentifier, bitString(await signer.sign(tbs)));
  return encodePem("X509 CRL", der);
}

/** A root, an intermediate under it and a leaf under that: the usual three-certificate chain. */
export async function threeLevelChain(
  leafSpec: Partial<CertSpec> = {},
): Promise<{ root: Issued; intermediate: Issued; leaf: Issued }> {
  const root = await issue({ name: "Test Root", ca: true });
  const intermediate = await issue({ name: "Test Intermediate", ca: true, issuer: root });
  const leaf = await issue({
    name: "",
    sans: [dnsName("leaf.example.com")],
    ...leafSpec,
    issuer: intermediate,
  });
  return { root, intermediate, leaf };
}
