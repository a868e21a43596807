/**
 * HTTP mode of an inbound listener: each HTTP/1.1 request on a verified connection is decided
 * by the listener's policies (method, normalized path, host, headers, the caller's SPIFFE ID),
 * answered 403 with a problem body when denied, and otherwise forwarded to the local service
 * with the verified identity in an `X-Forwarded-Client-Cert` header (Envoy's format: `By` the
 * proxy's own ID, `Hash` of the caller's certificate, `URI` the caller's ID). A client's own
 * XFCC header is always removed first: only the proxy may assert who called.
 *
 * Parsing is node:http's (strict, bounded head size and time); bodies stream both ways with
 * backpressure. Upgrades (WebSocket) are decided like any request, then piped.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  Agent,
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import { connect, type Socket } from "node:net";
import type { PolicyRequest } from "../../mod.ts";
import { formatAddress } from "./address.ts";
import type { InboundConfig } from "./config.ts";
import type { ProxyConnection } from "./connection.ts";
import { normalizeTarget } from "./http-path.ts";
import { type ListenerContext, recordDecision, verdictFields } from "./listener-context.ts";
import type { ListenerPolicy } from "./policy-files.ts";

/** Headers that describe one hop, never forwarded (RFC 9110 7.6.1), and the client's XFCC. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "x-forwarded-client-cert",
]);

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
    source?: string;
    destination: string;
    transport: "mtls" | "plaintext";
    connection: number;
    resumed?: boolean;
  };
  /** The proxy's own SPIFFE ID (XFCC `By`). */
  ownId(): string | undefined;
}

/** The HTTP layer of one inbound listener. */
export class HttpInbound {
  readonly #server: Server;
  readonly #agent: Agent;

  constructor(
    readonly config: InboundConfig,
    readonly policy: ListenerPolicy,
    readonly context: ListenerContext,
    readonly listener: HttpListenerView,
  ) {
    const limits = context.limits;
    this.#server = createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutSeconds * 1000,
      requestTimeout: 0,
      keepAliveTimeout: limits.idleTimeoutSeconds * 1000,
    }, (req, res) => this.#request(req, res));
    // No byte either way for this long, in a request or between requests, closes the connection.
    this.#server.timeout = limits.idleTimeoutSeconds * 1000;
    this.#server.on(
      "upgrade",
      (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head),
    );
    this.#server.on("connect", (_req: IncomingMessage, socket: Socket) => {
      socket.end(problemText(405, "ERR_METHOD_NOT_ALLOWED", "CONNECT is not proxied"));
    });
    this.#server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) return socket.destroy();
      const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
      socket.end(
        problemText(status, "ERR_BAD_REQUEST", `the request could not be parsed (${err.code ?? "error"})`),
      );
    });
    this.#agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64 });
  }

  /** Serves HTTP on a verified (or PERMISSIVE plain-text) connection's socket. */
  serve(socket: Socket): void {
    this.#server.emit("connection", socket);
    socket.resume();
  }

  /** Closes the pooled connections to the local service. */
  close(): void {
    this.#agent.destroy();
  }

  #decide(
    req: IncomingMessage,
    socket: Socket,
  ): { allowed: boolean; target?: string; connection?: ProxyConnection } {
    const connection = this.listener.connectionOf(socket);
    if (!connection) return { allowed: false };
    const normalized = normalizeTarget(req.url ?? "");
    if ("problem" in normalized) return { allowed: false, connection, target: normalized.problem };
    const base = this.listener.policyRequest(connection, socket);
    const attributes: Record<string, string | undefined> = {
      ...base.attributes as Record<string, string | undefined>,
    };
    for (const [key, header] of this.policy.headerKeys) attributes[key] = headerText(req.headers, header);
    const verdict = this.policy.evaluate({
      ...base,
      method: req.method,
      path: normalized.path,
      host: hostOf(req.headers.host),
      attributes,
    });
    recordDecision(this.context, {
      listener: this.config.name,
      direction: "inbound",
      ...verdictFields(verdict),
      ...this.listener.auditFields(connection),
      method: req.method,
      path: normalized.path,
    });
    return { allowed: verdict.decision.allowed, connection, target: normalized.path + normalized.query };
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    const decision = this.#decide(req, req.socket);
    if (!decision.connection) return void req.socket.destroy();
    if (!decision.allowed) {
      if (decision.target && !decision.target.startsWith("/")) {
        return sendProblem(res, 400, "ERR_BAD_REQUEST", decision.target);
      }
      return sendProblem(res, 403, "ERR_POLICY_DENIED", "denied by the authorization policy");
    }
    const forward = this.config.forward;
    const upstream = httpRequest({
      ...("path" in forward ? { socketPath: forward.path } : { host: forward.host, port: forward.port }),
      method: req.method,
      path: decision.target,
      headers: this.#forwardHeaders(req, decision.connection),
      agent: this.#agent,
      setHost: false,
      timeout: this.context.limits.connectTimeoutSeconds * 1000,
    });
    upstream.on("response", (answer) => {
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
    });
    upstream.on("timeout", () => upstream.destroy(new Error("the local service did not answer in time")));
    upstream.on("error", (err) => {
      this.context.logger.warn("local service request failed", {
        listener: this.config.name,
        forward: formatAddress(forward),
        error: err.message,
      });
      if (!res.headersSent) sendProblem(res, 502, "ERR_UPSTREAM", "the local service could not be reached");
      else res.destroy();
    });
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  #forwardHeaders(req: IncomingMessage, connection: ProxyConnection): Record<string, string | string[]> {
    const dropped = new Set(HOP_BY_HOP);
    for (const token of headerText(req.headers, "connection")?.split(",") ?? []) {
      dropped.add(token.trim().toLowerCase());
    }
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      const lower = name.toLowerCase();
      if (dropped.has(lower)) continue;
      const existing = headers[lower];
      headers[lower] = existing === undefined
        ? req.rawHeaders[i + 1]
        : [...(Array.isArray(existing) ? existing : [existing]), req.rawHeaders[i + 1]];
    }
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
    const decision = this.#decide(req, socket);
    if (!decision.connection || !decision.allowed) {
      const bad = decision.target && !decision.target.startsWith("/");
      socket.end(
        bad
          ? problemText(400, "ERR_BAD_REQUEST", decision.target!)
          : problemText(403, "ERR_POLICY_DENIED", "denied by the authorization policy"),
      );
      return;
    }
    const forward = this.config.forward;
    const local = "path" in forward
      ? connect({ path: forward.path })
      : connect({ host: forward.host, port: forward.port });
    decision.connection.add(local);
    const headers = this.#forwardHeaders(req, decision.connection);
    let text = `${req.method} ${decision.target} HTTP/${req.httpVersion}\r\n`;
    for (const [name, value] of Object.entries(headers)) {
      for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`;
    }
    // Upgrade and Connection are hop-by-hop for requests, but the upgrade needs them.
    text += `connection: upgrade\r\nupgrade: ${headerText(req.headers, "upgrade") ?? ""}\r\n\r\n`;
    local.once("connect", () => {
      local.write(text);
      if (head.length) local.write(head);
      const connection = decision.connection!;
      connection.relay(socket, local, this.context.limits.idleTimeoutSeconds * 1000, () => {
        this.context.metrics.closed.inc({ listener: this.config.name, reason: "idle" });
        connection.close("idle");
      });
    });
  }
}

function headerText(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

function hostOf(host: string | undefined): string | undefined {
  if (!host) return undefined;
  return host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d+$/, "");
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
};

function problemBody(status: number, code: string, detail: string): string {
  return JSON.stringify({
    type: `urn:meshauth:problem:${code.slice(4).toLowerCase().replaceAll("_", "-")}`,
    title: STATUS_TEXT[status] ?? "Error",
    status,
    detail,
    code,
  });
}

function sendProblem(res: ServerResponse, status: number, code: string, detail: string): void {
  const body = problemBody(status, code, detail);
  res.writeHead(status, {
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

/** A whole problem response, for sockets outside node:http's response object. */
function problemText(status: number, code: string, detail: string): string {
  const body = problemBody(status, code, detail);
  return `HTTP/1.1 ${status} ${
    STATUS_TEXT[status] ?? "Error"
  }\r\ncontent-type: application/problem+json\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
