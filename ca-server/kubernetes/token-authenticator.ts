/**
 * Projected service-account tokens, reviewed by the API server (`TokenReview`, bound to this
 * CA's audiences). A workload's token gives it its own identity,
 * `spiffe://<td>/ns/<namespace>/sa/<name>`. A node agent's token (one of the configured agent
 * service accounts, bound to the agent's pod) makes it that pod's node: it may obtain the
 * node's SVID and the identities of the pods scheduled there ({@link NodeWorkloads}), and no
 * others. A token that is expired or meant for another audience is refused before the API
 * server is asked, so junk costs no API call; answers are cached briefly, keyed by the
 * token's SHA-256, and never past the token's expiry.
 *
 * @example
 * ```ts
 * import { KubernetesApi, PodIndex, ServiceAccountTokenAuthenticator, silentLogger } from "meshauth/ca-server";
 * const api = await KubernetesApi.fromOptions();
 * const pods = new PodIndex({ api, trustDomain: "cluster.local", logger: silentLogger });
 * const tokens = new ServiceAccountTokenAuthenticator({
 *   api, trustDomain: "cluster.local", audiences: ["meshauth"],
 *   agentServiceAccounts: ["meshauth-system/meshauth-agent"], pods, nodeWorkloads: pods.nodeWorkloads,
 * });
 * ```
 * @module
 */

import { SpiffeId } from "../../mod.ts";
import { fromBase64Url, type KubernetesApi, toHex } from "../../internal/mod.ts";
import { nodeIdOf } from "../auth/join-token.ts";
import type {
  Authenticator,
  Credentials,
  NodeWorkloadCheck,
  NodeWorkloads,
  Principal,
} from "../auth/principal.ts";
import { CircuitBreaker } from "../circuit-breaker.ts";
import { Problem } from "../problems.ts";
import type { PodIndex } from "./pod-index.ts";

/** Options of {@link ServiceAccountTokenAuthenticator}. */
export interface ServiceAccountTokenAuthenticatorOptions {
  /** The client TokenReviews are made with. */
  api: KubernetesApi;
  /** The CA's trust domain: a token of `<ns>/<sa>` obtains `spiffe://<td>/ns/<ns>/sa/<sa>`. */
  trustDomain: string;
  /** The token must be bound to one of these. */
  audiences: readonly string[];
  /** `namespace/name` of node agents' service accounts; empty: no token makes a node. */
  agentServiceAccounts: readonly string[];
  /** Looks up the pod a token is bound to, for a node agent's node. */
  pods: Pick<PodIndex, "getPod">;
  /** Which workloads a node agent may obtain certificates for. */
  nodeWorkloads: NodeWorkloads;
  /** For an identity not among a node's workloads: one authoritative look (the API server's pods). */
  confirmNodeWorkload?: NodeWorkloadCheck;
  /** Seconds a review is reused (never past the token's `exp`). Default 10; 0 turns caching off. */
  cacheSeconds?: number;
  /** Reviews remembered at most. Default 10,000. */
  cacheSize?: number;
  /** Seconds of clock skew tolerated on the token's `exp`. Default 30. */
  clockToleranceSeconds?: number;
  /** The clock, for tests; the system's by default. */
  now?: () => Date;
}

const JWT = /^[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$/;
const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;
const MAX_TOKEN_LENGTH = 16 * 1024;
// What the API server puts into a pod-bound token's review (KEP-4193 for the node).
const POD_NAME = "authentication.kubernetes.io/pod-name";
const POD_UID = "authentication.kubernetes.io/pod-uid";
const NODE_NAME = "authentication.kubernetes.io/node-name";

interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

interface Claims {
  exp?: number;
  aud?: string | string[];
}

/** Authenticates workloads and node agents by their projected service-account tokens. */
export class ServiceAccountTokenAuthenticator implements Authenticator {
  readonly method = "kubernetes" as const;
  readonly #o: ServiceAccountTokenAuthenticatorOptions;
  readonly #reviews = new Map<string, { user: NonNullable<TokenReviewStatus["user"]>; until: number }>();
  readonly #breaker: CircuitBreaker;

  /** An authenticator reviewing tokens with the API server as `options` says. */
  constructor(options: ServiceAccountTokenAuthenticatorOptions) {
    if (options.audiences.length === 0) throw new Error("a token authenticator needs at least one audience");
    this.#o = options;
    // After 5 failures in a row, the API is left alone for 1 s, then 2, 4 ... up to 30.
    this.#breaker = new CircuitBreaker("the Kubernetes TokenReview API", {
      now: options.now && (() => options.now!().getTime()),
    });
  }

  async authenticate(credentials: Credentials): Promise<Principal | undefined> {
    const token = credentials.bearerToken;
    const m = token === undefined || token.length > MAX_TOKEN_LENGTH ? null : JWT.exec(token);
    if (!m) return undefined;
    const now = (this.#o.now?.() ?? new Date()).getTime();
    const claims = this.#claims(m[1]);
    // Checked on the unverified claims only to refuse early; the review below decides.
    const tolerance = (this.#o.clockToleranceSeconds ?? 30) * 1000;
    if (typeof claims.exp !== "number") {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        "the service-account token has no expiry (exp); use a projected token",
      );
    }
    if (claims.exp * 1000 + tolerance <= now) {
      throw new Problem("ERR_TOKEN_EXPIRED", "the service-account token has expired");
    }
    const audiences = typeof claims.aud === "string" ? [claims.aud] : claims.aud ?? [];
    if (!audiences.some((a) => this.#o.audiences.includes(a))) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the service-account token is meant for ${JSON.stringify(audiences)}, not for this CA (${
          this.#o.audiences.join(", ")
        })`,
        { reason: "audience" },
      );
    }
    const user = await this.#review(token!, claims.exp * 1000, now);
    const sa = SERVICE_ACCOUNT_USER.exec(user.username ?? "");
    if (!sa) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the token's subject ${JSON.stringify(user.username)} is not a service account`,
      );
    }
    const [, namespace, name] = sa;
    if (this.#o.agentServiceAccounts.includes(`${namespace}/${name}`)) {
      return await this.#nodeAgent(namespace, name, user.extra ?? {});
    }
    let id: string;
    try {
      id = SpiffeId.fromServiceAccount(this.#o.trustDomain, namespace, name).toString();
    } catch {
      throw new Problem("ERR_TOKEN_INVALID", "the service account's name cannot be part of a SPIFFE ID");
    }
    return { method: "kubernetes", requester: id, allowedIds: [id], isAdmin: false };
  }

  #claims(payload: string): Claims {
    try {
      const claims = JSON.parse(new TextDecoder().decode(fromBase64Url(payload)));
      if (typeof claims !== "object" || claims === null) throw new Error("not an object");
      return claims as Claims;
    } catch {
      throw new Problem("ERR_TOKEN_INVALID", "the bearer token is not a JWT with a JSON payload");
    }
  }

  async #review(
    token: string,
    expiresAt: number,
    now: number,
  ): Promise<NonNullable<TokenReviewStatus["user"]>> {
    const digest = toHex(
      new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token))),
    );
    const cached = this.#reviews.get(digest);
    if (cached && cached.until > now) return cached.user;
    let status: TokenReviewStatus | undefined;
    this.#breaker.admit();
    try {
      status = (await this.#o.api.create<{ status?: TokenReviewStatus }>(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences: [...this.#o.audiences] },
        },
      )).status;
      this.#breaker.succeeded();
    } catch (err) {
      this.#breaker.failed();
      throw new Problem("ERR_NOT_READY", `the Kubernetes TokenReview API failed: ${(err as Error).message}`);
    }
    if (!status?.authenticated || !status.user?.username) {
      const error = status?.error ?? "not authenticated";
      // The API server's words: "service account token has expired" (or "is not valid yet").
      if (/expired/i.test(error)) {
        throw new Problem("ERR_TOKEN_EXPIRED", `Kubernetes refused the token: ${error}`);
      }
      throw new Problem("ERR_TOKEN_INVALID", `Kubernetes refused the token: ${error}`);
    }
    // An answer naming none of the requested audiences is not about a token meant for this CA.
    if (!(status.audiences ?? []).some((a) => this.#o.audiences.includes(a))) {
      throw new Problem("ERR_TOKEN_INVALID", "the TokenReview answer names none of this CA's audiences", {
        reason: "audience",
      });
    }
    const seconds = this.#o.cacheSeconds ?? 10;
    if (seconds > 0) {
      if (this.#reviews.size >= (this.#o.cacheSize ?? 10_000)) {
        this.#reviews.delete(this.#reviews.keys().next().value!);
      }
      this.#reviews.set(digest, { user: status.user, until: Math.min(now + seconds * 1000, expiresAt) });
    }
    return status.user;
  }

  async #nodeAgent(namespace: string, name: string, extra: Record<string, string[]>): Promise<Principal> {
    const podName = extra[POD_NAME]?.[0];
    const podUid = extra[POD_UID]?.[0];
    if (!podName || !podUid) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `a node agent's token must be bound to its pod (a projected token); ${namespace}/${name}'s is not`,
      );
    }
    let pod;
    try {
      pod = await this.#o.pods.getPod(namespace, podName);
    } catch (err) {
      throw new Problem("ERR_NOT_READY", `looking up the agent's pod failed: ${(err as Error).message}`);
    }
    // The token review already checked that the bound pod exists; this finds where it runs.
    if (!pod || pod.metadata.uid !== podUid) {
      throw new Problem("ERR_TOKEN_INVALID", `the agent's pod ${namespace}/${podName} no longer exists`);
    }
    const node = pod.spec?.nodeName;
    if (!node || (pod.spec?.serviceAccountName || "default") !== name) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the agent's pod ${namespace}/${podName} is not scheduled as ${name}`,
      );
    }
    const tokenNode = extra[NODE_NAME]?.[0];
    if (tokenNode !== undefined && tokenNode !== node) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the agent's token names node ${tokenNode}, its pod runs on ${node}`,
      );
    }
    let nodeId: string;
    try {
      nodeId = SpiffeId.parse(nodeIdOf(this.#o.trustDomain, node)).toString();
    } catch {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the node name ${JSON.stringify(node)} cannot be part of a SPIFFE ID`,
      );
    }
    const workloads = await this.#o.nodeWorkloads(node);
    return {
      method: "kubernetes",
      requester: nodeId,
      allowedIds: [nodeId, ...workloads],
      isAdmin: false,
      node,
      ...(this.#o.confirmNodeWorkload
        ? { confirmId: (wanted: string) => this.#o.confirmNodeWorkload!(node, wanted) }
        : {}),
    };
  }
}
