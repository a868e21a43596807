/**
 * Reading a socket into one buffer of its own instead of a new one per read (node:net's and
 * node:tls's `onread` option), for the sockets the proxy opens itself: its connections to local
 * services and to upstreams. A read of a fresh buffer for every chunk makes garbage at the rate
 * bytes flow, and the garbage collections it brings cost a bulk transfer more than the copying.
 *
 * The buffer is read again only once what was read from it has left: each chunk is written on at
 * once, and when the destination cannot take it at once, reading pauses until that write is done.
 * So no chunk is ever overwritten while still queued, and nothing is held beyond one buffer.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/** TLS hands cleartext over in records of at most 16 KiB; plain TCP reads fill 64 KiB. */
export const TLS_READ_BYTES = 16 * 1024;
export const TCP_READ_BYTES = 64 * 1024;

/** One socket's reads into its own buffer, and where they go. */
export class OwnBufferReads {
  readonly #buffer: Buffer;
  #source?: Socket;
  #target?: Socket;
  /** Reads that came before there was a destination (a server that speaks first): copies. */
  #early: Buffer[] = [];
  readonly #resume = () => this.#source?.resume();

  constructor(bytes: number) {
    this.#buffer = Buffer.allocUnsafe(bytes);
  }

  /** The `onread` option to create the socket with. */
  get onread(): { buffer: Buffer; callback: (bytes: number, buffer: Buffer) => boolean } {
    return { buffer: this.#buffer, callback: (bytes) => this.#read(bytes) };
  }

  /** The socket created with {@link onread}. */
  attach(source: Socket): void {
    this.#source = source;
  }

  /** Sends what the socket reads to `target`, and ends `target` when the socket ends. */
  pipeTo(target: Socket): void {
    const source = this.#source!;
    this.#target = target;
    source.once("end", () => target.end());
    for (const chunk of this.#early.splice(0)) target.write(chunk);
    if (target.writableLength > 0) target.write(Buffer.alloc(0), this.#resume);
    else source.resume();
  }

  #read(bytes: number): boolean {
    const target = this.#target;
    if (!target) {
      // Held until the connection is verified and relayed; one buffer's worth, then reading pauses.
      this.#early.push(Buffer.from(this.#buffer.subarray(0, bytes)));
      return false;
    }
    target.write(this.#buffer.subarray(0, bytes), this.#resume);
    // Still queued: it refers to this buffer, so nothing more is read into it until it has left.
    return target.writableLength === 0;
  }
}
