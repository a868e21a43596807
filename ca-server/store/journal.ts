/**
 * An append-only file of JSON lines with group commit. Each record is written at once with
 * one synchronous `write` (an `O_APPEND` write of a few hundred bytes into the page cache
 * takes microseconds, where a trip through the thread pool costs over 100 µs of CPU), and the
 * records written meanwhile are made durable together by one `fdatasync`, off the event loop.
 * Each caller's promise settles only once its line is on disk. A crash can at worst leave a
 * torn last line, which readers skip and the next writer fences off with a newline, so what
 * was committed before is never damaged.
 *
 * @module
 */

import { closeSync, fdatasync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { open, stat } from "node:fs/promises";

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** One append-only JSON-lines file. Several processes may append to the same file. */
export class Journal {
  #fd?: number;
  /** Appended in this turn, not yet written. */
  #unwritten: (Waiter & { line: string })[] = [];
  /** A write stopped part-way through a line. */
  #isTorn = false;
  /** Written, waiting for the next `fdatasync`. */
  #unsynced: Waiter[] = [];
  #isSyncing = false;
  /** Called once no `fdatasync` is running or needed. */
  #onIdle: (() => void)[] = [];
  #readOffset = 0;
  #syncTimer?: ReturnType<typeof setInterval>;
  readonly #isDurable: boolean;

  /**
   * With `isDurable: false`, an append settles once the kernel has the bytes (a crash of the
   * process loses nothing, a crash of the machine loses at most the last second) and
   * `fdatasync` runs once a second instead of once per group.
   */
  constructor(readonly path: string, options: { isDurable?: boolean } = {}) {
    this.#isDurable = options.isDurable ?? true;
  }

  open(): Promise<void> {
    const fd = openSync(this.path, "a", 0o600);
    try {
      const size = fstatSync(fd).size;
      if (size > 0) {
        const last = new Uint8Array(1);
        const reader = openSync(this.path, "r");
        try {
          readSync(reader, last, 0, 1, size - 1);
        } finally {
          closeSync(reader);
        }
        // A torn line from a crash: fence it off so the next record starts on its own line.
        if (last[0] !== 0x0a) writeSync(fd, "\n");
      }
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#fd = fd;
    if (!this.#isDurable) {
      this.#syncTimer = setInterval(() => {
        if (this.#fd !== undefined) fdatasync(this.#fd, () => {});
      }, 1000);
      (this.#syncTimer as { unref?: () => void }).unref?.();
    }
    return Promise.resolve();
  }

  async close(): Promise<void> {
    if (this.#unwritten.length > 0) this.#write();
    if (this.#isSyncing) await new Promise<void>((resolve) => this.#onIdle.push(resolve));
    if (this.#syncTimer) clearInterval(this.#syncTimer);
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd === undefined) return;
    await new Promise<void>((resolve) => fdatasync(fd, () => resolve()));
    closeSync(fd);
  }

  /** Appends one record; resolves when it is durable. */
  append(record: unknown): Promise<void> {
    if (this.#fd === undefined) return Promise.reject(new Error(`journal ${this.path} is not open`));
    const line = `${JSON.stringify(record)}\n`;
    return new Promise((resolve, reject) => {
      // Records appended in the same turn (an issuance and its audit entry) share one write.
      if (this.#unwritten.length === 0) queueMicrotask(() => this.#write());
      this.#unwritten.push({ line, resolve, reject });
    });
  }

  #write(): void {
    const batch = this.#unwritten;
    if (batch.length === 0) return;
    this.#unwritten = [];
    try {
      if (this.#fd === undefined) throw new Error(`journal ${this.path} is not open`);
      const lines = batch.length === 1 ? batch[0].line : batch.map((b) => b.line).join("");
      // After a write that failed part-way (a full disk), start on a line of our own.
      const bytes = new TextEncoder().encode(this.#isTorn ? `\n${lines}` : lines);
      // One write(2) with O_APPEND lands whole at the end, even with other processes appending.
      let written = 0;
      try {
        while (written < bytes.length) written += writeSync(this.#fd, bytes, written);
      } catch (err) {
        if (written > 0) this.#isTorn = true;
        throw err;
      }
      this.#isTorn = false;
    } catch (err) {
      for (const waiter of batch) waiter.reject(err);
      return;
    }
    if (!this.#isDurable) {
      for (const waiter of batch) waiter.resolve();
      return;
    }
    this.#unsynced.push(...batch);
    if (!this.#isSyncing) this.#sync();
  }

  /** One `fdatasync` for every record written before it started; repeats while more arrive. */
  #sync(): void {
    const group = this.#unsynced;
    this.#unsynced = [];
    this.#isSyncing = true;
    fdatasync(this.#fd!, (err) => {
      for (const waiter of group) err ? waiter.reject(err) : waiter.resolve();
      this.#isSyncing = false;
      if (this.#unsynced.length > 0) this.#sync();
      else for (const idle of this.#onIdle.splice(0)) idle();
    });
  }

  /**
   * Reads the complete lines appended since the last call (by any process) and hands each
   * parsed record to `onRecord`. Lines that do not parse (torn by a crash) are skipped.
   */
  async readNew(onRecord: (record: unknown) => void): Promise<void> {
    let size: number;
    try {
      size = (await stat(this.path)).size;
    } catch {
      return;
    }
    if (size <= this.#readOffset) return;
    const reader = await open(this.path, "r");
    try {
      const bytes = new Uint8Array(size - this.#readOffset);
      const { bytesRead } = await reader.read(bytes, 0, bytes.length, this.#readOffset);
      const lastNewline = bytes.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (lastNewline < 0) return;
      const text = new TextDecoder().decode(bytes.subarray(0, lastNewline));
      this.#readOffset += lastNewline + 1;
      for (const line of text.split("\n")) {
        if (line === "") continue;
        let record: unknown;
        try {
          record = JSON.parse(line);
        } catch {
          continue;
        }
        onRecord(record);
      }
    } finally {
      await reader.close();
    }
  }
}
