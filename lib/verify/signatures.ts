/**
 * Signature checks during path building: a budget so a pathological input cannot make the
 * builder verify without end, and an optional cache of signatures already verified, keyed by
 * the full signed object and the issuer's key, so a repeated intermediate costs nothing.
 * @module
 */

import { latin1 } from "../asn1/der.ts";
import type { AlgorithmIdentifier, Certificate } from "../x509/certificate.ts";
import { verifySignature } from "../x509/signature.ts";
import { MeshAuthError, VerificationError } from "../errors.ts";

/** Something signed: a certificate or a CRL. */
export interface Signed {
  /** The whole signed object, DER: with the issuer's key, the cache key. */
  der: Uint8Array;
  /** The signed part (TBSCertificate or TBSCertList), DER. */
  tbs: Uint8Array;
  /** The algorithm the signature was made with. */
  signatureAlgorithm: AlgorithmIdentifier;
  /** The signature bits. */
  signature: Uint8Array;
}

/**
 * Remembers signatures that verified, across calls: those on CA certificates (the
 * intermediates every peer sends) and on CRLs, which recur; leaves change with every peer
 * and would only churn it. Entries are keyed by the signed object's whole DER and the
 * issuer's SubjectPublicKeyInfo, so a hit means exactly these bytes verified under exactly
 * this key. Bounded: the oldest entries are dropped first.
 *
 * @example
 * ```ts
 * import { SignatureCache, verifyChain } from "meshauth";
 * const cache = new SignatureCache();
 * await verifyChain({ leaf, intermediates, roots, cache }); // verifies leaf and intermediate
 * await verifyChain({ leaf: other, intermediates, roots, cache }); // verifies the leaf only
 * ```
 */
export class SignatureCache {
  #verified = new Set<string>();
  /** A cache that remembers at most `maxEntries` signatures. */
  constructor(readonly maxEntries: number = 1024) {}

  /** Number of remembered signatures. */
  get size(): number {
    return this.#verified.size;
  }

  /** Whether exactly `signed` is remembered as verified under `issuer`'s key. */
  has(signed: Signed, issuer: Certificate): boolean {
    return this.#verified.has(keyOf(signed, issuer));
  }

  /** Remembers that `signed` verified under `issuer`'s key, dropping the oldest entry when full. */
  add(signed: Signed, issuer: Certificate): void {
    if (this.#verified.size >= this.maxEntries) {
      this.#verified.delete(this.#verified.values().next().value!);
    }
    this.#verified.add(keyOf(signed, issuer));
  }
}

/** CA certificates and CRLs come back again and again; leaves do not. */
function recurs(signed: Signed): boolean {
  return "revoked" in signed || (signed as Partial<Certificate>).basicConstraints?.ca === true;
}

function keyOf(signed: Signed, issuer: Certificate): string {
  return `${latin1(signed.der)}\u0000${latin1(issuer.spki)}`;
}

/** Per-call signature checking with a budget and an optional shared cache. */
export class SignatureChecker {
  #results = new Map<Signed, Map<Certificate, Promise<boolean>>>();
  #unsupported = new Map<Signed, Map<Certificate, MeshAuthError>>();
  checks = 0;
  constructor(readonly budget: number, readonly cache?: SignatureCache) {}

  /** Whether `signed` verifies under `issuer`'s key. Unsupported algorithms verify as false. */
  verifies(signed: Signed, issuer: Certificate): Promise<boolean> {
    let byIssuer = this.#results.get(signed);
    if (!byIssuer) this.#results.set(signed, byIssuer = new Map());
    let result = byIssuer.get(issuer);
    if (!result) {
      result = this.#verify(signed, issuer);
      byIssuer.set(issuer, result);
    }
    return result;
  }

  /**
   * Why a signature that did not verify could not be checked at all (an algorithm or key
   * meshauth or the runtime refuses), or undefined when it was checked and is wrong.
   */
  unsupported(signed: Signed, issuer: Certificate): MeshAuthError | undefined {
    return this.#unsupported.get(signed)?.get(issuer);
  }

  async #verify(signed: Signed, issuer: Certificate): Promise<boolean> {
    if (this.cache?.has(signed, issuer)) return true;
    if (++this.checks > this.budget) {
      throw new VerificationError(
        "ERR_PATH_BUILDING_LIMIT",
        `path building gave up after ${this.budget} signature checks`,
        undefined,
        { rule: "path-building", limit: this.budget, count: this.checks },
      );
    }
    let ok: boolean;
    try {
      ok = await verifySignature(
        signed.signatureAlgorithm,
        issuer.spki,
        issuer.publicKeyAlgorithm,
        signed.tbs,
        signed.signature,
      );
    } catch (cause) {
      // An algorithm or key we refuse cannot vouch for anything; report it as unverified,
      // and remember why so the error can say so.
      if (!(cause instanceof MeshAuthError)) throw cause;
      let byIssuer = this.#unsupported.get(signed);
      if (!byIssuer) this.#unsupported.set(signed, byIssuer = new Map());
      byIssuer.set(issuer, cause);
      ok = false;
    }
    if (ok && recurs(signed)) this.cache?.add(signed, issuer);
    return ok;
  }
}
