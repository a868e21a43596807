/**
 * Keeping the trust bundle and the CRLs current: the bundle is fetched from the CA on its
 * caching hint (`Cache-Control: max-age`, with `If-None-Match` so an unchanged bundle costs no
 * body), bounded by the configured minimum and maximum; a change is stored, trusted for the
 * CA's own serving certificate from then on, and handed to the agent, which writes it into
 * every workload's directory, so a root rotation reaches workloads with no restart.
 *
 * The CRL of each authority that issued a certificate the agent holds is fetched the same way,
 * checked by the core's chain validator (its signature, issuer and validity), and handed on
 * with its revoked serial numbers; a held certificate found there is re-issued at once.
 *
 * The CRLs held are stored in the state directory whenever they change and loaded at start
 * (checked again against the bundle; one past its nextUpdate is kept, its entries still
 * count), so an agent restarted while the CA cannot be reached keeps the revocations it knew
 * instead of starting with none.
 *
 * @module
 */

import {
  type Crl,
  encodePem,
  parseCertificates,
  parseCrl,
  TrustBundle,
  type TrustDomain,
  VerificationError,
  verifySvid,
} from "../../mod.ts";
import { authorityIdOf, bytesEqual, type Logger } from "../../internal/mod.ts";
import type { CaClient } from "../ca-client.ts";
import type { AgentMetrics } from "../metrics.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import { causeOf, messageOf, retryAfterMs } from "./failure.ts";
import type { StateStore } from "./state-store.ts";
import { callAfter, type Timer } from "./timer.ts";

/** A certificate the agent holds, as the CRL check needs it. */
export interface HeldCertificate {
  certificateChainPem: string;
  serialNumber: string;
  expiresAt: Date;
}

/** Authorities followed for peers' sake at most (a trust domain has a few at a time). */
export const MAX_PEER_AUTHORITIES = 16;

/** Options of {@link TrustRefresher}. */
export interface TrustRefresherOptions {
  client: CaClient;
  trustDomain: TrustDomain;
  /**
   * Where the bundle and CRLs are kept across restarts; without it (a proxy sidecar, which reads
   * its bundle from its files) they are held in memory only and fetched again after a restart.
   */
  state?: Pick<StateStore, "loadTrust" | "saveTrust" | "loadCrls" | "saveCrls">;
  /** The roots configured to trust the CA with; always trusted for its serving certificate. */
  bootstrapBundlePem: string;
  /** Bounds on the wait between fetches, whatever the CA's hint says. */
  minRefreshMs: number;
  maxRefreshMs: number;
  backoff?: BackoffOptions;
  logger: Logger;
  /** The counters it updates (a sidecar, which fetches no bundle, has no bundle counter). */
  metrics: Pick<AgentMetrics, "crlUpdates"> & Partial<Pick<AgentMetrics, "trustBundleUpdates">>;
  /** Every certificate held now (the node's and the workloads'). */
  heldCertificates: () => Iterable<HeldCertificate>;
  onBundle: (bundle: TrustBundle, pem: string, sequence: number | undefined) => void;
  onCrl: (authorityId: string, crl: Crl, revokedSerials: ReadonlySet<string>) => void;
  /**
   * CRLs no longer followed (no certificate of their authority is held, and no peer's is
   * followed): a holder of copies (a proxy sidecar) drops them too, so that a later peer of
   * the authority finds no CRL and has it fetched, instead of a stale copy.
   */
  onCrlsDropped?: (authorityIds: readonly string[]) => void;
  /** Now on the CA's clock (see CaClock); this node's by default. */
  caNow?: () => number;
}

interface HeldCrl {
  crl: Crl;
  revoked: Set<string>;
  /** The certificate of the authority it was checked against (stored with it). */
  sample: HeldCertificate;
}

/** The trust bundle and CRLs, kept current. */
export class TrustRefresher {
  readonly #o: TrustRefresherOptions;
  #pem = "";
  #bundle?: TrustBundle;
  #etag?: string;
  #sequence?: number;
  readonly #crls = new Map<string, HeldCrl>();
  /** A peer's certificate per authority the agent holds nothing of, to follow its CRLs with. */
  readonly #peerSamples = new Map<string, HeldCertificate>();
  readonly #peerFetches = new Map<string, Promise<void>>();
  readonly #issuerIds = new WeakMap<HeldCertificate, Promise<string | undefined>>();
  #bundleTimer?: Timer;
  #crlTimer?: Timer;
  readonly #bundleBackoff: Backoff;
  readonly #crlBackoff: Backoff;
  #isStopped = false;
  #bundleFetch?: Promise<void>;
  #crlFetch?: Promise<void>;

  constructor(options: TrustRefresherOptions) {
    this.#o = options;
    this.#bundleBackoff = new Backoff(options.backoff);
    this.#crlBackoff = new Backoff(options.backoff);
  }

  /** The trust bundle as PEM. */
  get pem(): string {
    return this.#pem;
  }

  /** The trust bundle. */
  get bundle(): TrustBundle {
    return this.#bundle ?? TrustBundle.fromPem(this.#o.trustDomain, this.#o.bootstrapBundlePem);
  }

  /** Its sequence number, when the CA gave one. */
  get sequence(): number | undefined {
    return this.#sequence;
  }

  /** The verified CRLs, by authority id. */
  crls(): ReadonlyMap<string, Crl> {
    return new Map([...this.#crls].map(([id, held]) => [id, held.crl]));
  }

  /** Starts from the stored bundle (or the configured one), before the CA is asked. */
  async load(): Promise<void> {
    const stored = await this.#o.state?.loadTrust();
    let pem = this.#o.bootstrapBundlePem;
    if (stored) {
      try {
        TrustBundle.fromPem(this.#o.trustDomain, stored.bundlePem);
        pem = stored.bundlePem;
        this.#etag = stored.etag;
        this.#sequence = stored.sequence;
      } catch {
        // A damaged record: the configured bundle, and a fetch, replace it.
      }
    }
    this.#use(pem);
    await this.#loadCrls();
  }

  /** The CRLs stored by the last run, each checked again against the bundle and its sample. */
  async #loadCrls(): Promise<void> {
    for (const record of await this.#o.state?.loadCrls() ?? []) {
      try {
        const crl = parseCrl(record.der);
        const leaf = parseCertificates(record.sampleChainPem)[0];
        await this.#check(crl, record.sampleChainPem, true);
        const sample = {
          certificateChainPem: record.sampleChainPem,
          serialNumber: leaf.serialNumber,
          expiresAt: leaf.notAfter,
        };
        this.#crls.set(record.authorityId, {
          crl,
          revoked: new Set(crl.revoked.map((r) => r.serialNumber)),
          sample,
        });
        // Its authority stays followed, as if a peer of it had asked (bounded as those are).
        if (this.#peerSamples.size < MAX_PEER_AUTHORITIES) this.#peerSamples.set(record.authorityId, sample);
      } catch (err) {
        this.#o.logger.warn("a stored CRL was left out", {
          authority: record.authorityId,
          error: err,
        });
      }
    }
  }

  /** Stores the CRLs held now; a failure is logged (they are fetched again after a restart). */
  async #saveCrls(): Promise<void> {
    const records = [...this.#crls].map(([authorityId, held]) => ({
      authorityId,
      der: held.crl.der,
      sampleChainPem: held.sample.certificateChainPem,
    }));
    try {
      await this.#o.state?.saveCrls(records);
    } catch (err) {
      this.#o.logger.warn("storing the CRLs failed", { error: err });
    }
  }

  /**
   * Follows the CRLs of the authority that issued a peer's chain, with the chain as the sample
   * its CRL is checked against, and fetches them now (see `NodeAgent.fetchCrlsFor`). Unknown
   * authorities, chains the bundle does not verify, and more than {@link MAX_PEER_AUTHORITIES}
   * authorities are not followed: a peer cannot make the agent fetch without bound.
   */
  followPeer(chainPem: string): Promise<void> {
    return (async () => {
      const leaf = parseCertificates(chainPem)[0];
      const id = await this.#findIssuerId(chainPem);
      if (!leaf || !id) return;
      // Only a chain of this trust domain, revocation aside, may have its authority followed.
      await verifySvid(chainPem, this.bundle);
      const pending = this.#peerFetches.get(id);
      if (pending) return await pending;
      const known = this.#peerSamples.get(id);
      if (!known && this.#peerSamples.size >= MAX_PEER_AUTHORITIES) return;
      if (!known || known.expiresAt < leaf.notAfter) {
        this.#peerSamples.set(id, {
          certificateChainPem: chainPem,
          serialNumber: leaf.serialNumber,
          expiresAt: leaf.notAfter,
        });
      }
      const fetch = (async () => {
        // A fetch under way may have started before this authority was followed.
        await this.#crlFetch;
        await this.refreshCrls();
      })().finally(() => this.#peerFetches.delete(id));
      this.#peerFetches.set(id, fetch);
      await fetch;
    })().catch(() => {});
  }

  /** True when a verified CRL held lists `serialNumber`. */
  isRevoked(serialNumber: string): boolean {
    for (const held of this.#crls.values()) if (held.revoked.has(serialNumber)) return true;
    return false;
  }

  /**
   * Takes a bundle that came another way (a proxy sidecar reads its own from the files the agent
   * delivers): CRLs are checked against it from now on, and fetched again when it changed.
   */
  adoptBundle(pem: string): void {
    if (normalize(pem) === normalize(this.#pem)) return;
    this.#use(pem);
    void this.refreshCrls();
  }

  /** Fetches the bundle now and then on the CA's hint; CRLs likewise. */
  start(): void {
    this.#isStopped = false;
    this.refreshBundle();
    this.refreshCrls();
  }

  stop(): Promise<void> {
    this.#isStopped = true;
    this.#bundleTimer?.cancel();
    this.#crlTimer?.cancel();
    return Promise.all([this.#bundleFetch, this.#crlFetch]).then(() => {});
  }

  /** Fetches the bundle now (unless a fetch is under way). */
  refreshBundle(): Promise<void> {
    if (this.#bundleFetch || this.#isStopped) return this.#bundleFetch ?? Promise.resolve();
    this.#bundleTimer?.cancel();
    this.#bundleFetch = this.#fetchBundle().finally(() => this.#bundleFetch = undefined);
    return this.#bundleFetch;
  }

  /** Fetches the CRLs of the authorities of held certificates now (unless under way). */
  refreshCrls(): Promise<void> {
    if (this.#crlFetch || this.#isStopped) return this.#crlFetch ?? Promise.resolve();
    this.#crlTimer?.cancel();
    this.#crlFetch = this.#fetchCrls().finally(() => this.#crlFetch = undefined);
    return this.#crlFetch;
  }

  #use(pem: string): TrustBundle {
    const bundle = TrustBundle.fromPem(this.#o.trustDomain, pem);
    this.#pem = pem;
    this.#bundle = bundle;
    // The bundle the operator configured stays trusted for the CA itself, with the fetched one.
    this.#o.client.setTrustAnchors(
      pem === this.#o.bootstrapBundlePem ? pem : `${this.#o.bootstrapBundlePem.trimEnd()}\n${pem}`,
    );
    return bundle;
  }

  #delay(maxAgeSeconds: number | undefined): number {
    const hinted = maxAgeSeconds === undefined ? this.#o.maxRefreshMs : maxAgeSeconds * 1000;
    const bounded = Math.min(this.#o.maxRefreshMs, Math.max(this.#o.minRefreshMs, hinted));
    // A tenth of jitter, so agents started together do not stay in step.
    return Math.floor(bounded * (0.9 + Math.random() * 0.1));
  }

  async #fetchBundle(): Promise<void> {
    let wait: number;
    try {
      const answer = await this.#o.client.trustBundle(this.#etag);
      this.#bundleBackoff.reset();
      wait = this.#delay(answer.maxAgeSeconds);
      if (answer.isModified && normalize(answer.pem) !== normalize(this.#pem)) {
        let bundle: TrustBundle;
        try {
          bundle = TrustBundle.fromPem(this.#o.trustDomain, answer.pem);
        } catch (err) {
          throw new Error(`the CA's trust bundle does not parse: ${messageOf(err)}`);
        }
        this.#etag = answer.etag;
        this.#sequence = answer.sequence;
        await this.#o.state?.saveTrust({
          bundlePem: answer.pem,
          etag: answer.etag,
          sequence: answer.sequence,
        });
        this.#use(answer.pem);
        this.#o.metrics.trustBundleUpdates?.inc();
        this.#o.logger.info("trust bundle changed", {
          sequence: answer.sequence,
          roots: bundle.x509Authorities().length,
        });
        this.#o.onBundle(bundle, answer.pem, answer.sequence);
        // A new authority may mean new CRLs to watch.
        void this.refreshCrls();
      } else if (answer.isModified) {
        this.#etag = answer.etag;
      }
    } catch (err) {
      wait = this.#bundleBackoff.next(retryAfterMs(err));
      this.#o.logger.warn("trust bundle refresh failed", {
        cause: causeOf(err),
        error: err,
        retryInSeconds: Math.round(wait / 1000),
      });
    }
    if (!this.#isStopped) this.#bundleTimer = callAfter(wait, () => void this.refreshBundle());
  }

  /**
   * The id of the authority that issued `held`: the chain's second certificate when the CA
   * sends one (an intermediate), else the bundle's root that signed the leaf.
   */
  issuerIdOf(held: HeldCertificate): Promise<string | undefined> {
    let id = this.#issuerIds.get(held);
    if (!id) {
      id = this.#findIssuerId(held.certificateChainPem).catch(() => undefined);
      this.#issuerIds.set(held, id);
    }
    return id;
  }

  async #findIssuerId(chainPem: string): Promise<string | undefined> {
    const blocks = chainPem.split("-----END CERTIFICATE-----");
    if (blocks.length >= 3) return await authorityIdOf(`${blocks[1].trim()}\n-----END CERTIFICATE-----\n`);
    const leaf = parseCertificates(chainPem)[0];
    const root = this.bundle.x509Authorities().find((r) =>
      r.subject.key === leaf.issuer.key &&
      (!leaf.authorityKeyIdentifier || !r.subjectKeyIdentifier ||
        bytesEqual(leaf.authorityKeyIdentifier, r.subjectKeyIdentifier))
    );
    return root ? await authorityIdOf(encodePem("CERTIFICATE", root.der)) : undefined;
  }

  async #fetchCrls(): Promise<void> {
    // The newest held certificate of each issuer is the one a CRL is checked against.
    const samples = new Map<string, HeldCertificate>();
    for (const held of this.#o.heldCertificates()) {
      const id = await this.issuerIdOf(held);
      if (!id) continue;
      const sample = samples.get(id);
      if (!sample || sample.expiresAt < held.expiresAt) samples.set(id, held);
    }
    const now = Date.now();
    for (const [id, peer] of this.#peerSamples) {
      if (peer.expiresAt.getTime() <= now) this.#peerSamples.delete(id);
      else if (!samples.has(id)) samples.set(id, peer);
    }
    let wait = this.#o.maxRefreshMs;
    let failed: unknown;
    const changed: string[] = [];
    for (const [authorityId, sample] of samples) {
      try {
        const answer = await this.#o.client.crl(authorityId);
        wait = Math.min(wait, this.#delay(answer.maxAgeSeconds));
        if (await this.#accept(authorityId, answer.der, sample)) changed.push(authorityId);
      } catch (err) {
        failed = err;
        this.#o.logger.warn("CRL refresh failed", {
          authority: authorityId,
          cause: causeOf(err),
          error: err,
        });
      }
    }
    const dropped = [...this.#crls.keys()].filter((id) => !samples.has(id));
    for (const id of dropped) this.#crls.delete(id);
    if (changed.length > 0 || dropped.length > 0) await this.#saveCrls();
    if (dropped.length > 0) this.#o.onCrlsDropped?.(dropped);
    if (failed) wait = Math.min(wait, this.#crlBackoff.next(retryAfterMs(failed)));
    else this.#crlBackoff.reset();
    if (samples.size === 0) wait = Math.min(wait, this.#o.minRefreshMs * 2);
    if (!this.#isStopped) this.#crlTimer = callAfter(wait, () => void this.refreshCrls());
  }

  /** Takes a fetched CRL; true when it replaced the one held. */
  async #accept(authorityId: string, der: Uint8Array, sample: HeldCertificate): Promise<boolean> {
    const crl = parseCrl(der);
    const previous = this.#crls.get(authorityId);
    if (previous && previous.crl.crlNumber === crl.crlNumber && bytesEqual(previous.crl.der, crl.der)) {
      return false;
    }
    if (
      previous?.crl.crlNumber !== undefined && crl.crlNumber !== undefined &&
      crl.crlNumber < previous.crl.crlNumber
    ) {
      // RFC 5280 5.2.3: CRL numbers only grow; an older CRL (a stale replica) changes nothing.
      return false;
    }
    await this.#check(crl, sample.certificateChainPem, false);
    const revoked = new Set(crl.revoked.map((r) => r.serialNumber));
    this.#crls.set(authorityId, { crl, revoked, sample });
    this.#o.metrics.crlUpdates.inc({ authority: authorityId });
    this.#o.logger.debug("CRL updated", {
      authority: authorityId,
      crlNumber: crl.crlNumber?.toString(),
      entries: revoked.size,
    });
    this.#o.onCrl(authorityId, crl, revoked);
    return true;
  }

  /**
   * Checks `crl` with the core's chain validator against a certificate of its authority (its
   * signature, issuer and freshness; a stored one may be stale), on the CA's clock: a node whose
   * clock is off must still follow revocations. The sample being listed is no fault of the CRL.
   */
  async #check(crl: Crl, sampleChainPem: string, acceptStaleCrls: boolean): Promise<void> {
    try {
      const at = new Date(this.#o.caNow?.() ?? Date.now());
      await verifySvid(sampleChainPem, this.bundle, { crls: [crl], at, acceptStaleCrls });
    } catch (err) {
      if (!(err instanceof VerificationError && err.code === "ERR_CERT_REVOKED")) {
        throw new Error(`the CRL does not verify: ${messageOf(err)}`);
      }
    }
  }
}

function normalize(pem: string): string {
  return pem.replace(/\s+/g, "");
}
