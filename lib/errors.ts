/**
 * Errors thrown by meshauth. Every error is a {@link MeshAuthError} with a stable `code`
 * (on the class and on the instance) so callers can branch on `err.code` or `instanceof`.
 * Codes are documented in `docs/errors.md` and never reused.
 *
 * @example
 * ```ts
 * import { SpiffeId, MeshAuthError } from "meshauth";
 * try {
 *   SpiffeId.parse("https://example.org/x");
 * } catch (err) {
 *   if (err instanceof MeshAuthError) console.log(err.code); // ERR_SPIFFE_ID_INVALID
 * }
 * ```
 * @module
 */

/** Base class of every error meshauth throws. */
export class MeshAuthError extends Error {
  static code = "ERR_MESHAUTH";
  override name = "MeshAuthError";
  code: string = MeshAuthError.code;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    // Subclasses outside the core that do not declare `name` still get their own; the core's
    // classes declare it, because bundlers rename classes and would rename the errors too.
    if (new.target !== MeshAuthError) this.name = new.target.name;
  }
}

/** An argument is out of its allowed range or of the wrong shape. */
export class InvalidArgument extends MeshAuthError {
  static override code = "ERR_INVALID_ARGUMENT";
  override name = "InvalidArgument";
  override code = InvalidArgument.code;
  constructor(readonly argument: string, reason: string) {
    super(`invalid ${argument}: ${reason}`);
  }
}

/**
 * The options object of a call, checked before any field is read: a caller from JavaScript
 * who passes nothing or a number gets this error, not a TypeError from deep inside.
 */
export function optionsOf<T extends object>(value: T, name = "options"): T {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument(name, `expected an object, got ${value === null ? "null" : typeof value}`);
  }
  return value;
}

/** How a wrong argument reads in a message: `null`, `an array`, `an ArrayBuffer`, `a number`. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return "an array";
  const kind = typeof value === "object"
    ? Object.getPrototypeOf(value)?.constructor?.name ?? "object"
    : typeof value;
  const noun = kind === "Object" ? "object" : kind;
  return `${/^[aeiou]/i.test(noun) ? "an" : "a"} ${noun}`;
}

/** A string is not a valid SPIFFE ID or trust domain name; `reason` says which rule it broke. */
export class InvalidSpiffeId extends MeshAuthError {
  static override code = "ERR_SPIFFE_ID_INVALID";
  override name = "InvalidSpiffeId";
  override code = InvalidSpiffeId.code;
  constructor(readonly input: string, readonly reason: string) {
    super(`invalid SPIFFE ID ${JSON.stringify(truncate(input))}: ${reason}`);
  }
}

/** A string is not a valid trust domain name. */
export class InvalidTrustDomain extends MeshAuthError {
  static override code = "ERR_TRUST_DOMAIN_INVALID";
  override name = "InvalidTrustDomain";
  override code = InvalidTrustDomain.code;
  constructor(readonly input: string, readonly reason: string) {
    super(`invalid trust domain ${JSON.stringify(truncate(input))}: ${reason}`);
  }
}

/** Bytes or text that should be PEM or DER of a given kind are not. */
export class MalformedInput extends MeshAuthError {
  static override code = "ERR_MALFORMED_INPUT";
  override name = "MalformedInput";
  override code = MalformedInput.code;
  constructor(readonly what: string, readonly reason: string, options?: ErrorOptions) {
    super(`malformed ${what}: ${reason}`, options);
  }
}

/** A key or signature algorithm meshauth does not support (or refuses, like RSA under 2048 bits). */
export class UnsupportedAlgorithm extends MeshAuthError {
  static override code = "ERR_ALGORITHM_UNSUPPORTED";
  override name = "UnsupportedAlgorithm";
  override code = UnsupportedAlgorithm.code;
  constructor(readonly algorithm: string, readonly reason = "not supported") {
    super(`algorithm ${algorithm}: ${reason}`);
  }
}

/** The JavaScript runtime lacks a WebCrypto capability meshauth needs for this call. */
export class RuntimeUnsupported extends MeshAuthError {
  static override code = "ERR_RUNTIME_UNSUPPORTED";
  override name = "RuntimeUnsupported";
  override code = RuntimeUnsupported.code;
  constructor(readonly capability: string, options?: ErrorOptions) {
    super(`this runtime's WebCrypto does not support ${capability}`, options);
  }
}

/** A private key could not be imported or used. */
export class InvalidKey extends MeshAuthError {
  static override code = "ERR_KEY_INVALID";
  override name = "InvalidKey";
  override code = InvalidKey.code;
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`invalid key: ${reason}`, options);
  }
}

/** Why a CSR was refused. */
export type CsrRejection =
  | "malformed"
  | "signature"
  | "no-uri-san"
  | "multiple-uri-sans"
  | "not-spiffe"
  | "weak-key"
  | "unsupported-algorithm";

/** A certificate signing request is malformed or breaks the X509-SVID request rules. */
export class InvalidCsr extends MeshAuthError {
  static override code = "ERR_CSR_INVALID";
  override name = "InvalidCsr";
  override code = InvalidCsr.code;
  constructor(readonly reason: CsrRejection, detail: string, options?: ErrorOptions) {
    super(`invalid CSR (${reason}): ${detail}`, options);
  }
}

/** The CSR names an identity other than the one the caller was authorized for. */
export class IdentityMismatch extends MeshAuthError {
  static override code = "ERR_IDENTITY_MISMATCH";
  override name = "IdentityMismatch";
  override code = IdentityMismatch.code;
  constructor(readonly requested: string, readonly authorized: string) {
    super(`CSR names ${requested} but the caller is authorized only for ${authorized}`);
  }
}

/** A certificate authority operation was refused (TTL above the maximum, CA expired, bad options). */
export class IssuanceRefused extends MeshAuthError {
  static override code = "ERR_ISSUANCE_REFUSED";
  override name = "IssuanceRefused";
  override code = IssuanceRefused.code;
  constructor(readonly reason: string) {
    super(`issuance refused: ${reason}`);
  }
}

/** A requested lifetime is above the configured maximum; meshauth never silently shortens it. */
export class TtlExceedsMaximum extends IssuanceRefused {
  static override code = "ERR_TTL_EXCEEDS_MAXIMUM";
  override name = "TtlExceedsMaximum";
  override code = TtlExceedsMaximum.code;
  constructor(readonly requestedSeconds: number, readonly maximumSeconds: number) {
    super(`requested lifetime ${requestedSeconds}s exceeds the maximum of ${maximumSeconds}s`);
  }
}

/** A trust bundle (PEM or SPIFFE JWKS) is malformed or inconsistent. */
export class InvalidBundle extends MeshAuthError {
  static override code = "ERR_BUNDLE_INVALID";
  override name = "InvalidBundle";
  override code = InvalidBundle.code;
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`invalid trust bundle: ${reason}`, options);
  }
}

/**
 * A certificate chain failed validation. `code` says why; the codes are listed in
 * {@link VerificationCode}. `certificateIndex` is the position in the path (0 = leaf) when
 * the failure belongs to one certificate.
 */
export class VerificationError extends MeshAuthError {
  static override code = "ERR_VERIFICATION";
  override name = "VerificationError";
  override code: string = VerificationError.code;
  constructor(
    code: VerificationCode,
    message: string,
    readonly certificateIndex?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.code = code;
  }
}

/** Stable codes a {@link VerificationError} carries. */
export type VerificationCode =
  | "ERR_CERT_MALFORMED"
  | "ERR_CERT_EXPIRED"
  | "ERR_CERT_NOT_YET_VALID"
  | "ERR_CERT_SIGNATURE_INVALID"
  | "ERR_CERT_REVOKED"
  | "ERR_CERT_UNTRUSTED"
  | "ERR_CERT_NOT_CA"
  | "ERR_PATH_LENGTH_EXCEEDED"
  | "ERR_CHAIN_TOO_LONG"
  | "ERR_PATH_BUILDING_LIMIT"
  | "ERR_KEY_USAGE"
  | "ERR_EXTENDED_KEY_USAGE"
  | "ERR_NAME_CONSTRAINTS"
  | "ERR_UNHANDLED_CRITICAL_EXTENSION"
  | "ERR_PEER_NAME_MISMATCH"
  | "ERR_ALGORITHM_UNSUPPORTED"
  | "ERR_CRL_INVALID"
  | "ERR_REVOCATION_UNKNOWN"
  | "ERR_SVID_INVALID"
  | "ERR_TRUST_DOMAIN_UNKNOWN"
  | "ERR_POLICY";

/** A verified peer is not allowed by an authorizer (go-spiffe's `tlsconfig.Authorizer`). */
export class UnauthorizedPeer extends MeshAuthError {
  static override code = "ERR_PEER_UNAUTHORIZED";
  override name = "UnauthorizedPeer";
  override code: string = UnauthorizedPeer.code;
  constructor(readonly peerId: string, reason: string) {
    super(`peer ${peerId} is not authorized: ${reason}`);
  }
}

/** Secure naming: the peer's identity is not one allowed to run the target service. */
export class SecureNamingError extends UnauthorizedPeer {
  static override code = "ERR_SECURE_NAMING";
  override name = "SecureNamingError";
  override code = SecureNamingError.code;
  constructor(readonly service: string, peerId: string) {
    super(peerId, `it may not run service ${JSON.stringify(service)}`);
  }
}

/** An authorization policy denied a request; `reason` and `policy` say which decision. */
export class PolicyDenied extends MeshAuthError {
  static override code = "ERR_POLICY_DENIED";
  override name = "PolicyDenied";
  override code = PolicyDenied.code;
  constructor(readonly reason: string, readonly policy?: string) {
    super(policy ? `request denied by policy ${policy}` : `request denied (${reason})`);
  }
}

function truncate(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
