/**
 * The agent's client of the CA server's `/v1` API, on `undici`: it sends CSRs (authenticated by
 * a bearer token, or over mutual TLS by an SVID it holds), and fetches the trust bundle and the
 * CRLs. It never sends a private key.
 *
 * Each credential gets its own small pool of keep-alive connections (one by default): a TLS
 * connection carries the client certificate it was opened with, so connections are never
 * shared between credentials, and a node agent renewing a thousand workloads with its one node
 * SVID reuses one connection. Requests in flight are bounded per credential (by its
 * connections, so that nothing queues inside undici) and across every pool
 * (`maxConcurrentRequests`); the rest wait in order in the client, so a thousand workloads
 * starting at once never become a thousand simultaneous requests. Every request has a
 * deadline, which starts when it leaves the queue: waiting for a turn never eats it.
 *
 * @example
 * ```ts
 * import { CaClient } from "meshauth/agent";
 * const client = new CaClient({ url: "https://localhost:8443", caCertificatesPem: bundlePem });
 * const bundle = await client.trustBundle();
 * ```
 * @module
 */

import { createHash } from "node:crypto";
import { Pool } from "undici";
import { InvalidArgument, MeshAuthError, SpiffeId } from "../mod.ts";
import { isBearerToken, isLoopbackHost } from "../internal/mod.ts";
import { ConcurrencyLimit } from "./concurrency.ts";

/** How the client authenticates to the CA. */
export type CaCredential =
  | { kind: "token"; token: string | (() => string | undefined | Promise<string | undefined>) }
  | { kind: "mtls"; certificateChainPem: string; privateKeyPem: string };

/** Which API call a request was, for metrics. */
export type CaEndpoint = "certificates" | "bundle" | "crl";

/** One finished CA request, reported to {@link CaClientOptions.onResponse}. */
export interface CaRequestObservation {
  /** Which API call it was: CSR signing, trust bundle or CRL. */
  endpoint: CaEndpoint;
  /** From leaving the queue to the answer (or the failure). */
  seconds: number;
  /** Time spent waiting for a turn before that. */
  queuedSeconds: number;
  /** The HTTP status, or the kind of failure (`timeout`, `connect`, `tls`, `answer`, `aborted`). */
  outcome: string;
  /**
   * The CA's clock minus this one's, from the answer's `Date` (whole seconds, so within about
   * a second plus half the request's time); absent without an answer or a `Date`.
   */
  clockOffsetMs?: number;
}

/** Options of {@link CaClient}. */
export interface CaClientOptions {
  /** The CA's base URL, e.g. `https://localhost:8443`. */
  url: string;
  /** PEM roots to trust for the CA's serving certificate (its own trust bundle); required for https. */
  caCertificatesPem?: string;
  /**
   * Deadline of one request, from the moment it leaves the client's queue (connecting
   * included) to the last byte of the answer. Default 10 s.
   */
  timeoutMs?: number;
  /** Largest response body accepted. Default 1 MiB. */
  maxResponseBytes?: number;
  /** Requests in flight at once, across every credential. Default 4. */
  maxConcurrentRequests?: number;
  /** Keep-alive connections per credential. Default 1. */
  connectionsPerCredential?: number;
  /** Called after every request (metrics). */
  onResponse?: (observation: CaRequestObservation) => void;
  /** The local address to connect from (a node with several addresses); the system's choice by default. */
  localAddress?: string;
}

/** A certificate the CA issued, as the API answers it. */
export interface IssuedSvid {
  /** The SPIFFE ID the certificate names (its URI SAN). */
  spiffeId: SpiffeId;
  /** The certificate's serial number: hex of its content octets, as the CA reports it. */
  serialNumber: string;
  /** The leaf's notAfter. */
  expiresAt: Date;
  /** The leaf first, then any intermediates up to (not including) the root, as PEM. */
  certificateChainPem: string;
  /** The roots of the trust domain to verify peers with, as PEM. */
  trustBundlePem: string;
}

/** The trust bundle as `GET /v1/bundle.pem` answers it. */
export type TrustBundleAnswer =
  | { isModified: true; pem: string; etag?: string; sequence?: number; maxAgeSeconds?: number }
  | { isModified: false; maxAgeSeconds?: number };

/** The CA answered with an error; `status` and `problemCode` come from its problem+json body. */
export class CaRequestFailed extends MeshAuthError {
  /** Stable code of this class: `ERR_CA_REQUEST_FAILED`. */
  static override code: string = "ERR_CA_REQUEST_FAILED";
  /** `status` is the HTTP status; `problemCode` and `detail` come from the problem+json body. */
  constructor(
    readonly status: number,
    readonly problemCode: string | undefined,
    detail: string,
    /** From a `Retry-After` header (429, 503), in seconds. */
    readonly retryAfterSeconds?: number,
  ) {
    super(`the CA refused the request (HTTP ${status}${problemCode ? `, ${problemCode}` : ""}): ${detail}`);
    this.name = "CaRequestFailed";
  }
}

/** How a request to the CA failed before an API answer came back. */
export type CaUnavailableKind = "connect" | "timeout" | "tls" | "answer" | "closed" | "aborted";

/**
 * The CA could not be reached, did not answer in time, failed the TLS handshake (its serving
 * certificate not trusted or not naming the host), or answered something that is not the API.
 * The message is one line; the underlying error's code is in `causeCode`. The raw error is not
 * attached: a TLS error carries the peer's whole certificate, which `console.error` would print.
 */
export class CaUnavailable extends MeshAuthError {
  /** Stable code of this class: `ERR_CA_UNAVAILABLE`. */
  static override code: string = "ERR_CA_UNAVAILABLE";
  /** `url` is the CA's origin; `kind` classifies the failure; `causeCode` is e.g. `ECONNREFUSED`. */
  constructor(
    readonly url: string,
    readonly kind: CaUnavailableKind,
    reason: string,
    readonly causeCode?: string,
  ) {
    super(`the CA at ${url} is unavailable: ${reason}`);
    this.name = "CaUnavailable";
  }
}

/**
 * A bearer token was asked for and there is none: the variable or file that holds it is unset
 * or empty, or the file does not exist or cannot be read. `reason` says which, naming the file.
 */
export class TokenMissing extends MeshAuthError {
  /** Stable code of this class: `ERR_TOKEN_MISSING`. */
  static override code: string = "ERR_TOKEN_MISSING";
  /** `reason` says where the token was looked for; by default that it is unset or empty. */
  constructor(reason = "it is unset or empty") {
    super(`the bearer token is missing: ${reason}`);
    this.name = "TokenMissing";
  }
}

/**
 * Checks a credential before anything is sent: a token given as a string must be present and
 * be one run of visible ASCII (a line break would let it inject a header). A token given as a
 * function is checked each time it is read.
 */
export function checkCredential(credential: CaCredential): void {
  if (credential === null || typeof credential !== "object") {
    throw new InvalidArgument("credential", 'expected { kind: "token", token } or { kind: "mtls", ... }');
  }
  if (credential.kind === "token") {
    if (typeof credential.token !== "function") checkToken(credential.token);
  } else if (credential.kind === "mtls") {
    if (typeof credential.certificateChainPem !== "string" || typeof credential.privateKeyPem !== "string") {
      throw new InvalidArgument(
        "credential",
        "an mtls credential needs certificateChainPem and privateKeyPem",
      );
    }
  } else {
    throw new InvalidArgument(
      "credential.kind",
      `expected "token" or "mtls", got ${JSON.stringify(credential)}`,
    );
  }
}

function checkToken(token: unknown): string {
  if (token === undefined || token === null || (typeof token === "string" && token.trim() === "")) {
    throw new TokenMissing();
  }
  if (!isBearerToken(token)) {
    throw new InvalidArgument("token", "a bearer token is one run of visible ASCII characters");
  }
  return token;
}

const MAX_POOLS = 16;

/**
 * What is wrong with `url` as the CA's URL, or undefined: it must be an origin (scheme, host,
 * port, no path), https, or plain http to a loopback address only (a bearer token in clear
 * text, and a trust bundle an attacker on the path could replace, are acceptable nowhere
 * else). The configuration (`ca.url`) and {@link CaClient} apply this one rule.
 */
export function caUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `not a URL: ${JSON.stringify(url)}`;
  }
  if (parsed.protocol === "http:") {
    if (!isLoopbackHost(parsed.hostname)) {
      return `plain HTTP is allowed only to a loopback CA (127.0.0.1, [::1], localhost), not ${parsed.host}; use https`;
    }
  } else if (parsed.protocol !== "https:") {
    return `expected an https:// URL (or http:// to a loopback address), got ${JSON.stringify(url)}`;
  }
  // The URL is logged and printed (--check); credentials in it would be too, and the CA
  // authenticates the agent by its token or certificate, never by a password in the URL.
  if (parsed.username || parsed.password) {
    return `no user name or password in the CA's URL (the agent authenticates with its token or certificate), got ${parsed.protocol}//…@${parsed.host}`;
  }
  if (parsed.pathname !== "/" || parsed.search || parsed.hash) {
    return `the CA's origin (scheme, host and port) without a path, got ${JSON.stringify(url)}`;
  }
  return undefined;
}

/** A client of one CA server. */
export class CaClient {
  readonly #url: URL;
  readonly #options: CaClientOptions;
  readonly #limit: ConcurrencyLimit;
  #caCertificatesPem: string | undefined;
  // Least recently used first; each pool is bound to one credential.
  readonly #pools = new Map<string, Pool>();
  /** Each credential's turns, one per connection; dropped when idle. */
  readonly #turns = new Map<string, ConcurrencyLimit>();
  readonly #observers = new Set<(observation: CaRequestObservation) => void>();
  #isClosed = false;

  /** Checks the URL (https, or http to loopback only) and the trust bundle; connects on first use. */
  constructor(options: CaClientOptions) {
    const problem = caUrlProblem(options.url);
    if (problem) throw new InvalidArgument("url", problem);
    const url = new URL(options.url);
    // The CA is trusted through its own bundle, never through the public web PKI.
    if (url.protocol === "https:" && !options.caCertificatesPem) {
      throw new InvalidArgument(
        "caCertificatesPem",
        "an https CA URL needs the CA's trust bundle to verify it",
      );
    }
    this.#url = url;
    this.#options = options;
    this.#caCertificatesPem = options.caCertificatesPem;
    this.#limit = new ConcurrencyLimit(options.maxConcurrentRequests ?? 4);
    if (options.onResponse) this.#observers.add(options.onResponse);
  }

  /** Calls `observer` after every request (metrics); answers a function that stops it. */
  observe(observer: (observation: CaRequestObservation) => void): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /** The CA's origin. */
  get url(): string {
    return this.#url.origin;
  }

  /** Requests in flight now, and waiting for their turn. */
  get load(): { running: number; waiting: number } {
    let waiting = this.#limit.waiting;
    for (const turns of this.#turns.values()) waiting += turns.waiting;
    return { running: this.#limit.running, waiting };
  }

  /**
   * Trusts `pem` for the CA's serving certificate from now on (after a root rotation the CA's
   * serving certificate chains to the new root). Open connections finish what they carry.
   */
  setTrustAnchors(pem: string): void {
    if (pem === this.#caCertificatesPem) return;
    this.#caCertificatesPem = pem;
    for (const pool of this.#pools.values()) void pool.close().catch(() => {});
    this.#pools.clear();
  }

  /**
   * Sends a CSR and returns the issued SVID. Once `signal` aborts, a request still waiting for
   * its turn, or on the wire, fails with {@link CaUnavailable} of kind `aborted`.
   */
  async requestCertificate(
    csrPem: string,
    credential: CaCredential,
    options: { ttlSeconds?: number; signal?: AbortSignal } = {},
  ): Promise<IssuedSvid> {
    checkCredential(credential);
    const body = JSON.stringify({
      csr: csrPem,
      ...(options.ttlSeconds ? { ttlSeconds: options.ttlSeconds } : {}),
    });
    const answer = await this.#request(
      "certificates",
      "POST",
      "/v1/certificates",
      credential,
      body,
      {},
      options.signal,
    );
    if (answer.status !== 201) throw problem(answer);
    const json = answer.json as Record<string, unknown> | undefined;
    const chain = json?.certificateChain;
    if (
      !json || typeof json.spiffeId !== "string" || typeof json.serialNumber !== "string" ||
      typeof json.expiresAt !== "string" || !Array.isArray(chain) || chain.length === 0 ||
      chain.some((c) => typeof c !== "string") || typeof json.trustBundle !== "string"
    ) {
      throw new CaUnavailable(
        this.#url.origin,
        "answer",
        "the issuance answer is not the API's (fields missing)",
      );
    }
    let spiffeId: SpiffeId;
    try {
      spiffeId = SpiffeId.parse(json.spiffeId);
    } catch {
      throw new CaUnavailable(this.#url.origin, "answer", "the issuance answer names no valid SPIFFE ID");
    }
    return {
      spiffeId,
      serialNumber: json.serialNumber,
      expiresAt: new Date(json.expiresAt),
      certificateChainPem: (chain as string[]).map((c) => (c.endsWith("\n") ? c : `${c}\n`)).join(""),
      trustBundlePem: json.trustBundle,
    };
  }

  /**
   * Fetches the trust bundle (PEM). With the `etag` of the copy held, an unchanged bundle
   * answers `isModified: false` and costs no body. `maxAgeSeconds` is the CA's caching hint.
   */
  async trustBundle(etag?: string): Promise<TrustBundleAnswer> {
    const answer = await this.#request("bundle", "GET", "/v1/bundle.pem", undefined, undefined, {
      ...(etag ? { "if-none-match": etag } : {}),
    });
    const maxAgeSeconds = maxAgeOf(answer.headers["cache-control"]);
    if (answer.status === 304) return { isModified: false, maxAgeSeconds };
    if (answer.status !== 200) throw problem(answer);
    const pem = answer.text;
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new CaUnavailable(this.#url.origin, "answer", "the trust bundle answer holds no certificate");
    }
    const sequence = Number(header(answer.headers, "spiffe-bundle-sequence"));
    return {
      isModified: true,
      pem,
      etag: header(answer.headers, "etag"),
      sequence: Number.isSafeInteger(sequence) ? sequence : undefined,
      maxAgeSeconds,
    };
  }

  /** Fetches the trust bundle as PEM. */
  async trustBundlePem(): Promise<string> {
    const answer = await this.trustBundle();
    return answer.isModified ? answer.pem : "";
  }

  /** Fetches the CRL (DER) of one authority (the active one without `authorityId`). */
  async crl(authorityId?: string): Promise<{ der: Uint8Array; maxAgeSeconds?: number }> {
    if (authorityId !== undefined && !/^[0-9a-f]{32}$/.test(authorityId)) {
      throw new InvalidArgument("authorityId", "expected 32 hex digits, as the CA names its authorities");
    }
    const path = authorityId ? `/v1/crl?authority=${authorityId}` : "/v1/crl";
    const answer = await this.#request("crl", "GET", path);
    if (answer.status !== 200) throw problem(answer);
    return { der: answer.bytes, maxAgeSeconds: maxAgeOf(answer.headers["cache-control"]) };
  }

  /** Closes every connection; requests after this fail. */
  async close(): Promise<void> {
    this.#isClosed = true;
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((pool) => pool.close().catch(() => {})));
  }

  #pool(credential: CaCredential | undefined, key = poolKey(credential)): Pool {
    let pool = this.#pools.get(key);
    if (pool) {
      this.#pools.delete(key);
      this.#pools.set(key, pool);
      return pool;
    }
    const timeoutMs = this.#options.timeoutMs ?? 10_000;
    const isIp = /^[\d.]+$|^\[/.test(this.#url.hostname);
    pool = new Pool(this.#url.origin, {
      connections: this.#options.connectionsPerCredential ?? 1,
      pipelining: 1,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      // undici takes the local address from the pool's options, not the connector's.
      ...(this.#options.localAddress ? { localAddress: this.#options.localAddress } : {}),
      connect: {
        timeout: timeoutMs,
        ...(this.#url.protocol === "https:"
          ? {
            ca: this.#caCertificatesPem,
            minVersion: "TLSv1.2" as const,
            // SNI carries host names only (RFC 6066 3).
            ...(isIp ? {} : { servername: this.#url.hostname }),
            ...(credential?.kind === "mtls"
              ? { cert: credential.certificateChainPem, key: credential.privateKeyPem }
              : {}),
          }
          : {}),
      },
    });
    this.#pools.set(key, pool);
    if (this.#pools.size > MAX_POOLS) {
      const [oldestKey, oldest] = this.#pools.entries().next().value as [string, Pool];
      this.#pools.delete(oldestKey);
      void oldest.close().catch(() => {});
    }
    return pool;
  }

  #request(
    endpoint: CaEndpoint,
    method: "GET" | "POST",
    path: string,
    credential?: CaCredential,
    body?: string,
    extraHeaders: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<Answer> {
    const key = poolKey(credential);
    let turns = this.#turns.get(key);
    if (!turns) {
      turns = new ConcurrencyLimit(this.#options.connectionsPerCredential ?? 1);
      this.#turns.set(key, turns);
    }
    const queued = performance.now();
    // A turn on the credential's connections first, then one of the client's: a request leaves
    // the queue only when a connection is free for it, so undici never queues it behind others
    // while its deadline runs.
    const request = turns.run(
      () =>
        this.#limit.run(
          () => this.#requestNow(endpoint, method, path, key, credential, body, extraHeaders, signal, queued),
          { signal },
        ),
      { signal },
    );
    const settled = () => {
      if (turns.running === 0 && turns.waiting === 0 && this.#turns.get(key) === turns) {
        this.#turns.delete(key);
      }
    };
    return request.then(
      (answer) => {
        settled();
        return answer;
      },
      (err) => {
        settled();
        if (signal?.aborted && !(err instanceof MeshAuthError)) {
          throw new CaUnavailable(
            this.#url.origin,
            "aborted",
            "the request was abandoned (the workload went away)",
          );
        }
        throw err;
      },
    );
  }

  async #requestNow(
    endpoint: CaEndpoint,
    method: "GET" | "POST",
    path: string,
    key: string,
    credential: CaCredential | undefined,
    body: string | undefined,
    extraHeaders: Record<string, string>,
    signal: AbortSignal | undefined,
    queued: number,
  ): Promise<Answer> {
    const started = performance.now();
    let outcome = "error";
    let clockOffsetMs: number | undefined;
    try {
      if (this.#isClosed) throw new CaUnavailable(this.#url.origin, "closed", "the client was closed");
      const headers: Record<string, string> = {
        accept: "application/json, application/problem+json, application/x-pem-file, application/pkix-crl",
        ...extraHeaders,
      };
      if (body !== undefined) headers["content-type"] = "application/json";
      if (credential?.kind === "token") {
        const token = typeof credential.token === "function" ? await credential.token() : credential.token;
        headers.authorization = `Bearer ${checkToken(token)}`;
      }
      const sentAtMs = Date.now();
      const answer = await this.#send(this.#pool(credential, key), method, path, headers, body, signal);
      outcome = String(answer.status);
      // The Date header is truncated to the second: its middle stands for it.
      const serverMs = Date.parse(header(answer.headers, "date") ?? "");
      if (Number.isFinite(serverMs)) clockOffsetMs = serverMs + 500 - (sentAtMs + Date.now()) / 2;
      return answer;
    } catch (err) {
      if (err instanceof CaUnavailable) outcome = err.kind;
      throw err;
    } finally {
      const observation = {
        endpoint,
        seconds: (performance.now() - started) / 1000,
        queuedSeconds: (started - queued) / 1000,
        outcome,
        clockOffsetMs,
      };
      for (const observer of this.#observers) observer(observation);
    }
  }

  async #send(
    pool: Pool,
    method: "GET" | "POST",
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    abandon: AbortSignal | undefined,
  ): Promise<Answer> {
    const timeoutMs = this.#options.timeoutMs ?? 10_000;
    // The deadline starts here, when a connection is free for this request.
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = abandon ? AbortSignal.any([deadline, abandon]) : deadline;
    const limit = this.#options.maxResponseBytes ?? 1 << 20;
    const origin = this.#url.origin;
    let response: Awaited<ReturnType<Pool["request"]>>;
    try {
      response = await pool.request({ path, method, headers, body, signal });
    } catch (err) {
      throw unavailable(origin, err, deadline.aborted, timeoutMs, abandon?.aborted);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body) {
        size += (chunk as Uint8Array).length;
        if (size > limit) {
          response.body.destroy();
          throw new CaUnavailable(origin, "answer", `the answer is larger than ${limit} bytes`);
        }
        chunks.push(chunk as Uint8Array);
      }
    } catch (err) {
      if (err instanceof CaUnavailable) throw err;
      throw unavailable(origin, err, deadline.aborted, timeoutMs, abandon?.aborted);
    }
    const bytes = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.length;
    }
    const text = new TextDecoder().decode(bytes);
    let json: unknown;
    if (/json/.test(header(response.headers, "content-type") ?? "")) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { status: response.statusCode, headers: response.headers, bytes, text, json };
  }
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: Uint8Array;
  text: string;
  json: unknown;
}

function header(headers: Answer["headers"], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function maxAgeOf(cacheControl: string | string[] | undefined): number | undefined {
  const text = Array.isArray(cacheControl) ? cacheControl.join(",") : cacheControl ?? "";
  const m = /(?:^|,)\s*max-age=(\d+)/i.exec(text);
  return m ? Number(m[1]) : undefined;
}

function problem(answer: Answer): CaRequestFailed {
  const p = (answer.json ?? {}) as { code?: unknown; detail?: unknown; title?: unknown };
  const detail = typeof p.detail === "string"
    ? p.detail
    : typeof p.title === "string"
    ? p.title
    : answer.text.slice(0, 200).split("\n")[0] || "no detail";
  const retryAfter = Number(header(answer.headers, "retry-after"));
  return new CaRequestFailed(
    answer.status,
    typeof p.code === "string" && /^ERR_[A-Z_]{1,60}$/.test(p.code) ? p.code : undefined,
    detail,
    Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
  );
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH)/;

/** One line from any failure below the API: what kind, and the cause's code and first line. */
function unavailable(
  origin: string,
  err: unknown,
  isTimedOut: boolean,
  timeoutMs: number,
  isAbandoned = false,
): CaUnavailable {
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  const code = typeof e?.code === "string" ? e.code : undefined;
  const message = String(e?.message ?? err).split("\n")[0].trim();
  if (isAbandoned && !isTimedOut) {
    return new CaUnavailable(origin, "aborted", "the request was abandoned (the workload went away)", code);
  }
  if (isTimedOut || /TIMEOUT/.test(code ?? "") || e?.name === "TimeoutError") {
    return new CaUnavailable(origin, "timeout", `no answer within ${timeoutMs / 1000}s`, code);
  }
  if (code && TLS_CODES.test(code)) {
    return new CaUnavailable(origin, "tls", `TLS: ${message} (${code})`, code);
  }
  return new CaUnavailable(origin, "connect", code ? `${message} (${code})` : message, code);
}

function poolKey(credential: CaCredential | undefined): string {
  return credential?.kind === "mtls"
    ? `mtls:${createHash("sha256").update(credential.certificateChainPem).digest("hex")}`
    : "anonymous";
}
