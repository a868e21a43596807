/**
 * The public-key work the core does most, verifying X.509 signatures and hashing, behind one
 * small interface. WebCrypto is the default and runs on every runtime; a server may pass a
 * native provider with the same results. The CA server on Node passes one on node:crypto,
 * which skips WebCrypto's per-call job and halves the CPU a CSR costs to check.
 *
 * @example
 * ```ts
 * import { CertificateAuthority, webCryptoProvider } from "meshauth";
 * const ca = await CertificateAuthority.createRoot({ trustDomain: "cluster.local", crypto: webCryptoProvider });
 * ```
 * @module
 */

import { childrenOf, expectTag, integerBytes, latin1, parseDer, Tag } from "../asn1/der.ts";
import { toArrayBuffer } from "../encoding.ts";
import { MalformedInput, RuntimeUnsupported } from "../errors.ts";
import { parseSubjectPublicKeyInfo } from "./certificate.ts";
import { CURVE_SIZE, isOnCurve } from "./public-key.ts";

/** Hash functions by their WebCrypto names. */
export type HashAlgorithm = "SHA-1" | "SHA-256" | "SHA-384" | "SHA-512";

/** A signature scheme by its WebCrypto name and parameters; the core derives it from X.509 algorithm identifiers. */
export type SignatureScheme =
  | { name: "ECDSA"; hash: "SHA-256" | "SHA-384" | "SHA-512"; namedCurve: "P-256" | "P-384" | "P-521" }
  | { name: "Ed25519" }
  | { name: "RSASSA-PKCS1-v1_5"; hash: "SHA-256" | "SHA-384" | "SHA-512" }
  | { name: "RSA-PSS"; hash: "SHA-256" | "SHA-384" | "SHA-512"; saltLength: number };

/** One signature to check. */
export interface SignatureCheck {
  /** The signature algorithm and its parameters. */
  scheme: SignatureScheme;
  /** The signer's SubjectPublicKeyInfo (DER). */
  spki: Uint8Array;
  /** The signed bytes (a TBSCertificate, TBSCertList or CertificationRequestInfo). */
  data: Uint8Array;
  /** The signature as X.509 carries it: for ECDSA the DER `Ecdsa-Sig-Value`. */
  signature: Uint8Array;
  /** The key will verify again (a CA's key, not a CSR's): a provider may keep its import. */
  isKeyReused?: boolean;
}

/** Verifying and hashing, as the core needs them. */
export interface CryptoProvider {
  /** For logs and metrics (`webcrypto`, `node:crypto`). */
  readonly name: string;
  /**
   * Whether `check.signature` verifies. A signature that does not verify, or is not even
   * well-formed, is `false`; a key that cannot be imported throws {@link MalformedInput}, and
   * an algorithm the runtime lacks throws {@link RuntimeUnsupported}.
   */
  verify(check: SignatureCheck): Promise<boolean>;
  /** The digest of `data`. */
  digest(algorithm: HashAlgorithm, data: Uint8Array): Promise<Uint8Array>;
}

/**
 * ECDSA's DER `Ecdsa-Sig-Value` to WebCrypto's fixed-size `r || s` (each the curve's
 * coordinate size); throws if it is not minimal DER.
 */
function ecdsaDerToRaw(der: Uint8Array, size: number): Uint8Array {
  const [r, s, extra] = childrenOf(
    expectTag(parseDer(der, "ECDSA signature"), Tag.SEQUENCE, "ECDSA signature"),
  );
  if (!r || !s || extra) throw new MalformedInput("ECDSA signature", "expected SEQUENCE { r, s }");
  const out = new Uint8Array(size * 2);
  for (const [k, node] of [[0, r], [1, s]] as const) {
    const bytes = integerBytes(expectTag(node, Tag.INTEGER, "ECDSA signature"), "ECDSA signature");
    if (bytes[0] & 0x80) throw new MalformedInput("ECDSA signature", "negative r or s");
    const v = bytes[0] === 0 ? bytes.subarray(1) : bytes;
    if (v.length > size) throw new MalformedInput("ECDSA signature", "r or s too large");
    out.set(v, k * size + size - v.length);
  }
  return out;
}

const keyCache = new Map<string, Promise<CryptoKey>>();
const KEY_CACHE_LIMIT = 512;

// Public keys are extractable: nothing about them is secret. EC and Ed25519 keys are imported
// from their raw point: OpenSSL 3.0's SPKI decoder (Node 20) costs several times more.
async function importKey(scheme: SignatureScheme, spki: Uint8Array): Promise<CryptoKey> {
  const params = scheme.name === "RSA-PSS" ? { name: scheme.name, hash: scheme.hash } : scheme;
  // Read and checked before the import, so that what is refused here says why: an EC point
  // the parser lets through is uncompressed and of its curve's size.
  const point = scheme.name === "ECDSA" || scheme.name === "Ed25519"
    ? parseSubjectPublicKeyInfo(spki).publicKey
    : undefined;
  // Deno's WebCrypto imports an uncompressed point that is not on the curve, or whose
  // coordinates are not below the field prime; every other runtime refuses it, and so must
  // this provider, with the same error on every runtime.
  if (scheme.name === "ECDSA" && !isOnCurve(scheme.namedCurve, point!)) {
    throw new MalformedInput("public key", "the EC point is not on the curve");
  }
  try {
    if (point) return await crypto.subtle.importKey("raw", toArrayBuffer(point), params, true, ["verify"]);
    return await crypto.subtle.importKey("spki", toArrayBuffer(spki), params, true, ["verify"]);
  } catch (cause) {
    if (cause instanceof DOMException && cause.name === "NotSupportedError") {
      throw new RuntimeUnsupported(`${scheme.name} public keys`, { cause });
    }
    throw new MalformedInput("public key", "WebCrypto could not import it", { cause });
  }
}

function cachedKey(scheme: SignatureScheme, spki: Uint8Array): Promise<CryptoKey> {
  const parameters = "namedCurve" in scheme ? scheme.namedCurve : "hash" in scheme ? scheme.hash : "";
  const cacheKey = `${scheme.name}/${parameters}:${latin1(spki)}`;
  let key = keyCache.get(cacheKey);
  if (!key) {
    key = importKey(scheme, spki);
    if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(cacheKey, key);
    key.catch(() => keyCache.delete(cacheKey));
  }
  return key;
}

/** The default provider: WebCrypto, on every runtime. Keys marked as reused are kept (512 at most). */
export const webCryptoProvider: CryptoProvider = {
  name: "webcrypto",
  async verify(check) {
    const { scheme } = check;
    const key = await (check.isKeyReused ? cachedKey(scheme, check.spki) : importKey(scheme, check.spki));
    let signature = check.signature;
    if (scheme.name === "ECDSA") {
      try {
        signature = ecdsaDerToRaw(signature, CURVE_SIZE[scheme.namedCurve]);
      } catch {
        return false;
      }
    }
    const params = scheme.name === "RSA-PSS"
      ? { name: scheme.name, saltLength: scheme.saltLength }
      : scheme.name === "ECDSA"
      ? { name: scheme.name, hash: scheme.hash }
      : { name: scheme.name };
    try {
      return await crypto.subtle.verify(params, key, toArrayBuffer(signature), toArrayBuffer(check.data));
    } catch {
      return false;
    }
  },
  async digest(algorithm, data) {
    return new Uint8Array(await crypto.subtle.digest(algorithm, toArrayBuffer(data)));
  },
};
