/**
 * PKCS#10 certificate signing requests (RFC 2986) for X509-SVIDs: a workload makes its key
 * where it runs and sends only this request; the CA checks it strictly.
 *
 * @example
 * ```ts
 * import { createCsr, generateKeyPair, parseCsr, SpiffeId } from "meshauth";
 * const keys = await generateKeyPair();
 * const csrPem = await createCsr({ keys, id: SpiffeId.parse("spiffe://cluster.local/ns/default/sa/photos") });
 * const request = await parseCsr(csrPem); // { id, dnsNames, keyAlgorithm, spki, der }
 * ```
 * @module
 */

import {
  childrenOf,
  contextTag,
  type DerNode,
  encodingOf,
  expectTag,
  parseDer,
  readBitString,
  readOid,
  readSmallInt,
  Tag,
} from "./asn1/der.ts";
import { integer, oid, seq, set, tlv } from "./asn1/der-writer.ts";
import { OID } from "./asn1/oids.ts";
import { fromBase64 } from "./encoding.ts";
import {
  InvalidArgument,
  InvalidCsr,
  MalformedInput,
  MeshAuthError,
  optionsOf,
  UnsupportedAlgorithm,
} from "./errors.ts";
import type { KeyAlgorithm, KeyPair } from "./keys.ts";
import { encodePem, scanPem } from "./pem.ts";
import { SpiffeId } from "./spiffeid.ts";
import {
  type AlgorithmIdentifier,
  parseAlgorithmIdentifier,
  parseExtensions,
  parseSubjectPublicKeyInfo,
} from "./x509/certificate.ts";
import { dnsName, formatIp, ipName, parseGeneralNames, parseIp, uriName } from "./x509/general-name.ts";
import { encodeSubject } from "./x509/name.ts";
import { namedCurveOid, rsaModulusBits } from "./x509/public-key.ts";
import { type CryptoProvider, webCryptoProvider } from "./x509/crypto-provider.ts";
import { keySigner, signatureScheme } from "./x509/signature.ts";
import { isDnsName } from "./verify/peer-name.ts";
import { svidIdOf } from "./svid/profile.ts";

/** What a valid X509-SVID CSR asks for. */
export interface CertificateRequest {
  /** The SPIFFE ID, the CSR's only URI SAN. */
  id: SpiffeId;
  /** DNS SANs, if any. */
  dnsNames: string[];
  /** IP address SANs, if any, in text form (`127.0.0.1`, `::1`). */
  ipAddresses: string[];
  /** The meshauth name of the requested key's algorithm. */
  keyAlgorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER, as the issued certificate will carry it. */
  spki: Uint8Array;
  /** The CSR's DER. */
  der: Uint8Array;
}

/** Options of {@link parseCsr}. */
export interface ParseCsrOptions {
  /** Verifies the CSR's signature; WebCrypto by default. */
  crypto?: CryptoProvider;
}

/** Options of {@link createCsr}. */
export interface CreateCsrOptions {
  /** The key pair the CSR is for; it is signed with the private key. */
  keys: Pick<KeyPair, "privateKey" | "publicKey">;
  /** The SPIFFE ID to request, the CSR's one URI SAN. */
  id: SpiffeId | string;
  /** DNS name SANs to request, for a server reached by name. */
  dnsNames?: string[];
  /** IP address SANs (`127.0.0.1`, `::1`), for a server reached by address. */
  ipAddresses?: string[];
  /**
   * Subject attributes by short name (`O`, `CN`, ...); empty by default, as an X509-SVID
   * needs none. A CSR for an intermediate CA needs one: its subject becomes the issuer name
   * of everything it signs, which RFC 5280 4.1.2.4 requires to be non-empty.
   */
  subject?: Record<string, string>;
}

/** Makes a PKCS#10 CSR, in PEM, whose only URI SAN is the SPIFFE ID. */
export async function createCsr(options: CreateCsrOptions): Promise<string> {
  const id = SpiffeId.from(optionsOf(options).id);
  if (!options.keys?.privateKey || !options.keys.publicKey) {
    throw new InvalidArgument("keys", "expected a key pair (from generateKeyPair or importPrivateKeyPem)");
  }
  for (const name of options.dnsNames ?? []) {
    if (typeof name !== "string" || !isDnsName(name, true)) {
      throw new InvalidArgument("dnsNames", `${JSON.stringify(name)} is not an ASCII DNS name`);
    }
  }
  const addresses = (options.ipAddresses ?? []).map((text) => {
    const address = typeof text === "string" ? parseIp(text) : undefined;
    if (!address) {
      throw new InvalidArgument("ipAddresses", `${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
    }
    return address;
  });
  const signer = await keySigner(options.keys.privateKey, options.keys.publicKey);
  const san = seq(uriName(id.toString()), ...(options.dnsNames ?? []).map(dnsName), ...addresses.map(ipName));
  // An empty subject requires a critical SAN (RFC 5280 4.2.1.6).
  const extensions = seq(
    seq(oid(OID.subjectAltName), tlv(Tag.BOOLEAN, new Uint8Array([0xff])), tlv(Tag.OCTET_STRING, san)),
  );
  const attributes = tlv(contextTag(0, true), seq(oid(OID.extensionRequest), set(extensions)));
  const info = seq(
    integer(0),
    options.subject ? encodeSubject(options.subject) : seq(),
    signer.spki,
    attributes,
  );
  const signature = await signer.sign(info);
  const der = seq(info, signer.algorithmIdentifier, tlv(Tag.BIT_STRING, new Uint8Array([0]), signature));
  return encodePem("CERTIFICATE REQUEST", der);
}

/**
 * Parses and verifies a CSR (PEM or DER). Refuses a bad signature, no URI SAN, several URI
 * SANs, a non-SPIFFE URI, RSA under 2048 bits, algorithms outside {@link KeyAlgorithm},
 * trailing bytes, and anything that is not a CSR, each with {@link InvalidCsr} and a reason.
 */
export async function parseCsr(
  input: string | Uint8Array,
  options: ParseCsrOptions = {},
): Promise<CertificateRequest> {
  const { attributes, keyAlgorithm, spki, der } = await readRequest(input, options);
  const { id, dnsNames, ipAddresses } = requestedNames(attributes);
  return { id, dnsNames, ipAddresses, keyAlgorithm, spki, der };
}

/** What a PKCS#10 request proves on its own: possession of the key it carries. */
export interface KeyRequest {
  keyAlgorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
  /** The request's DER. */
  der: Uint8Array;
}

/**
 * Parses a PKCS#10 request for its key alone: the structure, the key (one meshauth issues
 * for) and the self-signature are checked as {@link parseCsr} checks them, and the subject
 * and requested extensions are not read. This is what a Kubernetes PodCertificateRequest's
 * `stubPKCS10Request` is: an otherwise empty request whose signature proves the pod's key.
 */
export async function parseKeyRequest(
  input: string | Uint8Array,
  options: ParseCsrOptions = {},
): Promise<KeyRequest> {
  const { keyAlgorithm, spki, der } = await readRequest(input, options);
  return { keyAlgorithm, spki, der };
}

/**
 * The algorithm of a SubjectPublicKeyInfo (DER) that meshauth issues for, refusing others
 * with {@link InvalidCsr} (`unsupported-algorithm`, `weak-key` or `malformed`).
 */
export function publicKeyAlgorithm(spki: Uint8Array): KeyAlgorithm {
  if (!(spki instanceof Uint8Array)) throw new InvalidArgument("spki", "expected DER bytes");
  return inspectKey(spki).keyAlgorithm;
}

async function readRequest(
  input: string | Uint8Array,
  options: ParseCsrOptions,
): Promise<{ attributes: DerNode; keyAlgorithm: KeyAlgorithm; spki: Uint8Array; der: Uint8Array }> {
  const der = csrDer(input);
  let info: DerNode[];
  let infoNode: DerNode;
  let sigAlgNode: DerNode;
  let signature: Uint8Array;
  try {
    const [i, a, s, extra] = childrenOf(expectTag(parseDer(der, "CSR"), Tag.SEQUENCE, "CSR"), "CSR");
    if (!s || extra) throw new MalformedInput("CSR", "CertificationRequest must have three fields");
    infoNode = i;
    sigAlgNode = a;
    info = childrenOf(expectTag(i, Tag.SEQUENCE, "CSR info"), "CSR info");
    const signatureBits = readBitString(expectTag(s, Tag.BIT_STRING, "CSR signature"), "CSR signature");
    // A signature is whole octets; accepting "unused bits" would let one signed request have
    // several encodings.
    if (signatureBits.unusedBits !== 0) throw new MalformedInput("CSR signature", "has unused bits");
    signature = signatureBits.bytes;
    if (info.length !== 4) {
      throw new MalformedInput("CSR info", "expected version, subject, key and attributes");
    }
    if (readSmallInt(expectTag(info[0], Tag.INTEGER, "CSR version")) !== 0) {
      throw new MalformedInput("CSR version", "must be v1 (0)");
    }
    expectTag(info[1], Tag.SEQUENCE, "CSR subject");
    expectTag(info[3], contextTag(0, true), "CSR attributes");
  } catch (cause) {
    throw asCsrError(cause);
  }
  const spki = encodingOf(info[2]);
  const { keyAlgorithm, algorithm } = inspectKey(spki);

  let valid: boolean;
  try {
    const sigAlg = parseAlgorithmIdentifier(sigAlgNode, "CSR signature algorithm");
    const scheme = signatureScheme(sigAlg, algorithm);
    // Every CSR brings a new key, so it is not marked as reused: it would only churn a cache.
    valid = await (options.crypto ?? webCryptoProvider).verify({
      scheme,
      spki,
      data: encodingOf(infoNode),
      signature,
    });
  } catch (cause) {
    throw asCsrError(cause);
  }
  if (!valid) throw new InvalidCsr("signature", "the CSR's signature does not verify with its own key");

  return { attributes: info[3], keyAlgorithm, spki, der };
}

function csrDer(input: string | Uint8Array): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (typeof input !== "string") throw new InvalidCsr("malformed", "expected PEM text or DER bytes");
  const blocks = scanPem(input);
  const [block] = blocks;
  const isCsrLabel = (label: string) =>
    label === "CERTIFICATE REQUEST" || label === "NEW CERTIFICATE REQUEST";
  if (
    blocks.length !== 1 || !isCsrLabel(block.label) || block.endLabel !== block.label ||
    input.trim() !== block.text
  ) {
    throw new InvalidCsr(
      "malformed",
      "expected exactly one PEM block labelled CERTIFICATE REQUEST and nothing else",
    );
  }
  try {
    return fromBase64(block.body.replace(/\s+/g, ""), "CSR PEM body");
  } catch (cause) {
    throw asCsrError(cause);
  }
}

/** The key's algorithm, refusing what an X509-SVID may not carry. */
function inspectKey(spki: Uint8Array): { keyAlgorithm: KeyAlgorithm; algorithm: AlgorithmIdentifier } {
  try {
    // The CA copies this SubjectPublicKeyInfo into the certificate as it is, so it must be in
    // the one encoding every verifier reads: whole octets, and EC points uncompressed and of
    // the curve's size, which the parser checks for every key it reads.
    const { algorithm, publicKey } = parseSubjectPublicKeyInfo(spki, "CSR");
    if (algorithm.oid === OID.ecPublicKey) {
      const curve = namedCurveOid(algorithm);
      // P-521 verifies, but meshauth issues for the key algorithms it can also make.
      if (curve === OID.p256) return { keyAlgorithm: "ECDSA-P256", algorithm };
      if (curve === OID.p384) return { keyAlgorithm: "ECDSA-P384", algorithm };
      throw new InvalidCsr("unsupported-algorithm", `EC curve ${curve ?? "(explicit)"} is not supported`);
    }
    if (algorithm.oid === OID.rsaEncryption) {
      // RFC 3279 2.3.1: the parameters MUST be NULL (Go's crypto/x509 refuses keys without).
      const p = algorithm.parameters;
      if (!(p?.length === 2 && p[0] === Tag.NULL && p[1] === 0)) {
        throw new MalformedInput("CSR key algorithm", "rsaEncryption parameters must be NULL");
      }
      const bits = rsaModulusBits(publicKey);
      if (bits < 2048) {
        throw new InvalidCsr("weak-key", `RSA key of ${bits} bits; at least 2048 are required`);
      }
      // Exactly the sizes meshauth issues for, which every verifier (ours included) accepts.
      if (bits !== 2048 && bits !== 3072 && bits !== 4096) {
        throw new InvalidCsr(
          "unsupported-algorithm",
          `RSA key of ${bits} bits; 2048, 3072 or 4096 are supported`,
        );
      }
      return { keyAlgorithm: `RSA-${bits}` as KeyAlgorithm, algorithm };
    }
    if (algorithm.oid === OID.ed25519) {
      // RFC 8410 3: the parameters MUST be absent.
      if (algorithm.parameters) {
        throw new MalformedInput("CSR key algorithm", "Ed25519 parameters must be absent");
      }
      return { keyAlgorithm: "Ed25519", algorithm };
    }
    throw new InvalidCsr("unsupported-algorithm", `public key algorithm ${algorithm.oid} is not supported`);
  } catch (cause) {
    throw asCsrError(cause);
  }
}

function requestedNames(attributes: DerNode): { id: SpiffeId; dnsNames: string[]; ipAddresses: string[] } {
  let sans: ReturnType<typeof parseGeneralNames> | undefined;
  try {
    let seenExtensionRequest = false;
    for (const attr of childrenOf(attributes, "CSR attributes")) {
      const [typeNode, values] = childrenOf(expectTag(attr, Tag.SEQUENCE, "CSR attribute"), "CSR attribute");
      if (readOid(typeNode) !== OID.extensionRequest) continue;
      // RFC 2985 5.4.2: extensionRequest is single-valued, and an attribute type appears once.
      // Reading only one of several would let a CSR carry URI SANs the checks below never see.
      if (seenExtensionRequest) throw new MalformedInput("CSR attributes", "more than one extensionRequest");
      seenExtensionRequest = true;
      const exts = childrenOf(expectTag(values, Tag.SET, "extensionRequest"), "extensionRequest");
      if (exts.length !== 1) {
        throw new MalformedInput("extensionRequest", `expected exactly one value, found ${exts.length}`);
      }
      for (const ext of parseExtensions(exts[0], "CSR")) {
        if (ext.oid === OID.subjectAltName) {
          sans = parseGeneralNames(
            expectTag(parseDer(ext.value, "CSR SAN"), Tag.SEQUENCE, "CSR SAN"),
            "CSR SAN",
          );
        }
      }
    }
  } catch (cause) {
    throw asCsrError(cause);
  }
  const id = svidIdOf((sans ?? []).flatMap((n) => (n.type === "uri" ? [n.value] : [])));
  if (!(id instanceof SpiffeId)) {
    throw new InvalidCsr(id.reason, `the CSR has ${id.message}`, { cause: id.cause });
  }
  // DNS names compare case-insensitively; the CA issues and matches them lowercase.
  const dnsNames = (sans ?? []).flatMap((n) => (n.type === "dns" ? [n.value.toLowerCase()] : []));
  const badName = dnsNames.find((name) => !isDnsName(name, true));
  if (badName !== undefined) {
    throw new InvalidCsr("malformed", `DNS SAN ${JSON.stringify(badName)} is not a host name`);
  }
  const addresses = (sans ?? []).flatMap((n) => (n.type === "ip" ? [n.value] : []));
  if (addresses.some((a) => a.length !== 4 && a.length !== 16)) {
    throw new InvalidCsr("malformed", "an IP address SAN must be 4 or 16 bytes");
  }
  return { id, dnsNames, ipAddresses: addresses.map(formatIp) };
}

function asCsrError(cause: unknown): MeshAuthError {
  if (cause instanceof InvalidCsr) return cause;
  if (cause instanceof UnsupportedAlgorithm) {
    return new InvalidCsr("unsupported-algorithm", cause.message, { cause });
  }
  const message = cause instanceof Error ? cause.message : String(cause);
  return new InvalidCsr("malformed", message, { cause });
}
