/**
 * The seed's deployment phase: for every service account of the configured namespaces the CA
 * keeps a Secret of type `meshauth.io/svid` named `meshauth.<service-account>`, holding
 * `key.pem`, `cert-chain.pem` and `root-cert.pem` for `spiffe://<td>/ns/<ns>/sa/<sa>` (Istio's
 * file names), so that a pod mounting it has its identity with no agent. The CA makes the key:
 * whoever can read Secrets in that namespace can take the identity, which is why keys made on
 * the node (the agent, or Pod Certificates) are the safer default and this is off unless asked
 * for (docs/kubernetes.md).
 *
 * Service accounts and the managed Secrets are watched ({@link Reflector}); each change
 * queues the account, whose Secret is then created, renewed (at half its life, or when the
 * trust bundle changes), or deleted once the account is gone. Secrets carry an owner
 * reference to their account too, so Kubernetes' garbage collector removes them even if the
 * CA is down. A Secret of that name that the CA did not make is never touched.
 *
 * @module
 */

import { renewalTime, SpiffeId } from "../../mod.ts";
import {
  type KubernetesApi,
  KubernetesApiError,
  type Logger,
  type ObjectMeta,
  Reflector,
  toHex,
} from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";
import type { ControllerIssuer } from "./issuer.ts";
import type { KubernetesControllersConfig } from "./config.ts";
import { WorkQueue } from "./work-queue.ts";

/** The Secret type the CA manages. */
export const SVID_SECRET_TYPE = "meshauth.io/svid";
/** The label that marks a Secret as the CA's. */
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
const MANAGED_BY = "meshauth-ca";
const ANNOTATION = {
  spiffeId: "meshauth.io/spiffe-id",
  serial: "meshauth.io/serial-number",
  notAfter: "meshauth.io/not-after",
  renewAt: "meshauth.io/renew-at",
  bundle: "meshauth.io/trust-bundle-sha256",
} as const;

/** The name of a service account's Secret. */
export function secretNameOf(serviceAccount: string): string {
  return `meshauth.${serviceAccount}`;
}

interface AccountRecord {
  name: string;
  uid: string;
}

interface SecretRecord {
  name: string;
  uid: string;
  resourceVersion: string;
  isManaged: boolean;
  spiffeId?: string;
  renewAt?: number;
  bundleSha256?: string;
  ownerUid?: string;
}

/** Options of {@link ServiceAccountSecretsController}. */
export interface ServiceAccountSecretsOptions {
  /** The client Secrets and service accounts are watched and written with. */
  api: KubernetesApi;
  /** Issues and records the SVIDs. */
  issuer: ControllerIssuer;
  /** The CA's authorities, whose bundle each Secret carries. */
  authorities: Authorities;
  /** The CA's trust domain, for the service accounts' SPIFFE IDs. */
  trustDomain: string;
  /** Which namespaces, key algorithm and lifetimes, from the configuration. */
  settings: KubernetesControllersConfig["serviceAccountSecrets"];
  /** Where writes and failures are logged. */
  logger: Logger;
  /** How often the trust bundle is compared with the Secrets'. Default 10 s. */
  bundleCheckMs?: number;
  /** The clock that decides renewal; the system's by default. */
  now?: () => Date;
}

async function sha256Hex(text: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))));
}

function base64(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Keeps one SVID Secret per service account of the configured namespaces. */
export class ServiceAccountSecretsController {
  readonly #o: ServiceAccountSecretsOptions;
  readonly #accounts = new Map<string, Reflector<AccountRecord>>();
  readonly #secrets = new Map<string, Reflector<SecretRecord>>();
  readonly #queue: WorkQueue;
  #bundleSha256 = "";
  #bundleTimer?: ReturnType<typeof setInterval>;

  /** A controller over `options.settings`; `start` begins watching. */
  constructor(options: ServiceAccountSecretsOptions) {
    this.#o = options;
    this.#queue = new WorkQueue({
      name: "service-account-secrets",
      logger: options.logger,
      work: (key) => this.#reconcile(key),
    });
    for (const namespace of options.settings.namespaces) {
      const enqueueAccount = (key: string) => this.#queue.add(key);
      this.#accounts.set(
        namespace,
        new Reflector<AccountRecord>({
          api: options.api,
          name: `serviceaccounts in ${namespace}`,
          path: `/api/v1/namespaces/${namespace}/serviceaccounts`,
          logger: options.logger,
          project: (sa) =>
            sa.metadata?.name ? { name: sa.metadata.name, uid: sa.metadata.uid ?? "" } : undefined,
          handler: { upsert: enqueueAccount, remove: enqueueAccount, synced: () => this.queueAll() },
        }),
      );
      const enqueueSecret = (_key: string, secret: SecretRecord) => {
        if (secret.name.startsWith("meshauth.")) this.#queue.add(`${namespace}/${secret.name.slice(9)}`);
      };
      this.#secrets.set(
        namespace,
        new Reflector<SecretRecord>({
          api: options.api,
          name: `meshauth secrets in ${namespace}`,
          path: `/api/v1/namespaces/${namespace}/secrets`,
          fieldSelector: `type=${SVID_SECRET_TYPE}`,
          logger: options.logger,
          project: (secret) => this.#secretRecord(secret.metadata),
          handler: { upsert: enqueueSecret, remove: enqueueSecret, synced: () => this.queueAll() },
        }),
      );
    }
  }

  #secretRecord(metadata: ObjectMeta | undefined): SecretRecord | undefined {
    if (!metadata?.name) return undefined;
    const annotations = metadata.annotations ?? {};
    const renewAt = Date.parse(annotations[ANNOTATION.renewAt] ?? "");
    const owner = metadata.ownerReferences?.find((o) => o.kind === "ServiceAccount");
    return {
      name: metadata.name,
      uid: metadata.uid ?? "",
      resourceVersion: metadata.resourceVersion ?? "",
      isManaged: metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY,
      spiffeId: annotations[ANNOTATION.spiffeId],
      renewAt: Number.isFinite(renewAt) ? renewAt : undefined,
      bundleSha256: annotations[ANNOTATION.bundle],
      ownerUid: typeof owner?.uid === "string" ? owner.uid : undefined,
    };
  }

  /** Watches and reconciles until `signal` aborts (leadership lost, or the CA stopping). */
  async start(signal?: AbortSignal): Promise<void> {
    this.#bundleSha256 = await sha256Hex(this.#o.authorities.bundlePem());
    for (const r of [...this.#accounts.values(), ...this.#secrets.values()]) r.start();
    this.#bundleTimer = setInterval(() => void this.#checkBundle(), this.#o.bundleCheckMs ?? 10_000);
    this.#bundleTimer.unref?.();
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    this.#o.logger.info("service-account Secrets controller started", {
      namespaces: this.#o.settings.namespaces,
    });
  }

  /** Resolves once every watch has listed and nothing is queued. */
  async settled(timeoutMs = 30_000): Promise<void> {
    await Promise.all(
      [...this.#accounts.values(), ...this.#secrets.values()].map((r) => r.synced(timeoutMs)),
    );
    await this.#queue.idle();
  }

  /** Stops watching and renewing; the Secrets written stay. */
  stop(): void {
    if (this.#bundleTimer) clearInterval(this.#bundleTimer);
    this.#queue.stop();
    for (const r of [...this.#accounts.values(), ...this.#secrets.values()]) r.stop();
  }

  /** The reflectors, for tests and diagnostics. */
  get reflectors(): Array<Reflector<unknown>> {
    return [...this.#accounts.values(), ...this.#secrets.values()] as Array<Reflector<unknown>>;
  }

  async #checkBundle(): Promise<void> {
    const digest = await sha256Hex(this.#o.authorities.bundlePem());
    if (digest === this.#bundleSha256) return;
    this.#bundleSha256 = digest;
    this.#o.logger.info("trust bundle changed: refreshing service-account Secrets", {});
    for (const accounts of this.#accounts.values()) {
      for (const key of accounts.keys()) this.#queue.add(key);
    }
  }

  async #reconcile(key: string): Promise<void> {
    const [namespace, account] = key.split("/");
    const accounts = this.#accounts.get(namespace);
    const secrets = this.#secrets.get(namespace);
    if (!accounts?.isSynced || !secrets?.isSynced) return; // the synced lists queue everything again
    const sa = accounts.get(key);
    const secretName = secretNameOf(account);
    const secret = secrets.get(`${namespace}/${secretName}`);
    const path = `/api/v1/namespaces/${namespace}/secrets`;
    if (!sa) {
      if (secret?.isManaged) {
        await this.#o.api.delete(`${path}/${secretName}`, { uid: secret.uid }).catch((err) => {
          if (!(err instanceof KubernetesApiError && (err.isNotFound || err.isConflict))) throw err;
        });
        this.#o.logger.info("service-account Secret deleted", { namespace, serviceAccount: account });
      }
      return;
    }
    if (secretName.length > 253) {
      this.#o.logger.warn("service account name too long for a Secret name", {
        namespace,
        serviceAccount: account,
      });
      return;
    }
    if (secret && !secret.isManaged) {
      this.#o.logger.warn("a Secret of the SVID Secret's name exists and is not the CA's: left alone", {
        namespace,
        secret: secretName,
      });
      return;
    }
    const id = SpiffeId.fromServiceAccount(this.#o.trustDomain, namespace, account);
    const now = (this.#o.now?.() ?? new Date()).getTime();
    if (
      secret && secret.spiffeId === id.toString() && secret.renewAt !== undefined && secret.renewAt > now &&
      secret.bundleSha256 === this.#bundleSha256 && secret.ownerUid === sa.uid
    ) {
      this.#queue.addAfter(key, secret.renewAt - now);
      return;
    }
    const { issued, privateKeyPem, trustBundlePem } = await this.#o.issuer.issueWithNewKey(
      id,
      this.#o.settings.ttlSeconds,
      this.#o.settings.keyAlgorithm,
      `kubernetes:serviceaccount-secrets/${namespace}/${account}`,
    );
    const renewAt = renewalTime({ notBefore: issued.notBefore, notAfter: issued.notAfter });
    const body = {
      apiVersion: "v1",
      kind: "Secret",
      type: SVID_SECRET_TYPE,
      metadata: {
        name: secretName,
        namespace,
        ...(secret ? { resourceVersion: secret.resourceVersion } : {}),
        labels: { [MANAGED_BY_LABEL]: MANAGED_BY },
        annotations: {
          [ANNOTATION.spiffeId]: id.toString(),
          [ANNOTATION.serial]: issued.serialNumber,
          [ANNOTATION.notAfter]: issued.notAfter.toISOString(),
          [ANNOTATION.renewAt]: renewAt.toISOString(),
          [ANNOTATION.bundle]: await sha256Hex(trustBundlePem),
        },
        // Kubernetes' garbage collector deletes the Secret with its account, should the CA not.
        ownerReferences: [{ apiVersion: "v1", kind: "ServiceAccount", name: account, uid: sa.uid }],
      },
      data: {
        "key.pem": base64(privateKeyPem!),
        "cert-chain.pem": base64(issued.chainPem),
        "root-cert.pem": base64(trustBundlePem),
      },
    };
    try {
      if (secret) await this.#o.api.replace(`${path}/${secretName}`, body);
      else await this.#o.api.create(path, body);
    } catch (err) {
      // Someone wrote first (another replica, or the watch was behind): the watch brings the
      // newer object, which queues this account again.
      if (err instanceof KubernetesApiError && (err.isConflict || err.isNotFound)) {
        this.#o.logger.info("service-account Secret changed meanwhile; will look again", {
          namespace,
          account,
        });
        this.#queue.addAfter(key, 1000);
        return;
      }
      throw err;
    }
    this.#o.logger.info(secret ? "service-account Secret renewed" : "service-account Secret created", {
      namespace,
      serviceAccount: account,
      spiffeId: id.toString(),
      serialNumber: issued.serialNumber,
      notAfter: issued.notAfter.toISOString(),
    });
    this.#queue.addAfter(key, renewAt.getTime() - now);
  }

  /** Queues every account again once all lists are in (also reconciling orphaned Secrets). */
  queueAll(): void {
    for (const [namespace, secrets] of this.#secrets) {
      if (!secrets.isSynced || !this.#accounts.get(namespace)!.isSynced) continue;
      for (const key of this.#accounts.get(namespace)!.keys()) this.#queue.add(key);
      for (const key of secrets.keys()) {
        const name = key.slice(namespace.length + 1);
        if (name.startsWith("meshauth.")) this.#queue.add(`${namespace}/${name.slice(9)}`);
      }
    }
  }
}
