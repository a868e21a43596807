/**
 * Verifying a peer's X509-SVID with the core's one chain validator, `verifySvid`, against the
 * current trust bundle and CRLs. node:tls is told to verify nothing (`rejectUnauthorized:
 * false`, no `ca`): OpenSSL only proves that the peer holds the key of the certificate it
 * sent, and every decision about that certificate is made here.
 *
 * Answers are remembered per chain (its exact bytes) for as long as they can hold: until the
 * bundle or a CRL changes (which starts a new generation and forgets them all), the earliest
 * notAfter on the path, or the earliest nextUpdate of a CRL. A remembered answer is therefore
 * the answer `verifySvid` would give again now; it spares the work, never the check.
 *
 * A CRL past its nextUpdate is used, not refused (`acceptStaleCrls`): its entries still refuse
 * the certificates they list. Each answer says how far revocation was checked
 * ({@link PeerRevocation}); what to do with a peer whose revocation was not fully checked is
 * the caller's choice (`proxy.revocation`, see `workload.ts`).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { TLSSocket } from "node:tls";
import {
  type BundleSet,
  type Certificate,
  type Crl,
  formatName,
  parseCertificates,
  SignatureCache,
  type SpiffeId,
  type TrustBundle,
  VerificationError,
  verifySvid,
} from "../../mod.ts";

import { bytesEqual, peerChain as readPeerChain, toHex } from "../../internal/mod.ts";

/**
 * How far a peer's revocation was checked: `checked` against a current CRL of the authority that
 * issued its certificate; `unchecked-no-crl` when no CRL of that authority is held (an authority
 * new since a rotation, or a node that has not reached the CA since it started); `stale-crl`
 * against a CRL held past its nextUpdate (the CA has not been reached since), which still
 * refuses the certificates it lists but not one revoked since.
 */
export type PeerRevocation = "checked" | "unchecked-no-crl" | "stale-crl";

/** A peer whose SVID verified. */
export interface VerifiedPeer {
  id: SpiffeId;
  /** The leaf's serial number (hex), for the audit log. */
  serialNumber: string;
  /** The chain as the peer sent it (leaf first), to verify it again later. */
  chain: readonly Uint8Array[];
  /** SHA-256 of the leaf's DER is what XFCC carries; the leaf itself is here. */
  leaf: Uint8Array;
  /** How far its revocation was checked. */
  revocation: PeerRevocation;
  /** The authority that issued the leaf: its name and key identifier, as {@link authorityOf} keys it. */
  authority: string;
  /** The issuer's name (RFC 4514), for log lines. */
  issuerName: string;
  /** With `stale-crl`: the earliest nextUpdate of the stale CRLs used. */
  staleSince?: Date;
}

interface Remembered {
  answer: Promise<VerifiedPeer>;
  validUntilMs: number;
}

/** Most remembered answers; the oldest go first. */
const MAX_REMEMBERED = 10_000;
/** Most leaves whose intermediates are kept for resumed sessions. */
const MAX_LEAVES = 10_000;
/** The most certificates a peer chain may hold (leaf included). */
const MAX_CHAIN = 10;

/**
 * The chain a TLS peer sent, leaf first, as DER (the reader shared with the CA's mTLS
 * authenticator). It is read to one certificate beyond MAX_CHAIN, so that a chain too long is
 * refused by {@link PeerVerifier.verify}, never cut down to a prefix that might verify.
 */
export function peerChain(socket: TLSSocket): Uint8Array[] {
  return readPeerChain(socket, { maxCertificates: MAX_CHAIN + 1 });
}

/**
 * The authority that issued `leaf` (DER or parsed): its issuer name and authority key identifier,
 * as one string key; undefined when the leaf does not parse.
 */
export function authorityOf(leaf: Uint8Array | Certificate): string | undefined {
  let cert: Certificate;
  try {
    cert = leaf instanceof Uint8Array ? parseCertificates(leaf)[0] : leaf;
  } catch {
    return undefined;
  }
  return `${cert.issuer.key}\u0000${cert.authorityKeyIdentifier ? toHex(cert.authorityKeyIdentifier) : ""}`;
}

/** Verifies peers of one workload against that workload's bundle and CRLs. */
export class PeerVerifier {
  #bundle: TrustBundle | BundleSet;
  #crls: readonly Crl[];
  #fingerprint: string;
  #generation = 0;
  #remembered = new Map<string, Remembered>();
  /** Intermediates a leaf came with, for sessions resumed without them. */
  #intermediatesByLeaf = new Map<string, readonly Uint8Array[]>();
  /** Intermediates of the workload's own chain: the usual ones when peers share its CA. */
  #ownIntermediates: readonly Uint8Array[] = [];
  readonly #signatures = new SignatureCache();
  readonly #now: () => number;

  constructor(bundle: TrustBundle | BundleSet, crls: readonly Crl[], now: () => number = Date.now) {
    this.#bundle = bundle;
    this.#crls = crls;
    this.#fingerprint = fingerprintOf(bundle, crls);
    this.#now = now;
  }

  /** Changes with every new bundle or CRL set. */
  get generation(): number {
    return this.#generation;
  }

  /** Takes the current bundle and CRLs; true when they differ from those held (answers are forgotten). */
  update(bundle: TrustBundle | BundleSet, crls: readonly Crl[]): boolean {
    const fingerprint = fingerprintOf(bundle, crls);
    this.#bundle = bundle;
    this.#crls = crls;
    if (fingerprint === this.#fingerprint) return false;
    this.#fingerprint = fingerprint;
    this.#generation++;
    this.#remembered.clear();
    return true;
  }

  /** The intermediates of the workload's own SVID (PEM chain, leaf first). */
  setOwnChain(certificateChainPem: string): void {
    try {
      this.#ownIntermediates = parseCertificates(certificateChainPem).slice(1).map((c) => c.der);
    } catch {
      this.#ownIntermediates = [];
    }
  }

  /**
   * A resumed TLS session carries the peer's leaf but not the intermediates it sent; these are
   * the ones it came with when it was verified in full, else the workload's own. They are
   * untrusted inputs to path building either way: a wrong one only fails the path.
   */
  withIntermediates(leaf: Uint8Array): Uint8Array[] {
    return [leaf, ...(this.#intermediatesByLeaf.get(latin1(leaf)) ?? this.#ownIntermediates)];
  }

  /**
   * Verifies `chain` for `purpose` against the bundle and CRLs current when it resolves: one
   * that changed while it ran is applied by verifying again. Throws the validator's
   * {@link VerificationError}.
   */
  async verify(chain: readonly Uint8Array[], purpose: "serverAuth" | "clientAuth"): Promise<VerifiedPeer> {
    for (let attempt = 0;; attempt++) {
      const generation = this.#generation;
      const peer = await this.#verifyOnce(chain, purpose);
      // A sweep of open connections ran while this one was not yet open: it must not slip past it.
      if (generation === this.#generation) return peer;
      if (attempt === 3) {
        throw new VerificationError(
          "ERR_REVOCATION_UNKNOWN",
          "the trust bundle or CRLs kept changing during verification",
        );
      }
    }
  }

  #verifyOnce(chain: readonly Uint8Array[], purpose: "serverAuth" | "clientAuth"): Promise<VerifiedPeer> {
    if (chain.length === 0) {
      return Promise.reject(new VerificationError("ERR_CERT_MALFORMED", "the peer sent no certificate"));
    }
    if (chain.length > MAX_CHAIN) {
      return Promise.reject(
        new VerificationError("ERR_PATH_BUILDING_LIMIT", `the peer sent ${chain.length} certificates`),
      );
    }
    const key = `${purpose}\u0000${chain.map(latin1).join("\u0000")}`;
    const now = this.#now();
    const known = this.#remembered.get(key);
    if (known && known.validUntilMs > now) return known.answer;
    if (known) this.#remembered.delete(key);
    const generation = this.#generation;
    const entry: Remembered = { answer: Promise.resolve() as never, validUntilMs: Infinity };
    entry.answer = this.#verifyNow(chain, purpose, now).then(({ peer, validUntilMs }) => {
      entry.validUntilMs = validUntilMs;
      if (chain.length > 1) this.#rememberIntermediates(chain);
      return peer;
    }, (err) => {
      if (this.#remembered.get(key) === entry) this.#remembered.delete(key);
      throw err;
    });
    // An answer computed under an older bundle or CRL set is not remembered.
    if (generation === this.#generation) {
      if (this.#remembered.size >= MAX_REMEMBERED) {
        this.#remembered.delete(this.#remembered.keys().next().value!);
      }
      this.#remembered.set(key, entry);
    }
    return entry.answer;
  }

  async #verifyNow(
    chain: readonly Uint8Array[],
    purpose: "serverAuth" | "clientAuth",
    nowMs: number,
  ): Promise<{ peer: VerifiedPeer; validUntilMs: number }> {
    const verified = await verifySvid(chain, this.#bundle, {
      at: new Date(nowMs),
      crls: this.#crls,
      acceptStaleCrls: true,
      purpose,
      cache: this.#signatures,
    });
    let validUntilMs = verified.notAfter.getTime();
    for (const crl of this.#crls) {
      // A CRL turning stale changes the answer (checked becomes stale-crl); one already stale
      // does not change with time, only with a new CRL (a new generation).
      const nextUpdateMs = crl.nextUpdate?.getTime();
      if (nextUpdateMs !== undefined && nextUpdateMs > nowMs) {
        validUntilMs = Math.min(validUntilMs, nextUpdateMs);
      }
    }
    const leaf = verified.chain[0];
    // As checkRevocation scopes a CRL: the leaf's issuer name, and its key where both say.
    const isFollowed = this.#crls.some((crl) =>
      crl.issuer.key === leaf.issuer.key &&
      !(crl.authorityKeyIdentifier && leaf.authorityKeyIdentifier &&
        !bytesEqual(crl.authorityKeyIdentifier, leaf.authorityKeyIdentifier))
    );
    const staleSinceMs = Math.min(...verified.staleCrls.map((crl) => crl.nextUpdate?.getTime() ?? 0));
    const peer: VerifiedPeer = {
      id: verified.id,
      serialNumber: leaf.serialNumber,
      chain,
      leaf: chain[0],
      revocation: !isFollowed ? "unchecked-no-crl" : verified.staleCrls.length ? "stale-crl" : "checked",
      authority: authorityOf(leaf)!,
      issuerName: formatName(leaf.issuer),
      ...(verified.staleCrls.length ? { staleSince: new Date(staleSinceMs) } : {}),
    };
    return { peer, validUntilMs };
  }

  #rememberIntermediates(chain: readonly Uint8Array[]): void {
    const leafKey = latin1(chain[0]);
    if (this.#intermediatesByLeaf.has(leafKey)) return;
    if (this.#intermediatesByLeaf.size >= MAX_LEAVES) {
      this.#intermediatesByLeaf.delete(this.#intermediatesByLeaf.keys().next().value!);
    }
    this.#intermediatesByLeaf.set(leafKey, chain.slice(1));
  }
}

function latin1(der: Uint8Array): string {
  return Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("latin1");
}

function fingerprintOf(bundle: TrustBundle | BundleSet, crls: readonly Crl[]): string {
  const bundles = "x509Authorities" in bundle ? [bundle] : bundle.bundles();
  const parts = bundles
    .map((b) => `${b.trustDomain.name}=${b.x509Authorities().map((c) => latin1(c.der)).join("|")}`)
    .sort();
  return `${parts.join("\n")}\n#${crls.map((c) => latin1(c.der)).join("|")}`;
}
