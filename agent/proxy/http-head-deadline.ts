/**
 * `headersTimeoutSeconds` for the HTTP mode of an inbound listener. node:http arms its own
 * header timer only in a server that called `listen()`; the proxy hands it sockets it accepted
 * itself (after TLS and verification), so that timer never runs, and a client trickling a head a
 * byte at a time (slowloris) kept the connection until the idle timeout. Here each connection
 * has its own deadline:
 *
 * - a new connection's first request head must be complete within the timeout;
 * - between requests the connection may rest (the idle timeout applies); once a byte of the
 *   next request arrives, its head must be complete within the timeout.
 *
 * One timer per listener looks at every waiting connection a few times per timeout (at most
 * once a second), so a deadline is kept to within that period; a byte of a new request is seen
 * by the socket's count of bytes read, which costs nothing per byte.
 *
 * @module
 */

import type { Socket } from "node:net";

interface HeadClock {
  /** Requests whose head is complete and whose answer is not yet written. */
  inFlight: number;
  /** When the head now awaited began (ms); undefined while none is awaited, or the connection rests. */
  startedAt?: number;
  /** Bytes read when the connection began to rest: more means a request began. */
  restingAt?: number;
}

/** The head deadlines of one listener's HTTP connections. */
export class HeadDeadlines {
  readonly #clocks = new Map<Socket, HeadClock>();
  readonly #sweepMs: number;
  #timer?: ReturnType<typeof setInterval>;

  constructor(readonly timeoutMs: number, readonly expired: (socket: Socket) => void) {
    this.#sweepMs = Math.min(1000, Math.max(50, Math.floor(timeoutMs / 4)));
  }

  /** A connection starts serving HTTP: its first head is awaited now, or (`isResting`) once it sends a byte. */
  opened(socket: Socket, isResting = false): void {
    if (!this.#clocks.has(socket)) socket.once("close", () => this.forget(socket));
    this.#clocks.set(
      socket,
      isResting
        ? { inFlight: 0, restingAt: socket.bytesRead }
        : { inFlight: 0, startedAt: performance.now() },
    );
    this.#timer ??= setInterval(() => this.#sweep(), this.#sweepMs);
    this.#timer.unref?.();
  }

  /** A request's head is complete. */
  headComplete(socket: Socket): void {
    const clock = this.#clocks.get(socket);
    if (!clock) return;
    clock.inFlight++;
    clock.startedAt = undefined;
    clock.restingAt = undefined;
  }

  /** A request's answer is done: with none left in flight, the connection rests until its next request begins. */
  answered(socket: Socket): void {
    const clock = this.#clocks.get(socket);
    if (!clock) return;
    clock.inFlight = Math.max(0, clock.inFlight - 1);
    if (clock.inFlight === 0) clock.restingAt = socket.bytesRead;
  }

  /** The connection no longer speaks HTTP (closed, or upgraded to a tunnel). */
  forget(socket: Socket): void {
    this.#clocks.delete(socket);
    if (this.#clocks.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Stops watching every connection. */
  close(): void {
    for (const socket of [...this.#clocks.keys()]) this.forget(socket);
  }

  #sweep(): void {
    const now = performance.now();
    for (const [socket, clock] of this.#clocks) {
      if (clock.inFlight > 0) continue;
      if (clock.startedAt === undefined) {
        // A byte came since the connection began to rest: the next head has begun (within one sweep).
        if (clock.restingAt !== undefined && socket.bytesRead > clock.restingAt) {
          clock.startedAt = now;
          clock.restingAt = undefined;
        }
      } else if (now - clock.startedAt >= this.timeoutMs) {
        this.forget(socket);
        this.expired(socket);
      }
    }
  }
}
