/**
 * What a `CertificateAuthority` takes and answers: its defaults, option and result
 * types, and the checks of its arguments (lifetimes, path lengths, CRL entries), each of which
 * throws {@link InvalidArgument} or {@link IssuanceRefused} naming the argument.
 * @module
 */

import type { Revocation } from "./certificate-template.ts";
import { REVOCATION_REASONS } from "./certificate-template.ts";
import { fromHex } from "./encoding.ts";
import { InvalidArgument, IssuanceRefused } from "./errors.ts";
import type { KeyAlgorithm } from "./keys.ts";
import type { SpiffeId, TrustDomain } from "./spiffeid.ts";
import type { CryptoProvider } from "./x509/crypto-provider.ts";
import { MAX_SERIAL_OCTETS } from "./x509/certificate.ts";
import type { Signer } from "./x509/signature.ts";

/** Istio's and Linkerd's default workload certificate lifetime. */
export const DEFAULT_LEAF_TTL_SECONDS = 24 * 3600;
/** Istio's default maximum workload certificate lifetime. */
export const DEFAULT_MAX_LEAF_TTL_SECONDS = 90 * 24 * 3600;
/** Istio's self-signed root lifetime. */
export const DEFAULT_ROOT_TTL_SECONDS = 10 * 365 * 24 * 3600;
/** notBefore is backdated by this much so peers with slightly slow clocks accept new SVIDs. */
export const DEFAULT_BACKDATE_SECONDS = 30;

/** Issuance policy of a CA. */
export interface IssuancePolicy {
  /** Lifetime of a leaf when the request does not say. Default 24 h. */
  defaultTtlSeconds?: number;
  /** Longest leaf lifetime a request may ask for; above it issuance is refused. Default 90 days. */
  maxTtlSeconds?: number;
  /** How far notBefore is set in the past. Default 30 s. */
  backdateSeconds?: number;
  /** The clock; tests pass a fixed one. */
  now?: () => Date;
}

/** How a CA checks CSRs: the part of its options that is not policy. */
export interface CaCryptoOptions {
  /**
   * Checks CSR signatures and hashes keys; WebCrypto by default. The CA server on Node passes
   * a node:crypto provider, which costs about half the CPU per CSR.
   */
  crypto?: CryptoProvider;
}

/** Options of `CertificateAuthority.createRoot`. */
export interface CreateRootOptions extends IssuancePolicy, CaCryptoOptions {
  /** The trust domain the root certifies (`spiffe://<trust domain>` is its URI SAN). */
  trustDomain: TrustDomain | string;
  /** The root's key algorithm; ECDSA-P256 by default. */
  keyAlgorithm?: KeyAlgorithm;
  /** The root's lifetime; ten years by default. */
  ttlSeconds?: number;
  /** Subject attributes by short name (`O`, `OU`, `CN`, `C`); default `O=<trust domain>, CN=meshauth root CA`. */
  subject?: Record<string, string>;
  /** Path length constraint of the root; unlimited by default. */
  pathLen?: number;
}

/** Options of `CertificateAuthority.load`. */
export interface LoadOptions extends IssuancePolicy, CaCryptoOptions {
  /** The CA's certificate first, then its issuers (Istio's `cert-chain.pem`/`ca-cert.pem`). */
  certificateChainPem: string;
  /** The CA's private key, PKCS#8 or SEC1 PEM. */
  privateKeyPem: string;
  /** The roots (Istio's `root-cert.pem`); by default the chain's last, self-signed certificate. */
  trustBundlePem?: string;
  /** Needed only when the CA certificate has no `spiffe://<trust-domain>` URI SAN. */
  trustDomain?: TrustDomain | string;
}

/** Options of `CertificateAuthority.fromSigner`: a CA whose key lives elsewhere (KMS, HSM). */
export interface FromSignerOptions extends Omit<LoadOptions, "privateKeyPem"> {
  /** Signs with the CA's key wherever it is held; its public key must match the CA certificate. */
  signer: Signer;
}

/** Options of `CertificateAuthority.issue`. */
export interface IssueOptions {
  /** The identity the caller was authorized for; the CSR must name exactly this ID. */
  id?: SpiffeId | string;
  /**
   * Lifetime; above the policy's maximum, issuance is refused. A leaf never outlives its CA
   * (X509-SVID): the CA's own notAfter caps it, and {@link IssuedCertificate.notAfter} says so.
   */
  ttlSeconds?: number;
  /** DNS names the caller may have; every DNS SAN of the CSR must be one of them (none by default). */
  dnsNames?: string[];
  /** IP addresses the caller may have; every IP SAN of the CSR must be one of them (none by default). */
  ipAddresses?: string[];
}

/** An issued X509-SVID. */
export interface IssuedCertificate {
  /** The SPIFFE ID the certificate proves. */
  id: SpiffeId;
  /** The leaf certificate, PEM. */
  certificatePem: string;
  /** The leaf certificate, DER. */
  certificateDer: Uint8Array;
  /** The leaf followed by the CA's intermediates (not the roots, which come from the bundle). */
  chainPem: string;
  /** The same chain, one PEM per certificate. */
  chainPems: string[];
  /** Hex of the serial number's content octets. */
  serialNumber: string;
  /** Start of the certificate's validity (backdated a little for clock skew). */
  notBefore: Date;
  /** End of the certificate's validity: the requested TTL, capped at the CA's own notAfter. */
  notAfter: Date;
}

/** Options of `CertificateAuthority.createCrl`. */
export interface CreateCrlOptions {
  /** The certificates to list, with when and why each was revoked. */
  revoked: Revocation[];
  /** Seconds from thisUpdate to nextUpdate: when relying parties must fetch a newer CRL. */
  nextUpdateSeconds: number;
  /** Monotonic CRL number; by default the current time in milliseconds. */
  crlNumber?: bigint | number;
  /** Issue time of the CRL; now by default. */
  thisUpdate?: Date;
}

/** A lifetime in whole seconds, above zero. */
export function positiveSeconds(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgument(name, `must be a positive whole number of seconds, got ${value}`);
  }
  return value;
}

/** RFC 5280 4.1.2.5: GeneralizedTime has four year digits, so validity ends by 9999-12-31. */
const LAST_X509_TIME = Date.UTC(9999, 11, 31, 23, 59, 59);

/** A root's notAfter, `ttlSeconds` from `now`; refused past what X.509 times can say. */
export function rootNotAfter(now: Date, ttlSeconds: number): Date {
  const notAfter = now.getTime() + ttlSeconds * 1000;
  if (!(notAfter <= LAST_X509_TIME)) {
    throw new InvalidArgument("ttlSeconds", `${ttlSeconds}s would end after 9999-12-31T23:59:59Z`);
  }
  return new Date(notAfter);
}

/** RFC 5280 5.2.3: a non-negative integer of at most 20 octets. */
export function crlNumber(value: bigint | number): bigint {
  const isWhole = typeof value === "bigint" || Number.isSafeInteger(value);
  const n = isWhole ? BigInt(value) : -1n;
  if (n < 0n || n >= 1n << 159n) {
    throw new InvalidArgument("crlNumber", `must be a whole number from 0 to 2^159 - 1, got ${value}`);
  }
  return n;
}

/** A Date that holds a time (not `Invalid Date`). */
export function validDate(value: Date, name: string): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidArgument(name, `must be a valid Date, got ${String(value)}`);
  }
  return value;
}

/** A path length constraint: absent, or a whole number from 0. */
export function pathLength(value: number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgument("pathLen", `must be a non-negative whole number, got ${value}`);
  }
  return value;
}

/** Checks CRL entries and converts their serial numbers to DER content octets. */
export function crlEntries(
  revoked: readonly Revocation[],
): { serial: Uint8Array; revokedAt: Date; reason?: Revocation["reason"] }[] {
  if (!Array.isArray(revoked)) throw new InvalidArgument("revoked", "must be a list of revocations");
  return revoked.map((r) => {
    if (
      typeof r?.serialNumber !== "string" || !/^[0-9a-f]+$/i.test(r.serialNumber) || r.serialNumber.length % 2
    ) {
      throw new IssuanceRefused(`serial number ${JSON.stringify(r?.serialNumber)} is not hex`);
    }
    const serial = fromHex(r.serialNumber);
    // A CRL the CA signs must be one parseCrl (and so every verifier here) reads back.
    if (serial.length > MAX_SERIAL_OCTETS) {
      throw new IssuanceRefused(
        `serial number ${
          r.serialNumber.slice(0, 16)
        }... is ${serial.length} octets; serial numbers are at most ${MAX_SERIAL_OCTETS}`,
      );
    }
    // The hex is a serial's DER content octets, as issue() returns them; a redundant
    // leading byte would make the CRL's INTEGER non-DER and match no certificate.
    if (
      serial.length > 1 &&
      ((serial[0] === 0 && serial[1] < 0x80) || (serial[0] === 0xff && serial[1] >= 0x80))
    ) {
      throw new IssuanceRefused(`serial number ${r.serialNumber} has a redundant leading byte`);
    }
    validDate(r.revokedAt, "revokedAt");
    if (r.reason !== undefined && !REVOCATION_REASONS.includes(r.reason)) {
      throw new InvalidArgument("reason", `${JSON.stringify(r.reason)} is not a CRL reason`);
    }
    // RFC 5280 5.3.1: removeFromCRL appears only in delta CRLs, and this CA signs full ones.
    if (r.reason === "removeFromCRL") {
      throw new InvalidArgument(
        "reason",
        "removeFromCRL belongs in delta CRLs; leave the serial out instead",
      );
    }
    return { serial, revokedAt: r.revokedAt, reason: r.reason };
  });
}
