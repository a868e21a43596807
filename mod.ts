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

export {
  type CertificateSummary,
  type CsrRejection,
  IdentityMismatch,
  InvalidArgument,
  InvalidBundle,
  InvalidCsr,
  InvalidKey,
  InvalidSpiffeId,
  InvalidTrustDomain,
  IssuanceRefused,
  MalformedInput,
  MeshAuthError,
  PolicyDenied,
  RuntimeUnsupported,
  SecureNamingError,
  TtlExceedsMaximum,
  UnauthorizedPeer,
  UnsupportedAlgorithm,
  type VerificationCode,
  type VerificationDetails,
  VerificationError,
  type VerificationErrorOptions,
  type VerificationRule,
} from "./lib/errors.ts";
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
  type DistributionPoint,
  type Extension,
  type GeneralSubtree,
  KeyUsage,
  type KeyUsageName,
  parseCertificate,
  parseCertificates,
  uriSans,
} from "./lib/x509/certificate.ts";
export { formatName, type Name, type NameAttribute } from "./lib/x509/name.ts";
export { type GeneralName } from "./lib/x509/general-name.ts";
export { type Signer, verifySignature } from "./lib/x509/signature.ts";
export {
  type CryptoProvider,
  type HashAlgorithm,
  type SignatureCheck,
  type SignatureScheme,
} from "./lib/x509/crypto-provider.ts";
export {
  type CertificateRequest,
  createCsr,
  type CreateCsrOptions,
  parseCsr,
  type ParseCsrOptions,
} from "./lib/csr.ts";
export { CertificateAuthority } from "./lib/ca.ts";
export {
  type CaCryptoOptions,
  type CreateCrlOptions,
  type CreateRootOptions,
  DEFAULT_BACKDATE_SECONDS,
  DEFAULT_LEAF_TTL_SECONDS,
  DEFAULT_MAX_LEAF_TTL_SECONDS,
  type FromSignerOptions,
  type IssuancePolicy,
  type IssuedCertificate,
  type IssueOptions,
  type LoadOptions,
} from "./lib/ca-options.ts";
export { type Revocation, REVOCATION_REASONS, type RevocationReason } from "./lib/certificate-template.ts";
export {
  BundleSet,
  type SpiffeBundleDocument,
  type SpiffeJwk,
  TrustBundle,
  type TrustBundleOptions,
} from "./lib/bundle.ts";
export {
  authorizeAny,
  authorizeId,
  authorizeMemberOf,
  authorizeOneOf,
  type Authorizer,
  type IdLike,
  SecureNaming,
} from "./lib/authorize.ts";
export { type RenewalOptions, renewalTime } from "./lib/rotation.ts";
export {
  type AuthorizationPolicy,
  parsePolicy,
  type PolicyCondition,
  type PolicyOperation,
  type PolicyRule,
  type PolicySource,
} from "./lib/policy/model.ts";
export {
  type PolicyDecision,
  PolicyEngine,
  type PolicyEngineOptions,
  type PolicyRequest,
} from "./lib/policy/evaluate.ts";
export {
  type CertificateInput,
  type VerifiedChain,
  verifyChain,
  type VerifyChainOptions,
} from "./lib/verify/chain.ts";
export {
  type SvidChainInput,
  type VerifiedSvid,
  verifySvid,
  type VerifySvidOptions,
} from "./lib/svid/verify.ts";
export { SignatureCache, type Signed } from "./lib/verify/signatures.ts";
export {
  type Crl,
  CrlReason,
  type CrlReasonName,
  type IssuingDistributionPoint,
  parseCrl,
  type RevokedCertificate,
} from "./lib/x509/crl.ts";
