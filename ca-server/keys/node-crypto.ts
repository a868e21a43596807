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
  type JsonWebKeyInput,
  type KeyObject,
  type PublicKeyInput,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { type CryptoProvider, MalformedInput, type SignatureCheck, type Signer } from "../../mod.ts";
import { ecPublicJwk, parseSubjectPublicKeyInfo } from "../../internal/mod.ts";
import { pemSigner } from "./key-manager.ts";

const NODE_HASH = { "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512" } as const;
/** Key types by scheme. The curve needs no check: the core derives the scheme from the same SPKI. */
const KEY_TYPE = { ECDSA: "ec", Ed25519: "ed25519", "RSASSA-PKCS1-v1_5": "rsa", "RSA-PSS": "rsa" } as const;

/**
 * The form a CSR's public key is handed to node:crypto in. Every CSR brings a new key, so its
 * import is paid on every issuance; which form is cheapest depends on the runtime's library:
 * - `pem`: PEM text, which Node's OpenSSL 3.5 (Node 24) decodes as fast as anything else;
 * - `der`: the DER bytes as they are, which Bun's BoringSSL takes without the base64 round trip;
 * - `p256-jwk`: P-256 keys as a JWK of the SPKI's point, other keys as PEM. OpenSSL 3.0 and 3.1
 *   (Node 20, and Node 22 while it bundles 3.0) decode an SPKI through their generic decoder
 *   framework, which costs more than building the key from its coordinates. Not P-384: OpenSSL
 *   3.0 checks a P-384 JWK's point with a slow generic multiplication, several times the cost
 *   of its SPKI decoder.
 *
 * docs/ca-server.md (Speed) has the figures.
 */
export type KeyImportForm = "pem" | "der" | "p256-jwk";

/** The cheapest {@link KeyImportForm} on this runtime, as measured. */
function cheapestKeyImportForm(): KeyImportForm {
  const { versions } = process;
  if (versions.bun) return "der";
  // Deno reports an OpenSSL version for node:crypto but does not run OpenSSL.
  if (!versions.deno && /^3\.[01]\./.test(versions.openssl ?? "")) return "p256-jwk";
  return "pem";
}

function keyInput(check: SignatureCheck, form: KeyImportForm): string | PublicKeyInput | JsonWebKeyInput {
  const { spki, scheme } = check;
  const bytes = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength);
  if (form === "der") return { key: bytes, format: "der", type: "spki" };
  if (form === "p256-jwk" && scheme.name === "ECDSA" && scheme.namedCurve === "P-256") {
    // Read with the core's strict DER parser, which refuses a point that is compressed or of
    // the wrong length, as parseCsr did before handing the key here. A key on another curve
    // goes as PEM, as it would without this path: no outcome changes. node:crypto refuses a
    // JWK whose point is not on the curve, as OpenSSL's SPKI decoder does.
    const jwk = ecPublicJwk(parseSubjectPublicKeyInfo(spki));
    if (jwk?.crv === "P-256") return { key: jwk, format: "jwk" };
  }
  // As PEM: on Node a string costs about what DER bytes do (bench/key-import.ts).
  return `-----BEGIN PUBLIC KEY-----\n${bytes.toString("base64")}\n-----END PUBLIC KEY-----\n`;
}

function importPublicKey(check: SignatureCheck, form: KeyImportForm): KeyObject {
  let key: KeyObject;
  let input: ReturnType<typeof keyInput> | undefined;
  try {
    input = keyInput(check, form);
    key = createPublicKey(input);
  } catch (cause) {
    const how = typeof input === "object" && input.format === "jwk" ? " from its JWK" : "";
    throw new MalformedInput("public key", `node:crypto could not import it${how}`, { cause });
  }
  if (key.asymmetricKeyType !== KEY_TYPE[check.scheme.name]) {
    throw new MalformedInput("public key", `it is not a ${check.scheme.name} key of the stated kind`);
  }
  return key;
}

const reusedKeys = new Map<string, KeyObject>();
const REUSED_KEY_LIMIT = 512;

function keyFor(check: SignatureCheck, form: KeyImportForm): KeyObject {
  if (!check.isKeyReused) return importPublicKey(check, form);
  const cacheKey = `${JSON.stringify(check.scheme)}:${Buffer.from(check.spki).toString("base64")}`;
  let key = reusedKeys.get(cacheKey);
  if (!key) {
    key = importPublicKey(check, form);
    if (reusedKeys.size >= REUSED_KEY_LIMIT) reusedKeys.delete(reusedKeys.keys().next().value!);
    reusedKeys.set(cacheKey, key);
  }
  return key;
}

function verifySync(check: SignatureCheck, form: KeyImportForm): boolean {
  const key = keyFor(check, form);
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

/**
 * A node:crypto provider that hands keys over in `form`; {@link nodeCryptoProvider} uses the
 * cheapest for the runtime. Not public: the tests hold every form to the same answers.
 */
export function createNodeCryptoProvider(form: KeyImportForm): CryptoProvider {
  return {
    name: "node:crypto",
    verify(check) {
      try {
        return Promise.resolve(verifySync(check, form));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    digest(algorithm, data) {
      return Promise.resolve(new Uint8Array(createHash(NODE_HASH[algorithm]).update(data).digest()));
    },
  };
}

/** A {@link CryptoProvider} on node:crypto. */
export const nodeCryptoProvider: CryptoProvider = createNodeCryptoProvider(cheapestKeyImportForm());

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
