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

interface SecretObject {
  type?: string;
  metadata?: ObjectMeta;
  data?: Record<string, string>;
}

function isManaged(secret: SecretObject): boolean {
  return secret.type === SVID_SECRET_TYPE && secret.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY;
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
  /**
   * When a Secret of another type holds an account's Secret name, how soon it is looked at
   * again (one GET, nothing issued); the delay doubles up to `foreignSecretMaxRecheckMs`.
   * Default 60 s.
   */
  foreignSecretRecheckMs?: number;
  /** The longest delay between two looks at a Secret that holds an account's name. Default 1 h. */
  foreignSecretMaxRecheckMs?: number;
  /** Called once per version of a Secret that holds an account's Secret name and is not the CA's. */
  onForeignSecret?: (namespace: string, secretName: string) => void;
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
  /** Accounts whose Secret name a Secret that is not the CA's holds. */
  readonly #foreign = new Map<string, { uid: string; resourceVersion: string; delayMs: number }>();
  /** Counts, for tests and diagnostics. */
  readonly stats = { foreignSecrets: 0 };

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
    const cached = secrets.get(`${namespace}/${secretName}`);
    const path = `/api/v1/namespaces/${namespace}/secrets/${secretName}`;
    if (!sa) {
      this.#foreign.delete(key);
      if (cached?.isManaged) {
        await this.#o.api.delete(path, { uid: cached.uid }).catch((err) => {
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
    if (cached && !cached.isManaged) {
      this.#taken(key, namespace, secretName, cached.uid, cached.resourceVersion, false);
      return;
    }
    const id = SpiffeId.fromServiceAccount(this.#o.trustDomain, namespace, account);
    const now = (this.#o.now?.() ?? new Date()).getTime();
    if (
      cached && cached.spiffeId === id.toString() && cached.renewAt !== undefined && cached.renewAt > now &&
      cached.bundleSha256 === this.#bundleSha256 && cached.ownerUid === sa.uid
    ) {
      this.#queue.addAfter(key, cached.renewAt - now);
      return;
    }
    // Nothing is issued before the name is known to be free or the CA's: the watch sees only
    // Secrets of the CA's type, and a Secret of another type (a user's Opaque one) may hold it.
    const current = await this.#o.api.get<SecretObject>(path).catch((err) => {
      if (err instanceof KubernetesApiError && err.isNotFound) return undefined;
      throw err;
    });
    if (current && !isManaged(current)) {
      const { uid = "", resourceVersion = "" } = current.metadata ?? {};
      this.#taken(key, namespace, secretName, uid, resourceVersion, true);
      return;
    }
    if (this.#foreign.delete(key)) {
      this.#o.logger.info("the SVID Secret's name is free again", { namespace, name: secretName });
    }
    const { issued, privateKeyPem, trustBundlePem } = await this.#o.issuer.issueWithNewKey(
      id,
      this.#o.settings.ttlSeconds,
      this.#o.settings.keyAlgorithm,
      `kubernetes:serviceaccount-secrets/${namespace}/${account}`,
    );
    const renewAt = renewalTime({ notBefore: issued.notBefore, notAfter: issued.notAfter });
    const metadata = current?.metadata ?? {};
    // A renewal merges into the Secret as it is now, so labels, annotations and data keys that
    // others added (a reloader's annotation, GitOps labels) stay; its resource version makes
    // the write conditional.
    const body = {
      ...current,
      apiVersion: "v1",
      kind: "Secret",
      type: SVID_SECRET_TYPE,
      metadata: {
        ...metadata,
        name: secretName,
        namespace,
        labels: { ...metadata.labels, [MANAGED_BY_LABEL]: MANAGED_BY },
        annotations: {
          ...metadata.annotations,
          [ANNOTATION.spiffeId]: id.toString(),
          [ANNOTATION.serial]: issued.serialNumber,
          [ANNOTATION.notAfter]: issued.notAfter.toISOString(),
          [ANNOTATION.renewAt]: renewAt.toISOString(),
          [ANNOTATION.bundle]: await sha256Hex(trustBundlePem),
        },
        // Kubernetes' garbage collector deletes the Secret with its account, should the CA not.
        ownerReferences: [
          ...(metadata.ownerReferences ?? []).filter((o) => o.kind !== "ServiceAccount"),
          { apiVersion: "v1", kind: "ServiceAccount", name: account, uid: sa.uid },
        ],
      },
      data: {
        ...current?.data,
        "key.pem": base64(privateKeyPem!),
        "cert-chain.pem": base64(issued.chainPem),
        "root-cert.pem": base64(trustBundlePem),
      },
    };
    try {
      if (current) await this.#o.api.replace(path, body);
      else await this.#o.api.create(`/api/v1/namespaces/${namespace}/secrets`, body);
    } catch (err) {
      // Someone wrote first (another replica, or a user's Secret of that name since the GET):
      // looking again finds out which, and issues nothing for a name that is not the CA's.
      if (err instanceof KubernetesApiError && (err.isConflict || err.isNotFound)) {
        this.#o.logger.info("service-account Secret changed meanwhile; will look again", {
          namespace,
          serviceAccount: account,
        });
        this.#queue.addAfter(key, 1000);
        return;
      }
      throw err;
    }
    this.#o.logger.info(current ? "service-account Secret renewed" : "service-account Secret created", {
      namespace,
      serviceAccount: account,
      spiffeId: id.toString(),
      serialNumber: issued.serialNumber,
      notAfter: issued.notAfter.toISOString(),
    });
    this.#queue.addAfter(key, renewAt.getTime() - now);
  }

  /**
   * A Secret that is not the CA's holds the account's Secret name: warned about once (and
   * counted) per version of that Secret, then left alone. A Secret of the CA's type is watched,
   * so its change queues the account; one of another type is not, so it is looked at again
   * (one GET, nothing issued) after a delay that doubles up to `foreignSecretMaxRecheckMs`.
   */
  #taken(
    key: string,
    namespace: string,
    secretName: string,
    uid: string,
    resourceVersion: string,
    needsRecheck: boolean,
  ): void {
    const known = this.#foreign.get(key);
    const isSame = known?.uid === uid && known.resourceVersion === resourceVersion;
    const minMs = this.#o.foreignSecretRecheckMs ?? 60_000;
    const delayMs = isSame
      ? Math.min(known!.delayMs * 2, Math.max(minMs, this.#o.foreignSecretMaxRecheckMs ?? 3_600_000))
      : minMs;
    this.#foreign.set(key, { uid, resourceVersion, delayMs });
    if (!isSame) {
      this.stats.foreignSecrets++;
      this.#o.onForeignSecret?.(namespace, secretName);
      this.#o.logger.warn("a Secret of the SVID Secret's name exists and is not the CA's: left alone", {
        namespace,
        name: secretName,
      });
    }
    if (needsRecheck) this.#queue.addAfter(key, delayMs);
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
