/**
 * The agent's local status port: `GET /healthz` (the process is up), `GET /readyz` (every
 * workload has a valid certificate in its files; 503 with what is missing otherwise) and
 * `GET /metrics` (Prometheus), and with a status page (`listen.statusPage`) the live page at
 * `GET /` (`/status.js`, `/status.json`, `/events`). Plain HTTP on 127.0.0.1 by default; it
 * serves no secret. Time, size and connection limits keep a slow or hostile client from
 * holding it.
 *
 * @module
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { MeshAuthError } from "../mod.ts";
import { STATUS_PAGE_HTML, STATUS_PAGE_SCRIPT } from "./status/page.ts";
import type { StatusFeed } from "./status/status-feed.ts";

/** What the status port reports on. */
export interface OpsTarget {
  /** What `/readyz` reports: ready, or the workloads (and node identity) waited for. */
  readiness(): { isReady: boolean; waitingFor: string[] };
  /** False while stopping: `/healthz` answers 503. */
  isRunning(): boolean;
  /** The Prometheus text `/metrics` answers. */
  renderMetrics(): string;
  /** The live status page's data; without it, `/` and the page's paths answer 404. */
  statusFeed?: StatusFeed;
}

/** A listening status port. */
export interface OpsServer {
  /** The address it listens on. */
  host: string;
  /** The port it took (the one asked for, or a free one for 0). */
  port: number;
  /** `http://host:port`. */
  url: string;
  /** Stops listening and ends open connections (the page's streams too). */
  close(): Promise<void>;
}

const ROUTES = new Set(["/healthz", "/readyz", "/metrics"]);
const PAGE_ROUTES = new Set(["/", "/status.js", "/status.json", "/events"]);

/**
 * The page answers only to a loopback name in `Host`: a web page that rebinds its own DNS name
 * to 127.0.0.1 would otherwise read the node's workloads and decisions from the user's browser.
 */
function isLoopbackHostHeader(host: string | undefined): boolean {
  const name = (host ?? "").replace(/:\d+$/, "").toLowerCase();
  return name === "localhost" || name === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** The status port is taken; the message names the setting that moves it. */
export class StatusPortInUse extends MeshAuthError {
  /** Stable code of this class: `ERR_STATUS_PORT_IN_USE`. */
  static override code: string = "ERR_STATUS_PORT_IN_USE";
  /** `message` names the address and the setting that moves it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StatusPortInUse";
  }
}

function answer(response: ServerResponse, status: number, body: string, type = "application/json"): void {
  response.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  response.end(body);
}

/**
 * Serves the status endpoints of `target` on `host:port` (0 picks a free port). `setting` names,
 * in the message of a port in use, the configuration that moves it, and `portName` what the port
 * is called there (the agent's by default; `meshauth proxy`'s is its ops port).
 */
export async function startOpsServer(
  target: OpsTarget,
  host: string,
  port: number,
  setting: string = "listen.port (or MESHAUTH_AGENT_LISTEN_PORT)",
  portName: string = "status port",
): Promise<OpsServer> {
  const server: Server = createServer({ maxHeaderSize: 8 * 1024 }, (request: IncomingMessage, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const feed = target.statusFeed;
    const isPage = feed !== undefined && PAGE_ROUTES.has(path);
    if (!ROUTES.has(path) && !isPage) {
      return answer(response, 404, JSON.stringify({ error: `no route ${path}` }));
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.setHeader("allow", "GET, HEAD");
      return answer(response, 405, JSON.stringify({ error: `${request.method} is not allowed` }));
    }
    if (isPage) {
      if (!isLoopbackHostHeader(request.headers.host)) {
        return answer(
          response,
          403,
          JSON.stringify({ error: "the status page answers to 127.0.0.1 or localhost only" }),
        );
      }
      for (const [name, value] of Object.entries(PAGE_HEADERS)) response.setHeader(name, value);
      if (path === "/") return answer(response, 200, STATUS_PAGE_HTML, "text/html; charset=utf-8");
      if (path === "/status.js") {
        return answer(response, 200, STATUS_PAGE_SCRIPT, "text/javascript; charset=utf-8");
      }
      if (path === "/status.json") return answer(response, 200, JSON.stringify(feed.snapshot()));
      if (request.method === "HEAD") return answer(response, 200, "", "text/event-stream");
      return feed.follow(response);
    }
    if (path === "/healthz") {
      const isRunning = target.isRunning();
      return answer(
        response,
        isRunning ? 200 : 503,
        JSON.stringify({ status: isRunning ? "ok" : "stopping" }),
      );
    }
    if (path === "/readyz") {
      const { isReady, waitingFor } = target.readiness();
      return answer(
        response,
        isReady ? 200 : 503,
        JSON.stringify(
          isReady ? { status: "ready" } : { status: "not ready", waitingFor: waitingFor.slice(0, 50) },
        ),
      );
    }
    answer(response, 200, target.renderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "EADDRINUSE"
          ? new StatusPortInUse(
            `the ${portName} ${host}:${port} is in use; set ${setting}`,
          )
          : err,
      );
    });
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shown = host.includes(":") ? `[${host}]` : host;
  return {
    host,
    port: address.port,
    url: `http://${shown}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
