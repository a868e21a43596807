/**
 * Writing the local service's answer to an upgrade request (WebSocket and the like) onto the
 * caller's raw socket, which node:http has handed over. The proxy pipes bytes both ways only
 * after the service answered `101 Switching Protocols`; any other answer is an ordinary HTTP
 * response, written here with its own framing, after which the connection is HTTP again and its
 * next request is decided like any other. (Piping before the 101 let a service that ignores
 * Upgrade read the caller's following requests, undecided, with a forged XFCC.)
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";

/** Fields of one hop that are not passed on with an ordinary answer. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/** The status line and fields of `answer`, as text; hop-by-hop fields dropped unless `keepHopByHop` (a 101 needs them). */
export function responseHead(answer: IncomingMessage, keepHopByHop: boolean, extra: string[] = []): string {
  let text = `HTTP/1.1 ${answer.statusCode} ${answer.statusMessage ?? ""}\r\n`;
  const raw = answer.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (keepHopByHop || !HOP_BY_HOP.has(raw[i].toLowerCase())) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  for (const line of extra) text += `${line}\r\n`;
  return `${text}\r\n`;
}

/**
 * Writes the service's ordinary (not 101) answer to `socket` as an HTTP/1.1 response: the body
 * with its Content-Length, or chunked when it has none; none for HEAD, 1xx, 204 and 304 (RFC 9112
 * 6.3). Backpressure is the socket's. `done` is called once the whole answer is written (true),
 * or when it could not be (false).
 */
export function writeAnswer(
  answer: IncomingMessage,
  socket: Socket,
  isHeadRequest: boolean,
  done: (isComplete: boolean) => void,
): void {
  const status = answer.statusCode ?? 502;
  const hasBody = !isHeadRequest && status >= 200 && status !== 204 && status !== 304;
  const isChunked = hasBody && answer.headers["content-length"] === undefined;
  socket.write(responseHead(answer, false, isChunked ? ["transfer-encoding: chunked"] : []));
  let isSettled = false;
  const settle = (isComplete: boolean) => {
    if (isSettled) return;
    isSettled = true;
    socket.off("close", onClose);
    done(isComplete);
  };
  const onClose = () => {
    answer.destroy();
    settle(false);
  };
  socket.once("close", onClose);
  answer.on("error", () => settle(false));
  answer.on("data", (chunk: Buffer) => {
    if (!hasBody || chunk.length === 0) return;
    const frame = isChunked
      ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")])
      : chunk;
    if (!socket.write(frame)) {
      answer.pause();
      socket.once("drain", () => answer.resume());
    }
  });
  answer.on("end", () => {
    if (isChunked) socket.write("0\r\n\r\n");
    settle(answer.complete);
  });
}
