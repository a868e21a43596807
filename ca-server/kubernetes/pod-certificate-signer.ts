/**
 * A signer for Kubernetes Pod Certificates (KEP-4317): the kubelet makes a pod's key, asks
 * for a certificate with a PodCertificateRequest naming this signer, and projects what the
 * signer writes into the pod. This controller watches the requests for its signer name in
 * each served version (`certificates.k8s.io/v1beta1` and `v1`: the same objects, seen through
 * either), and for each pending one checks, against the API server, that the pod exists with
 * that UID, runs on that node (whose UID matches) as that service account (whose UID matches),
 * and that the key is proven ({@link requestedKey}). It then issues an X509-SVID for
 * `spiffe://<td>/ns/<namespace>/sa/<service account>`, no longer than `maxExpirationSeconds`
 * (nor `podCertificates.maxTtlSeconds`), and writes the chain (leaf first), `notBefore`,
 * `notAfter`, `beginRefreshAt` and an `Issued` condition to the status subresource; or a
 * `Denied` condition with the reason; or `Failed` when the CA itself cannot issue.
 *
 * @module
 */

import {
  DEFAULT_BACKDATE_SECONDS,
  IssuanceRefused,
  renewalTime,
  SpiffeId,
  TtlExceedsMaximum,
} from "../../mod.ts";
import {
  type KubernetesApi,
  KubernetesApiError,
  type Logger,
  type ObjectMeta,
  Reflector,
} from "../../internal/mod.ts";
import type { KubernetesControllersConfig } from "./config.ts";
import type { ControllerIssuer } from "./issuer.ts";
import {
  isFinished,
  type PodCertificateApiVersion,
  type PodCertificateRequest,
  RequestDenied,
  requestedKey,
} from "./pod-certificate-request.ts";
import type { PodIndex } from "./pod-index.ts";
import { WorkQueue } from "./work-queue.ts";

const GROUP = "certificates.k8s.io";
// KEP-4317: kube-apiserver refuses lifetimes under an hour, and defaults the maximum to a day.
const MIN_LIFETIME_SECONDS = 3600;
const DEFAULT_MAX_EXPIRATION_SECONDS = 86400;

/** Options of {@link PodCertificateSigner}. */
export interface PodCertificateSignerOptions {
  /** The client requests are watched and answered with. */
  api: KubernetesApi;
  /** Issues and records the certificates. */
  issuer: ControllerIssuer;
  /** Looks up the pod a request names, to check it exists, has the UID the request says, and runs. */
  pods: Pick<PodIndex, "getPod">;
  /** The CA's trust domain, for the pods' SPIFFE IDs. */
  trustDomain: string;
  /** The signer's name, API versions and lifetimes, from the configuration. */
  settings: KubernetesControllersConfig["podCertificates"];
  /** The CA's backdating of notBefore, counted in a certificate's lifetime. Default: the core's, `DEFAULT_BACKDATE_SECONDS`. */
  backdateSeconds?: number;
  /** Where answers and failures are logged. */
  logger: Logger;
  /** The clock, for tests; the system's by default. */
  now?: () => Date;
}

type Decision =
  | { kind: "issue"; id: SpiffeId; spki: Uint8Array; ttlSeconds: number; maxExpirationSeconds: number }
  | { kind: "deny"; reason: string; message: string };

/** Signs PodCertificateRequests for one signer name. */
export class PodCertificateSigner {
  readonly #o: PodCertificateSignerOptions;
  readonly #reflectors = new Map<PodCertificateApiVersion, Reflector<PodCertificateRequest>>();
  readonly #queue: WorkQueue;
  /** Answers written, by request UID, so the other version's view is not worked twice. */
  readonly #done = new Map<string, number>();
  /** Requests answered since start: issued, denied, and failed. */
  readonly stats: { issued: number; denied: number; failed: number } = { issued: 0, denied: 0, failed: 0 };

  /** A signer for `options.settings.signerName`; `start` begins watching. */
  constructor(options: PodCertificateSignerOptions) {
    this.#o = options;
    this.#queue = new WorkQueue({
      name: "pod-certificate-signer",
      logger: options.logger,
      work: (key) => this.#reconcile(key),
    });
  }

  /** Discovers the served versions and starts watching them; `signal` stops it. */
  async start(signal?: AbortSignal): Promise<void> {
    const served: PodCertificateApiVersion[] = [];
    for (const version of this.#o.settings.apiVersions) {
      if (await this.#serves(version)) served.push(version);
      else {this.#o.logger.info("the API server does not serve PodCertificateRequests in this version", {
          version,
        });}
    }
    if (served.length === 0) {
      throw new Error(
        `the API server serves PodCertificateRequests in none of ${
          this.#o.settings.apiVersions.join(", ")
        } ` +
          "(enable the PodCertificateRequest feature and the certificates.k8s.io version)",
      );
    }
    for (const version of served) {
      const reflector = new Reflector<PodCertificateRequest>({
        api: this.#o.api,
        name: `podcertificaterequests.${GROUP}/${version}`,
        path: `/apis/${GROUP}/${version}/podcertificaterequests`,
        fieldSelector: `spec.signerName=${this.#o.settings.signerName}`,
        logger: this.#o.logger,
        // Only pending requests are kept: the answered ones are of no further interest.
        project: (object) => {
          const request = object as unknown as PodCertificateRequest;
          return request.spec?.signerName === this.#o.settings.signerName && !isFinished(request)
            ? request
            : undefined;
        },
        handler: { upsert: (_key, request) => this.#queue.add(request.metadata.uid ?? "") },
      });
      this.#reflectors.set(version, reflector);
      reflector.start();
    }
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    this.#o.logger.info("Pod Certificates signer started", {
      signerName: this.#o.settings.signerName,
      versions: served,
    });
  }

  /** Stops watching and answering requests. */
  stop(): void {
    this.#queue.stop();
    for (const r of this.#reflectors.values()) r.stop();
  }

  /** Resolves once the watches have listed and nothing is queued. */
  async settled(timeoutMs = 30_000): Promise<void> {
    await Promise.all([...this.#reflectors.values()].map((r) => r.synced(timeoutMs)));
    await this.#queue.idle();
  }

  async #serves(version: PodCertificateApiVersion): Promise<boolean> {
    try {
      const list = await this.#o.api.get<{ resources?: Array<{ name: string }> }>(
        `/apis/${GROUP}/${version}`,
      );
      return (list.resources ?? []).some((r) => r.name === "podcertificaterequests");
    } catch (err) {
      if (err instanceof KubernetesApiError && err.isNotFound) return false;
      throw err;
    }
  }

  /** The pending request with this UID and the version it was seen in. */
  #find(uid: string): { version: PodCertificateApiVersion; request: PodCertificateRequest } | undefined {
    for (const [version, reflector] of this.#reflectors) {
      for (const [, request] of reflector.entries()) {
        if (request.metadata.uid === uid) return { version, request };
      }
    }
    return undefined;
  }

  async #reconcile(uid: string): Promise<void> {
    const found = this.#find(uid);
    if (!found || this.#done.has(uid)) return;
    let { version, request } = found;
    // Both versions show one stored object, and v1's view lacks v1beta1's pkixPublicKey and
    // proofOfPossession: when v1's watch saw it first, read it through v1beta1, which shows all.
    if (version === "v1" && this.#reflectors.has("v1beta1")) {
      try {
        request = await this.#o.api.get<PodCertificateRequest>(
          `/apis/${GROUP}/v1beta1/namespaces/${request.metadata.namespace}/podcertificaterequests/${request.metadata.name}`,
        );
        version = "v1beta1";
      } catch (err) {
        if (err instanceof KubernetesApiError && err.isNotFound) return;
        throw err;
      }
      if (isFinished(request)) return;
    }
    const decision = await this.#decide(request, version);
    const now = this.#o.now?.() ?? new Date();
    let status: Record<string, unknown>;
    let outcome: "issued" | "denied" | "failed";
    if (decision.kind === "deny") {
      outcome = "denied";
      status = {
        conditions: [condition("Denied", decision.reason, decision.message, request.metadata, now)],
      };
    } else {
      try {
        const { issued } = await this.#o.issuer.issueToPublicKey(
          decision.id,
          decision.spki,
          decision.ttlSeconds,
          `kubernetes:pod/${request.metadata.namespace}/${request.spec.podName}`,
        );
        const lifetime = (issued.notAfter.getTime() - issued.notBefore.getTime()) / 1000;
        if (lifetime < MIN_LIFETIME_SECONDS || lifetime > decision.maxExpirationSeconds) {
          throw new IssuanceRefused(
            `the CA can issue for ${lifetime} s now, outside the ${MIN_LIFETIME_SECONDS} s to ` +
              `${decision.maxExpirationSeconds} s the request allows (its own certificate expires too soon)`,
          );
        }
        outcome = "issued";
        status = {
          certificateChain: issued.chainPem,
          notBefore: issued.notBefore.toISOString(),
          notAfter: issued.notAfter.toISOString(),
          beginRefreshAt: refreshAt(issued.notBefore, issued.notAfter).toISOString(),
          conditions: [
            condition(
              "Issued",
              "Issued",
              `issued ${decision.id} (serial ${issued.serialNumber})`,
              request.metadata,
              now,
            ),
          ],
        };
      } catch (err) {
        // A transient failure (no authority yet, the store) is retried by the queue; only what
        // another attempt cannot change is reported as Failed, which the kubelet takes as final.
        if (!(err instanceof IssuanceRefused || err instanceof TtlExceedsMaximum)) throw err;
        outcome = "failed";
        status = { conditions: [condition("Failed", "IssuanceFailed", err.message, request.metadata, now)] };
      }
    }
    const path =
      `/apis/${GROUP}/${version}/namespaces/${request.metadata.namespace}/podcertificaterequests/` +
      `${request.metadata.name}/status`;
    try {
      await this.#o.api.replace(path, {
        ...request,
        apiVersion: `${GROUP}/${version}`,
        kind: "PodCertificateRequest",
        status,
      });
    } catch (err) {
      // Gone, or answered meanwhile (by another replica, or through the other version).
      if (err instanceof KubernetesApiError && (err.isNotFound || err.isConflict)) {
        this.#o.logger.info("PodCertificateRequest changed before its answer was written", {
          namespace: request.metadata.namespace,
          name: request.metadata.name,
          status: err.status,
        });
        if (err.isConflict) this.#queue.addAfter(uid, 1000);
        return;
      }
      throw err;
    }
    this.#remember(uid);
    this.stats[outcome]++;
    this.#o.logger.info(`PodCertificateRequest ${outcome}`, {
      namespace: request.metadata.namespace,
      name: request.metadata.name,
      pod: request.spec.podName,
      version,
      ...(decision.kind === "deny"
        ? { reason: decision.reason, message: decision.message }
        : { spiffeId: decision.id.toString() }),
    });
  }

  #remember(uid: string): void {
    // Bounded: the watch drops answered requests soon after; this only spans the gap.
    if (this.#done.size >= 10_000) this.#done.delete(this.#done.keys().next().value!);
    this.#done.set(uid, Date.now());
  }

  async #decide(request: PodCertificateRequest, version: PodCertificateApiVersion): Promise<Decision> {
    const deny = (reason: string, message: string): Decision => ({ kind: "deny", reason, message });
    const spec = request.spec;
    const namespace = request.metadata.namespace ?? "";
    // KEP-4317: signers should deny annotations they do not understand; this one knows none.
    const annotations = Object.keys(spec.unverifiedUserAnnotations ?? {});
    if (annotations.length > 0) {
      return deny(
        "InvalidUnverifiedUserAnnotations",
        `this signer accepts no annotations; got ${annotations.join(", ")}`,
      );
    }
    let key: { spki: Uint8Array };
    try {
      key = await requestedKey(request, version);
    } catch (err) {
      if (err instanceof RequestDenied) return deny(err.reason, err.message);
      throw err;
    }
    const pod = await this.#o.pods.getPod(namespace, spec.podName);
    if (!pod) return deny("PodNotFound", `pod ${namespace}/${spec.podName} does not exist`);
    if (pod.metadata.uid !== spec.podUID) {
      return deny(
        "PodUIDMismatch",
        `pod ${namespace}/${spec.podName} has UID ${pod.metadata.uid}, not ${spec.podUID}`,
      );
    }
    if (pod.status?.phase !== "Pending" && pod.status?.phase !== "Running") {
      return deny(
        "PodNotRunning",
        `pod ${namespace}/${spec.podName} is ${pod.status?.phase ?? "in no phase"}`,
      );
    }
    if (pod.spec?.nodeName !== spec.nodeName) {
      return deny(
        "NodeMismatch",
        `pod ${namespace}/${spec.podName} is scheduled on ${
          JSON.stringify(pod.spec?.nodeName ?? null)
        }, not on ${spec.nodeName}`,
      );
    }
    const account = pod.spec?.serviceAccountName || "default";
    if (account !== spec.serviceAccountName) {
      return deny(
        "ServiceAccountMismatch",
        `pod ${namespace}/${spec.podName} runs as ${account}, not as ${spec.serviceAccountName}`,
      );
    }
    const sa = await this.#getUid(
      `/api/v1/namespaces/${namespace}/serviceaccounts/${encodeURIComponent(account)}`,
    );
    if (sa !== spec.serviceAccountUID) {
      return deny(
        "ServiceAccountMismatch",
        `service account ${namespace}/${account} has UID ${
          sa ?? "(none: it does not exist)"
        }, not ${spec.serviceAccountUID}`,
      );
    }
    const node = await this.#getUid(`/api/v1/nodes/${encodeURIComponent(spec.nodeName)}`);
    if (node !== spec.nodeUID) {
      return deny(
        "NodeMismatch",
        `node ${spec.nodeName} has UID ${node ?? "(none: it does not exist)"}, not ${spec.nodeUID}`,
      );
    }
    let id: SpiffeId;
    try {
      id = SpiffeId.fromServiceAccount(this.#o.trustDomain, namespace, account);
    } catch (err) {
      return deny("InvalidRequest", `no SPIFFE ID for ${namespace}/${account}: ${(err as Error).message}`);
    }
    const maxExpirationSeconds = spec.maxExpirationSeconds ?? DEFAULT_MAX_EXPIRATION_SECONDS;
    // The lifetime counts the backdated notBefore: the TTL leaves room for it.
    const lifetime = Math.min(maxExpirationSeconds, this.#o.settings.maxTtlSeconds);
    const ttlSeconds = lifetime - (this.#o.backdateSeconds ?? DEFAULT_BACKDATE_SECONDS);
    return { kind: "issue", id, spki: key.spki, ttlSeconds, maxExpirationSeconds };
  }

  async #getUid(path: string): Promise<string | undefined> {
    try {
      return (await this.#o.api.get<{ metadata?: ObjectMeta }>(path)).metadata?.uid;
    } catch (err) {
      if (err instanceof KubernetesApiError && err.isNotFound) return undefined;
      throw err;
    }
  }
}

/** Half-life, as meshauth renews elsewhere, inside the API server's bounds (10 minutes from either end). */
export function refreshAt(notBefore: Date, notAfter: Date): Date {
  const at = renewalTime({ notBefore, notAfter }).getTime();
  const margin = 10 * 60 * 1000;
  return new Date(Math.min(Math.max(at, notBefore.getTime() + margin), notAfter.getTime() - margin));
}

function condition(type: string, reason: string, message: string, metadata: ObjectMeta, at: Date) {
  return {
    type,
    status: "True",
    reason,
    message: message.slice(0, 32 * 1024),
    lastTransitionTime: at.toISOString().replace(/\.\d{3}Z$/, "Z"),
    ...(metadata.generation ? { observedGeneration: metadata.generation } : {}),
  };
}
