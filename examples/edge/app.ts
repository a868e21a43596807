/**
 * An edge service that authenticates callers by their X509-SVID and authorizes them with
 * meshauth's policy engine, as a Hono app that runs unchanged on Deno, Bun and Workers.
 *
 * A TLS-terminating front proxy verifies nothing on our behalf: it forwards the client's
 * certificate chain in a header (Envoy's `x-forwarded-client-cert`, or nginx's
 * `$ssl_client_escaped_cert`). The edge verifies that chain with `verifySvid` against the
 * trust bundle it fetched from the CA, applies an optional coarse authorizer (for example
 * "members of our trust domain only") and then the Istio-shaped authorization policy on
 * method and path. Failures answer `application/problem+json`: 401 when the caller is not
 * authenticated, 403 when it is but may not do this, 503 when no bundle is available.
 *
 * @example
 * ```ts
 * import { createEdgeApp } from "./app.ts";
 * import { BundleCache, bundleEndpoint } from "./bundle-cache.ts";
 * const app = createEdgeApp({
 *   bundles: new BundleCache(bundleEndpoint({ trustDomain: "example.org", url: "https://ca.example.org/v1/bundle" })),
 *   policies: [{
 *     name: "web-reads-photos",
 *     action: "ALLOW",
 *     rules: [{ from: [{ source: { principals: ["spiffe://example.org/ns/default/sa/web"] } }], to: [{ operation: { methods: ["GET"], paths: ["/photos/*"] } }] }],
 *   }],
 * });
 * export default app;
 * ```
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import {
  type Authorizer,
  MeshAuthError,
  PolicyEngine,
  SignatureCache,
  type SpiffeId,
  UnauthorizedPeer,
  verifySvid,
} from "../../mod.ts";
import { type BundleCache, BundleUnavailable } from "./bundle-cache.ts";
import {
  type ClientCertHeader,
  clientChainPem,
  ENVOY_XFCC,
  MalformedClientCertHeader,
} from "./client-cert.ts";

/** The verified caller, available to handlers as `c.get("peer")`. */
export interface Peer {
  id: SpiffeId;
  notAfter: Date;
}

/** Hono's type parameters of the edge app. */
export type EdgeEnv = { Variables: { peer: Peer } };

/** What the app answers for an authorized request; the default echoes the caller's identity. */
export type EdgeHandler = (c: Context<EdgeEnv>, peer: Peer) => Response | Promise<Response>;

/** Options of {@link createEdgeApp}. */
export interface EdgeAppOptions {
  /** Where trust bundles come from, cached per their refresh hint. */
  bundles: BundleCache;
  /** Istio-shaped ALLOW/DENY policies on principal, method and path (deny by default). */
  policies: readonly unknown[] | PolicyEngine;
  /** Checked before the policies, e.g. `authorizeMemberOf("example.org")`. */
  authorize?: Authorizer;
  /** The header the front proxy puts the client chain in. Default Envoy's `x-forwarded-client-cert`. */
  clientCertHeader?: ClientCertHeader;
  /** Answers authorized requests; by default a JSON echo of the caller's identity. */
  handler?: EdgeHandler;
  /** The clock, in milliseconds since the epoch. */
  now?: () => number;
  /**
   * Signatures already verified, so a caller's intermediate (and a repeat caller's leaf) is
   * not verified again on every request. Bounded; one per app by default.
   */
  signatureCache?: SignatureCache;
}

/** The problem codes the edge answers. */
export const EDGE_PROBLEMS = {
  ERR_CLIENT_CERT_MISSING: { status: 401, title: "The request carries no client certificate" },
  ERR_CLIENT_CERT_MALFORMED: { status: 401, title: "The forwarded client certificate cannot be read" },
  ERR_CLIENT_CERT_INVALID: { status: 401, title: "The client certificate is not a valid X509-SVID" },
  ERR_FORBIDDEN: { status: 403, title: "The caller may not do this" },
  ERR_BUNDLE_UNAVAILABLE: { status: 503, title: "No trust bundle is available to verify callers" },
} as const;

type EdgeProblemCode = keyof typeof EDGE_PROBLEMS;

/** An RFC 9457 problem response with a stable `code` (and `reason`, the core's error code). */
export function problem(
  code: EdgeProblemCode,
  detail: string,
  extensions: Record<string, unknown> = {},
): Response {
  const { status, title } = EDGE_PROBLEMS[code];
  const body = {
    type: `urn:meshauth:problem:${code.slice(4).toLowerCase().replaceAll("_", "-")}`,
    title,
    status,
    detail,
    code,
    ...extensions,
  };
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", "cache-control": "no-store" },
  });
}

function echo(c: Context<EdgeEnv>, peer: Peer): Response {
  return c.json({
    id: peer.id.toString(),
    trustDomain: peer.id.trustDomain.name,
    serviceAccount: peer.id.serviceAccount() ?? null,
    notAfter: peer.notAfter.toISOString(),
    method: c.req.method,
    path: c.req.path,
  });
}

/** Builds the edge app. It does no I/O until the first request (Workers forbid it at start-up). */
export function createEdgeApp(options: EdgeAppOptions): Hono<EdgeEnv> {
  const engine = options.policies instanceof PolicyEngine
    ? options.policies
    : new PolicyEngine(options.policies);
  const header = options.clientCertHeader ?? ENVOY_XFCC;
  const now = options.now ?? Date.now;
  const handler = options.handler ?? echo;
  const cache = options.signatureCache ?? new SignatureCache();
  const app = new Hono<EdgeEnv>();

  // Healthy means able to verify a caller: with no trust bundle there is nothing to verify
  // against, so the proxy in front should not send traffic yet.
  app.get("/healthz", async (c) => {
    try {
      await options.bundles.bundles();
    } catch (err) {
      return c.json({
        status: "no-bundle",
        reason: (err as Error).message,
        bundles: options.bundles.status(),
      }, 503);
    }
    return c.json({ status: "ok", bundles: options.bundles.status() });
  });

  app.use("*", async (c, next) => {
    let chainPem: string | undefined;
    try {
      chainPem = clientChainPem(header, c.req.header(header.name));
    } catch (err) {
      if (err instanceof MalformedClientCertHeader) return problem("ERR_CLIENT_CERT_MALFORMED", err.message);
      throw err;
    }
    if (!chainPem) {
      return problem("ERR_CLIENT_CERT_MISSING", `no client certificate in header ${header.name}`);
    }
    let bundles;
    try {
      bundles = await options.bundles.bundles();
    } catch (err) {
      if (err instanceof BundleUnavailable) return problem("ERR_BUNDLE_UNAVAILABLE", err.message);
      throw err;
    }
    let peer: Peer;
    try {
      const verified = await verifySvid(chainPem, bundles, {
        at: new Date(now()),
        purpose: "clientAuth",
        cache,
      });
      peer = { id: verified.id, notAfter: verified.notAfter };
    } catch (err) {
      // A VerificationError, or a MeshAuthError about the input (a malformed chain, say).
      if (err instanceof MeshAuthError) {
        return problem("ERR_CLIENT_CERT_INVALID", err.message, { reason: err.code });
      }
      throw err;
    }
    try {
      options.authorize?.(peer.id);
    } catch (err) {
      if (err instanceof UnauthorizedPeer) return problem("ERR_FORBIDDEN", err.message, { reason: err.code });
      throw err;
    }
    const decision = engine.evaluate({ peerId: peer.id, method: c.req.method, path: c.req.path });
    if (!decision.allowed) {
      return problem("ERR_FORBIDDEN", `${peer.id} may not ${c.req.method} ${c.req.path}`, {
        reason: "ERR_POLICY_DENIED",
        decision: decision.reason,
        ...(decision.policy ? { policy: decision.policy } : {}),
      });
    }
    c.set("peer", peer);
    await next();
  });

  app.all("*", (c) => handler(c, c.get("peer")));
  return app;
}
