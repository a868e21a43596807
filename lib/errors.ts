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
  /** The code every error of this class carries; each subclass declares its own. */
  static code: string = "ERR_MESHAUTH";
  /** The stable code callers branch on, listed in `docs/errors.md`; never reused. */
  code: string;
  /** Makes an error with this class's code; `options.cause` keeps the error that led to it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    // The code comes from the class that was constructed, so a subclass declares it once.
    this.code = (new.target as typeof MeshAuthError).code;
    // Subclasses outside the core that do not set `name` still get their own; the core's
    // classes set it from a literal, because bundlers rename classes and would rename the
    // errors too.
    this.name = new.target === MeshAuthError ? "MeshAuthError" : new.target.name;
  }
}

/** An argument is out of its allowed range or of the wrong shape. */
export class InvalidArgument extends MeshAuthError {
  /** Stable code of this class: `ERR_INVALID_ARGUMENT`. */
  static override code: string = "ERR_INVALID_ARGUMENT";
  /** `argument` names the parameter or option; `reason` says what is wrong with its value. */
  constructor(readonly argument: string, reason: string) {
    super(`invalid ${argument}: ${reason}`);
    this.name = "InvalidArgument";
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
  /** Stable code of this class: `ERR_SPIFFE_ID_INVALID`. */
  static override code: string = "ERR_SPIFFE_ID_INVALID";
  /** `input` is the string as given (shown truncated in the message); `reason` is the rule it broke. */
  constructor(readonly input: string, readonly reason: string) {
    super(`invalid SPIFFE ID ${JSON.stringify(truncate(input))}: ${reason}`);
    this.name = "InvalidSpiffeId";
  }
}

/** A string is not a valid trust domain name. */
export class InvalidTrustDomain extends MeshAuthError {
  /** Stable code of this class: `ERR_TRUST_DOMAIN_INVALID`. */
  static override code: string = "ERR_TRUST_DOMAIN_INVALID";
  /** `input` is the name as given (shown truncated in the message); `reason` is the rule it broke. */
  constructor(readonly input: string, readonly reason: string) {
    super(`invalid trust domain ${JSON.stringify(truncate(input))}: ${reason}`);
    this.name = "InvalidTrustDomain";
  }
}

/** Bytes or text that should be PEM or DER of a given kind are not. */
export class MalformedInput extends MeshAuthError {
  /** Stable code of this class: `ERR_MALFORMED_INPUT`. */
  static override code: string = "ERR_MALFORMED_INPUT";
  /** `what` names the input and field (`"CSR subjectAltName"`); `reason` says how it is malformed. */
  constructor(readonly what: string, readonly reason: string, options?: ErrorOptions) {
    super(`malformed ${what}: ${reason}`, options);
    this.name = "MalformedInput";
  }
}

/** A key or signature algorithm meshauth does not support (or refuses, like RSA under 2048 bits). */
export class UnsupportedAlgorithm extends MeshAuthError {
  /** Stable code of this class: `ERR_ALGORITHM_UNSUPPORTED`. */
  static override code: string = "ERR_ALGORITHM_UNSUPPORTED";
  /** `algorithm` is the name or OID met; `reason` says why it is refused. */
  constructor(readonly algorithm: string, readonly reason = "not supported") {
    super(`algorithm ${algorithm}: ${reason}`);
    this.name = "UnsupportedAlgorithm";
  }
}

/** The JavaScript runtime lacks a WebCrypto capability meshauth needs for this call. */
export class RuntimeUnsupported extends MeshAuthError {
  /** Stable code of this class: `ERR_RUNTIME_UNSUPPORTED`. */
  static override code: string = "ERR_RUNTIME_UNSUPPORTED";
  /** `capability` names the missing WebCrypto algorithm or operation. */
  constructor(readonly capability: string, options?: ErrorOptions) {
    super(`this runtime's WebCrypto does not support ${capability}`, options);
    this.name = "RuntimeUnsupported";
  }
}

/** A private key could not be imported or used. */
export class InvalidKey extends MeshAuthError {
  /** Stable code of this class: `ERR_KEY_INVALID`. */
  static override code: string = "ERR_KEY_INVALID";
  /** `reason` says why the key cannot be imported, exported or used. */
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`invalid key: ${reason}`, options);
    this.name = "InvalidKey";
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
  /** Stable code of this class: `ERR_CSR_INVALID`. */
  static override code: string = "ERR_CSR_INVALID";
  /** `reason` is the stable rejection; `detail` is the sentence the message adds. */
  constructor(readonly reason: CsrRejection, detail: string, options?: ErrorOptions) {
    super(`invalid CSR (${reason}): ${detail}`, options);
    this.name = "InvalidCsr";
  }
}

/** The CSR names an identity other than the one the caller was authorized for. */
export class IdentityMismatch extends MeshAuthError {
  /** Stable code of this class: `ERR_IDENTITY_MISMATCH`. */
  static override code: string = "ERR_IDENTITY_MISMATCH";
  /** `requested` is the SPIFFE ID in the CSR; `authorized` the one the caller may obtain. */
  constructor(readonly requested: string, readonly authorized: string) {
    super(`CSR names ${requested} but the caller is authorized only for ${authorized}`);
    this.name = "IdentityMismatch";
  }
}

/** A certificate authority operation was refused (TTL above the maximum, CA expired, bad options). */
export class IssuanceRefused extends MeshAuthError {
  /** Stable code of this class: `ERR_ISSUANCE_REFUSED`. */
  static override code: string = "ERR_ISSUANCE_REFUSED";
  /** `reason` says why the CA will not issue. */
  constructor(readonly reason: string) {
    super(`issuance refused: ${reason}`);
    this.name = "IssuanceRefused";
  }
}

/** A requested lifetime is above the configured maximum; meshauth never silently shortens it. */
export class TtlExceedsMaximum extends IssuanceRefused {
  /** Stable code of this class: `ERR_TTL_EXCEEDS_MAXIMUM`. */
  static override code: string = "ERR_TTL_EXCEEDS_MAXIMUM";
  /** Both lifetimes are in whole seconds. */
  constructor(readonly requestedSeconds: number, readonly maximumSeconds: number) {
    super(`requested lifetime ${requestedSeconds}s exceeds the maximum of ${maximumSeconds}s`);
    this.name = "TtlExceedsMaximum";
  }
}

/** A trust bundle (PEM or SPIFFE JWKS) is malformed or inconsistent. */
export class InvalidBundle extends MeshAuthError {
  /** Stable code of this class: `ERR_BUNDLE_INVALID`. */
  static override code: string = "ERR_BUNDLE_INVALID";
  /** `reason` says what is malformed or inconsistent in the bundle. */
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`invalid trust bundle: ${reason}`, options);
    this.name = "InvalidBundle";
  }
}

/**
 * A certificate chain failed validation. `code` says what went wrong (the codes are listed in
 * {@link VerificationCode}), `rule` which check of the validator refused it (a
 * {@link VerificationRule}), and the other fields carry the details the rule compared:
 * which certificate (`certificateIndex`, `certificate`), and the values on both sides
 * (`notAfter` against `validationTime`, `required` against `present`, `count` against
 * `limit`...). A field a rule does not use is undefined; `docs/errors.md` lists which rule
 * sets which field.
 *
 * @example
 * ```ts
 * import { VerificationError, verifyChain } from "meshauth";
 * try {
 *   await verifyChain({ leaf, roots, at: new Date("2100-01-01T00:00:00Z") });
 * } catch (err) {
 *   if (err instanceof VerificationError && err.rule === "validity") {
 *     console.log(err.certificate?.subject, err.notAfter, err.validationTime);
 *   }
 * }
 * ```
 */
export class VerificationError extends MeshAuthError {
  /** Stable code of the class itself; an instance carries one of {@link VerificationCode}. */
  static override code: string = "ERR_VERIFICATION";
  /** Which check refused the path; undefined only for an error made outside the validator. */
  declare readonly rule?: VerificationRule;
  /** The certificate the failure belongs to: its subject and serial number. */
  declare readonly certificate?: CertificateSummary;
  /**
   * The second certificate the rule involved: the issuer whose key a signature was checked
   * with, the CA whose name constraints a name broke, or the issuer of a CRL.
   */
  declare readonly issuer?: CertificateSummary;
  /** The validation time (`rule` `"validity"` and `"crl"`). */
  declare readonly validationTime?: Date;
  /** The start of the certificate's validity, or a CRL's thisUpdate. */
  declare readonly notBefore?: Date;
  /** The end of the certificate's validity, or a CRL's nextUpdate. */
  declare readonly notAfter?: Date;
  /** The bound that was exceeded: a pathLenConstraint, `maxDepth`, or a work budget. */
  declare readonly limit?: number;
  /** How many there were against `limit`: intermediates, signature checks, comparisons. */
  declare readonly count?: number;
  /** What the rule asked for: key usages (any one of them will do), extended key usages (all), a peer name. */
  declare readonly required?: readonly string[];
  /** What the certificate has in its place: its key usages, extended key usages, names or URI SANs. */
  declare readonly present?: readonly string[];
  /** The name that broke a name constraint, as `DNS:a.example.com`, `IP:10.0.0.1`, `URI:...`. */
  declare readonly constrainedName?: string;
  /** The constraint it broke: `excluded DNS:example.com`, or `permitted` and the permitted subtrees of its form. */
  declare readonly constraint?: string;
  /** When the certificate was revoked (`rule` `"revocation"`). */
  declare readonly revocationDate?: Date;
  /** The CRL entry's reason code, when it gives one (`keyCompromise`...). */
  declare readonly revocationReason?: string;
  /** The trust domain no bundle was held for (`rule` `"trust-domain"`). */
  declare readonly trustDomain?: string;
  /** The public key or signature algorithm refused: an OID, a curve, `RSA-1024`. */
  declare readonly algorithm?: string;
  /** The OID of the critical extension the validator does not process. */
  declare readonly extension?: string;

  /**
   * `code` and `message` are the error's own; `certificateIndex` is the position on the path
   * (0 = the leaf); `options` carries the details and the `cause`.
   */
  constructor(
    code: VerificationCode,
    message: string,
    readonly certificateIndex?: number,
    options?: VerificationErrorOptions,
  ) {
    super(message, options && "cause" in options ? { cause: options.cause } : undefined);
    this.name = "VerificationError";
    this.code = code;
    // Only the details the rule set become fields, so a logged error shows what matters.
    for (const [key, value] of Object.entries(options ?? {})) {
      if (key !== "cause" && value !== undefined) Object.assign(this, { [key]: value });
    }
  }
}

/** The details a {@link VerificationError} carries, as its constructor takes them. */
export type VerificationDetails = Partial<
  Pick<
    VerificationError,
    | "rule"
    | "certificate"
    | "issuer"
    | "validationTime"
    | "notBefore"
    | "notAfter"
    | "limit"
    | "count"
    | "required"
    | "present"
    | "constrainedName"
    | "constraint"
    | "revocationDate"
    | "revocationReason"
    | "trustDomain"
    | "algorithm"
    | "extension"
  >
>;

/** Options of the {@link VerificationError} constructor: the details, and the error's cause. */
export interface VerificationErrorOptions extends ErrorOptions, VerificationDetails {}

/** A certificate as a {@link VerificationError} names it. */
export interface CertificateSummary {
  /** The subject distinguished name, RFC 4514 text (`CN=api,O=Example`); empty when it has none. */
  subject: string;
  /** The serial number in lowercase hex. */
  serialNumber: string;
}

/**
 * The checks of the validator, as {@link VerificationError.rule} names them. A closed set:
 * a new check gets a new name, and a name is never reused.
 *
 * - `parse`: a certificate could not be parsed as strict DER.
 * - `profile`: an RFC 5280 encoding rule (version, serial number, key identifiers, SAN).
 * - `critical-extension`: a critical extension the validator does not process.
 * - `public-key`: a public key meshauth does not accept (curve, RSA size).
 * - `validity`: the validation time is outside notBefore..notAfter.
 * - `signature`: a signature does not verify, or its algorithm is refused.
 * - `trust-anchor`: no path reaches a trust anchor.
 * - `basic-constraints`: an issuer that is not a CA.
 * - `path-length`: a CA's pathLenConstraint is exceeded.
 * - `max-depth`: the path has more intermediates than `maxDepth`.
 * - `path-building`: path building gave up (candidate or signature-check budget).
 * - `key-usage`: the key usage forbids the use.
 * - `extended-key-usage`: the extended key usage lacks the required purpose.
 * - `name-constraints`: a name breaks a CA's name constraints.
 * - `certificate-policies`: RFC 5280 policy processing left no valid policy.
 * - `peer-name`: the leaf does not name the DNS name or IP address expected.
 * - `crl`: a CRL is malformed, badly signed or out of date.
 * - `revocation`: a CRL revokes the certificate, or none given for its issuer covers it.
 * - `svid-profile`: an X509-SVID rule (one SPIFFE ID URI SAN, not a CA, key usage).
 * - `trust-domain`: no bundle for the leaf's trust domain.
 */
export type VerificationRule =
  | "parse"
  | "profile"
  | "critical-extension"
  | "public-key"
  | "validity"
  | "signature"
  | "trust-anchor"
  | "basic-constraints"
  | "path-length"
  | "max-depth"
  | "path-building"
  | "key-usage"
  | "extended-key-usage"
  | "name-constraints"
  | "certificate-policies"
  | "peer-name"
  | "crl"
  | "revocation"
  | "svid-profile"
  | "trust-domain";

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
  /** Stable code of this class: `ERR_PEER_UNAUTHORIZED`. */
  static override code: string = "ERR_PEER_UNAUTHORIZED";
  /** `peerId` is the verified peer's SPIFFE ID; `reason` says why the authorizer refused it. */
  constructor(readonly peerId: string, reason: string) {
    super(`peer ${peerId} is not authorized: ${reason}`);
    this.name = "UnauthorizedPeer";
  }
}

/** Secure naming: the peer's identity is not one allowed to run the target service. */
export class SecureNamingError extends UnauthorizedPeer {
  /** Stable code of this class: `ERR_SECURE_NAMING`. */
  static override code: string = "ERR_SECURE_NAMING";
  /** `service` is the target service; `peerId` the identity that may not run it. */
  constructor(readonly service: string, peerId: string) {
    super(peerId, `it may not run service ${JSON.stringify(service)}`);
    this.name = "SecureNamingError";
  }
}

/** An authorization policy denied a request; `reason` and `policy` say which decision. */
export class PolicyDenied extends MeshAuthError {
  /** Stable code of this class: `ERR_POLICY_DENIED`. */
  static override code: string = "ERR_POLICY_DENIED";
  /** `reason` is the decision's reason; `policy` names the denying policy, if one did. */
  constructor(readonly reason: string, readonly policy?: string) {
    super(policy ? `request denied by policy ${policy}` : `request denied (${reason})`);
    this.name = "PolicyDenied";
  }
}

function truncate(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
