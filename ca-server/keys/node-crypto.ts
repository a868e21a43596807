/**
 * The core's crypto interfaces on node:crypto, for the CA's Node entry: a
 * {@link CryptoProvider} that checks CSR signatures and hashes keys, and a {@link Signer} for
 * the CA key. Both give the same results as the WebCrypto defaults (a test holds them to it)
 * but run synchronously, without WebCrypto's per-call job: a CSR check costs about half the
 * CPU, which is most of what an issuance costs.
 *
 * @example
 * ```ts
 * import { CertificateAuthority } from "meshauth";
 * import { nodeCryptoProvider } from "meshauth/ca-server";
 * const ca = await CertificateAuthority.createRoot({ trustDomain: "cluster.local", crypto: nodeCryptoProvider });
 * ```
 * @module
 */

import {
  constants,
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { type CryptoProvider, MalformedInput, type SignatureCheck, type Signer } from "../../mod.ts";
import { pemSigner } from "./key-manager.ts";

const NODE_HASH = { "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512" } as const;
/** Key types by scheme. The curve needs no check: the core derives the scheme from the same SPKI. */
const KEY_TYPE = { ECDSA: "ec", Ed25519: "ed25519", "RSASSA-PKCS1-v1_5": "rsa", "RSA-PSS": "rsa" } as const;

function importPublicKey(check: SignatureCheck): KeyObject {
  let key: KeyObject;
  try {
    // As PEM: node:crypto takes a string about twice as fast as a { format: "der" } object.
    const base64 = Buffer.from(check.spki.buffer, check.spki.byteOffset, check.spki.byteLength)
      .toString("base64");
    key = createPublicKey(`-----BEGIN PUBLIC KEY-----\n${base64}\n-----END PUBLIC KEY-----\n`);
  } catch (cause) {
    throw new MalformedInput("public key", "node:crypto could not import it", { cause });
  }
  if (key.asymmetricKeyType !== KEY_TYPE[check.scheme.name]) {
    throw new MalformedInput("public key", `it is not a ${check.scheme.name} key of the stated kind`);
  }
  return key;
}

const reusedKeys = new Map<string, KeyObject>();
const REUSED_KEY_LIMIT = 512;

function keyFor(check: SignatureCheck): KeyObject {
  if (!check.isKeyReused) return importPublicKey(check);
  const cacheKey = `${JSON.stringify(check.scheme)}:${Buffer.from(check.spki).toString("base64")}`;
  let key = reusedKeys.get(cacheKey);
  if (!key) {
    key = importPublicKey(check);
    if (reusedKeys.size >= REUSED_KEY_LIMIT) reusedKeys.delete(reusedKeys.keys().next().value!);
    reusedKeys.set(cacheKey, key);
  }
  return key;
}

function verifySync(check: SignatureCheck): boolean {
  const key = keyFor(check);
  const { scheme } = check;
  try {
    switch (scheme.name) {
      case "ECDSA":
        // DER is node:crypto's default encoding, and the key alone (not in an options object)
        // spares node:crypto a slow type check. OpenSSL, like the WebCrypto provider, refuses
        // a signature that is not minimal DER.
        return nodeVerify(NODE_HASH[scheme.hash], check.data, key, check.signature);
      case "Ed25519":
        return nodeVerify(null, check.data, key, check.signature);
      case "RSASSA-PKCS1-v1_5":
        return nodeVerify(
          NODE_HASH[scheme.hash],
          check.data,
          { key, padding: constants.RSA_PKCS1_PADDING },
          check.signature,
        );
      case "RSA-PSS":
        return nodeVerify(
          NODE_HASH[scheme.hash],
          check.data,
          { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: scheme.saltLength },
          check.signature,
        );
    }
  } catch {
    // A signature OpenSSL cannot even decode does not verify.
    return false;
  }
}

/** A {@link CryptoProvider} on node:crypto. */
export const nodeCryptoProvider: CryptoProvider = {
  name: "node:crypto",
  verify(check) {
    try {
      return Promise.resolve(verifySync(check));
    } catch (err) {
      return Promise.reject(err);
    }
  },
  digest(algorithm, data) {
    return Promise.resolve(new Uint8Array(createHash(NODE_HASH[algorithm]).update(data).digest()));
  },
};

/**
 * A {@link Signer} on node:crypto: the same signatures as the WebCrypto signer (DER ECDSA,
 * PKCS#1 v1.5 RSA, Ed25519), made synchronously without WebCrypto's per-call job, which
 * roughly halves the CPU an issuance spends signing.
 */
export async function nodeSigner(privateKeyPem: string): Promise<Signer> {
  const reference = await pemSigner(privateKeyPem);
  const key = createPrivateKey(privateKeyPem);
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const hash = key.asymmetricKeyType === "ed25519" ? null : curve === "secp384r1" ? "sha384" : "sha256";
  return {
    algorithmIdentifier: reference.algorithmIdentifier,
    spki: reference.spki,
    // DER ECDSA is the default; the key alone spares node:crypto a slow type check.
    sign: (data) => Promise.resolve(new Uint8Array(nodeSign(hash, data, key))),
  };
}
