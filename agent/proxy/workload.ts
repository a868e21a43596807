/**
 * One workload as the proxy sees it: the TLS context made from its current SVID, and the
 * {@link PeerVerifier} holding its trust bundle and CRLs. It follows its
 * {@link CredentialSource}: a new SVID makes a new context (listeners swap it in for new
 * connections; open ones keep theirs), and a new bundle or CRL set starts a new verification
 * generation and asks the proxy to verify every open connection again.
 *
 * Revocation, as `proxy.revocation` says: a peer whose authority's CRL is not held has it fetched
 * (at most once per {@link FOLLOW_RETRY_MS} per authority) and is verified again; a peer whose
 * revocation still could not be checked against a current CRL (none held, or one past its
 * nextUpdate) is refused under `strict`, and accepted under `best-effort` (the default) with the
 * fact reported: the `revocation` field of its audit records, the
 * `meshauth_proxy_revocation_unchecked_total` counter and a warning (rate-limited).
 *
 * @module
 */

import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { BundleSet, encodePem, parseCertificates, uriSans, VerificationError } from "../../mod.ts";
import type { Logger } from "../../internal/mod.ts";
import type { CredentialSource, SvidCredential } from "./credentials.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { authorityOf, type PeerRevocation, PeerVerifier, type VerifiedPeer } from "./peer-verifier.ts";
import { contextOptions } from "./tls-settings.ts";

/** How long an authority whose CRL was asked for is not asked for again. */
const FOLLOW_RETRY_MS = 10_000;
/** Most authorities remembered as asked for. */
const MAX_FOLLOWED = 64;
/** How often a warning about one authority's unchecked revocation is logged at most. */
const WARN_INTERVAL_MS = 60_000;

/**
 * What the proxy does when a peer's revocation cannot be checked against a current CRL:
 * `best-effort` accepts it and reports it, `strict` refuses it (ERR_REVOCATION_UNKNOWN).
 */
export type RevocationMode = "best-effort" | "strict";

/** What a workload tells the listeners that use it. */
export interface WorkloadObserver {
  /** A new SVID is in service (or none: `options` undefined). */
  credentialChanged(options: SecureContextOptions | undefined): void;
  /** The bundle or CRLs changed: open connections must be verified again. */
  trustChanged(): void;
}

/** The proxy's view of one workload. */
export class ProxyWorkload {
  #source?: CredentialSource;
  #credential?: SvidCredential;
  #options?: SecureContextOptions;
  #clientContext?: SecureContext;
  #ownId?: string;
  readonly verifier = new PeerVerifier(new BundleSet(), []);
  readonly #observers = new Set<WorkloadObserver>();
  readonly #onChange = () => this.refresh();

  constructor(
    readonly name: string,
    readonly groups: readonly string[],
    readonly logger: Logger,
    readonly metrics: ProxyMetrics,
    readonly revocation: RevocationMode = "best-effort",
  ) {}

  /** The TLS context options of the SVID in service (for servers' `setSecureContext`). */
  get contextOptions(): SecureContextOptions | undefined {
    return this.#options;
  }

  /** The SPIFFE ID of the SVID in service. */
  get ownId(): string | undefined {
    return this.#ownId;
  }

  /** The client TLS context of the SVID in service. */
  get clientContext(): SecureContext | undefined {
    return this.#clientContext;
  }

  /** Follows `source` (or none: every listener of the workload refuses connections). */
  attach(source: CredentialSource | undefined): void {
    if (source === this.#source) return;
    this.#setSource(source);
    this.refresh();
  }

  #setSource(source: CredentialSource | undefined): void {
    this.#source?.off("change", this.#onChange);
    this.#source = source;
    source?.on("change", this.#onChange);
  }

  observe(observer: WorkloadObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /**
   * Verifies a peer's chain. When its certificate comes from an authority whose CRL the source
   * does not hold (after a root or intermediate rotation, a peer renewed onto the new authority
   * before this node did; or a node that has not reached the CA since it started), the source is
   * asked to fetch it and the chain is verified again with it: a rotation neither cuts the peer
   * off nor leaves its revocation unchecked until this node happens to hold a certificate of the
   * new authority. An authority is asked for at most once per {@link FOLLOW_RETRY_MS}, so a CA
   * that does not answer costs each connection nothing more. A peer whose revocation still is
   * not checked against a current CRL is then refused (`strict`) or accepted and reported.
   */
  async verifyPeer(
    chain: readonly Uint8Array[],
    purpose: "clientAuth" | "serverAuth",
  ): Promise<VerifiedPeer> {
    let peer: VerifiedPeer;
    try {
      peer = await this.verifier.verify(chain, purpose);
    } catch (err) {
      // A CRL of the authority is held but none covers the certificate: the current ones may.
      if (!(err instanceof VerificationError && err.code === "ERR_REVOCATION_UNKNOWN")) throw err;
      if (!(await this.#follow(chain, authorityOf(chain[0])))) throw err;
      peer = await this.verifier.verify(chain, purpose);
    }
    if (peer.revocation === "unchecked-no-crl" && await this.#follow(chain, peer.authority)) {
      peer = await this.verifier.verify(chain, purpose);
    }
    if (peer.revocation === "checked") return peer;
    if (this.revocation === "strict") {
      throw new VerificationError(
        "ERR_REVOCATION_UNKNOWN",
        peer.revocation === "stale-crl"
          ? `the revocation of ${peer.id} (serial ${peer.serialNumber}) cannot be checked: the CRL of ${
            JSON.stringify(peer.issuerName)
          } is stale since ${peer.staleSince?.toISOString()} (proxy.revocation: strict)`
          : `the revocation of ${peer.id} (serial ${peer.serialNumber}) cannot be checked: no CRL of ${
            JSON.stringify(peer.issuerName)
          } is held (proxy.revocation: strict)`,
        0,
        { rule: "revocation" },
      );
    }
    this.#reportUnchecked(peer);
    return peer;
  }

  /** Asks the source for the CRLs of `authority` (rate-limited); true when it was asked. */
  async #follow(chain: readonly Uint8Array[], authority: string | undefined): Promise<boolean> {
    const source = this.#source;
    if (!authority || !source?.fetchCrlsFor || !this.#mayFollow(authority)) return false;
    await source.fetchCrlsFor(chain.map((der) => encodePem("CERTIFICATE", der)).join(""));
    this.refresh();
    return true;
  }

  /** When each unfollowed authority was last asked for (bounded: the oldest go first). */
  readonly #followedAt = new Map<string, number>();

  #mayFollow(authority: string): boolean {
    return mayAct(this.#followedAt, authority, FOLLOW_RETRY_MS);
  }

  /** When a warning was last logged, per authority and reason (bounded). */
  readonly #warnedAt = new Map<string, number>();

  #reportUnchecked(peer: VerifiedPeer): void {
    const reason: Exclude<PeerRevocation, "checked"> = peer.revocation as never;
    this.metrics.revocationUnchecked.inc({ workload: this.name, reason });
    if (!mayAct(this.#warnedAt, `${reason}\u0000${peer.authority}`, WARN_INTERVAL_MS)) return;
    this.logger.warn(
      reason === "stale-crl"
        ? "peer accepted with a stale CRL: a certificate revoked since it was issued would not be refused"
        : "peer accepted with its revocation unchecked: no CRL of its authority is held",
      {
        workload: this.name,
        reason,
        issuer: peer.issuerName,
        peerId: peer.id.toString(),
        peerSerial: peer.serialNumber,
        ...(peer.staleSince ? { staleSince: peer.staleSince.toISOString() } : {}),
        revocationMode: this.revocation,
      },
    );
  }

  /** Reads the source again and applies what changed. */
  refresh(): void {
    const source = this.#source;
    let credential: SvidCredential | undefined;
    try {
      credential = source?.current();
      if (source) this.#applyTrust(source);
    } catch (err) {
      this.logger.error("reading the workload's credentials failed", {
        workload: this.name,
        error: err,
      });
      return;
    }
    this.#applyCredential(credential);
  }

  #applyTrust(source: CredentialSource): void {
    if (this.verifier.update(source.trustBundle(), source.crls())) {
      this.metrics.trustChanges.inc({ workload: this.name });
      for (const observer of this.#observers) observer.trustChanged();
    }
  }

  /**
   * Puts `credential` into service. `isClosing`: the proxy is stopping and its listeners are
   * closed; the SVID is dropped without a log line or a rotation counted, since nothing is refused.
   */
  #applyCredential(credential: SvidCredential | undefined, isClosing = false): void {
    const before = this.#credential;
    if (
      before?.certificateChainPem === credential?.certificateChainPem &&
      before?.privateKeyPem === credential?.privateKeyPem
    ) return;
    let options: SecureContextOptions | undefined;
    let clientContext: SecureContext | undefined;
    let ownId: string | undefined;
    if (credential) {
      try {
        ownId = uriSans(parseCertificates(credential.certificateChainPem)[0])[0];
        options = contextOptions(credential, this.groups);
        clientContext = createSecureContext(options);
      } catch (err) {
        // The SVID in service stays: a bad one must not replace a good one.
        this.logger.error("the workload's new SVID cannot be used for TLS; keeping the one in service", {
          workload: this.name,
          error: err,
        });
        return;
      }
      this.verifier.setOwnChain(credential.certificateChainPem);
    }
    this.#credential = credential;
    this.#options = options;
    this.#clientContext = clientContext;
    this.#ownId = ownId;
    if (!isClosing) {
      if (before || credential) this.metrics.rotations.inc({ workload: this.name });
      this.logger.info(
        credential ? "SVID in service" : "no SVID: the workload's listeners refuse connections",
        {
          workload: this.name,
        },
      );
    }
    for (const observer of this.#observers) observer.credentialChanged(options);
  }

  /**
   * Stops following the source and drops the SVID, as the proxy stops: unlike a source taken
   * away while it runs, nothing is logged (a clean stop is not a workload left without an SVID).
   */
  detach(): void {
    this.#setSource(undefined);
    this.#applyCredential(undefined, true);
  }
}

/**
 * True, and `key` stamped now, when `key` was last stamped `intervalMs` ago or more (or never).
 * At most {@link MAX_FOLLOWED} keys are kept: the oldest go first.
 */
function mayAct(stamps: Map<string, number>, key: string, intervalMs: number): boolean {
  const now = Date.now();
  const last = stamps.get(key);
  if (last !== undefined && now - last < intervalMs) return false;
  stamps.delete(key);
  if (stamps.size >= MAX_FOLLOWED) stamps.delete(stamps.keys().next().value!);
  stamps.set(key, now);
  return true;
}
