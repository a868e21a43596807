/**
 * Reading the sockets the proxy opens itself (to local services, to upstreams) into memory
 * the connection owns (node:net's and node:tls's `onread` option) instead of a new buffer per
 * chunk. A new buffer per read makes garbage at the rate bytes flow, and the full collections
 * that external memory brings cost a bulk transfer more than its copying (26 in 3 s in one
 * sidecar, each 2 to 10 ms).
 *
 * Every chunk is written on at once. Two cases, because the two read loops differ:
 * - **Plain TCP** (`direct`): libuv reads into the one buffer and calls back once per read;
 *   when the write is still queued (it refers to that buffer), returning false stops reading
 *   until the write is done. Nothing is ever overwritten while queued.
 * - **TLS** (`slots`): node:tls decrypts every record a read brought, one callback each, even
 *   after a callback asked to stop. Each record is therefore copied into a free slot of a small
 *   ring the connection owns (a slot is free again when its write is done); with no slot free it
 *   gets a buffer of its own, and reading stops until the writes are done.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/**
 * Only on Node, whose sockets are done with a written chunk when its write callback runs and
 * have taken it already when `writableLength` is 0 after `write()`. Deno's node:net is not: a
 * reused buffer corrupted streams there. Other runtimes get a buffer per read, node:net's default.
 */
export const isOwnBufferReadSafe = typeof process === "object" && !("deno" in process.versions) &&
  !("bun" in process.versions);

/** TLS hands cleartext over in records of at most 16 KiB. */
export const TLS_RECORD_BYTES = 16 * 1024;
/** What one plain TCP read fills. */
export const TCP_READ_BYTES = 64 * 1024;
/** Slots per TLS connection: the records one 64 KiB read of ciphertext holds. */
const TLS_SLOTS = 4;

/** One socket's reads into memory of its own, and where they go. */
export class OwnBufferReads {
  readonly #readBuffer: Buffer;
  readonly #slots?: { memory: Buffer; isBusy: boolean[] };
  #source?: Socket;
  #target?: Socket;
  /** Reads that came before there was a destination (a server that speaks first): copies. */
  #early: Buffer[] = [];
  /** Writes still queued in `#target`. */
  #queued = 0;
  readonly #resume = () => this.#source?.resume();

  private constructor(readBytes: number, slots: number) {
    this.#readBuffer = Buffer.allocUnsafe(readBytes);
    if (slots > 0) {
      this.#slots = { memory: Buffer.allocUnsafe(slots * readBytes), isBusy: new Array(slots).fill(false) };
    }
  }

  /** For a plain TCP socket. */
  static direct(): OwnBufferReads {
    return new OwnBufferReads(TCP_READ_BYTES, 0);
  }

  /** For a TLS socket. */
  static slots(): OwnBufferReads {
    return new OwnBufferReads(TLS_RECORD_BYTES, TLS_SLOTS);
  }

  /** The `onread` option to create the socket with. */
  get onread(): { buffer: Buffer; callback: (bytes: number) => boolean } {
    return { buffer: this.#readBuffer, callback: (bytes) => this.#read(bytes) };
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
      // Held until the connection is verified and relayed; reading stops meanwhile.
      this.#early.push(Buffer.from(this.#readBuffer.subarray(0, bytes)));
      return false;
    }
    return this.#slots ? this.#writeFromSlot(target, bytes, this.#slots) : this.#writeDirect(target, bytes);
  }

  #writeDirect(target: Socket, bytes: number): boolean {
    target.write(this.#readBuffer.subarray(0, bytes), this.#resume);
    // Still queued: it refers to the read buffer, so nothing more is read into it until it has left.
    return target.writableLength === 0;
  }

  #writeFromSlot(target: Socket, bytes: number, slots: { memory: Buffer; isBusy: boolean[] }): boolean {
    const free = slots.isBusy.indexOf(false);
    const size = this.#readBuffer.length;
    let chunk: Buffer;
    if (free < 0) {
      chunk = Buffer.from(this.#readBuffer.subarray(0, bytes));
    } else {
      chunk = slots.memory.subarray(free * size, free * size + bytes);
      this.#readBuffer.copy(chunk, 0, 0, bytes);
      slots.isBusy[free] = true;
    }
    this.#queued++;
    target.write(chunk, () => {
      if (free >= 0) slots.isBusy[free] = false;
      if (--this.#queued === 0) this.#source?.resume();
    });
    // Stop reading once no slot is left for the next record; the writes' end resumes it.
    return free >= 0 && slots.isBusy.includes(false);
  }
}
