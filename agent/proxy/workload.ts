/**
 * One workload as the proxy sees it: the TLS context made from its current SVID, and the
 * {@link PeerVerifier} holding its trust bundle and CRLs. It follows its
 * {@link CredentialSource}: a new SVID makes a new context (listeners swap it in for new
 * connections; open ones keep theirs), and a new bundle or CRL set starts a new verification
 * generation and asks the proxy to verify every open connection again.
 *
 * @module
 */

import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { BundleSet, encodePem, parseCertificates, uriSans, VerificationError } from "../../mod.ts";
import type { Logger } from "../../internal/mod.ts";
import type { CredentialSource, SvidCredential } from "./credentials.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { PeerVerifier, type VerifiedPeer } from "./peer-verifier.ts";
import { contextOptions } from "./tls-settings.ts";

/** How long an authority whose CRL was asked for is not asked for again. */
const FOLLOW_RETRY_MS = 10_000;
/** Most authorities remembered as asked for. */
const MAX_FOLLOWED = 64;

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
    this.#source?.off("change", this.#onChange);
    this.#source = source;
    source?.on("change", this.#onChange);
    this.refresh();
  }

  observe(observer: WorkloadObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /**
   * Verifies a peer's chain. When its certificate comes from an authority whose CRL the source
   * does not follow yet (after a root or intermediate rotation, a peer renewed onto the new
   * authority before this node did), the source is asked to fetch it and the chain is verified
   * again with it: the rotation neither cuts the peer off nor leaves its revocation unchecked
   * until this node happens to hold a certificate of the new authority. An authority is asked
   * for at most once per {@link FOLLOW_RETRY_MS}, so a CA that does not answer costs each
   * connection nothing more.
   */
  async verifyPeer(
    chain: readonly Uint8Array[],
    purpose: "clientAuth" | "serverAuth",
  ): Promise<VerifiedPeer> {
    let peer: VerifiedPeer;
    try {
      peer = await this.verifier.verify(chain, purpose);
    } catch (err) {
      const source = this.#source;
      if (
        !(err instanceof VerificationError && err.code === "ERR_REVOCATION_UNKNOWN") || !source?.fetchCrlsFor
      ) {
        throw err;
      }
      await source.fetchCrlsFor(chain.map((der) => encodePem("CERTIFICATE", der)).join(""));
      this.refresh();
      return await this.verifier.verify(chain, purpose);
    }
    const source = this.#source;
    const authority = peer.unfollowedAuthority;
    if (!authority || !source?.fetchCrlsFor || !this.#mayFollow(authority)) return peer;
    await source.fetchCrlsFor(chain.map((der) => encodePem("CERTIFICATE", der)).join(""));
    this.refresh();
    return await this.verifier.verify(chain, purpose);
  }

  /** When each unfollowed authority was last asked for (bounded: the oldest go first). */
  readonly #followedAt = new Map<string, number>();

  #mayFollow(authority: string): boolean {
    const now = Date.now();
    const last = this.#followedAt.get(authority);
    if (last !== undefined && now - last < FOLLOW_RETRY_MS) return false;
    this.#followedAt.delete(authority);
    if (this.#followedAt.size >= MAX_FOLLOWED) this.#followedAt.delete(this.#followedAt.keys().next().value!);
    this.#followedAt.set(authority, now);
    return true;
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
        error: (err as Error).message,
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

  #applyCredential(credential: SvidCredential | undefined): void {
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
          error: (err as Error).message,
        });
        return;
      }
      this.verifier.setOwnChain(credential.certificateChainPem);
    }
    this.#credential = credential;
    this.#options = options;
    this.#clientContext = clientContext;
    this.#ownId = ownId;
    if (before || credential) this.metrics.rotations.inc({ workload: this.name });
    this.logger.info(
      credential ? "SVID in service" : "no SVID: the workload's listeners refuse connections",
      {
        workload: this.name,
      },
    );
    for (const observer of this.#observers) observer.credentialChanged(options);
  }

  /** Stops following the source. */
  detach(): void {
    this.attach(undefined);
  }
}
