/**
 * Keeps one Kubernetes object holding the CA's trust bundle equal to it, for the signer's
 * ClusterTrustBundle and for the ConfigMap node agents read their roots from. The bundle holds every root the CA
 * publishes, so during a root rotation both. It is compared with the CA's bundle every few
 * seconds and with the cluster's copy every minute (someone may have edited or deleted it).
 *
 * @module
 */

import { type KubernetesApi, KubernetesApiError, type Logger, type ObjectMeta } from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";

/** What every trust-bundle publisher takes. */
export interface TrustBundlePublisherOptions {
  /** The API client, with the RBAC to create the object, and to get and update it. */
  api: KubernetesApi;
  /** The CA's authorities, whose bundle is published. */
  authorities: Authorities;
  /** Where creations, updates and failures are logged. */
  logger: Logger;
  /** How often the CA's bundle is compared. Default 5 s. */
  checkMs?: number;
  /** How often the cluster's copy is re-read. Default 60 s. */
  verifyMs?: number;
}

/** A Kubernetes object that carries a PEM trust bundle. */
export interface BundleObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

/** Where a publisher keeps the bundle, and how it is written into the object. */
export interface BundleTarget {
  kind: string;
  /** The collection's path; the object is `<path>/<name>`. */
  path: string;
  name: string;
  /** The object to create, holding `bundle`. */
  create(bundle: string): BundleObject;
  /** `current` with `bundle` in it, or undefined when it already holds exactly that. */
  update(current: BundleObject, bundle: string): BundleObject | undefined;
}

/** Keeps the object `target` names equal to the CA's trust bundle. */
export class TrustBundleSync {
  readonly #o: TrustBundlePublisherOptions;
  readonly #target: BundleTarget;
  #published = "";
  #lastVerified = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = true;
  #running?: Promise<void>;

  /** A publisher of `target`; `start` begins publishing. */
  constructor(options: TrustBundlePublisherOptions, target: BundleTarget) {
    this.#o = options;
    this.#target = target;
  }

  /** The object's name. */
  get name(): string {
    return this.#target.name;
  }

  /** Publishes now, then keeps it current until `signal` aborts. */
  async start(signal?: AbortSignal): Promise<void> {
    this.#stopped = false;
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    await this.sync();
    this.#schedule();
  }

  /** Stops keeping the object current; what was published stays. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(async () => {
      await this.sync().catch((err) =>
        this.#o.logger.warn(`publishing the ${this.#target.kind} failed`, { name: this.name, error: err })
      );
      this.#schedule();
    }, this.#o.checkMs ?? 5000);
    this.#timer.unref?.();
  }

  /** Writes the bundle if the CA's or the cluster's copy changed; one sync at a time. */
  sync(): Promise<void> {
    this.#running ??= this.#sync().finally(() => this.#running = undefined);
    return this.#running;
  }

  async #sync(): Promise<void> {
    const bundle = this.#o.authorities.bundlePem();
    const isDue = Date.now() - this.#lastVerified >= (this.#o.verifyMs ?? 60_000);
    if (bundle === this.#published && !isDue) return;
    const { kind, path, name } = this.#target;
    let current: BundleObject | undefined;
    try {
      current = await this.#o.api.get<BundleObject>(`${path}/${name}`);
    } catch (err) {
      if (!(err instanceof KubernetesApiError && err.isNotFound)) throw err;
    }
    this.#lastVerified = Date.now();
    const roots = bundle.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
    if (!current) {
      await this.#o.api.create(path, this.#target.create(bundle));
      this.#o.logger.info(`${kind} created`, { name, roots });
    } else {
      const updated = this.#target.update(current, bundle);
      if (updated) {
        await this.#o.api.replace(`${path}/${name}`, updated);
        this.#o.logger.info(`${kind} updated`, { name, roots });
      }
    }
    this.#published = bundle;
  }
}
