/**
 * The sockets under the CA app, chosen by runtime. On Node: `@hono/node-server` over
 * node:http or node:https. On Bun: `Bun.serve` for plain HTTP (about a fifth less CPU per
 * certificate than Bun's node:http), and for TLS a node:tls server handing its sockets to
 * node:http, because neither `Bun.serve` nor Bun's node:https lets the app read the client's
 * certificate. Every listener limits header size and time; the app limits bodies itself (it
 * reads no more than 64 KiB, from a declared length or as chunks arrive), so that every
 * oversized body gets its problem answer rather than a runtime's bare 413.
 *
 * @module
 */

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import {
  createServer as createTlsServer,
  type SecureContextOptions,
  type Server as TlsServer,
} from "node:tls";
import { createServer as createNetServer } from "node:net";
import { getRequestListener, type HttpBindings, serve } from "@hono/node-server";
import { encodePem, MeshAuthError } from "../mod.ts";
import type { TLSSocket } from "node:tls";
import { peerChain } from "../internal/mod.ts";
import type { FetchHandler, RequestContext } from "./app.ts";
import { MAX_CLIENT_CHAIN_PEM } from "./auth/mtls.ts";

/** Where and how to listen. */
export interface ListenOptions {
  /** The address to bind (`127.0.0.1`, `0.0.0.0`, `::`). */
  host: string;
  /** The port; 0 for any free one (the listener answers which). */
  port: number;
  /** Serving key, certificate chain and the client CAs to ask for; plain HTTP without. */
  tls?: SecureContextOptions & { key: string; cert: string; ca: string };
  /** Several processes share the port (node:cluster workers). */
  isShared?: boolean;
  /** Time limits; the defaults suit a CA. */
  limits?: Partial<TimeLimits>;
}

/** How long a client may take, in milliseconds. */
export interface TimeLimits {
  /** From connecting (or the previous response) to the end of a request's headers. Default 10 s. */
  headersMs: number;
  /** For a whole request (node:http counts from its first byte; the Bun TLS path from its headers). Default 15 s. */
  requestMs: number;
  /** Between the end of a response and the next request's headers. Default 5 s. */
  keepAliveMs: number;
}

/** A listening server under the app. */
export interface Listener {
  /** The port bound. */
  port: number;
  /** Which server this is, for the start-up log. */
  kind: "node:http" | "node:https" | "Bun.serve" | "node:tls+node:http";
  /** Replaces the serving certificate or the trusted client CAs (TLS only). */
  setSecureContext(options: SecureContextOptions): void;
  /** Stops listening and ends open connections. */
  close(): Promise<void>;
}

// Slow clients cannot hold a connection: headers 10 s, whole request 15 s, idle 5 s.
const DEFAULT_LIMITS: TimeLimits = { headersMs: 10_000, requestMs: 15_000, keepAliveMs: 5_000 };
const MAX_HEADER_BYTES = 16 * 1024;

interface BunServer {
  port: number;
  requestIP(request: Request): { address: string } | null;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}
interface BunRuntime {
  serve(options: {
    hostname: string;
    port: number;
    reusePort?: boolean;
    idleTimeout?: number;
    fetch(request: Request, server: BunServer): Response | Promise<Response>;
  }): BunServer;
}

/** Bun's global when this runs on Bun. */
function bunRuntime(): BunRuntime | undefined {
  return (globalThis as { Bun?: BunRuntime }).Bun;
}

/** The environment the listeners give the app's handlers. */
type ListenerBindings = Partial<HttpBindings> & { bunServer?: BunServer };

/**
 * The TLS client's chain as PEM, leaf first, from the socket under the request: at most 8
 * certificates, read as the DER OpenSSL holds without decoding any field of them, and no more
 * once their DER passes `MAX_CLIENT_CHAIN_PEM` bytes (PEM is longer than its DER, so
 * such a chain is over the limit the mTLS authenticator refuses it by, before it parses it).
 */
export function clientCertificate(c: RequestContext): string | undefined {
  const socket = (c.env as ListenerBindings | undefined)?.incoming?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== "function") return undefined;
  const chain = peerChain(socket, { maxCertificates: 8, maxBytes: MAX_CLIENT_CHAIN_PEM });
  if (chain.length === 0) return undefined;
  return chain.map((der) => encodePem("CERTIFICATE", der)).join("");
}

/** The client's address, from the socket or from Bun's server. */
export function clientAddress(c: RequestContext): string | undefined {
  const env = c.env as ListenerBindings | undefined;
  return env?.incoming?.socket?.remoteAddress ?? env?.bunServer?.requestIP(c.req.raw)?.address;
}

// node:http enforces headersTimeout and requestTimeout when it sweeps its connections, every
// 30 s by default; a sweep a second keeps the limits close to what they say.
function checkingInterval(limits: TimeLimits): number {
  return Math.max(50, Math.min(1000, limits.headersMs / 2, limits.requestMs / 2));
}

function limitTime(server: HttpServer, limits: TimeLimits): void {
  server.requestTimeout = limits.requestMs;
  server.headersTimeout = limits.headersMs;
  server.keepAliveTimeout = limits.keepAliveMs;
  server.maxRequestsPerSocket = 10_000;
}

function listening(server: HttpServer | TlsServer): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = () => {
      const address = server.address();
      resolve(typeof address === "object" && address ? address.port : 0);
    };
    if (server.listening) return done();
    server.once("listening", done);
    server.once("error", reject);
  });
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

/** The listener could not take its address; the message names the port and the setting. */
export class ListenError extends MeshAuthError {
  /** Stable code of this class: `ERR_LISTEN`. */
  static override code: string = "ERR_LISTEN";
  /** `host` and `port` are the address that could not be bound; `reason` says why (in use, not allowed). */
  constructor(readonly host: string, readonly port: number, readonly reason: string, options?: ErrorOptions) {
    super(
      `cannot listen on ${host}:${port}: ${reason}; set listen.port in the configuration ` +
        `(or MESHAUTH_LISTEN_PORT) to another port, or 0 for any free one`,
      options,
    );
    this.name = "ListenError";
  }
}

function listenError(err: unknown, options: Pick<ListenOptions, "host" | "port">): unknown {
  const code = (err as { code?: string })?.code;
  const message = String((err as Error)?.message ?? err);
  if (code === "EADDRINUSE" || /EADDRINUSE|address already in use|in use/i.test(message)) {
    return new ListenError(options.host, options.port, "the port is already in use by another process", {
      cause: err,
    });
  }
  if (code === "EACCES" || /EACCES|permission denied/i.test(message)) {
    return new ListenError(
      options.host,
      options.port,
      "permission denied (ports below 1024 need privileges)",
      {
        cause: err,
      },
    );
  }
  if (code === "EADDRNOTAVAIL") {
    return new ListenError(options.host, options.port, `this machine has no address ${options.host}`, {
      cause: err,
    });
  }
  return err;
}

/**
 * Fails as {@link listen} would when `host:port` cannot be taken (in use, privileged, not an
 * address of this machine), so that a server can say so before it opens or writes anything;
 * the port is released at once. Port 0 always can be.
 */
export async function checkListenAddress(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const probe = createNetServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen({ host, port, exclusive: true }, resolve);
    });
  } catch (err) {
    throw listenError(err, { host, port });
  }
  await new Promise((resolve) => probe.close(resolve));
}

/** Serves `app` as `options` ask, on whichever runtime this is. */
export async function listen(app: FetchHandler, options: ListenOptions): Promise<Listener> {
  const bun = bunRuntime();
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  try {
    if (bun && !options.tls) return listenBunServe(bun, app, options, limits);
    if (bun && options.tls) return await listenTlsThenHttp(app, options, limits);
    return await listenNode(app, options, limits);
  } catch (err) {
    throw listenError(err, options);
  }
}

async function listenNode(app: FetchHandler, options: ListenOptions, limits: TimeLimits): Promise<Listener> {
  const server = (options.tls
    ? serve({
      fetch: app.fetch,
      port: options.port,
      hostname: options.host,
      createServer: createHttpsServer,
      serverOptions: {
        ...options.tls,
        connectionsCheckingInterval: checkingInterval(limits),
        // Ask for a client SVID but let the app decide: renewal uses it, issuance with a token does not.
        requestCert: true,
        rejectUnauthorized: false,
        maxHeaderSize: MAX_HEADER_BYTES,
      },
    })
    : serve({
      fetch: app.fetch,
      port: options.port,
      hostname: options.host,
      serverOptions: {
        maxHeaderSize: MAX_HEADER_BYTES,
        connectionsCheckingInterval: checkingInterval(limits),
      },
    })) as HttpServer | HttpsServer;
  limitTime(server, limits);
  return {
    port: await listening(server),
    kind: options.tls ? "node:https" : "node:http",
    setSecureContext: (context) => (server as HttpsServer).setSecureContext?.(context),
    close: () => closeHttp(server),
  };
}

function listenBunServe(
  bun: BunRuntime,
  app: FetchHandler,
  options: ListenOptions,
  limits: TimeLimits,
): Listener {
  const server = bun.serve({
    hostname: options.host,
    port: options.port,
    // node:cluster does not share a Bun.serve socket between workers; the kernel does.
    reusePort: options.isShared ?? false,
    // Seconds without a byte before Bun closes the connection (its only limit; plain HTTP is
    // served on loopback alone).
    idleTimeout: Math.max(1, Math.ceil(limits.headersMs / 1000)),
    fetch: (request, bunServer) => app.fetch(request, { bunServer } satisfies ListenerBindings),
  });
  return {
    port: server.port,
    kind: "Bun.serve",
    setSecureContext() {},
    close: async () => {
      await server.stop(true);
    },
  };
}

async function listenTlsThenHttp(
  app: FetchHandler,
  options: ListenOptions,
  limits: TimeLimits,
): Promise<Listener> {
  const http = createHttpServer({ maxHeaderSize: MAX_HEADER_BYTES }, getRequestListener(app.fetch));
  limitTime(http, limits);
  // node:http's timers do not run for connections it did not accept itself (on Bun), so each
  // connection gets a fixed deadline here: its headers, then its request, then the keep-alive
  // wait, each from when it starts. A byte now and then does not move a deadline.
  const deadlines = new Map<TLSSocket, ReturnType<typeof setTimeout>>();
  const setDeadline = (socket: TLSSocket, ms: number) => {
    clearTimeout(deadlines.get(socket));
    deadlines.set(socket, setTimeout(() => socket.destroy(), ms));
  };
  http.on("request", (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket as TLSSocket;
    if (!deadlines.has(socket)) return;
    setDeadline(socket, limits.requestMs);
    response.once("finish", () => {
      if (deadlines.has(socket)) setDeadline(socket, limits.keepAliveMs);
    });
  });
  let isClosing = false;
  const tls = createTlsServer({
    ...options.tls,
    requestCert: true,
    rejectUnauthorized: false,
    handshakeTimeout: limits.headersMs,
  }, (socket) => {
    if (isClosing) return socket.destroy();
    setDeadline(socket, limits.headersMs);
    socket.once("close", () => {
      clearTimeout(deadlines.get(socket));
      deadlines.delete(socket);
    });
    http.emit("connection", socket);
  });
  // Bun's node:cluster workers bind their own sockets; SO_REUSEPORT lets them share the port.
  tls.listen({ port: options.port, host: options.host, reusePort: options.isShared ?? false });
  return {
    port: await listening(tls),
    kind: "node:tls+node:http",
    setSecureContext: (context) => tls.setSecureContext(context),
    close: () =>
      new Promise<void>((resolve) => {
        isClosing = true;
        tls.close(() => resolve());
        for (const socket of deadlines.keys()) socket.destroy();
        http.closeAllConnections?.();
      }),
  };
}
