/**
 * An append-only file of JSON lines with group commit: concurrent appends are written with one
 * `write` and made durable with one `fdatasync`, and each caller's promise settles only once
 * its line is on disk. A crash can at worst leave a torn last line, which readers skip and the
 * next writer fences off with a newline, so what was committed before is never damaged.
 *
 * @module
 */

import { type FileHandle, open, stat } from "node:fs/promises";

/** One append-only JSON-lines file. Several processes may append to the same file. */
export class Journal {
  #handle?: FileHandle;
  #pending: { line: string; resolve: () => void; reject: (err: unknown) => void }[] = [];
  #flushing?: Promise<void>;
  #readOffset = 0;
  #syncTimer?: ReturnType<typeof setInterval>;
  readonly #isDurable: boolean;

  /**
   * With `isDurable: false`, an append settles once the kernel has the bytes (a crash of the
   * process loses nothing, a crash of the machine loses at most the last second) and
   * `fdatasync` runs once a second instead of once per batch.
   */
  constructor(readonly path: string, options: { isDurable?: boolean } = {}) {
    this.#isDurable = options.isDurable ?? true;
  }

  async open(): Promise<void> {
    this.#handle = await open(this.path, "a", 0o600);
    const size = (await this.#handle.stat()).size;
    if (size > 0) {
      const last = new Uint8Array(1);
      const reader = await open(this.path, "r");
      try {
        await reader.read(last, 0, 1, size - 1);
      } finally {
        await reader.close();
      }
      // A torn line from a crash: fence it off so the next record starts on its own line.
      if (last[0] !== 0x0a) await this.#handle.write("\n");
    }
    if (!this.#isDurable) {
      this.#syncTimer = setInterval(() => void this.#handle?.datasync().catch(() => {}), 1000);
      (this.#syncTimer as { unref?: () => void }).unref?.();
    }
  }

  async close(): Promise<void> {
    await this.#flushing;
    if (this.#syncTimer) clearInterval(this.#syncTimer);
    await this.#handle?.datasync().catch(() => {});
    await this.#handle?.close();
    this.#handle = undefined;
  }

  /** Appends one record; resolves when it is durable. */
  append(record: unknown): Promise<void> {
    const line = `${JSON.stringify(record)}\n`;
    return new Promise((resolve, reject) => {
      this.#pending.push({ line, resolve, reject });
      if (!this.#flushing) this.#flushing = this.#flush();
    });
  }

  async #flush(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending;
      this.#pending = [];
      try {
        if (!this.#handle) throw new Error(`journal ${this.path} is not open`);
        await this.#handle.write(batch.map((p) => p.line).join(""));
        if (this.#isDurable) await this.#handle.datasync();
        for (const p of batch) p.resolve();
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.#flushing = undefined;
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
