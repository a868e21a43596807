/**
 * Reading the sockets the proxy opens itself (to local services, to upstreams) into buffers
 * from a pool instead of new ones (node:net's and node:tls's `onread` option, with a function
 * that hands out the buffer for each read). A new buffer per read makes garbage at the rate bytes
 * flow, and the full collections that much external memory brings cost a bulk transfer more than
 * its copying (26 in 3 s in one sidecar, each 2 to 10 ms).
 *
 * Each read has a buffer of its own until the write that carries it on is done; only then does
 * the buffer go back to the pool. So a chunk is never overwritten while it waits, however the
 * runtime reads (node:tls decrypts every record of a read, one callback each, and would overwrite
 * a shared buffer), and memory follows the bytes in flight, not the number of connections. The
 * pool keeps a bounded number of free buffers; beyond that they are left to the collector.
 * Backpressure is the streams': a write the destination cannot take at once pauses reading
 * until it drains.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/**
 * Node calls `onread.buffer` for every read when it is a function (documented, and checked by
 * the tests on Node 20 and 24). Deno's and Bun's node:net are left to their default, a buffer
 * per read: a reused buffer corrupted streams on Deno.
 */
export const canPoolReads = typeof process === "object" && !("deno" in process.versions) &&
  !("bun" in process.versions);

/** Free buffers of one size, reused. */
class BufferPool {
  readonly #free: Buffer[] = [];
  constructor(readonly bytes: number, readonly maxFree: number) {}

  take(): Buffer {
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared pool.
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.bytes);
  }

  give(buffer: Buffer): void {
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }
}

/** TLS hands cleartext over in records of at most 16 KiB; a plain TCP read fills up to 64 KiB. */
const TLS_POOL = new BufferPool(16 * 1024, 512);
const TCP_POOL = new BufferPool(64 * 1024, 128);

/** One socket's pooled reads, and where they go. */
export class PooledReads {
  #source?: Socket;
  #target?: Socket;
  /** Reads that came before there was a destination (a server that speaks first): chunk, buffer. */
  #early: [Buffer, Buffer][] = [];
  readonly #resume = () => this.#source?.resume();

  private constructor(readonly pool: BufferPool) {}

  /** For a TLS socket (cleartext records). */
  static forTls(): PooledReads {
    return new PooledReads(TLS_POOL);
  }

  /** For a plain TCP or Unix socket. */
  static forTcp(): PooledReads {
    return new PooledReads(TCP_POOL);
  }

  /** The `onread` option to create the socket with. */
  get onread(): { buffer: () => Buffer; callback: (bytes: number, buffer: Buffer) => boolean } {
    return { buffer: () => this.pool.take(), callback: (bytes, buffer) => this.#read(bytes, buffer) };
  }

  /** The socket created with {@link onread}. */
  attach(source: Socket): void {
    this.#source = source;
  }

  /** Sends what the socket reads to `target`, and ends `target` when the socket ends. */
  pipeTo(target: Socket): void {
    const source = this.#source!;
    this.#target = target;
    target.on("drain", this.#resume);
    let isFull = false;
    for (const [chunk, buffer] of this.#early.splice(0)) {
      isFull = !this.#write(target, chunk, buffer) || isFull;
    }
    // A peer that closed while its connection was being verified ended before there was a
    // target: its 'end' has been emitted, and waiting for it would hold the target open.
    if (source.readableEnded) {
      target.end();
      return;
    }
    source.once("end", () => target.end());
    if (!isFull) source.resume();
  }

  #read(bytes: number, buffer: Buffer): boolean {
    const chunk = buffer.subarray(0, bytes);
    const target = this.#target;
    if (!target) {
      // Held until the connection is verified and relayed; reading stops meanwhile.
      this.#early.push([chunk, buffer]);
      return false;
    }
    return this.#write(target, chunk, buffer);
  }

  /** Writes `chunk` (of `buffer`), giving `buffer` back once written; false when `target` is full. */
  #write(target: Socket, chunk: Buffer, buffer: Buffer): boolean {
    // A write that failed (the socket was destroyed) may not be done with the memory: not reused.
    return target.write(chunk, (err) => {
      if (!err) this.pool.give(buffer);
    });
  }
}
