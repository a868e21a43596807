/**
 * The signer's trust bundle as a ClusterTrustBundle (`certificates.k8s.io`), which pods mount
 * with a `clusterTrustBundle` projected volume to verify the certificates this signer issues.
 * Its name carries the signer name's prefix, as the API server requires of a bundle linked to
 * a signer (`meshauth.io/pod-identity` gives `meshauth.io:pod-identity:trust-bundle`), and it
 * holds every root the CA publishes: during a root rotation both, so certificates of either
 * verify; afterwards the new one alone.
 *
 * @module
 */

import { type TrustBundlePublisherOptions, TrustBundleSync } from "./trust-bundle-publisher.ts";

/** The ClusterTrustBundle name for a signer: its name with `/` as `:`, then `:trust-bundle`. */
export function clusterTrustBundleName(signerName: string): string {
  return `${signerName.replace("/", ":")}:trust-bundle`;
}

/** Options of {@link ClusterTrustBundlePublisher}. */
export interface ClusterTrustBundlePublisherOptions extends TrustBundlePublisherOptions {
  /** The signer whose bundle this is, `<domain>/<path>`. */
  signerName: string;
  /** The `certificates.k8s.io` version the ClusterTrustBundle is written in. */
  apiVersion: "v1beta1" | "v1";
}

/** Keeps the signer's ClusterTrustBundle equal to the CA's trust bundle. */
export class ClusterTrustBundlePublisher {
  readonly #publisher: TrustBundleSync;

  /** A publisher for `options.signerName`; `start` begins publishing. */
  constructor(options: ClusterTrustBundlePublisherOptions) {
    const { signerName, apiVersion } = options;
    this.#publisher = new TrustBundleSync(options, {
      kind: "ClusterTrustBundle",
      path: `/apis/certificates.k8s.io/${apiVersion}/clustertrustbundles`,
      name: clusterTrustBundleName(signerName),
      create: (trustBundle) => ({
        apiVersion: `certificates.k8s.io/${apiVersion}`,
        kind: "ClusterTrustBundle",
        metadata: {
          name: clusterTrustBundleName(signerName),
          labels: { "app.kubernetes.io/managed-by": "meshauth-ca" },
        },
        spec: { signerName, trustBundle },
      }),
      update: (current, trustBundle) => {
        const spec = current.spec as { signerName?: string; trustBundle?: string } | undefined;
        if (spec?.trustBundle === trustBundle && spec?.signerName === signerName) return undefined;
        return { ...current, spec: { signerName, trustBundle } };
      },
    });
  }

  /** The object's name. */
  get name(): string {
    return this.#publisher.name;
  }

  /** Publishes now, then keeps it current until `signal` aborts. */
  start(signal?: AbortSignal): Promise<void> {
    return this.#publisher.start(signal);
  }

  /** Stops keeping it current; what was published stays. */
  stop(): void {
    this.#publisher.stop();
  }

  /** Writes the bundle if the CA's or the cluster's copy changed. */
  sync(): Promise<void> {
    return this.#publisher.sync();
  }
}
