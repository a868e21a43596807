/**
 * The answers the HTTP mode of an inbound listener gives itself (RFC 9457 problem bodies): 400
 * for a request it will not forward, 403 for a policy denial, 408 for a request head that took
 * too long, 500 for the proxy's own failure, 502 and 504 for a local service that failed or did
 * not answer in time.
 *
 * @module
 */

import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { Buffer } from "node:buffer";

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  502: "Bad Gateway",
  504: "Gateway Timeout",
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

/** Answers `res` with a problem; `close` ends the connection after it. */
export function sendProblem(
  res: ServerResponse,
  status: number,
  code: string,
  detail: string,
  close = false,
): void {
  const body = problemBody(status, code, detail);
  res.writeHead(status, {
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
    ...(close ? { connection: "close" } : {}),
  });
  res.end(body);
}

/** A whole problem response that closes the connection, for sockets outside node:http's response object. */
export function problemText(status: number, code: string, detail: string): string {
  const body = problemBody(status, code, detail);
  return `HTTP/1.1 ${status} ${
    STATUS_TEXT[status] ?? "Error"
  }\r\ncontent-type: application/problem+json\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * Answers a raw socket with a problem and closes it once the answer is written. Sockets are
 * half-open capable (a FIN from the peer ends only its direction), so ending ours alone would
 * leave the connection open for as long as the peer keeps its side.
 */
export function closeWithProblem(socket: Socket, status: number, code: string, detail: string): void {
  if (!socket.writable) return void socket.destroy();
  // A peer that reads nothing gets a second to take the answer.
  const timer = setTimeout(() => socket.destroy(), 1000);
  timer.unref?.();
  socket.once("close", () => clearTimeout(timer));
  socket.end(problemText(status, code, detail), () => socket.destroy());
}
