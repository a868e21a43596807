/**
 * An append-only journal of JSON lines, in segments, with group commit, that several processes
 * append to and read at once.
 *
 * Writing: the records appended in one turn of the event loop are one synchronous `O_APPEND`
 * write (a few hundred bytes into the page cache take microseconds, where a trip through the
 * thread pool costs over 100 µs of CPU), and the batches written meanwhile are made durable
 * together by one `fdatasync`, off the event loop. Each caller's promise settles only once its
 * line is on disk. A sync costs a VM about 90 µs of CPU (the thread pool's wake-ups, the
 * disk's flush), and a request's records wait for one: a sync starts as soon as the one before
 * it ends, with every record written meanwhile. Waiting longer for a larger group (as
 * PostgreSQL's `commit_delay` does) lost here: a timer's millisecond is longer than the
 * processing of the requests it would gather, and their clients wait for it. A crash (or a
 * full disk) can at worst leave a torn line; every batch starts with a newline, so the next
 * record, whichever process writes it, is never glued to a torn one, and readers skip the torn
 * line and the empty ones.
 *
 * Segments: `journal.jsonl` is the current segment. Compaction renames it to
 * `archive/segment-<seq>.jsonl` ({@link Journal.rotate}), and the next write creates a new one.
 * A writer checks after each write that the file it wrote to is still the current segment; if
 * it was archived meanwhile, the writer writes the same lines again to the new one, so a record
 * is never only in a segment that readers have finished with (it may then be in both: records
 * are idempotent, a certificate by its serial and an audit event by its id).
 *
 * Reading: {@link Journal.catchUp} hands every complete line appended since the last call (by
 * any process) to the consumer, in bounded chunks, following the segments as they are archived.
 * Calls are serialised: one that arrives while a read runs waits for the next read, which
 * starts after it arrived, so it sees everything appended before it was called.
 *
 * @module
 */

import {
  closeSync,
  fdatasync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { syncDirectory } from "../../internal/mod.ts";
import { readLines } from "./lines.ts";
import { writeFailure } from "./store.ts";

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** An archived segment. */
export interface Segment {
  seq: number;
  path: string;
}

/** What a read found: `lost` when the reader fell so far behind that segments it needed are gone. */
export type CatchUpResult = "ok" | "lost";

const SEGMENT_NAME = /^segment-(\d{10})\.jsonl$/;

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

function inodeOf(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
}

/** One journal: the current segment `<dir>/journal.jsonl` and the archived ones. */
export class Journal {
  readonly path: string;
  readonly archiveDir: string;
  readonly #isDurable: boolean;
  readonly #onLine: (line: Uint8Array) => void;
  #fd?: number;
  #ino = 0;
  /** Appended in this turn, not yet written. */
  #unwritten: (Waiter & { line: string })[] = [];
  /** Written, waiting for the next `fdatasync`. */
  #unsynced: Waiter[] = [];
  /** Segments this writer wrote to before they were archived: synced, then closed. */
  #retired: number[] = [];
  #isSyncing = false;
  #onIdle: (() => void)[] = [];
  #syncTimer?: ReturnType<typeof setInterval>;
  #reader?: { fd: number; ino: number; offset: number };
  /** Archived segments to read before the reader's file. */
  #pending: Segment[] = [];
  #running?: Promise<CatchUpResult>;
  #queued?: Promise<CatchUpResult>;

  /**
   * With `isDurable: false`, an append settles once the kernel has the bytes (a crash of the
   * process loses nothing, a crash of the machine loses at most the last second) and
   * `fdatasync` runs once a second instead of once per group.
   */
  constructor(readonly dir: string, options: { isDurable?: boolean; onLine: (line: Uint8Array) => void }) {
    this.path = join(dir, "journal.jsonl");
    this.archiveDir = join(dir, "archive");
    this.#isDurable = options.isDurable ?? true;
    this.#onLine = options.onLine;
  }

  /** Opens the current segment for appending (creating it) and for reading from its start. */
  open(): void {
    this.#fd = openSync(this.path, "a", 0o600);
    this.#ino = fstatSync(this.#fd).ino;
    const fd = openSync(this.path, "r");
    this.#reader = { fd, ino: fstatSync(fd).ino, offset: 0 };
    if (!this.#isDurable) {
      this.#syncTimer = setInterval(() => {
        if (this.#fd !== undefined) fdatasync(this.#fd, () => {});
      }, 1000);
      (this.#syncTimer as { unref?: () => void }).unref?.();
    }
  }

  /** Starts reading again from the start of the current segment (after {@link catchUp} answered `lost`). */
  async restartReading(): Promise<void> {
    await this.#running?.catch(() => {});
    await this.#queued?.catch(() => {});
    if (this.#reader) closeSync(this.#reader.fd);
    this.#reader = undefined;
    this.#pending = [];
    try {
      const fd = openSync(this.path, "r");
      this.#reader = { fd, ino: fstatSync(fd).ino, offset: 0 };
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }

  /** Has the next {@link catchUp} read the archived segments after `seq` first (start-up from a snapshot). */
  readArchivesAfter(seq: number): void {
    this.#pending = this.archivedSegments().filter((s) => s.seq > seq);
  }

  async close(): Promise<void> {
    if (this.#unwritten.length > 0) this.#write();
    if (this.#isSyncing) await new Promise<void>((resolve) => this.#onIdle.push(resolve));
    if (this.#syncTimer) clearInterval(this.#syncTimer);
    await this.#running?.catch(() => {});
    await this.#queued?.catch(() => {});
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) {
      await new Promise<void>((resolve) => fdatasync(fd, () => resolve()));
      closeSync(fd);
    }
    for (const old of this.#retired.splice(0)) closeSync(old);
    if (this.#reader) closeSync(this.#reader.fd);
    this.#reader = undefined;
  }

  /** Appends one record; resolves when it is durable. */
  append(record: unknown): Promise<void> {
    if (this.#fd === undefined) return Promise.reject(new Error(`journal ${this.path} is not open`));
    const line = `${JSON.stringify(record)}\n`;
    return new Promise((resolve, reject) => {
      // Records appended in the same turn of the event loop (an issuance and its audit entry,
      // and those of every other request that turn handles) share one write.
      if (this.#unwritten.length === 0) setImmediate(() => this.#write());
      this.#unwritten.push({ line, resolve, reject });
    });
  }

  /** Bytes in the current segment. */
  currentSize(): number {
    try {
      return statSync(this.path).size;
    } catch (err) {
      if (isMissing(err)) return 0;
      throw err;
    }
  }

  #writeAll(bytes: Uint8Array): void {
    let written = 0;
    while (written < bytes.length) written += writeSync(this.#fd!, bytes, written);
  }

  /** Switches the writer to the current segment after its own was archived. */
  #reopen(): void {
    if (this.#fd !== undefined) {
      if (this.#isDurable) this.#retired.push(this.#fd);
      else {
        const old = this.#fd;
        fdatasync(old, () => closeSync(old));
      }
    }
    this.#fd = openSync(this.path, "a", 0o600);
    this.#ino = fstatSync(this.#fd).ino;
  }

  #write(): void {
    const batch = this.#unwritten;
    if (batch.length === 0) return;
    this.#unwritten = [];
    try {
      if (this.#fd === undefined) throw new Error(`journal ${this.path} is not open`);
      // On a line of its own, even after a line another process (or a failed write) tore.
      const bytes = new TextEncoder().encode(`\n${batch.map((b) => b.line).join("")}`);
      // One write(2) with O_APPEND lands whole at the end, even with other processes appending.
      this.#writeAll(bytes);
      // If the segment was archived before the write ended, a reader may have finished with it:
      // the lines go to the current segment as well.
      for (let attempt = 0; this.#ino !== inodeOf(this.path); attempt++) {
        if (attempt === 10) throw new Error(`journal ${this.path} keeps being rotated`);
        this.#reopen();
        this.#writeAll(bytes);
      }
    } catch (err) {
      const failure = writeFailure(err, this.path);
      for (const waiter of batch) waiter.reject(failure);
      return;
    }
    if (!this.#isDurable) {
      for (const waiter of batch) waiter.resolve();
      return;
    }
    this.#unsynced.push(...batch);
    if (!this.#isSyncing) this.#sync();
  }

  /** One `fdatasync` per file for every record written before it started; repeats while more arrive. */
  #sync(): void {
    const group = this.#unsynced;
    this.#unsynced = [];
    const retired = this.#retired;
    this.#retired = [];
    const fds = [this.#fd!, ...retired];
    this.#isSyncing = true;
    let pending = fds.length;
    let failure: unknown;
    const done = () => {
      for (const old of retired) closeSync(old);
      for (const waiter of group) failure ? waiter.reject(failure) : waiter.resolve();
      this.#isSyncing = false;
      if (this.#unsynced.length > 0) this.#sync();
      else for (const idle of this.#onIdle.splice(0)) idle();
    };
    for (const fd of fds) {
      fdatasync(fd, (err) => {
        failure ??= err ?? undefined;
        if (--pending === 0) done();
      });
    }
  }

  /** The archived segments, oldest first. */
  archivedSegments(): Segment[] {
    let names: string[];
    try {
      names = readdirSync(this.archiveDir);
    } catch (err) {
      if (isMissing(err)) return [];
      throw err;
    }
    return names.flatMap((name) => {
      const m = SEGMENT_NAME.exec(name);
      return m ? [{ seq: Number(m[1]), path: join(this.archiveDir, name) }] : [];
    }).sort((a, b) => a.seq - b.seq);
  }

  /**
   * Archives the current segment as number `seq` and starts a new one. Only a process holding
   * the compaction lock calls this.
   */
  async rotate(seq: number): Promise<string> {
    mkdirSync(this.archiveDir, { recursive: true, mode: 0o700 });
    const archived = join(this.archiveDir, `segment-${String(seq).padStart(10, "0")}.jsonl`);
    renameSync(this.path, archived);
    closeSync(openSync(this.path, "a", 0o600));
    if (this.#fd !== undefined && this.#unwritten.length === 0) this.#reopen();
    await syncDirectory(this.archiveDir);
    await syncDirectory(dirname(this.path));
    return archived;
  }

  /** Reads what was appended since the last call (see the module's description). */
  catchUp(): Promise<CatchUpResult> {
    if (!this.#running) {
      this.#running = this.#read().finally(() => this.#running = undefined);
      return this.#running;
    }
    this.#queued ??= this.#running.catch(() => {}).then(() => {
      this.#queued = undefined;
      return this.catchUp();
    });
    return this.#queued;
  }

  async #readWhole(path: string): Promise<boolean> {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
    try {
      await readLines(fd, 0, this.#onLine);
    } finally {
      closeSync(fd);
    }
    return true;
  }

  async #read(): Promise<CatchUpResult> {
    while (this.#pending.length > 0) {
      if (!(await this.#readWhole(this.#pending[0].path))) return "lost";
      this.#pending.shift();
    }
    for (;;) {
      const reader = this.#reader;
      if (!reader) {
        try {
          const fd = openSync(this.path, "r");
          this.#reader = { fd, ino: fstatSync(fd).ino, offset: 0 };
          continue;
        } catch (err) {
          if (isMissing(err)) return "ok";
          throw err;
        }
      }
      // Which segment is current is asked before ours is read to its end. If ours was archived
      // by then, this read finds every line written to it before; a line written to it after
      // was written again to the next segment by its writer (see #write), which is read next.
      const current = inodeOf(this.path);
      reader.offset = await readLines(reader.fd, reader.offset, this.#onLine);
      // Missing: archived a moment ago, and the next segment is not there yet.
      if (current === undefined || current === reader.ino) return "ok";
      closeSync(reader.fd);
      this.#reader = undefined;
      let next: number | undefined;
      try {
        next = openSync(this.path, "r");
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
      const nextIno = next === undefined ? undefined : fstatSync(next).ino;
      // The segments archived after ours and before the one now current.
      const segments = this.archivedSegments().map((s) => ({ ...s, ino: inodeOf(s.path) }));
      const ours = segments.findIndex((s) => s.ino === reader.ino);
      if (ours < 0) {
        if (next !== undefined) closeSync(next);
        return "lost";
      }
      for (const segment of segments.slice(ours + 1)) {
        if (segment.ino === nextIno) break;
        if (!(await this.#readWhole(segment.path))) {
          if (next !== undefined) closeSync(next);
          return "lost";
        }
      }
      if (next === undefined) return "ok";
      this.#reader = { fd: next, ino: nextIno!, offset: 0 };
    }
  }
}
