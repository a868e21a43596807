/**
 * The CA's trust bundle as a ConfigMap, which node agents (and anything else) mount to verify
 * the CA and the certificates it issues, on any cluster: unlike a ClusterTrustBundle it needs no
 * feature gate. It is kept current through root rotations (both roots during the overlap), so
 * an agent that starts on a new node trusts whichever root the CA serves with.
 *
 * @module
 */

import { type TrustBundlePublisherOptions, TrustBundleSync } from "./trust-bundle-publisher.ts";

/** Options of {@link TrustBundleConfigMapPublisher}. */
export interface TrustBundleConfigMapPublisherOptions extends TrustBundlePublisherOptions {
  /** The ConfigMap's namespace. */
  namespace: string;
  /** The ConfigMap's name. */
  name: string;
  /** The data key holding the PEM bundle. */
  key: string;
}

/** Keeps the ConfigMap `namespace/name` holding the CA's trust bundle under `key`. */
export class TrustBundleConfigMapPublisher {
  readonly #publisher: TrustBundleSync;

  /** A publisher of that ConfigMap; `start` begins publishing. */
  constructor(options: TrustBundleConfigMapPublisherOptions) {
    const { namespace, name, key } = options;
    this.#publisher = new TrustBundleSync(options, {
      kind: "ConfigMap",
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      name,
      create: (bundle) => ({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name, namespace, labels: { "app.kubernetes.io/managed-by": "meshauth-ca" } },
        data: { [key]: bundle },
      }),
      // Other keys someone added stay; only the bundle's is the CA's.
      update: (current, bundle) => {
        const data = (current.data ?? {}) as Record<string, string>;
        return data[key] === bundle ? undefined : { ...current, data: { ...data, [key]: bundle } };
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
