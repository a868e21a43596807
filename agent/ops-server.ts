/**
 * The agent's local status port: `GET /healthz` (the process is up), `GET /readyz` (every
 * workload has a valid certificate in its files; 503 with what is missing otherwise) and
 * `GET /metrics` (Prometheus). Plain HTTP on 127.0.0.1 by default; it serves no secret. Time,
 * size and connection limits keep a slow or hostile client from holding it.
 *
 * @module
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { MeshAuthError } from "../mod.ts";

/** What the status port reports on. */
export interface OpsTarget {
  readiness(): { isReady: boolean; waitingFor: string[] };
  isRunning(): boolean;
  renderMetrics(): string;
}

/** A listening status port. */
export interface OpsServer {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

const ROUTES = new Set(["/healthz", "/readyz", "/metrics"]);

/** The status port is taken; the message names the setting that moves it. */
export class StatusPortInUse extends MeshAuthError {
  static override code = "ERR_STATUS_PORT_IN_USE";
  override name = "StatusPortInUse";
  override code = StatusPortInUse.code;
}

function answer(response: ServerResponse, status: number, body: string, type = "application/json"): void {
  response.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  response.end(body);
}

/** Serves the status endpoints of `target` on `host:port` (0 picks a free port). */
export async function startOpsServer(target: OpsTarget, host: string, port: number): Promise<OpsServer> {
  const server: Server = createServer({ maxHeaderSize: 8 * 1024 }, (request: IncomingMessage, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (!ROUTES.has(path)) return answer(response, 404, JSON.stringify({ error: `no route ${path}` }));
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.setHeader("allow", "GET, HEAD");
      return answer(response, 405, JSON.stringify({ error: `${request.method} is not allowed` }));
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
            `the agent's status port ${host}:${port} is in use; set listen.port (or MESHAUTH_AGENT_LISTEN_PORT)`,
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
