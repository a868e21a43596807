/**
 * Key pairs on WebCrypto: generation for the algorithms an X509-SVID may use, PKCS#8 PEM
 * import and export, and the signer the CA and CSRs sign with.
 *
 * @example
 * ```ts
 * import { generateKeyPair, exportPrivateKeyPem, importPrivateKeyPem } from "meshauth";
 * const keys = await generateKeyPair("ECDSA-P256");
 * const pem = await exportPrivateKeyPem(keys.privateKey);
 * const again = await importPrivateKeyPem(pem); // { privateKey, publicKey, algorithm }
 * ```
 * @module
 */

import { childrenOf, expectTag, parseDer, readOid, Tag } from "./asn1/der.ts";
import { integer, octetString, oid, seq } from "./asn1/der-writer.ts";
import { OID } from "./asn1/oids.ts";
import { toArrayBuffer } from "./encoding.ts";
import { InvalidKey, MalformedInput, RuntimeUnsupported, UnsupportedAlgorithm } from "./errors.ts";
import { decodePem, encodePem, type PemBlock } from "./pem.ts";

/** Key algorithms meshauth issues and accepts for SVIDs. */
export type KeyAlgorithm = "ECDSA-P256" | "ECDSA-P384" | "RSA-2048" | "RSA-3072" | "RSA-4096" | "Ed25519";

/** Every supported {@link KeyAlgorithm}. */
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ECDSA-P256",
  "ECDSA-P384",
  "RSA-2048",
  "RSA-3072",
  "RSA-4096",
  "Ed25519",
];

/** A key pair with the meshauth name of its algorithm. */
export interface KeyPair {
  /** The private key; extractable unless generated with `extractable: false`. */
  privateKey: CryptoKey;
  /** The public key. */
  publicKey: CryptoKey;
  /** Which of {@link KEY_ALGORITHMS} the pair is. */
  algorithm: KeyAlgorithm;
}

type GenParams = RsaHashedKeyGenParams | EcKeyGenParams | { name: "Ed25519" };

function generationParams(algorithm: KeyAlgorithm): GenParams {
  switch (algorithm) {
    case "ECDSA-P256":
      return { name: "ECDSA", namedCurve: "P-256" };
    case "ECDSA-P384":
      return { name: "ECDSA", namedCurve: "P-384" };
    case "RSA-2048":
    case "RSA-3072":
    case "RSA-4096":
      return {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: Number(algorithm.slice(4)),
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      };
    case "Ed25519":
      return { name: "Ed25519" };
    default:
      throw new UnsupportedAlgorithm(String(algorithm), `choose one of ${KEY_ALGORITHMS.join(", ")}`);
  }
}

/**
 * Generates a key pair. The private key is extractable so that its holder can write it to a
 * file (`exportPrivateKeyPem`); pass `extractable: false` to keep it inside WebCrypto.
 */
export async function generateKeyPair(
  algorithm: KeyAlgorithm = "ECDSA-P256",
  options: { extractable?: boolean } = {},
): Promise<KeyPair> {
  const params = generationParams(algorithm);
  let pair: CryptoKeyPair;
  try {
    pair = (await crypto.subtle.generateKey(params, options.extractable ?? true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
  } catch (cause) {
    throw new RuntimeUnsupported(`key generation for ${algorithm}`, { cause });
  }
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, algorithm };
}

/** The meshauth algorithm name of a WebCrypto key. */
export function keyAlgorithmOf(key: CryptoKey): KeyAlgorithm {
  const alg = key.algorithm as {
    name: string;
    namedCurve?: string;
    modulusLength?: number;
    hash?: { name: string };
  };
  if (alg.name === "ECDSA" && alg.namedCurve === "P-256") return "ECDSA-P256";
  if (alg.name === "ECDSA" && alg.namedCurve === "P-384") return "ECDSA-P384";
  if (alg.name === "Ed25519") return "Ed25519";
  if (alg.name === "RSASSA-PKCS1-v1_5" && alg.modulusLength) {
    // WebCrypto binds an RSA key to one hash; meshauth's RSA algorithms sign sha256WithRSA,
    // so a key bound to another hash would make signatures that do not verify.
    if (alg.hash?.name !== "SHA-256") {
      throw new UnsupportedAlgorithm(
        `RSASSA-PKCS1-v1_5 with ${alg.hash?.name ?? "no hash"}`,
        "RSA keys must be bound to SHA-256",
      );
    }
    const name = `RSA-${alg.modulusLength}` as KeyAlgorithm;
    if (KEY_ALGORITHMS.includes(name)) return name;
  }
  throw new UnsupportedAlgorithm(`${alg.name} ${alg.namedCurve ?? alg.modulusLength ?? ""}`.trim());
}

/** Exports a private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). */
export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  if (key.type !== "private") throw new InvalidKey("exportPrivateKeyPem needs a private key");
  if (!key.extractable) throw new InvalidKey("the private key is not extractable");
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  return encodePem("PRIVATE KEY", der);
}

/** Exports a public key as SubjectPublicKeyInfo DER. */
export async function exportSpki(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey("spki", key));
}

/**
 * Imports a private key from PEM: PKCS#8 (`PRIVATE KEY`), or the older `EC PRIVATE KEY`
 * (SEC 1) and `RSA PRIVATE KEY` (PKCS#1) that OpenSSL writes. Returns the key pair, with
 * the public key derived from the private one.
 */
export async function importPrivateKeyPem(
  pem: string,
  options: { extractable?: boolean } = {},
): Promise<KeyPair> {
  const { label, der } = privateKeyBlock(pem);
  const pkcs8 = label === "EC PRIVATE KEY"
    ? sec1ToPkcs8(der)
    : label === "RSA PRIVATE KEY"
    ? pkcs1ToPkcs8(der)
    : der;
  return await importPkcs8(pkcs8, options.extractable ?? true);
}

const PRIVATE_KEY_LABELS = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

function privateKeyBlock(pem: string): PemBlock {
  if (typeof pem !== "string") throw new MalformedInput("private key", "expected PEM text");
  // `openssl ecparam -genkey` writes the curve as an EC PARAMETERS block before the key;
  // OpenSSL skips it when it reads the key, and so does this.
  const blocks = decodePem(pem, "private key").filter((b) => b.label !== "EC PARAMETERS");
  if (blocks.length === 0) throw new MalformedInput("private key", "no PEM block found");
  if (blocks.length !== 1) {
    throw new MalformedInput("private key", `expected one PEM block, found ${blocks.length}`);
  }
  if (!PRIVATE_KEY_LABELS.includes(blocks[0].label)) {
    throw new MalformedInput(
      "private key",
      `unexpected PEM block ${blocks[0].label} (wanted ${PRIVATE_KEY_LABELS.join(" or ")})`,
    );
  }
  return blocks[0];
}

async function importPkcs8(pkcs8: Uint8Array, extractable: boolean): Promise<KeyPair> {
  let algOid: string;
  let curve: string | undefined;
  try {
    const [, algId] = childrenOf(expectTag(parseDer(pkcs8, "private key"), Tag.SEQUENCE, "private key"));
    const [idNode, params] = childrenOf(expectTag(algId, Tag.SEQUENCE, "private key algorithm"));
    algOid = readOid(idNode);
    if (params?.tag === Tag.OID) curve = readOid(params);
  } catch (cause) {
    throw new InvalidKey("not a PKCS#8 private key", { cause });
  }
  let params: EcKeyImportParams | RsaHashedImportParams | { name: "Ed25519" };
  if (algOid === OID.ecPublicKey && curve === OID.p256) params = { name: "ECDSA", namedCurve: "P-256" };
  else if (algOid === OID.ecPublicKey && curve === OID.p384) params = { name: "ECDSA", namedCurve: "P-384" };
  else if (algOid === OID.rsaEncryption) params = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  else if (algOid === OID.ed25519) params = { name: "Ed25519" };
  else throw new UnsupportedAlgorithm(`private key ${algOid}${curve ? ` on curve ${curve}` : ""}`);
  let privateKey: CryptoKey;
  try {
    // Import extractable once to derive the public half, then re-import as asked.
    const full = await crypto.subtle.importKey("pkcs8", toArrayBuffer(pkcs8), params, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", full);
    const publicJwk: JsonWebKey = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, n: jwk.n, e: jwk.e };
    const publicKey = await crypto.subtle.importKey("jwk", publicJwk, params, true, ["verify"]);
    privateKey = extractable
      ? full
      : await crypto.subtle.importKey("pkcs8", toArrayBuffer(pkcs8), params, false, ["sign"]);
    const pair: KeyPair = { privateKey, publicKey, algorithm: keyAlgorithmOf(privateKey) };
    return pair;
  } catch (cause) {
    if (cause instanceof UnsupportedAlgorithm) throw cause;
    throw new InvalidKey(`the ${params.name} private key could not be imported`, { cause });
  }
}

// SEC 1 ECPrivateKey: SEQUENCE { version 1, privateKey OCTET STRING, [0] curve OID, [1] publicKey }
function sec1ToPkcs8(der: Uint8Array): Uint8Array {
  try {
    const fields = childrenOf(expectTag(parseDer(der, "EC private key"), Tag.SEQUENCE, "EC private key"));
    const curveField = fields.find((f) => f.tag === 0xa0);
    if (!curveField) throw new MalformedInput("EC private key", "no curve parameters");
    const curve = readOid(childrenOf(curveField)[0]);
    return seq(integer(0), seq(oid(OID.ecPublicKey), oid(curve)), octetString(der));
  } catch (cause) {
    throw new InvalidKey("not an SEC 1 EC private key", { cause });
  }
}

function pkcs1ToPkcs8(der: Uint8Array): Uint8Array {
  return seq(integer(0), seq(oid(OID.rsaEncryption), new Uint8Array([Tag.NULL, 0])), octetString(der));
}
