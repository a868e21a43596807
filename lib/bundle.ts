/**
 * Trust bundles (go-spiffe's `bundle/x509bundle`): the X.509 authorities of one trust domain,
 * in PEM or in the SPIFFE bundle format (a JWKS with `use: "x509-svid"` keys, SPIFFE Trust
 * Domain and Bundle spec 4), and a {@link BundleSet} of several trust domains for federation.
 *
 * @example
 * ```ts
 * import { BundleSet, TrustBundle } from "meshauth";
 * const local = TrustBundle.fromPem("cluster.local", rootPem);
 * const jwks = local.toJwks(); // { keys: [{ use: "x509-svid", x5c: [...] , ...}], spiffe_sequence: 1, ... }
 * const peers = new BundleSet(local, TrustBundle.fromJwks("partner.example", jwksFromPartner));
 * peers.get("partner.example")?.x509Authorities();
 * ```
 * @module
 */

import { childrenOf, contentOf, type DerNode, expectTag, parseDer, Tag } from "./asn1/der.ts";
import { OID } from "./asn1/oids.ts";
import { bytesEqual, fromBase64, toBase64, toBase64Url } from "./encoding.ts";
import { describeValue, InvalidArgument, InvalidBundle, MeshAuthError, optionsOf } from "./errors.ts";
import { encodePem } from "./pem.ts";
import { TrustDomain } from "./spiffeid.ts";
import type { CertificateInput } from "./verify/chain.ts";
import {
  type Certificate,
  isParsedCertificate,
  parseCertificate,
  parseCertificates,
} from "./x509/certificate.ts";
import { ecPublicJwk } from "./x509/public-key.ts";

/** One key of a SPIFFE bundle (RFC 7517 JWK with the SPIFFE `use`). */
export interface SpiffeJwk {
  /** Key type (`EC`, `RSA`, `OKP`). */
  kty: string;
  /** `x509-svid` for an X.509 authority, `jwt-svid` for a JWT signing key. */
  use: string;
  /** The authority's certificate (base64 DER, exactly one for `x509-svid`). */
  x5c?: string[];
  /** Key ID; required for `jwt-svid` keys. */
  kid?: string;
  /** Curve of an EC or OKP key (`P-256`, `Ed25519`). */
  crv?: string;
  /** EC or OKP public key x coordinate (base64url). */
  x?: string;
  /** EC public key y coordinate (base64url). */
  y?: string;
  /** RSA modulus (base64url). */
  n?: string;
  /** RSA public exponent (base64url). */
  e?: string;
  /** Other JWK members, kept as they came. */
  [other: string]: unknown;
}

/** The SPIFFE bundle document. */
export interface SpiffeBundleDocument {
  /** The authorities, as JWKs. */
  keys: SpiffeJwk[];
  /** Monotonic version of the bundle; a holder ignores one older than what it has. */
  spiffe_sequence?: number;
  /** How often holders should refetch, in seconds. */
  spiffe_refresh_hint?: number;
}

/** Options shared by the bundle constructors. */
export interface TrustBundleOptions {
  /** Monotonic bundle version (`spiffe_sequence`). */
  sequence?: number;
  /** How often holders should refetch, in seconds (`spiffe_refresh_hint`). */
  refreshHintSeconds?: number;
}

/** The X.509 authorities of one trust domain. */
export class TrustBundle {
  /** The trust domain whose authorities these are. */
  readonly trustDomain: TrustDomain;
  /** Monotonic bundle version (`spiffe_sequence`), raised by each change to the authorities; 0 by default. */
  sequence: number;
  /** How often holders should refetch, in seconds (`spiffe_refresh_hint`). */
  refreshHintSeconds?: number;
  #authorities: Certificate[] = [];
  /** JWT-SVID keys from a SPIFFE bundle, kept as they came for the JWT-SVID support to come. */
  readonly jwtAuthorities: SpiffeJwk[] = [];

  /**
   * A bundle of `authorities`: a list of certificates, each PEM text (one or more blocks), DER
   * bytes (a Uint8Array) or a parsed certificate. One that does not parse is
   * {@link InvalidBundle}; a list or an entry of any other type is {@link InvalidArgument}.
   */
  constructor(
    trustDomain: TrustDomain | string,
    authorities: readonly CertificateInput[] = [],
    options: TrustBundleOptions = {},
  ) {
    this.trustDomain = TrustDomain.from(trustDomain);
    if (!Array.isArray(authorities)) {
      throw new InvalidArgument(
        "authorities",
        `expected a list of certificates, got ${describeValue(authorities)}` +
          (typeof authorities === "string" ? "; TrustBundle.fromPem reads one PEM text" : ""),
      );
    }
    optionsOf(options);
    for (const a of authorities) for (const cert of toCertificates(a)) this.#add(cert);
    this.sequence = wholeNumber(options.sequence ?? 0, "sequence");
    this.refreshHintSeconds = options.refreshHintSeconds === undefined
      ? undefined
      : wholeNumber(options.refreshHintSeconds, "refreshHintSeconds");
  }

  /** A bundle from PEM text holding one or more CA certificates. */
  static fromPem(trustDomain: TrustDomain | string, pem: string, options?: TrustBundleOptions): TrustBundle {
    const td = TrustDomain.from(trustDomain);
    if (typeof pem !== "string") {
      throw new InvalidArgument("pem", `expected PEM text, got ${describeValue(pem)}`);
    }
    let certs: Certificate[];
    try {
      certs = parseCertificates(pem, "trust bundle certificate");
    } catch (cause) {
      throw new InvalidBundle(cause instanceof Error ? cause.message : "unreadable PEM", { cause });
    }
    return new TrustBundle(td, certs, options);
  }

  /**
   * A bundle from a SPIFFE bundle document (object or JSON text). Keys with `use:
   * "x509-svid"` must carry exactly one certificate in `x5c` whose public key matches the
   * JWK's parameters; `jwt-svid` keys are kept in `jwtAuthorities`; other uses are refused.
   */
  static fromJwks(
    trustDomainOrName: TrustDomain | string,
    document: SpiffeBundleDocument | string,
  ): TrustBundle {
    const trustDomain = TrustDomain.from(trustDomainOrName);
    let doc: SpiffeBundleDocument;
    try {
      doc = typeof document === "string" ? JSON.parse(document) : document;
    } catch (cause) {
      throw new InvalidBundle("the SPIFFE bundle is not valid JSON", { cause });
    }
    if (!doc || typeof doc !== "object" || !Array.isArray(doc.keys)) {
      throw new InvalidBundle("a SPIFFE bundle must be an object with a keys array");
    }
    const seq = doc.spiffe_sequence;
    const hint = doc.spiffe_refresh_hint;
    if (seq !== undefined && (!Number.isSafeInteger(seq) || seq < 0)) {
      throw new InvalidBundle("spiffe_sequence must be a non-negative integer");
    }
    if (hint !== undefined && (!Number.isSafeInteger(hint) || hint < 0)) {
      throw new InvalidBundle("spiffe_refresh_hint must be a non-negative integer");
    }
    const bundle = new TrustBundle(trustDomain, [], { sequence: seq ?? 0, refreshHintSeconds: hint });
    doc.keys.forEach((key, i) => {
      if (!key || typeof key !== "object" || typeof key.kty !== "string") {
        throw new InvalidBundle(`key ${i} is not a JWK`);
      }
      if (key.use === "jwt-svid") {
        bundle.jwtAuthorities.push(key);
        return;
      }
      // SPIFFE Trust Domain and Bundle 4.2.2: a key whose use is unknown is ignored, so a
      // bundle carrying a newer SVID type still works for the types known here.
      if (key.use !== "x509-svid") return;
      if (!Array.isArray(key.x5c) || key.x5c.length !== 1 || typeof key.x5c[0] !== "string") {
        throw new InvalidBundle(`x509-svid key ${i} must have exactly one x5c certificate`);
      }
      let cert: Certificate;
      try {
        cert = parseCertificate(fromBase64(key.x5c[0], "x5c"), "x5c certificate");
      } catch (cause) {
        throw new InvalidBundle(`x509-svid key ${i}: ${cause instanceof Error ? cause.message : cause}`, {
          cause,
        });
      }
      const expected = jwkOfCertificate(cert);
      for (const field of ["kty", "crv", "x", "y", "n", "e"] as const) {
        if (key[field] !== undefined && key[field] !== expected[field]) {
          throw new InvalidBundle(`x509-svid key ${i}: ${field} does not match the x5c certificate's key`);
        }
      }
      bundle.#add(cert);
    });
    return bundle;
  }

  /** The authorities, in the order they were added. */
  x509Authorities(): Certificate[] {
    return [...this.#authorities];
  }

  /** True when `cert` is one of the authorities. */
  hasAuthority(cert: CertificateInput): boolean {
    return toCertificates(cert).every((c) => this.#authorities.some((a) => bytesEqual(a.der, c.der)));
  }

  /** Adds authorities (duplicates are ignored) and bumps the sequence if anything changed. */
  addAuthority(cert: CertificateInput): void {
    let changed = false;
    for (const c of toCertificates(cert)) changed = this.#add(c) || changed;
    if (changed) this.sequence++;
  }

  /** Removes an authority and bumps the sequence if it was there. */
  removeAuthority(cert: CertificateInput): void {
    const before = this.#authorities.length;
    for (const c of toCertificates(cert)) {
      this.#authorities = this.#authorities.filter((a) => !bytesEqual(a.der, c.der));
    }
    if (this.#authorities.length !== before) this.sequence++;
  }

  /** The authorities as concatenated PEM. */
  toPem(): string {
    return this.#authorities.map((c) => encodePem("CERTIFICATE", c.der)).join("");
  }

  /** The SPIFFE bundle document. */
  toJwks(): SpiffeBundleDocument {
    const doc: SpiffeBundleDocument = {
      keys: [
        ...this.#authorities.map((c) => ({
          ...jwkOfCertificate(c),
          use: "x509-svid",
          x5c: [toBase64(c.der)],
        })),
        ...this.jwtAuthorities,
      ],
      spiffe_sequence: this.sequence,
    };
    if (this.refreshHintSeconds !== undefined) doc.spiffe_refresh_hint = this.refreshHintSeconds;
    return doc;
  }

  /** A copy that shares nothing mutable with this bundle. */
  clone(): TrustBundle {
    const copy = new TrustBundle(this.trustDomain, this.#authorities, {
      sequence: this.sequence,
      refreshHintSeconds: this.refreshHintSeconds,
    });
    copy.jwtAuthorities.push(...this.jwtAuthorities);
    return copy;
  }

  #add(cert: Certificate): boolean {
    if (this.#authorities.some((a) => bytesEqual(a.der, cert.der))) return false;
    this.#authorities.push(cert);
    return true;
  }
}

/** Bundles of several trust domains, keyed by trust domain name. */
export class BundleSet {
  #bundles = new Map<string, TrustBundle>();

  /** A set holding `bundles`, at most one per trust domain (a later one replaces an earlier). */
  constructor(...bundles: TrustBundle[]) {
    for (const b of bundles) this.add(b);
  }

  /** Adds or replaces the bundle of its trust domain. */
  add(bundle: TrustBundle): void {
    this.#bundles.set(bundle.trustDomain.name, bundle);
  }

  /** The bundle for a trust domain, if known. */
  get(trustDomain: TrustDomain | string): TrustBundle | undefined {
    const name = TrustDomain.from(trustDomain).name;
    return this.#bundles.get(name);
  }

  /** Removes a trust domain's bundle. */
  remove(trustDomain: TrustDomain | string): boolean {
    const name = TrustDomain.from(trustDomain).name;
    return this.#bundles.delete(name);
  }

  /** The trust domains held. */
  trustDomains(): TrustDomain[] {
    return [...this.#bundles.values()].map((b) => b.trustDomain);
  }

  /** The bundles held. */
  bundles(): TrustBundle[] {
    return [...this.#bundles.values()];
  }
}

/** The SPIFFE bundle format writes the sequence and refresh hint as non-negative integers. */
function wholeNumber(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgument(name, `must be a non-negative whole number, got ${value}`);
  }
  return value;
}

function toCertificates(input: CertificateInput): Certificate[] {
  if (typeof input === "string" || input instanceof Uint8Array) {
    try {
      return parseCertificates(input, "trust bundle certificate");
    } catch (cause) {
      if (cause instanceof MeshAuthError) throw new InvalidBundle(cause.message, { cause });
      throw cause;
    }
  }
  if (isParsedCertificate(input)) return [input];
  throw new InvalidArgument(
    "certificate",
    `expected PEM text, DER bytes (a Uint8Array) or a parsed certificate, got ${describeValue(input)}`,
  );
}

/** The public JWK parameters (kty, crv/x/y, n/e, or OKP x) of a certificate's key. */
export function jwkOfCertificate(
  cert: Certificate,
): { kty: string; crv?: string; x?: string; y?: string; n?: string; e?: string } {
  const alg = cert.publicKeyAlgorithm;
  const key = cert.publicKey;
  if (alg.oid === OID.ecPublicKey) {
    const jwk = ecPublicJwk({ algorithm: alg, publicKey: key });
    if (!jwk) throw new InvalidBundle("unsupported EC key (only the named curves P-256, P-384, P-521)");
    return jwk;
  }
  if (alg.oid === OID.rsaEncryption) {
    let n: DerNode, e: DerNode;
    try {
      const fields = childrenOf(expectTag(parseDer(key, "RSA public key"), Tag.SEQUENCE, "RSA public key"));
      if (fields.length !== 2) throw new InvalidBundle("an RSA public key is SEQUENCE { n, e }");
      [n, e] = fields.map((f) => expectTag(f, Tag.INTEGER, "RSA public key"));
    } catch (cause) {
      if (cause instanceof InvalidBundle) throw cause;
      throw new InvalidBundle("malformed RSA public key", { cause });
    }
    const strip = (b: Uint8Array) => (b[0] === 0 ? b.subarray(1) : b);
    return { kty: "RSA", n: toBase64Url(strip(contentOf(n))), e: toBase64Url(strip(contentOf(e))) };
  }
  if (alg.oid === OID.ed25519) return { kty: "OKP", crv: "Ed25519", x: toBase64Url(key) };
  throw new InvalidBundle(`unsupported public key algorithm ${alg.oid}`);
}
