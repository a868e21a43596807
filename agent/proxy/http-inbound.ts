/**
 * HTTP mode of an inbound listener: each HTTP/1.1 request on a verified connection is decided
 * by the listener's policies (method, normalized path, host, headers, the caller's SPIFFE ID),
 * answered 403 with a problem body when denied, and otherwise forwarded to the local service
 * with the verified identity in an `X-Forwarded-Client-Cert` header (Envoy's format: `By` the
 * proxy's own ID, `Hash` of the caller's certificate, `URI` the caller's ID). A client's own
 * XFCC header is always removed first: only the proxy may assert who called.
 *
 * Parsing is node:http's (strict, bounded head size and time); bodies stream both ways with
 * backpressure. Upgrades (WebSocket) are decided like any request, and piped once the service
 * answered 101 (http-upgrade.ts).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Agent, createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { PolicyRequest } from "../../mod.ts";
import { formatAddress } from "./address.ts";
import type { InboundConfig } from "./config.ts";
import type { ProxyConnection } from "./connection.ts";
import { HeadDeadlines } from "./http-head-deadline.ts";
import { requestService, ServiceTimeout } from "./http-forward.ts";
import { hostOf, readRequestFields, type RequestFields } from "./http-head.ts";
import { responseHead, writeAnswer } from "./http-upgrade.ts";
import { normalizeTarget } from "./http-path.ts";
import { closeWithProblem, sendProblem } from "./http-problem.ts";
import { type ListenerContext, recordDecision, verdictFields } from "./listener-context.ts";
import type { ListenerPolicy } from "./policy-files.ts";

/** What the HTTP layer needs to know of its listener. */
export interface HttpListenerView {
  /** The connection a socket belongs to. */
  connectionOf(socket: Socket): ProxyConnection | undefined;
  /** The facts of a connection that policies read (peer, port, source IP, SNI). */
  policyRequest(connection: ProxyConnection, socket: Socket): PolicyRequest;
  /** The audit fields of a connection. */
  auditFields(connection: ProxyConnection): {
    peerId?: string;
    peerSerial?: string;
    revocation?: "checked" | "unchecked-no-crl" | "stale-crl";
    source?: string;
    destination: string;
    transport: "mtls" | "plaintext";
    connection: number;
    resumed?: boolean;
  };
  /** The proxy's own SPIFFE ID (XFCC `By`). */
  ownId(): string | undefined;
}

/** How {@link HttpInbound} decided one request. */
type Decision =
  /** The socket belongs to no open connection (it closed meanwhile). */
  | { kind: "gone" }
  /** Not forwarded: the request is malformed or ambiguous (400). */
  | { kind: "refused"; connection: ProxyConnection; detail: string }
  /** Denied by the policies (403). */
  | { kind: "denied"; connection: ProxyConnection }
  | {
    kind: "allowed";
    connection: ProxyConnection;
    /** The normalized target: the path policies matched, and the query. */
    target: string;
    /** The normalized path alone. */
    path: string;
    fields: RequestFields;
    /** What the policies decided on (kept for an upgraded connection, which is decided again on reload). */
    request: PolicyRequest;
  };

/** The most of a refused request's raw target kept in its audit record. */
const MAX_AUDITED_TARGET = 512;

/** The HTTP layer of one inbound listener. */
export class HttpInbound {
  readonly #server: Server;
  readonly #agent: Agent;
  readonly #heads: HeadDeadlines;

  constructor(
    readonly config: InboundConfig,
    readonly policy: ListenerPolicy,
    readonly context: ListenerContext,
    readonly listener: HttpListenerView,
  ) {
    const limits = context.limits;
    // node:http's own head and request timers run only in a server that listens; this one is
    // handed sockets, so headersTimeoutSeconds is kept by HeadDeadlines.
    this.#server = createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      requestTimeout: 0,
      keepAliveTimeout: limits.idleTimeoutSeconds * 1000,
    }, (req, res) => this.#guarded(req.socket, res, () => this.#request(req, res))());
    // No byte either way for this long, in a request or between requests, closes the connection.
    this.#server.timeout = limits.idleTimeoutSeconds * 1000;
    this.#server.on(
      "upgrade",
      (req: IncomingMessage, socket: Socket, head: Buffer) =>
        this.#guarded(socket, undefined, () => this.#upgrade(req, socket, head))(),
    );
    this.#server.on("connect", (_req: IncomingMessage, socket: Socket) => {
      closeWithProblem(socket, 405, "ERR_METHOD_NOT_ALLOWED", "CONNECT is not proxied");
    });
    this.#server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      this.#heads.forget(socket);
      if (!socket.writable) return socket.destroy();
      const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
      closeWithProblem(
        socket,
        status,
        "ERR_BAD_REQUEST",
        `the request could not be parsed (${err.code ?? "error"})`,
      );
    });
    this.#agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64 });
    this.#heads = new HeadDeadlines(
      limits.headersTimeoutSeconds * 1000,
      (socket) => this.#headTooSlow(socket),
    );
  }

  /**
   * Serves HTTP on a verified (or PERMISSIVE plain-text) connection's socket. Its first request
   * head is due within headersTimeoutSeconds, unless `isResting` (a connection that has served
   * requests before, which may rest until its next one begins).
   */
  serve(socket: Socket, isResting = false): void {
    this.#heads.opened(socket, isResting);
    this.#server.emit("connection", socket);
    socket.resume();
  }

  /** Closes the pooled connections to the local service. */
  close(): void {
    this.#heads.close();
    this.#agent.destroy();
  }

  /** A request head did not come in time: answered 408, and the connection closed and counted. */
  #headTooSlow(socket: Socket): void {
    this.context.metrics.closed.inc({ listener: this.config.name, reason: "headers_timeout" });
    const detail = `the request head did not arrive within ${this.context.limits.headersTimeoutSeconds}s`;
    // The connection closes with its socket, once the answer is written.
    closeWithProblem(socket, 408, "ERR_REQUEST_TIMEOUT", detail);
  }

  /**
   * `handle`, made so that nothing it throws leaves it: node:http calls request and upgrade
   * handlers from a socket's data event, where an exception ends the process. An error is
   * logged and counted, and answered 500 when no answer was begun; otherwise the connection closes.
   */
  #guarded<A extends unknown[]>(
    socket: Socket,
    res: ServerResponse | undefined,
    handle: (...args: A) => void,
  ): (...args: A) => void {
    return (...args: A) => {
      try {
        handle(...args);
      } catch (err) {
        this.context.metrics.internalErrors.inc({ listener: this.config.name });
        this.context.logger.error("handling an HTTP request failed", {
          listener: this.config.name,
          error: (err as Error)?.message ?? String(err),
        });
        try {
          const detail = "the proxy failed while handling the request";
          if (res && !res.headersSent) sendProblem(res, 500, "ERR_INTERNAL", detail, true);
          else if (!res) closeWithProblem(socket, 500, "ERR_INTERNAL", detail);
          else socket.destroy();
        } catch {
          socket.destroy();
        }
      }
    };
  }

  #decide(req: IncomingMessage, socket: Socket, isUpgrade = false): Decision {
    const connection = this.listener.connectionOf(socket);
    if (!connection) return { kind: "gone" };
    const normalized = normalizeTarget(req.url ?? "");
    const fields = readRequestFields(req.rawHeaders);
    if ("problem" in normalized) return this.#refuse(req, connection, normalized.problem);
    if ("problem" in fields) return this.#refuse(req, connection, fields.problem);
    // After a 101 the bytes that follow are the new protocol's; a body in between has no framing both sides agree on.
    if (isUpgrade && fields.hasBody) {
      return this.#refuse(req, connection, "an upgrade request must not have a body");
    }
    const base = this.listener.policyRequest(connection, socket);
    const attributes: Record<string, string | undefined> = {
      ...base.attributes as Record<string, string | undefined>,
    };
    for (const [key, header] of this.policy.headerKeys) attributes[key] = fields.headers.get(header);
    const request: PolicyRequest = {
      ...base,
      method: req.method,
      path: normalized.path,
      host: hostOf(fields.headers.get("host")),
      attributes,
    };
    const verdict = this.policy.evaluate(request);
    recordDecision(this.context, {
      listener: this.config.name,
      direction: "inbound",
      ...verdictFields(verdict),
      ...this.listener.auditFields(connection),
      method: req.method,
      path: normalized.path,
    });
    if (!verdict.decision.allowed) return { kind: "denied", connection };
    return {
      kind: "allowed",
      connection,
      target: normalized.path + normalized.query,
      path: normalized.path,
      fields,
      request,
    };
  }

  /** A request refused before any policy could read it: audited all the same, with what was sent. */
  #refuse(req: IncomingMessage, connection: ProxyConnection, problem: string): Decision {
    recordDecision(this.context, {
      listener: this.config.name,
      direction: "inbound",
      decision: "deny",
      reason: "malformed-request",
      error: { code: "ERR_BAD_REQUEST", message: problem },
      ...this.listener.auditFields(connection),
      method: req.method,
      path: (req.url ?? "").slice(0, MAX_AUDITED_TARGET),
    });
    return { kind: "refused", connection, detail: problem };
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    this.#heads.headComplete(socket);
    res.once("close", () => this.#heads.answered(socket));
    const decision = this.#decide(req, socket);
    if (decision.kind === "gone") return void socket.destroy();
    if (decision.kind === "refused") return sendProblem(res, 400, "ERR_BAD_REQUEST", decision.detail, true);
    if (decision.kind === "denied") {
      return sendProblem(res, 403, "ERR_POLICY_DENIED", "denied by the authorization policy");
    }
    const forward = this.config.forward;
    const limits = this.context.limits;
    const upstream = requestService(
      {
        forward,
        method: req.method ?? "GET",
        target: decision.target,
        headers: this.#forwardHeaders(decision.fields, decision.connection),
        agent: this.#agent,
        connectTimeoutMs: limits.connectTimeoutSeconds * 1000,
        responseIdleTimeoutMs: limits.responseIdleTimeoutSeconds * 1000,
      },
      this.#guarded(socket, res, (err: Error) => {
        this.context.logger.warn("local service request failed", {
          listener: this.config.name,
          forward: formatAddress(forward),
          error: err,
        });
        if (res.headersSent) res.destroy();
        else if (err instanceof ServiceTimeout) sendProblem(res, 504, err.code, err.message);
        else sendProblem(res, 502, "ERR_UPSTREAM", "the local service could not be reached");
      }),
    );
    upstream.on(
      "response",
      this.#guarded(socket, res, (answer: IncomingMessage) => {
        const headers: string[] = [];
        for (let i = 0; i < answer.rawHeaders.length; i += 2) {
          const name = answer.rawHeaders[i].toLowerCase();
          if (name !== "connection" && name !== "keep-alive" && name !== "transfer-encoding") {
            headers.push(answer.rawHeaders[i], answer.rawHeaders[i + 1]);
          }
        }
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
        answer.pipe(res);
        answer.on("error", () => res.destroy());
      }),
    );
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  /** The request's fields as decided, one line each, with the proxy's XFCC. */
  #forwardHeaders(fields: RequestFields, connection: ProxyConnection): Record<string, string> {
    const headers = Object.fromEntries(fields.headers);
    const xfcc = this.#xfcc(connection);
    if (xfcc) headers["x-forwarded-client-cert"] = xfcc;
    return headers;
  }

  /** Envoy's XFCC element for the verified peer; none for plain text. */
  #xfcc(connection: ProxyConnection): string | undefined {
    const peer = connection.peer;
    if (!peer) return undefined;
    const hash = createHash("sha256").update(peer.leaf).digest("hex");
    const by = this.listener.ownId();
    return `${by ? `By=${by};` : ""}Hash=${hash};URI=${peer.id.toString()}`;
  }

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    // Nothing more is read from the caller until the service has answered: unless it switches
    // protocols, what follows is HTTP again, and each request in it is decided.
    socket.pause();
    this.#heads.headComplete(socket);
    const decision = this.#decide(req, socket, true);
    if (decision.kind === "gone") return void socket.destroy();
    if (decision.kind !== "allowed") {
      if (decision.kind === "refused") closeWithProblem(socket, 400, "ERR_BAD_REQUEST", decision.detail);
      else closeWithProblem(socket, 403, "ERR_POLICY_DENIED", "denied by the authorization policy");
      return;
    }
    const limits = this.context.limits;
    let isAnswered = false;
    const upstream = requestService(
      {
        forward: this.config.forward,
        method: req.method ?? "GET",
        target: decision.target,
        // Upgrade and Connection are hop-by-hop, but this hop's upgrade needs them.
        headers: {
          ...this.#forwardHeaders(decision.fields, decision.connection),
          connection: "upgrade",
          upgrade: decision.fields.upgrade ?? "",
        },
        agent: false,
        connectTimeoutMs: limits.connectTimeoutSeconds * 1000,
        responseIdleTimeoutMs: limits.responseIdleTimeoutSeconds * 1000,
      },
      this.#guarded(socket, undefined, (err: Error) => {
        if (isAnswered) return;
        this.context.logger.warn("local service upgrade request failed", {
          listener: this.config.name,
          forward: formatAddress(this.config.forward),
          error: err,
        });
        if (err instanceof ServiceTimeout) closeWithProblem(socket, 504, err.code, err.message);
        else closeWithProblem(socket, 502, "ERR_UPSTREAM", "the local service could not be reached");
      }),
    );
    upstream.on(
      "upgrade",
      this.#guarded(socket, undefined, (answer: IncomingMessage, service: Socket, serviceHead: Buffer) => {
        isAnswered = true;
        this.#switched(decision, socket, head, answer, service, serviceHead);
      }),
    );
    upstream.on(
      "response",
      this.#guarded(socket, undefined, (answer: IncomingMessage) => {
        isAnswered = true;
        this.#declined(req, socket, head, answer);
      }),
    );
    decision.connection.onClosed(() => upstream.destroy());
    upstream.end();
  }

  /** The service answered 101: from now on the connection is a tunnel, piped both ways. */
  #switched(
    decision: Extract<Decision, { kind: "allowed" }>,
    socket: Socket,
    head: Buffer,
    answer: IncomingMessage,
    service: Socket,
    serviceHead: Buffer,
  ): void {
    const connection = decision.connection;
    if (connection.isClosed) return void service.destroy();
    this.#heads.forget(socket);
    // The request's answer deadline is over; the tunnel has the connection's idle timeout.
    service.setTimeout(0);
    service.removeAllListeners("timeout");
    connection.add(service);
    connection.tunnel = { request: decision.request, method: decision.request.method, path: decision.path };
    socket.write(responseHead(answer, true));
    if (serviceHead.length) socket.write(serviceHead);
    if (head.length) service.write(head);
    connection.relay(socket, service, this.context.limits.idleTimeoutSeconds * 1000, () => {
      this.context.metrics.closed.inc({ listener: this.config.name, reason: "idle" });
      connection.close("idle");
    });
  }

  /** The service answered without switching: the answer goes back, and the connection is HTTP again. */
  #declined(req: IncomingMessage, socket: Socket, head: Buffer, answer: IncomingMessage): void {
    const keepOpen = req.httpVersion === "1.1" &&
      !/(^|,)\s*close\s*(,|$)/i.test(req.headers.connection ?? "");
    writeAnswer(answer, socket, req.method === "HEAD", (isComplete) => {
      if (!isComplete || !keepOpen || socket.destroyed) {
        socket.destroy();
        return;
      }
      if (head.length) socket.unshift(head);
      this.serve(socket, true);
    });
  }
}
