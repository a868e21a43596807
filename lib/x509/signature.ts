/**
 * Signature algorithms of X.509 (RFC 5280 4.1.1.2, RFC 3279, RFC 4055, RFC 8410) mapped to
 * WebCrypto, for signing with a CA or CSR key and for verifying certificate, CSR and CRL
 * signatures.
 * @module
 */

import {
  childrenOf,
  contextTag,
  type DerNode,
  expectTag,
  parseDer,
  readOid,
  readSmallInt,
  Tag,
} from "../asn1/der.ts";
import { integer, nullValue, oid, seq } from "../asn1/der-writer.ts";
import { EC_CURVES, OID } from "../asn1/oids.ts";
import { toArrayBuffer } from "../encoding.ts";
import { MalformedInput, UnsupportedAlgorithm } from "../errors.ts";
import { keyAlgorithmOf } from "../keys.ts";
import type { AlgorithmIdentifier } from "./certificate.ts";
import { type CryptoProvider, type SignatureScheme, webCryptoProvider } from "./crypto-provider.ts";
import { namedCurveOid } from "./public-key.ts";

/** Something that signs TBS bytes: a WebCrypto key, or a KMS/HSM behind the same shape. */
export interface Signer {
  /** DER AlgorithmIdentifier of the signatures this signer makes. */
  readonly algorithmIdentifier: Uint8Array;
  /** SubjectPublicKeyInfo DER of the signing key. */
  readonly spki: Uint8Array;
  /** Signs `data`, answering the signature as X.509 carries it (DER Ecdsa-Sig-Value for ECDSA). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** Builds a {@link Signer} over a WebCrypto private key and its public key. */
export async function keySigner(privateKey: CryptoKey, publicKey: CryptoKey): Promise<Signer> {
  const algorithm = keyAlgorithmOf(privateKey);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  let algorithmIdentifier: Uint8Array;
  let params: EcdsaParams | Algorithm;
  let isEcdsa = false;
  let size = 0;
  switch (algorithm) {
    case "ECDSA-P256":
      algorithmIdentifier = seq(oid(OID.ecdsaWithSha256));
      params = { name: "ECDSA", hash: "SHA-256" };
      isEcdsa = true;
      size = 32;
      break;
    case "ECDSA-P384":
      algorithmIdentifier = seq(oid(OID.ecdsaWithSha384));
      params = { name: "ECDSA", hash: "SHA-384" };
      isEcdsa = true;
      size = 48;
      break;
    case "Ed25519":
      algorithmIdentifier = seq(oid(OID.ed25519));
      params = { name: "Ed25519" };
      break;
    default:
      algorithmIdentifier = seq(oid(OID.sha256WithRSA), nullValue());
      params = { name: "RSASSA-PKCS1-v1_5" };
  }
  return {
    algorithmIdentifier,
    spki,
    async sign(data) {
      const raw = new Uint8Array(await crypto.subtle.sign(params, privateKey, toArrayBuffer(data)));
      return isEcdsa ? ecdsaRawToDer(raw, size) : raw;
    },
  };
}

/** ECDSA r||s (WebCrypto's form) to the DER Ecdsa-Sig-Value X.509 carries. */
export function ecdsaRawToDer(raw: Uint8Array, size: number): Uint8Array {
  return seq(integer(raw.subarray(0, size)), integer(raw.subarray(size)));
}

const HASH_BY_OID: Record<string, "SHA-256" | "SHA-384" | "SHA-512"> = {
  [OID.sha256]: "SHA-256",
  [OID.sha384]: "SHA-384",
  [OID.sha512]: "SHA-512",
};

function curveOf(publicKeyAlgorithm: AlgorithmIdentifier): "P-256" | "P-384" | "P-521" {
  const curve = namedCurveOid(publicKeyAlgorithm);
  const known = curve === undefined ? undefined : EC_CURVES[curve];
  if (known) return known.name;
  throw new UnsupportedAlgorithm(`EC curve ${curve ?? "(explicit parameters)"}`);
}

/**
 * The scheme that checks a signature of `signatureAlgorithm` made by a key of
 * `publicKeyAlgorithm`; throws {@link UnsupportedAlgorithm} or {@link MalformedInput} for
 * pairs and encodings meshauth refuses (SHA-1, mismatched key types, bad parameters).
 */
export function signatureScheme(
  signatureAlgorithm: AlgorithmIdentifier,
  publicKeyAlgorithm: AlgorithmIdentifier,
): SignatureScheme {
  const sig = signatureAlgorithm.oid;
  const key = publicKeyAlgorithm.oid;
  const rsaHash: Record<string, "SHA-256" | "SHA-384" | "SHA-512"> = {
    [OID.sha256WithRSA]: "SHA-256",
    [OID.sha384WithRSA]: "SHA-384",
    [OID.sha512WithRSA]: "SHA-512",
  };
  const ecHash: Record<string, "SHA-256" | "SHA-384" | "SHA-512"> = {
    [OID.ecdsaWithSha256]: "SHA-256",
    [OID.ecdsaWithSha384]: "SHA-384",
    [OID.ecdsaWithSha512]: "SHA-512",
  };
  if (rsaHash[sig]) {
    // RFC 4055 5: the parameters MUST be NULL (absent is tolerated by most verifiers).
    const p = signatureAlgorithm.parameters;
    if (p && !(p.length === 2 && p[0] === Tag.NULL && p[1] === 0)) {
      throw new MalformedInput("signature algorithm", "RSA PKCS#1 parameters must be NULL");
    }
    if (key !== OID.rsaEncryption) throw new UnsupportedAlgorithm(`${sig} with a ${key} key`);
    return { name: "RSASSA-PKCS1-v1_5", hash: rsaHash[sig] };
  }
  if (ecHash[sig]) {
    // RFC 5758 3.2: ecdsa-with-SHA2 parameters MUST be absent.
    if (signatureAlgorithm.parameters) {
      throw new MalformedInput("signature algorithm", "ECDSA parameters must be absent");
    }
    if (key !== OID.ecPublicKey) throw new UnsupportedAlgorithm(`${sig} with a ${key} key`);
    return { name: "ECDSA", hash: ecHash[sig], namedCurve: curveOf(publicKeyAlgorithm) };
  }
  if (sig === OID.ed25519) {
    if (signatureAlgorithm.parameters) {
      throw new MalformedInput("signature algorithm", "Ed25519 parameters must be absent");
    }
    if (key !== OID.ed25519) throw new UnsupportedAlgorithm(`Ed25519 signature with a ${key} key`);
    return { name: "Ed25519" };
  }
  if (sig === OID.rsassaPss) {
    if (key === OID.rsassaPss) {
      // No runtime's WebCrypto imports an RSA key whose SPKI says id-RSASSA-PSS.
      throw new UnsupportedAlgorithm(
        "RSA keys encoded as id-RSASSA-PSS",
        "WebCrypto imports only rsaEncryption keys",
      );
    }
    if (key !== OID.rsaEncryption) throw new UnsupportedAlgorithm(`RSASSA-PSS with a ${key} key`);
    const { hash, saltLength } = parsePssParams(signatureAlgorithm.parameters);
    return { name: "RSA-PSS", hash, saltLength };
  }
  if (sig === OID.sha1WithRSA || sig === OID.ecdsaWithSha1) {
    throw new UnsupportedAlgorithm("SHA-1 signatures", "refused as insecure");
  }
  throw new UnsupportedAlgorithm(`signature algorithm ${sig}`);
}

// RFC 4055 3.1 RSASSA-PSS-params; SHA-1 defaults are refused. Each field is an explicit tag
// around exactly one value, in tag order, at most once: anything else is malformed.
function parsePssParams(
  params: Uint8Array | undefined,
): { hash: "SHA-256" | "SHA-384" | "SHA-512"; saltLength: number } {
  if (!params) throw new UnsupportedAlgorithm("RSASSA-PSS with default (SHA-1) parameters");
  const field = "PSS parameters";
  const fields = childrenOf(expectTag(parseDer(params, field), Tag.SEQUENCE, field), field);
  let hash: "SHA-256" | "SHA-384" | "SHA-512" | undefined;
  let mgfHash: string | undefined;
  let saltLength = 20;
  const hashOf = (node: DerNode | undefined, what: string) => {
    const [id] = childrenOf(expectTag(node, Tag.SEQUENCE, what), what);
    return HASH_BY_OID[readOid(id, what)];
  };
  let last = -1;
  for (const f of fields) {
    const number = f.tag & 0x1f;
    if (f.tag !== contextTag(number, true) || number > 3 || number <= last) {
      throw new MalformedInput(field, `unexpected field 0x${f.tag.toString(16)}`);
    }
    last = number;
    const inner = childrenOf(f, field);
    if (inner.length !== 1) throw new MalformedInput(field, `[${number}] must hold exactly one value`);
    if (number === 0) hash = hashOf(inner[0], "PSS hash");
    else if (number === 1) {
      const [mgfId, mgfParams, extra] = childrenOf(expectTag(inner[0], Tag.SEQUENCE, "PSS MGF"), "PSS MGF");
      if (extra) throw new MalformedInput("PSS MGF", "extra fields");
      if (readOid(mgfId, "PSS MGF") !== OID.mgf1 || !mgfParams) {
        throw new UnsupportedAlgorithm("PSS mask generation other than MGF1");
      }
      mgfHash = hashOf(mgfParams, "PSS MGF1 hash");
    } else if (number === 2) saltLength = readSmallInt(inner[0], "PSS saltLength");
    else if (readSmallInt(inner[0], "PSS trailerField") !== 1) {
      throw new UnsupportedAlgorithm("PSS trailerField other than 1");
    }
  }
  if (!hash || !mgfHash) throw new UnsupportedAlgorithm("RSASSA-PSS with SHA-1");
  if (hash !== mgfHash) throw new UnsupportedAlgorithm("RSASSA-PSS with different message and MGF1 hashes");
  return { hash, saltLength };
}

/**
 * Verifies `signature` over `data` with the public key `spki` under `signatureAlgorithm`.
 * Returns false for a signature that does not verify; throws {@link UnsupportedAlgorithm} or
 * {@link MalformedInput} for algorithms or encodings it refuses. The key is treated as one
 * that verifies again (a CA's), so a provider may keep its import.
 */
export function verifySignature(
  signatureAlgorithm: AlgorithmIdentifier,
  spki: Uint8Array,
  publicKeyAlgorithm: AlgorithmIdentifier,
  data: Uint8Array,
  signature: Uint8Array,
  provider: CryptoProvider = webCryptoProvider,
): Promise<boolean> {
  const scheme = signatureScheme(signatureAlgorithm, publicKeyAlgorithm);
  return provider.verify({ scheme, spki, data, signature, isKeyReused: true });
}
