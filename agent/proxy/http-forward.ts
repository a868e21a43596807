/**
 * A request from the HTTP mode of an inbound listener to its local service, with two deadlines
 * kept apart: connecting (`connectTimeoutSeconds`, for a new connection only; a pooled one is
 * already open) and the answer (`responseIdleTimeoutSeconds`: no byte from the service for that
 * long, before its answer begins or between the answer's bytes). A slow answer, a long poll or
 * a stream of server-sent events is never cut off while the service keeps sending.
 *
 * @module
 */

import { type Agent, type ClientRequest, request as httpRequest } from "node:http";
import { MeshAuthError } from "../../mod.ts";
import type { SocketAddress } from "./address.ts";

/**
 * Why a request to the local service failed before its answer ended: `ERR_UPSTREAM_TIMEOUT`,
 * the code of the 504 problem the caller gets.
 */
export class ServiceTimeout extends MeshAuthError {
  /** Stable code of this class: `ERR_UPSTREAM_TIMEOUT`. */
  static override code: string = "ERR_UPSTREAM_TIMEOUT";
  /** `phase` is the deadline that passed: connecting, or waiting for the next byte of the answer. */
  constructor(readonly phase: "connect" | "response", readonly timeoutMs: number) {
    super(
      phase === "connect"
        ? `connecting to the local service took longer than ${timeoutMs / 1000}s`
        : `the local service sent nothing for ${timeoutMs / 1000}s`,
    );
    this.name = "ServiceTimeout";
  }
}

/** What {@link requestService} sends, and its deadlines. */
export interface ServiceRequestOptions {
  forward: SocketAddress;
  method: string;
  /** The normalized request target. */
  target: string;
  headers: Record<string, string>;
  /** A pool of connections, or false for a connection of the request's own (an upgrade). */
  agent: Agent | false;
  connectTimeoutMs: number;
  responseIdleTimeoutMs: number;
}

/**
 * Starts the request. `failed` is called at most once, with a {@link ServiceTimeout} or the
 * request's error, whatever the runtime then does with the destroyed request (Deno's node:http
 * client retries a request whose pooled connection was destroyed, and reports nothing).
 */
export function requestService(options: ServiceRequestOptions, failed: (err: Error) => void): ClientRequest {
  const { forward, connectTimeoutMs, responseIdleTimeoutMs } = options;
  const request = httpRequest({
    ...("path" in forward ? { socketPath: forward.path } : { host: forward.host, port: forward.port }),
    method: options.method,
    path: options.target,
    headers: options.headers,
    agent: options.agent,
    setHost: false,
    // The socket's idle timer: restarted by every byte either way, so it measures silence.
    timeout: responseIdleTimeoutMs,
  });
  let hasFailed = false;
  const fail = (err: Error) => {
    if (hasFailed) return;
    hasFailed = true;
    failed(err);
    request.destroy(err);
  };
  request.on("socket", (socket) => {
    if (!socket.connecting) return;
    const timer = setTimeout(() => fail(new ServiceTimeout("connect", connectTimeoutMs)), connectTimeoutMs);
    const clear = () => clearTimeout(timer);
    socket.once("connect", clear);
    socket.once("close", clear);
  });
  request.on("timeout", () => fail(new ServiceTimeout("response", responseIdleTimeoutMs)));
  request.on("error", fail);
  return request;
}
