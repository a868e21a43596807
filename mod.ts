/**
 * meshauth: SPIFFE identities, X509-SVID issuance, chain validation, revocation and secure
 * naming on WebCrypto, for every JavaScript runtime (Node, Deno, Bun, Workers).
 *
 * @example
 * ```ts
 * import { CertificateAuthority, createCsr, generateKeyPair, SpiffeId, TrustBundle, verifySvid } from "meshauth";
 * const ca = await CertificateAuthority.createRoot({ trustDomain: "cluster.local" });
 * const id = SpiffeId.fromServiceAccount("cluster.local", "default", "photos");
 * const keys = await generateKeyPair();
 * const svid = await ca.issue(await createCsr({ keys, id }), { id });
 * const verified = await verifySvid(svid.chainPem, ca.bundle());
 * ```
 * @module
 */

export * from "./lib/errors.ts";
export { SpiffeId, TrustDomain } from "./lib/spiffeid.ts";
export {
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  importPrivateKeyPem,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  keyAlgorithmOf,
  type KeyPair,
} from "./lib/keys.ts";
export { decodePem, encodePem, type PemBlock } from "./lib/pem.ts";
export {
  type AlgorithmIdentifier,
  type Certificate,
  type Extension,
  KeyUsage,
  type KeyUsageName,
  parseCertificate,
  parseCertificates,
  uriSans,
} from "./lib/x509/certificate.ts";
export { formatName, type Name } from "./lib/x509/name.ts";
export { type GeneralName } from "./lib/x509/general-name.ts";
export { keySigner, type Signer, verifySignature } from "./lib/x509/signature.ts";
