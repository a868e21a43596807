// Service-account tokens as the API server's TokenRequest makes them (what the kubelet projects
// into pods): ES256 JWTs with the `kubernetes.io` claims binding them to a pod and its node,
// and their review (TokenReview), with the errors the API server gives.

import { exportJWK, generateKeyPair, type JWK, jwtVerify, SignJWT } from "jose";

type KeyLike = CryptoKey;
import { randomUUID } from "node:crypto";
import type { UserInfo } from "./rbac.ts";

export const ISSUER = "https://kubernetes.default.svc.cluster.local";
/** The API server's own audience: tokens for calling the API. */
export const API_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

export interface TokenRequest {
  namespace: string;
  serviceAccount: string;
  serviceAccountUid: string;
  audiences?: string[];
  expirationSeconds?: number;
  /** Seconds the token was issued in the past (to make expired tokens). */
  issuedSecondsAgo?: number;
  pod?: { name: string; uid: string };
  node?: { name: string; uid: string };
}

export interface BoundClaims {
  namespace: string;
  serviceaccount: { name: string; uid: string };
  pod?: { name: string; uid: string };
  node?: { name: string; uid: string };
}

/** What the API server checks a token's bindings against. */
export interface BindingLookup {
  serviceAccountUid(namespace: string, name: string): string | undefined;
  podUid(namespace: string, name: string): string | undefined;
}

export class TokenIssuer {
  #privateKey?: KeyLike;
  #publicKey?: KeyLike;
  #jwk?: JWK;
  readonly kid = randomUUID();

  async init(): Promise<void> {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    this.#privateKey = privateKey as KeyLike;
    this.#publicKey = publicKey as KeyLike;
    this.#jwk = { ...(await exportJWK(publicKey)), kid: this.kid, use: "sig", alg: "ES256" };
  }

  jwks(): { keys: JWK[] } {
    return { keys: [this.#jwk!] };
  }

  async issue(request: TokenRequest): Promise<string> {
    const iat = Math.floor(Date.now() / 1000) - (request.issuedSecondsAgo ?? 0);
    const claims: Record<string, unknown> = {
      "kubernetes.io": {
        namespace: request.namespace,
        serviceaccount: { name: request.serviceAccount, uid: request.serviceAccountUid },
        ...(request.pod ? { pod: request.pod } : {}),
        ...(request.node ? { node: request.node } : {}),
      },
    };
    return await new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: this.kid })
      .setIssuer(ISSUER)
      .setSubject(`system:serviceaccount:${request.namespace}:${request.serviceAccount}`)
      .setAudience(request.audiences ?? [API_AUDIENCE])
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + (request.expirationSeconds ?? 3600))
      .setJti(randomUUID())
      .sign(this.#privateKey!);
  }

  /**
   * Authenticates a token for `audiences` (the API server's own when empty), as the service
   * account token authenticator does: signature, issuer, time, audience, then the bound objects.
   * Answers the user and the audiences it was valid for, or the error the API server reports.
   */
  async review(
    token: string,
    audiences: string[],
    bindings: BindingLookup,
  ): Promise<{ user: UserInfo; audiences: string[] } | { error: string }> {
    const wanted = audiences.length ? audiences : [API_AUDIENCE];
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.#publicKey!, {
        issuer: ISSUER,
        algorithms: ["ES256"],
        clockTolerance: 0,
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ERR_JWT_EXPIRED") {
        return { error: "[invalid bearer token, service account token has expired]" };
      }
      return { error: "[invalid bearer token, square/go-jose: error in cryptographic primitive]" };
    }
    const tokenAudiences = Array.isArray(payload.aud) ? payload.aud as string[] : [String(payload.aud)];
    const valid = wanted.filter((a) => tokenAudiences.includes(a));
    if (valid.length === 0) {
      return {
        error: `[invalid bearer token, token audiences ${
          JSON.stringify(tokenAudiences)
        } is invalid for the target audiences ${JSON.stringify(wanted)}]`,
      };
    }
    const bound = payload["kubernetes.io"] as BoundClaims;
    const saUid = bindings.serviceAccountUid(bound.namespace, bound.serviceaccount.name);
    if (saUid !== bound.serviceaccount.uid) {
      return {
        error:
          `[invalid bearer token, service account ${bound.namespace}/${bound.serviceaccount.name} has been deleted]`,
      };
    }
    if (bound.pod && bindings.podUid(bound.namespace, bound.pod.name) !== bound.pod.uid) {
      return { error: `[invalid bearer token, pod ${bound.namespace}/${bound.pod.name} has been deleted]` };
    }
    const extra: Record<string, string[]> = {
      "authentication.kubernetes.io/credential-id": [`JTI=${payload.jti}`],
    };
    if (bound.pod) {
      extra["authentication.kubernetes.io/pod-name"] = [bound.pod.name];
      extra["authentication.kubernetes.io/pod-uid"] = [bound.pod.uid];
    }
    if (bound.node) {
      extra["authentication.kubernetes.io/node-name"] = [bound.node.name];
      extra["authentication.kubernetes.io/node-uid"] = [bound.node.uid];
    }
    return {
      user: {
        username: `system:serviceaccount:${bound.namespace}:${bound.serviceaccount.name}`,
        uid: bound.serviceaccount.uid,
        groups: [
          "system:serviceaccounts",
          `system:serviceaccounts:${bound.namespace}`,
          "system:authenticated",
        ],
        extra,
      },
      audiences: valid,
    };
  }
}
