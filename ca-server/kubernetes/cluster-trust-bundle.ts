/**
 * The signer's trust bundle as a ClusterTrustBundle (`certificates.k8s.io`), which pods mount
 * with a `clusterTrustBundle` projected volume to verify the certificates this signer issues.
 * Its name carries the signer name's prefix, as the API server requires of a bundle linked to
 * a signer (`meshauth.io/pod-identity` gives `meshauth.io:pod-identity:trust-bundle`), and it
 * holds every root the CA publishes: during a root rotation both, so certificates of either
 * verify; afterwards the new one alone. It is compared with the CA's bundle every few seconds
 * and with the cluster's copy every minute (someone may have edited or deleted it).
 *
 * @module
 */

import { type KubernetesApi, KubernetesApiError, type Logger, type ObjectMeta } from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";

/** The ClusterTrustBundle name for a signer: its name with `/` as `:`, then `:trust-bundle`. */
export function clusterTrustBundleName(signerName: string): string {
  return `${signerName.replace("/", ":")}:trust-bundle`;
}

/** Options of {@link ClusterTrustBundlePublisher}. */
export interface ClusterTrustBundlePublisherOptions {
  api: KubernetesApi;
  authorities: Authorities;
  signerName: string;
  apiVersion: "v1beta1" | "v1";
  logger: Logger;
  /** How often the CA's bundle is compared. Default 5 s. */
  checkMs?: number;
  /** How often the cluster's copy is re-read. Default 60 s. */
  verifyMs?: number;
}

interface ClusterTrustBundle {
  apiVersion: string;
  kind: "ClusterTrustBundle";
  metadata: ObjectMeta;
  spec: { signerName?: string; trustBundle: string };
}

/** Keeps the signer's ClusterTrustBundle equal to the CA's trust bundle. */
export class ClusterTrustBundlePublisher {
  readonly #o: ClusterTrustBundlePublisherOptions;
  /** The ClusterTrustBundle's object name, derived from the signer name. */
  readonly name: string;
  #published = "";
  #lastVerified = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = true;
  #running?: Promise<void>;

  /** A publisher for `options.signerName`; `start` begins publishing. */
  constructor(options: ClusterTrustBundlePublisherOptions) {
    this.#o = options;
    this.name = clusterTrustBundleName(options.signerName);
  }

  get #path(): string {
    return `/apis/certificates.k8s.io/${this.#o.apiVersion}/clustertrustbundles`;
  }

  /** Publishes now, then keeps it current until `signal` aborts. */
  async start(signal?: AbortSignal): Promise<void> {
    this.#stopped = false;
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    await this.sync();
    this.#schedule();
  }

  /** Stops keeping the ClusterTrustBundle current; what was published stays. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(async () => {
      await this.sync().catch((err) =>
        this.#o.logger.warn("publishing the ClusterTrustBundle failed", { name: this.name, error: err })
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
    let current: ClusterTrustBundle | undefined;
    try {
      current = await this.#o.api.get<ClusterTrustBundle>(`${this.#path}/${this.name}`);
    } catch (err) {
      if (!(err instanceof KubernetesApiError && err.isNotFound)) throw err;
    }
    this.#lastVerified = Date.now();
    const spec = { signerName: this.#o.signerName, trustBundle: bundle };
    if (!current) {
      await this.#o.api.create(this.#path, {
        apiVersion: `certificates.k8s.io/${this.#o.apiVersion}`,
        kind: "ClusterTrustBundle",
        metadata: { name: this.name, labels: { "app.kubernetes.io/managed-by": "meshauth-ca" } },
        spec,
      });
      this.#o.logger.info("ClusterTrustBundle created", {
        name: this.name,
        roots: countCertificates(bundle),
      });
    } else if (current.spec?.trustBundle !== bundle || current.spec?.signerName !== this.#o.signerName) {
      await this.#o.api.replace(`${this.#path}/${this.name}`, { ...current, spec });
      this.#o.logger.info("ClusterTrustBundle updated", {
        name: this.name,
        roots: countCertificates(bundle),
      });
    }
    this.#published = bundle;
  }
}

function countCertificates(pem: string): number {
  return pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
}
