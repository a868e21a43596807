/**
 * `createCaApp(options)`: the CA's HTTP API as a Hono app that does not know which runtime
 * serves it. Dependencies (authorities, store, authenticators, clock) come in through
 * options; how to read the TLS client certificate and the client address is the serving
 * adapter's business, passed in as two functions.
 *
 * @example
 * ```ts
 * import { createCaApp } from "meshauth/ca-server";
 * // authorities, store and authenticators come from the server's setup (see from-config.ts)
 * const app = createCaApp({ authorities, store, authenticators });
 * const response = await app.request("/healthz");
 * ```
 * @module
 */

import { type Context, Hono } from "hono";
import type { Authorities } from "./authorities.ts";
import type { Authenticator, Credentials, Principal } from "./auth/principal.ts";
import { type Logger, silentLogger } from "../internal/mod.ts";
import { CaMetrics, type GroupMetrics, renderMetrics } from "./metrics.ts";
import { Problem, type ProblemCode } from "./problems.ts";
import { LeasedRateLimit } from "./leased-rate-limit.ts";
import {
  GLOBAL_KEY,
  type LeasableRateLimit,
  LocallyFilteredRateLimit,
  MAX_CONCURRENT_ISSUANCES_DEFAULT,
  type RateLimit,
  RateLimiter,
  type RateLimitOptions,
  type RateVerdict,
  requestCharges,
} from "./rate-limit.ts";
import {
  MAX_BODY_BYTES,
  optionalPositiveInteger,
  optionalString,
  readJsonObject,
  requireString,
} from "./request-body.ts";
import { CaService, parseSerialNumber, revocationSelector } from "./service.ts";
import type { CaStore, RevocationRecord } from "./store/store.ts";

/** Options of {@link createCaApp}. */
export interface CaAppOptions {
  /** The CA's signing authorities and trust bundle. */
  authorities: Authorities;
  /** Where issued certificates, revocations, CRLs, join tokens and audit events are kept. */
  store: CaStore;
  /** Tried in order; the first that recognises the request's credentials decides. */
  authenticators: Authenticator[];
  /** Where request failures and audit lines are logged; silent by default. */
  logger?: Logger;
  /** Counts served at `/metrics`; a fresh set by default. */
  metrics?: CaMetrics;
  /**
   * Limits on issuance and administrative requests: per client address before the credentials
   * are looked at, per requester after (a node agent's bucket sized for its workloads), per
   * identity issued, for the whole CA's issuances, and on this process's issuances at once
   * (see {@link RateLimitOptions}); `false` turns them off.
   */
  rateLimit?: RateLimitOptions | false;
  /**
   * Where the buckets of {@link rateLimit} are kept when the CA is several processes (the
   * primary's for node:cluster workers, the database's for replicas), with this process's own
   * in front: a `LeasedRateLimit` for buckets that lease tokens (the primary's), else a
   * `LocallyFilteredRateLimit` (see `leased-rate-limit.ts` and `rate-limit.ts`); this process by default.
   */
  rateLimiter?: RateLimit;
  /** The counts of every process of the CA, this one's included; this process's alone by default. */
  metricsOfGroup?: () => Promise<GroupMetrics>;
  /** How long each CRL is valid; a new one is signed after half of it. Default 1 h. */
  crlNextUpdateSeconds?: number;
  /** Largest request body accepted. Default 64 KiB. */
  maxBodyBytes?: number;
  /** DNS names an identity may carry; none by default. */
  allowedDnsNames?: (spiffeId: string) => readonly string[];
  /** The TLS client certificate chain (PEM, leaf first) of the request, if any. */
  clientCertificate?: (c: RequestContext) => string | undefined;
  /** The client's network address, for rate-limiting unauthenticated failures. */
  clientAddress?: (c: RequestContext) => string | undefined;
  /** The clock, for tests; the system's by default. */
  now?: () => Date;
}

/**
 * What the request-reading options (`clientCertificate`, `clientAddress`) read of a request's context (a Hono `Context` is one): the
 * bindings the server passed with the request, and the request itself.
 */
export interface RequestContext {
  /** The server's bindings: `incoming` (the socket) on Node, `bunServer` on Bun. */
  env: unknown;
  /** The request as the runtime received it. */
  req: { raw: Request };
}

/** An app as a server calls it: a Hono app, or any object with a fetch handler of that shape. */
export interface FetchHandler {
  /** Answers one request; `env` carries the server's bindings. */
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
}

/**
 * The CA's HTTP API as `createCaApp` answers it: a Hono app, typed by what serving and testing
 * it take, so that meshauth's API does not carry Hono's types.
 */
export interface CaApp extends FetchHandler {
  /** Answers a request for a path or URL without a server (Hono's `app.request`), as tests and benchmarks do. */
  request(input: string | URL | Request, init?: RequestInit): Response | Promise<Response>;
}

/** Builds the CA's app: a Hono app any runtime can serve through its `fetch`. */
export function createCaApp(options: CaAppOptions): CaApp {
  const logger = options.logger ?? silentLogger;
  const metrics = options.metrics ?? new CaMetrics();
  const { authorities, store } = options;
  const service = new CaService({
    authorities,
    store,
    logger,
    metrics,
    crlNextUpdateSeconds: options.crlNextUpdateSeconds,
    allowedDnsNames: options.allowedDnsNames,
    now: options.now,
  });
  const rateLimit = options.rateLimit === false
    ? undefined
    : options.rateLimit ?? { requestsPerSecond: 5, burst: 50 };
  // Shared buckets (the primary's, the database's) get this process's own in front of them.
  const shared = options.rateLimiter;
  const limiter = rateLimit &&
    (shared
      ? isLeasable(shared) ? new LeasedRateLimit(shared) : new LocallyFilteredRateLimit(shared, rateLimit)
      : new RateLimiter(rateLimit));
  const maxBodyBytes = options.maxBodyBytes ?? MAX_BODY_BYTES;
  const maxConcurrentIssuances = rateLimit
    ? rateLimit.maxConcurrentIssuances ?? MAX_CONCURRENT_ISSUANCES_DEFAULT
    : Infinity;
  let issuancesInFlight = 0;
  const app = new Hono();
  /** The bucket that refused a request, for its denial's audit entry. */
  const limitedKeys = new WeakMap<Request, string>();

  function refuseIfLimited(
    c: Context,
    bucket: "address" | "requester" | "identity",
    verdict: RateVerdict | undefined,
  ): void {
    if (!verdict || verdict.allowed) return;
    const key = verdict.refusedKey ?? "unknown";
    const isGlobal = key === GLOBAL_KEY;
    limitedKeys.set(c.req.raw, key);
    metrics.rateLimited(isGlobal ? "global" : bucket);
    throw new Problem(
      "ERR_RATE_LIMITED",
      isGlobal
        ? `the CA is issuing at its global limit; retry in ${verdict.retryAfterSeconds}s`
        : `too many requests from ${key}; retry in ${verdict.retryAfterSeconds}s`,
      { retryAfterSeconds: verdict.retryAfterSeconds },
    );
  }

  /**
   * Throttles, then authenticates. Each request first takes a token from its address's bucket,
   * before its credentials are looked at: a throttled address is refused before any token is
   * verified or certificate parsed, whether its guess was right or wrong. A request that
   * authenticates moves its charge to its requester's bucket (a node agent's sized for its
   * workloads), and an issuance takes one of the whole CA's too (one operation); one that fails
   * for any reason, the server's own included (the TokenReview API down), keeps its address's
   * token spent, so failures slow guessing and probing, and a flood meets the limit.
   */
  async function authenticate(c: Context, isIssuance = false): Promise<Principal> {
    const address = `address:${options.clientAddress?.(c) ?? "unknown"}`;
    let principal: Principal;
    try {
      refuseIfLimited(c, "address", await limiter?.take([{ key: address }]));
      principal = await findPrincipal(c);
    } catch (err) {
      await c.req.raw.body?.cancel().catch(() => {});
      throw err;
    }
    if (rateLimit) {
      refuseIfLimited(
        c,
        "requester",
        await limiter?.take(requestCharges(principal, rateLimit, isIssuance), address),
      );
    }
    return principal;
  }

  /**
   * The identity a request asks for has a bucket of its own when it is not the requester's (a
   * node agent asking for one of its workloads): one workload renewed in a loop is held to its
   * rate, and its node's other workloads are not held back by it.
   */
  async function admitIdentity(c: Context, principal: Principal, spiffeId: string): Promise<void> {
    if (spiffeId === principal.requester) return;
    refuseIfLimited(c, "identity", await limiter?.take([{ key: spiffeId }]));
  }

  /**
   * Refuses an issuance at once while this process already handles `maxConcurrentIssuances`:
   * past that, more work only queues, and every answer waits for the queue.
   */
  async function refuseIfSaturated(c: Context): Promise<void> {
    if (issuancesInFlight < maxConcurrentIssuances) return;
    await c.req.raw.body?.cancel().catch(() => {});
    limitedKeys.set(c.req.raw, "concurrency");
    metrics.rateLimited("concurrency");
    throw new Problem(
      "ERR_RATE_LIMITED",
      `the CA is handling ${issuancesInFlight} issuances at once, its most; retry in 1s`,
      { retryAfterSeconds: 1 },
    );
  }

  async function findPrincipal(c: Context): Promise<Principal> {
    const credentials: Credentials = {};
    const authorization = c.req.header("authorization");
    if (authorization !== undefined) {
      const m = /^Bearer +([^\s]+)\s*$/i.exec(authorization);
      if (!m) throw new Problem("ERR_UNAUTHENTICATED", "the Authorization header must be `Bearer <token>`");
      credentials.bearerToken = m[1];
    }
    credentials.clientCertificateChainPem = options.clientCertificate?.(c);
    for (const authenticator of options.authenticators) {
      const principal = await authenticator.authenticate(credentials);
      if (principal) return principal;
    }
    if (credentials.bearerToken) {
      throw new Problem("ERR_TOKEN_INVALID", "the bearer token is of no kind this CA accepts");
    }
    throw new Problem(
      "ERR_UNAUTHENTICATED",
      "send a join token or Kubernetes service-account token as `Authorization: Bearer`, or a client SVID",
    );
  }

  async function authenticateAdmin(c: Context): Promise<Principal> {
    const principal = await authenticate(c);
    if (!principal.isAdmin) {
      throw new Problem("ERR_FORBIDDEN", `${principal.requester} is not an administrator`);
    }
    return principal;
  }

  /** Addresses and identities whose last throttling was audited, and when: one entry a minute each. */
  const auditedThrottles = new Map<string, number>();
  function isThrottleAudited(key: string): boolean {
    const nowMs = Date.now();
    const last = auditedThrottles.get(key);
    if (last !== undefined && nowMs - last < 60_000) return false;
    auditedThrottles.delete(key);
    if (auditedThrottles.size >= 10_000) auditedThrottles.delete(auditedThrottles.keys().next().value!);
    auditedThrottles.set(key, nowMs);
    return true;
  }

  app.onError((err, c) => {
    const code = (err as { code?: string }).code;
    // A missing authority or an unreachable store is the server's state, not the client's fault.
    // The store away (a database unreachable, a full disk) is worth retrying soon: say when.
    const problem = err instanceof Problem
      ? err
      : code === "ERR_STORE"
      ? new Problem("ERR_NOT_READY", (err as Error).message, {
        retryAfterSeconds: (err as { retryAfterSeconds?: number }).retryAfterSeconds ?? 1,
      })
      : code === "ERR_NO_ACTIVE_AUTHORITY"
      ? new Problem("ERR_NOT_READY", (err as Error).message)
      : new Problem("ERR_INTERNAL", "the server failed to handle the request");
    if (!(err instanceof Problem)) logger.error("request failed", { path: c.req.path, error: err });
    metrics.denied(problem.code);
    metrics.request(problem.status);
    // What the client did, bounded (service.audit cuts every string), and not awaited: a
    // refused request does not wait for the disk. A client over its rate is audited once a
    // minute, not at every refusal, so a flood cannot turn into a flood of audit entries.
    const limitedKey = limitedKeys.get(c.req.raw);
    const isAudited = (c.req.method === "POST" || c.req.path === "/v1/certificates") &&
      (limitedKey === undefined || isThrottleAudited(limitedKey));
    if (isAudited) {
      void service.audit("denied", requesterOf(c), {
        path: c.req.path,
        code: problem.code,
        detail: problem.detail,
        address: options.clientAddress?.(c),
      })
        .catch((auditErr) => logger.error("audit write failed", { error: auditErr }));
    }
    logger.info("denied", { path: c.req.path.slice(0, 256), code: problem.code, status: problem.status });
    const retry = problem.extensions.retryAfterSeconds;
    return problem.toResponse(typeof retry === "number" ? { "retry-after": String(retry) } : {});
  });
  app.notFound((c) => {
    metrics.request(404);
    return new Problem("ERR_NOT_FOUND", `no route ${c.req.method} ${c.req.path}`).toResponse();
  });

  // The principal is kept on the context so a denial's audit entry names who was denied.
  const principals = new WeakMap<Request, string>();
  const requesterOf = (c: Context) => principals.get(c.req.raw) ?? "anonymous";
  const remember = (c: Context, principal: Principal) => principals.set(c.req.raw, principal.requester);

  // Authentication comes before the body: an unauthenticated client's body is never read.
  app.post("/v1/certificates", async (c) => {
    await refuseIfSaturated(c);
    issuancesInFlight++;
    let issued;
    try {
      const principal = await authenticate(c, true);
      remember(c, principal);
      const body = await readJsonObject(c.req.raw, maxBodyBytes);
      const csr = requireString(body, "csr");
      const ttlSeconds = optionalPositiveInteger(body, "ttlSeconds");
      issued = await service.issue(principal, csr, ttlSeconds, (id) => admitIdentity(c, principal, id));
    } finally {
      issuancesInFlight--;
    }
    metrics.request(201);
    return c.json(
      {
        spiffeId: issued.spiffeId,
        serialNumber: issued.serialNumber,
        expiresAt: issued.notAfter.toISOString(),
        certificateChain: issued.chainPems,
        trustBundle: issued.trustBundlePem,
      },
      201,
      { "cache-control": "no-store" },
    );
  });

  app.get("/v1/certificates", async (c) => {
    const principal = await authenticateAdmin(c);
    remember(c, principal);
    const spiffeId = c.req.query("spiffeId");
    const limitParam = c.req.query("limit");
    const limitCount = limitParam === undefined ? 100 : Number(limitParam);
    if (!Number.isSafeInteger(limitCount) || limitCount < 1 || limitCount > 1000) {
      throw new Problem("ERR_INVALID_FIELD", "limit must be a whole number from 1 to 1000", {
        field: "limit",
      });
    }
    const serialNumber = c.req.query("serialNumber");
    const at = options.now?.() ?? new Date();
    const [certificates, revocations] = await Promise.all([
      serialNumber === undefined
        ? store.listCertificates({ spiffeId, limit: limitCount })
        : store.findCertificate(parseSerialNumber(serialNumber)).then((found) => found ? [found] : []),
      store.listRevocations(at),
    ]);
    const revoked = new Map(revocations.map((r) => [r.serialNumber, r]));
    metrics.request(200);
    return c.json(
      {
        certificates: certificates.map((cert) => ({
          serialNumber: cert.serialNumber,
          spiffeId: cert.spiffeId,
          notBefore: cert.notBefore.toISOString(),
          notAfter: cert.notAfter.toISOString(),
          issuedAt: cert.issuedAt.toISOString(),
          requester: cert.requester,
          method: cert.method,
          isRevoked: revoked.has(cert.serialNumber),
          revocationReason: revoked.get(cert.serialNumber)?.reason,
        })),
      },
      200,
      { "cache-control": "no-store" },
    );
  });

  app.post("/v1/revocations", async (c) => {
    const principal = await authenticateAdmin(c);
    remember(c, principal);
    const body = await readJsonObject(c.req.raw, maxBodyBytes);
    const selector = revocationSelector({
      serialNumber: optionalString(body, "serialNumber"),
      spiffeId: optionalString(body, "spiffeId"),
      reason: requireString(body, "reason"),
    }, authorities.trustDomain);
    const outcome = await service.revoke(principal, selector);
    metrics.request(200);
    const entry = (r: RevocationRecord) => ({
      serialNumber: r.serialNumber,
      spiffeId: r.spiffeId,
      revokedAt: r.revokedAt.toISOString(),
      reason: r.reason,
      notAfter: r.notAfter.toISOString(),
      authorityId: r.authorityId,
    });
    return c.json(
      { revoked: outcome.revoked.map(entry), alreadyRevoked: outcome.alreadyRevoked.map(entry) },
      200,
      { "cache-control": "no-store" },
    );
  });

  app.get("/v1/bundle", (c) => bundleResponse(c, "jwks"));
  app.get("/v1/bundle.pem", (c) => bundleResponse(c, "pem"));

  function bundleResponse(c: Context, format: "jwks" | "pem"): Response {
    const bundle = authorities.bundle();
    const pem = authorities.bundlePem();
    const etag = `"${bundle.sequence}-${
      authorities.published().map((a) => a.record.id.slice(0, 8)).join(".")
    }"`;
    const headers: Record<string, string> = {
      "cache-control": `public, max-age=${Math.min(300, bundle.refreshHintSeconds ?? 300)}`,
      etag,
      "spiffe-bundle-sequence": String(bundle.sequence),
    };
    metrics.request(200);
    if (c.req.header("if-none-match") === etag) return new Response(null, { status: 304, headers });
    if (format === "pem") {
      return new Response(pem, {
        headers: { ...headers, "content-type": "application/x-pem-file" },
      });
    }
    return new Response(JSON.stringify(bundle.toJwks()), {
      headers: { ...headers, "content-type": "application/json" },
    });
  }

  app.get("/v1/crl", async (c) => {
    const { der, maxAgeSeconds } = await service.crl(c.req.query("authority"));
    metrics.request(200);
    return new Response(der as Uint8Array<ArrayBuffer>, {
      headers: {
        "content-type": "application/pkix-crl",
        "cache-control": `public, max-age=${maxAgeSeconds}`,
      },
    });
  });

  app.get("/healthz", (c) => {
    metrics.request(200);
    return c.json({ status: "ok" });
  });

  app.get("/readyz", async (c) => {
    try {
      authorities.active();
      await store.revocationRevision();
    } catch (err) {
      throw new Problem("ERR_NOT_READY", `not ready: ${(err as Error).message}`);
    }
    metrics.request(200);
    return c.json({ status: "ready" });
  });

  app.get("/metrics", async () => {
    const alone = (): GroupMetrics => ({ snapshots: [metrics.snapshot()], processes: 1 });
    const group = options.metricsOfGroup
      ? await options.metricsOfGroup().catch((err) => {
        logger.error("collecting the workers' metrics failed", { error: err });
        return alone();
      })
      : alone();
    const revocationsTotal = await store.revocationsTotal().catch(() => undefined);
    const caCertificates = authorities.published().map((a) => ({ id: a.record.id, notAfter: a.ca.notAfter }));
    return new Response(
      renderMetrics(group.snapshots, { revocationsTotal, caCertificates, processes: group.processes }),
      { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } },
    );
  });

  // Known paths with another method: 405 with Allow, rather than a misleading 404.
  const allowed: Record<string, string> = {
    "/v1/certificates": "GET, POST",
    "/v1/revocations": "POST",
    "/v1/bundle": "GET",
    "/v1/bundle.pem": "GET",
    "/v1/crl": "GET",
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
  };
  for (const [path, allow] of Object.entries(allowed)) {
    app.all(path, (c) => {
      metrics.request(405);
      return new Problem("ERR_METHOD_NOT_ALLOWED", `${c.req.method} is not allowed on ${path}`, { allow })
        .toResponse({ allow });
    });
  }
  return app;
}

function isLeasable(limit: RateLimit): limit is LeasableRateLimit {
  return typeof (limit as Partial<LeasableRateLimit>).lease === "function" &&
    typeof (limit as Partial<LeasableRateLimit>).giveBack === "function";
}

/** Every problem code the app may answer, for documentation and tests. */
export type { ProblemCode };
