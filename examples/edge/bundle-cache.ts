/**
 * Trust bundles at the edge: fetched from the CA's `GET /v1/bundle` (a SPIFFE bundle, JWKS)
 * and cached for the refresh hint the CA publishes (`spiffe_refresh_hint`). When the CA
 * cannot be reached, the last bundle stays in use for a bounded time, as SPIFFE bundle
 * consumers do, and then the edge refuses requests rather than trust an old bundle forever.
 * @module
 */

import { BundleSet, TrustBundle, TrustDomain } from "../../mod.ts";

/** The shape of `fetch` the edge needs; a Workers service binding's `fetch` fits too. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Where one trust domain's bundle comes from. */
export interface BundleSource {
  readonly trustDomain: TrustDomain;
  fetchBundle(): Promise<TrustBundle>;
}

/** The bundle could not be fetched and no usable cached copy exists. */
export class BundleUnavailable extends Error {
  constructor(readonly trustDomain: string, reason: string, options?: ErrorOptions) {
    super(`the trust bundle of ${trustDomain} is unavailable: ${reason}`, options);
    this.name = "BundleUnavailable";
  }
}

/** Options of {@link bundleEndpoint}. */
export interface BundleEndpointOptions {
  trustDomain: TrustDomain | string;
  /** The CA's bundle URL, e.g. `https://ca.example.org:8443/v1/bundle`. */
  url: string | URL;
  /** Defaults to the global `fetch`. */
  fetch?: FetchLike;
  timeoutMs?: number;
}

/**
 * A bundle source that GETs the CA's SPIFFE bundle endpoint.
 *
 * @example
 * ```ts
 * const source = bundleEndpoint({ trustDomain: "example.org", url: "https://ca.example.org/v1/bundle" });
 * ```
 */
export function bundleEndpoint(options: BundleEndpointOptions): BundleSource {
  const trustDomain = typeof options.trustDomain === "string"
    ? TrustDomain.parse(options.trustDomain)
    : options.trustDomain;
  const url = String(options.url);
  const timeoutMs = options.timeoutMs ?? 5_000;
  // The CA tags its bundle (ETag); an unchanged bundle then costs a 304 and no parsing.
  let last: { etag: string; bundle: TrustBundle } | undefined;
  return {
    trustDomain,
    async fetchBundle() {
      const fetchBundleDocument = options.fetch ?? fetch;
      const headers: Record<string, string> = { accept: "application/json" };
      if (last) headers["if-none-match"] = last.etag;
      const response = await fetchBundleDocument(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
      if (response.status === 304 && last) return last.bundle;
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`GET ${url} answered ${response.status}`);
      }
      const bundle = TrustBundle.fromJwks(trustDomain, await response.text());
      const etag = response.headers.get("etag");
      last = etag ? { etag, bundle } : undefined;
      return bundle;
    },
  };
}

/** Options of {@link BundleCache}. */
export interface BundleCacheOptions {
  /** Milliseconds since the epoch; defaults to `Date.now`. Tests move it. */
  now?: () => number;
  /** How long a bundle is used when the CA gives no refresh hint. Default 300 s. */
  defaultRefreshSeconds?: number;
  /** Bounds applied to the CA's hint, so a bad hint neither hammers the CA nor freezes the bundle. */
  minRefreshSeconds?: number;
  maxRefreshSeconds?: number;
  /** How long past its refresh time a bundle is still used while the CA is unreachable. Default 3600 s. */
  maxStaleSeconds?: number;
}

interface CacheEntry {
  bundle: TrustBundle;
  fetchedAt: number;
  refreshAt: number;
}

/**
 * Caches the bundles of one or more trust domains (federation) and refetches each when its
 * refresh hint has passed.
 *
 * A refresh is not shared between concurrent requests: on Workers a promise made while
 * handling one request must not be awaited by another, so at most a few requests that
 * arrive together at expiry fetch the bundle each.
 */
export class BundleCache {
  readonly #sources: BundleSource[];
  readonly #entries = new Map<string, CacheEntry>();
  readonly #now: () => number;
  readonly #defaultRefreshSeconds: number;
  readonly #minRefreshSeconds: number;
  readonly #maxRefreshSeconds: number;
  readonly #maxStaleSeconds: number;
  #fetches = 0;

  constructor(sources: BundleSource | readonly BundleSource[], options: BundleCacheOptions = {}) {
    this.#sources = Array.isArray(sources) ? [...sources] : [sources as BundleSource];
    this.#now = options.now ?? Date.now;
    this.#defaultRefreshSeconds = options.defaultRefreshSeconds ?? 300;
    this.#minRefreshSeconds = options.minRefreshSeconds ?? 5;
    this.#maxRefreshSeconds = options.maxRefreshSeconds ?? 86_400;
    this.#maxStaleSeconds = options.maxStaleSeconds ?? 3_600;
  }

  /** How many times a source was asked for its bundle (for tests and metrics). */
  get fetchCount(): number {
    return this.#fetches;
  }

  /** The current bundles of every trust domain, fetching those that are missing or due. */
  async bundles(): Promise<BundleSet> {
    const bundles = await Promise.all(this.#sources.map((source) => this.#bundleOf(source)));
    return new BundleSet(...bundles);
  }

  /** What is cached, for a health endpoint. */
  status(): { trustDomain: string; sequence: number; fetchedAt: string; refreshAt: string }[] {
    return [...this.#entries.entries()].map(([trustDomain, entry]) => ({
      trustDomain,
      sequence: entry.bundle.sequence,
      fetchedAt: new Date(entry.fetchedAt).toISOString(),
      refreshAt: new Date(entry.refreshAt).toISOString(),
    }));
  }

  async #bundleOf(source: BundleSource): Promise<TrustBundle> {
    const key = source.trustDomain.name;
    const cached = this.#entries.get(key);
    const now = this.#now();
    if (cached && now < cached.refreshAt) return cached.bundle;
    try {
      this.#fetches++;
      const bundle = await source.fetchBundle();
      if (bundle.trustDomain.name !== key) {
        throw new Error(`the source of ${key} returned a bundle of ${bundle.trustDomain.name}`);
      }
      const hint = bundle.refreshHintSeconds ?? this.#defaultRefreshSeconds;
      const seconds = Math.min(Math.max(hint, this.#minRefreshSeconds), this.#maxRefreshSeconds);
      this.#entries.set(key, { bundle, fetchedAt: now, refreshAt: now + seconds * 1000 });
      return bundle;
    } catch (cause) {
      if (cached && now < cached.refreshAt + this.#maxStaleSeconds * 1000) return cached.bundle;
      const reason = cause instanceof Error ? cause.message : String(cause);
      throw new BundleUnavailable(key, cached ? `${reason}; the cached bundle is too old` : reason, {
        cause,
      });
    }
  }
}
