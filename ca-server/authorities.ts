/**
 * The CA's authorities over time, for rotation without downtime. Each authority (a root, or an
 * intermediate under a root) has an `activeFrom`; the newest one whose time has come signs.
 * A new authority is published in the trust bundle as soon as it is added, so holders learn
 * the new root during the overlap before it signs anything; the old one stays in the bundle
 * until every certificate it issued has expired (its retirement plus the longest leaf
 * lifetime), then leaves.
 *
 * @example
 * ```ts
 * import { Authorities, MemoryKeyManager } from "meshauth/ca-server";
 * const authorities = await Authorities.load(new MemoryKeyManager(), { trustDomain: "example.org" });
 * ```
 * @module
 */

import {
  CertificateAuthority,
  type CryptoProvider,
  DEFAULT_MAX_LEAF_TTL_SECONDS,
  type IssuancePolicy,
  MeshAuthError,
  parseCertificates,
  SpiffeId,
  TrustBundle,
  TrustDomain,
  uriSans,
} from "../mod.ts";
import type { AuthorityRecord, KeyManager } from "./keys/key-manager.ts";

/** One loaded authority. */
export interface LoadedAuthority {
  /** The authority as the key manager stores it. */
  record: AuthorityRecord;
  /** The CA that signs with the authority's key. */
  ca: CertificateAuthority;
  /** The trust anchors of this authority's chain. */
  roots: TrustBundle;
}

/** Settings of {@link Authorities.load}. */
export interface AuthoritiesOptions {
  /** The trust domain every authority must certify. */
  trustDomain: TrustDomain | string;
  /** TTL limits and rules applied to every issuance. */
  policy?: IssuancePolicy;
  /** How long a bundle holder should wait before refetching. Default 300 s. */
  refreshHintSeconds?: number;
  /** Checks CSR signatures and hashes keys; WebCrypto by default, node:crypto from the Node entry. */
  crypto?: CryptoProvider;
  /** The clock that picks the active authority; the system's by default. */
  now?: () => Date;
}

/** Thrown when no authority can sign (none configured, none active yet, all expired). */
export class NoActiveAuthority extends MeshAuthError {
  /** Stable code of this class: `ERR_NO_ACTIVE_AUTHORITY`. */
  static override code: string = "ERR_NO_ACTIVE_AUTHORITY";
  /** `message` says why no authority can sign now and what would fix it. */
  constructor(message: string) {
    super(message);
    this.name = "NoActiveAuthority";
  }
}

/** The key manager holds a CA of another trust domain than the one configured. */
export class TrustDomainMismatch extends NoActiveAuthority {
  /** Stable code of this class: `ERR_TRUST_DOMAIN_MISMATCH`. */
  static override code: string = "ERR_TRUST_DOMAIN_MISMATCH";
  /** The trust domain configured and the one the key manager's CA certifies. */
  constructor(
    readonly configured: string,
    readonly found: string,
    readonly authorityId: string,
    where: string,
  ) {
    super(
      `trust domain mismatch: the configuration names ${configured}, but ${where} holds a CA for ${found} ` +
        `(authority ${authorityId}); set trustDomain to ${found}, or use another data directory for ${configured}`,
    );
    this.name = "TrustDomainMismatch";
  }
}

/** The trust domain of an authority record: its CA certificate's SPIFFE ID, `spiffe://<td>`. */
export function trustDomainOfAuthority(
  record: Pick<AuthorityRecord, "certificateChainPem">,
): string | undefined {
  const [ca] = parseCertificates(record.certificateChainPem);
  const [uri] = ca ? uriSans(ca) : [];
  try {
    return uri ? SpiffeId.parse(uri).trustDomain.name : undefined;
  } catch {
    return undefined;
  }
}

/** Throws {@link TrustDomainMismatch} unless every record (of `keyManager`) is of `trustDomain`. */
export function checkTrustDomain(
  records: readonly AuthorityRecord[],
  trustDomain: string,
  keyManager: KeyManager,
): void {
  for (const record of records) {
    const found = trustDomainOfAuthority(record);
    if (found !== undefined && found !== trustDomain) {
      throw new TrustDomainMismatch(trustDomain, found, record.id, keyManager.description);
    }
  }
}

/** Every authority the key manager holds, and which signs now. */
export class Authorities {
  #loaded: LoadedAuthority[] = [];
  #bundleCache?: { key: string; bundle: TrustBundle; pem: string };
  readonly #options: AuthoritiesOptions;
  /** The trust domain the authorities certify. */
  readonly trustDomain: TrustDomain;

  private constructor(readonly keyManager: KeyManager, options: AuthoritiesOptions) {
    this.#options = options;
    this.trustDomain = typeof options.trustDomain === "string"
      ? TrustDomain.parse(options.trustDomain)
      : options.trustDomain;
  }

  /** Loads every authority from `keyManager`. */
  static async load(keyManager: KeyManager, options: AuthoritiesOptions): Promise<Authorities> {
    const authorities = new Authorities(keyManager, options);
    await authorities.reload();
    return authorities;
  }

  /** Re-reads the key manager (after another process added an authority). */
  async reload(): Promise<void> {
    const records = await this.keyManager.list();
    checkTrustDomain(records, this.trustDomain.name, this.keyManager);
    const loaded: LoadedAuthority[] = [];
    for (const record of records) {
      const existing = this.#loaded.find((l) => l.record.id === record.id);
      if (existing) {
        loaded.push(existing);
        continue;
      }
      const ca = await CertificateAuthority.fromSigner({
        certificateChainPem: record.certificateChainPem,
        trustBundlePem: record.trustBundlePem,
        trustDomain: this.trustDomain,
        signer: await this.keyManager.signer(record.id),
        ...this.#options.policy,
        crypto: this.#options.crypto,
        now: this.#options.now,
      });
      if (!ca.trustDomain.equals(this.trustDomain)) {
        throw new NoActiveAuthority(
          `authority ${record.id} belongs to trust domain ${ca.trustDomain.name}, not ${this.trustDomain.name}`,
        );
      }
      loaded.push({ record, ca, roots: ca.bundle() });
    }
    this.#loaded = loaded;
  }

  /** The longest leaf lifetime the authorities issue. */
  get maxTtlSeconds(): number {
    return this.#options.policy?.maxTtlSeconds ?? DEFAULT_MAX_LEAF_TTL_SECONDS;
  }

  /** Every loaded authority, oldest first. */
  all(): readonly LoadedAuthority[] {
    return this.#loaded;
  }

  #now(): Date {
    return this.#options.now?.() ?? new Date();
  }

  /** The authority that signs at `at`: the newest active one whose certificate is valid. */
  active(at = this.#now()): LoadedAuthority {
    const candidates = this.#loaded.filter((l) =>
      l.record.activeFrom <= at && l.ca.certificate.notBefore <= at && l.ca.notAfter > at
    );
    const newest =
      candidates.sort((a, b) => b.record.activeFrom.getTime() - a.record.activeFrom.getTime())[0];
    if (!newest) {
      throw new NoActiveAuthority(
        this.#loaded.length === 0
          ? "no CA authority is configured; run `meshauth ca init`"
          : "no CA authority is active and valid now",
      );
    }
    return newest;
  }

  /** The authority that issued `authorityId`'s certificates, if still loaded. */
  get(authorityId: string): LoadedAuthority | undefined {
    return this.#loaded.find((l) => l.record.id === authorityId);
  }

  /** When an authority stops being needed in the bundle: its successor's start plus the longest leaf. */
  #retiredAfter(authority: LoadedAuthority): Date | undefined {
    const successor = this.#loaded
      .filter((l) => l.record.activeFrom > authority.record.activeFrom)
      .sort((a, b) => a.record.activeFrom.getTime() - b.record.activeFrom.getTime())[0];
    if (!successor) return undefined;
    return new Date(successor.record.activeFrom.getTime() + this.maxTtlSeconds * 1000);
  }

  /** The authorities whose roots are published at `at`. */
  published(at = this.#now()): LoadedAuthority[] {
    return this.#loaded.filter((l) => {
      const retired = this.#retiredAfter(l);
      return l.ca.notAfter > at && (!retired || retired > at);
    });
  }

  /**
   * The trust bundle at `at`: the roots of every published authority. Its sequence grows each
   * time the set changes (an authority added or retired), as SPIFFE bundle endpoints expect.
   */
  bundle(at = this.#now()): TrustBundle {
    return this.#cachedBundle(at).bundle.clone();
  }

  /** {@link bundle} as PEM. */
  bundlePem(at = this.#now()): string {
    return this.#cachedBundle(at).pem;
  }

  // Every issuance answers the bundle: build it only when the published set changes.
  #cachedBundle(at: Date): { key: string; bundle: TrustBundle; pem: string } {
    const published = this.published(at);
    const retiredCount = this.#loaded.filter((l) => {
      const retired = this.#retiredAfter(l);
      return (retired && retired <= at) || l.ca.notAfter <= at;
    }).length;
    const sequence = this.#loaded.length + retiredCount;
    const key = `${sequence}:${published.map((l) => l.record.id).join(",")}`;
    if (this.#bundleCache?.key === key) return this.#bundleCache;
    const bundle = new TrustBundle(this.trustDomain, [], {
      sequence,
      refreshHintSeconds: this.#options.refreshHintSeconds ?? 300,
    });
    for (const l of published) for (const root of l.roots.x509Authorities()) bundle.addAuthority(root);
    // addAuthority bumps the sequence; ours counts changes over time instead.
    bundle.sequence = sequence;
    this.#bundleCache = { key, bundle, pem: bundle.toPem() };
    return this.#bundleCache;
  }
}
