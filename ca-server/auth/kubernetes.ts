/**
 * Kubernetes service-account tokens: validated offline against the cluster issuer's JWKS
 * (signature, issuer, audience, expiry, with `jose`) or online through the TokenReview API,
 * and mapped to `spiffe://<td>/ns/<namespace>/sa/<name>` as Istio does.
 *
 * @example
 * ```ts
 * import { KubernetesAuthenticator } from "meshauth/ca-server";
 * const k8s = new KubernetesAuthenticator({
 *   trustDomain: "cluster.local",
 *   issuer: "https://kubernetes.default.svc.cluster.local",
 *   audiences: ["meshauth"],
 *   jwks: { keys: [] },
 * });
 * ```
 * @module
 */

import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  errors as joseErrors,
  type JSONWebKeySet,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import { SpiffeId } from "../../mod.ts";
import { isBearerToken } from "../../internal/mod.ts";
import { CircuitBreaker } from "../circuit-breaker.ts";
import { Problem } from "../problems.ts";
import type { Authenticator, Credentials, Principal } from "./principal.ts";

/** TokenReview settings: the API server and the reviewer's own bearer token. */
export interface TokenReviewOptions {
  /** The API server's base URL (`https://kubernetes.default.svc`). */
  url: string;
  /**
   * A token allowed to create TokenReviews, or a function answering the current one: a
   * projected service-account token is rotated by the kubelet (hourly, typically), so it is
   * read from its file again rather than once (`projectedToken` in `kubernetes-client.ts`).
   * When the API server answers 401, the function is asked with `{ reread: true }` (read the
   * file, not a cached copy), and the review is retried once if the token changed.
   */
  reviewerToken: string | ((options?: { reread?: boolean }) => string | Promise<string>);
  /** The fetch to call it with (to add a CA for the API server's certificate). */
  fetch?: typeof fetch;
  /** How long one TokenReview may take, in milliseconds. */
  timeoutMs?: number;
}

/** Options of {@link KubernetesAuthenticator}: `jwks`, `jwksUrl` or `tokenReview`. */
export interface KubernetesAuthenticatorOptions {
  /** The CA's trust domain: a token of `<ns>/<sa>` obtains `spiffe://<td>/ns/<ns>/sa/<sa>`. */
  trustDomain: string;
  /** The `iss` of the cluster's service-account tokens (offline validation). */
  issuer?: string;
  /** Audiences the token must carry (one of). */
  audiences: string[];
  /** The issuer's JWKS, as JSON (offline validation). */
  jwks?: { keys: JsonWebKey[] };
  /** Where to fetch the issuer's JWKS (offline validation, cached by `jose`). */
  jwksUrl?: string;
  /** The fetch for `jwksUrl`, to trust the cluster's CA certificate (`fetchTrustingCa`). */
  jwksFetch?: typeof fetch;
  /** Validate tokens online with the API server's TokenReview. */
  tokenReview?: TokenReviewOptions;
  /** Seconds of clock skew tolerated on `exp`/`nbf`. Default 30. */
  clockToleranceSeconds?: number;
  /** The clock that checks `exp` and `nbf`; the system's by default. */
  now?: () => Date;
}

const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

/** Authenticates Kubernetes service-account JWTs. */
export class KubernetesAuthenticator implements Authenticator {
  /** Credentials it takes: service-account JWTs as bearer tokens. */
  readonly method = "kubernetes" as const;
  readonly #keys?: JWTVerifyGetKey;
  readonly #breaker: CircuitBreaker;

  /** An authenticator validating service-account tokens as `options` says (JWKS or TokenReview). */
  constructor(readonly options: KubernetesAuthenticatorOptions) {
    // After 5 failures in a row, the API is left alone for 1 s, then 2, 4 ... up to 30.
    this.#breaker = new CircuitBreaker("the Kubernetes TokenReview API", {
      now: options.now && (() => options.now!().getTime()),
    });
    if (options.jwks) this.#keys = createLocalJWKSet(options.jwks as JSONWebKeySet);
    else if (options.jwksUrl) {
      const jwksFetch = options.jwksFetch;
      this.#keys = createRemoteJWKSet(
        new URL(options.jwksUrl),
        jwksFetch ? { [customFetch]: (url, init) => jwksFetch(url, init) } : {},
      );
    } else if (!options.tokenReview) {
      throw new Error("Kubernetes authentication needs jwks, jwksUrl or tokenReview");
    }
    if (this.#keys && !options.issuer) {
      throw new Error("offline Kubernetes token validation needs the issuer");
    }
  }

  /** The principal of a valid service-account token; undefined for a bearer that is not a JWT. */
  async authenticate(credentials: Credentials): Promise<Principal | undefined> {
    const token = credentials.bearerToken;
    if (!token || !JWT.test(token)) return undefined;
    const user = this.#keys ? await this.#verifyOffline(token) : await this.#review(token);
    const m = SERVICE_ACCOUNT_USER.exec(user);
    if (!m) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        `the token's subject ${JSON.stringify(user)} is not a service account`,
      );
    }
    let id: string;
    try {
      id = SpiffeId.fromServiceAccount(this.options.trustDomain, m[1], m[2]).toString();
    } catch {
      throw new Problem("ERR_TOKEN_INVALID", "the service account's name cannot be part of a SPIFFE ID");
    }
    return { method: "kubernetes", requester: id, allowedIds: [id], isAdmin: false };
  }

  async #verifyOffline(token: string): Promise<string> {
    try {
      const { payload } = await jwtVerify(token, this.#keys!, {
        issuer: this.options.issuer,
        audience: this.options.audiences,
        clockTolerance: this.options.clockToleranceSeconds ?? 30,
        currentDate: this.options.now?.(),
        algorithms: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
        requiredClaims: ["exp", "sub"],
      });
      return String(payload.sub);
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        throw new Problem("ERR_TOKEN_EXPIRED", "the service-account token has expired");
      }
      if (err instanceof joseErrors.JOSEError) {
        throw new Problem("ERR_TOKEN_INVALID", `the service-account token is not valid (${err.code})`);
      }
      throw err;
    }
  }

  async #review(token: string): Promise<string> {
    const review = this.options.tokenReview!;
    this.#breaker.admit();
    const reviewerToken = typeof review.reviewerToken === "string"
      ? review.reviewerToken
      : await review.reviewerToken();
    let response = await this.#askReview(token, reviewerToken);
    // The reviewer's own token was rotated or revoked since it was read: read its file again
    // (not the copy kept), and retry once with what it holds now, if that is another token.
    if (response.status === 401 && typeof review.reviewerToken !== "string") {
      const reread = await review.reviewerToken({ reread: true });
      if (reread !== reviewerToken) {
        await response.body?.cancel();
        response = await this.#askReview(token, reread);
      }
    }
    if (!response.ok) {
      this.#breaker.failed();
      await response.body?.cancel();
      throw new Problem("ERR_NOT_READY", `the Kubernetes TokenReview API answered ${response.status}`);
    }
    this.#breaker.succeeded();
    const body = await response.json() as {
      status?: {
        authenticated?: boolean;
        user?: { username?: string };
        audiences?: string[];
        error?: string;
      };
    };
    if (!body.status?.authenticated || !body.status.user?.username) {
      throw new Problem("ERR_TOKEN_INVALID", "Kubernetes did not authenticate the service-account token");
    }
    // The CA asked for its audiences. An answer without them means the token is the API
    // server's (Kubernetes says so of an empty status.audiences), or an authenticator that
    // ignores audiences answered: either way not a token meant for this CA.
    const audiences = body.status.audiences;
    if (!Array.isArray(audiences) || !audiences.some((a) => this.options.audiences.includes(a))) {
      throw new Problem(
        "ERR_TOKEN_INVALID",
        "the service-account token is not meant for this CA (the TokenReview answer names none of its audiences)",
      );
    }
    return body.status.user.username;
  }

  async #askReview(token: string, reviewerToken: string): Promise<Response> {
    const review = this.options.tokenReview!;
    const doFetch = review.fetch ?? fetch;
    // Checked here, and never quoted: fetch refuses such a header with its value in the message.
    if (!isBearerToken(reviewerToken)) {
      this.#breaker.failed();
      throw new Problem(
        "ERR_NOT_READY",
        "the reviewer's token (kubernetes.tokenReview.tokenFile) is not one run of visible ASCII characters",
      );
    }
    try {
      return await doFetch(new URL("/apis/authentication.k8s.io/v1/tokenreviews", review.url), {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${reviewerToken}` },
        body: JSON.stringify({
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences: this.options.audiences },
        }),
        signal: AbortSignal.timeout(review.timeoutMs ?? 5000),
      });
    } catch (cause) {
      this.#breaker.failed();
      throw new Problem(
        "ERR_NOT_READY",
        `the Kubernetes TokenReview API is unreachable: ${(cause as Error).message}`,
      );
    }
  }
}
