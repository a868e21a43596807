/**
 * One proxied connection: its sockets (the peer's and the local one), the verified peer, and
 * the relay between them. Bytes are piped both ways with the streams' own backpressure (a
 * write the other side cannot take pauses the reading side, so nothing queues without bound);
 * a half-close travels through (FIN for FIN); an error, a reset, the idle timeout, or the proxy
 * closes both sockets at once.
 *
 * @module
 */

import type { Socket } from "node:net";
import type { PolicyRequest } from "../../mod.ts";
import type { PooledReads } from "./pooled-reads.ts";
import type { VerifiedPeer } from "./peer-verifier.ts";

/** Why the proxy closed a connection. */
export type CloseReason =
  | "revoked"
  | "unverified"
  | "secure_naming"
  | "denied"
  | "idle"
  | "handshake_timeout"
  | "shutdown";

/** An open connection, as the proxy tracks it. */
export class ProxyConnection {
  /** The peer's verified SVID; absent for plain text. */
  peer?: VerifiedPeer;
  /** The peer's TLS session was resumed. */
  isResumed = false;
  /**
   * HTTP mode: the request that upgraded this connection to a tunnel (WebSocket and the like),
   * decided again when the policies change.
   */
  tunnel?: { request: PolicyRequest; method?: string; path: string };
  #sockets: Socket[] = [];
  #deadline?: ReturnType<typeof setTimeout>;
  #isClosed = false;
  #closeReason?: CloseReason;
  #onClosed: ((connection: ProxyConnection) => void)[] = [];
  readonly openedAt = performance.now();

  /** The peer's IP address. */
  readonly remoteIp: string | undefined;
  /** `ip:port` (or `[ip]:port`) of the peer, for audit records. */
  readonly remoteAddress: string | undefined;

  constructor(readonly id: number, public transport: "mtls" | "plaintext", accepted: Socket) {
    this.remoteIp = accepted.remoteAddress;
    this.remoteAddress = accepted.remoteAddress === undefined
      ? undefined
      : accepted.remoteFamily === "IPv6"
      ? `[${accepted.remoteAddress}]:${accepted.remotePort}`
      : `${accepted.remoteAddress}:${accepted.remotePort}`;
  }

  /** Calls `onExpire` unless {@link established} is called within `ms`. */
  setDeadline(ms: number, onExpire: () => void): void {
    this.#deadline = setTimeout(onExpire, ms);
  }

  /** The connection is relaying: the deadline is off. Answers the seconds it took since accept. */
  established(): number {
    clearTimeout(this.#deadline);
    return (performance.now() - this.openedAt) / 1000;
  }

  /** True once closed. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Why the proxy closed it, if the proxy did. */
  get closeReason(): CloseReason | undefined {
    return this.#closeReason;
  }

  /** Bytes the proxy holds for this connection now (read and not yet written on). */
  get bufferedBytes(): number {
    let total = 0;
    for (const socket of this.#sockets) total += socket.writableLength + socket.readableLength;
    return total;
  }

  /** Adds a socket: its error or close closes the connection. */
  add(socket: Socket): void {
    if (this.#isClosed) {
      socket.destroy();
      return;
    }
    this.#sockets.push(socket);
    socket.on("error", () => this.close());
    socket.once("close", () => this.close());
  }

  /**
   * Hands `from`'s place to `to`: a raw socket that TLS now wraps is closed through its TLS
   * socket only (destroying both frees the one handle twice).
   */
  replace(from: Socket, to: Socket): void {
    this.#sockets = this.#sockets.filter((s) => s !== from);
    this.add(to);
  }

  /** Calls `listener` once the connection is closed. */
  onClosed(listener: (connection: ProxyConnection) => void): void {
    if (this.#isClosed) listener(this);
    else this.#onClosed.push(listener);
  }

  /**
   * Pipes `peer` and `local` into each other; `idleTimeoutMs` without a byte either way calls
   * `onIdle`. A socket the proxy opened with {@link PooledReads} is read through them.
   */
  relay(
    peer: Socket,
    local: Socket,
    idleTimeoutMs: number,
    onIdle: () => void,
    reads: { peer?: PooledReads; local?: PooledReads } = {},
  ): void {
    if (this.#isClosed) return;
    peer.setNoDelay(true);
    local.setNoDelay(true);
    if (reads.peer) reads.peer.pipeTo(local);
    else peer.pipe(local);
    if (reads.local) reads.local.pipeTo(peer);
    else local.pipe(peer);
    // Reads and writes both restart a socket's timer, so one socket's timer sees both directions.
    local.setTimeout(idleTimeoutMs, onIdle);
    peer.resume();
    local.resume();
  }

  /** Closes every socket; `reason` says why when the proxy decided it. */
  close(reason?: CloseReason): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closeReason = reason;
    clearTimeout(this.#deadline);
    for (const socket of this.#sockets) socket.destroy();
    for (const listener of this.#onClosed.splice(0)) listener(this);
  }
}
