/**
 * The audit log: one JSON line per authorization decision (allowed or denied, by which policy
 * and rule, for which peer and destination, when), appended to a file opened with `O_APPEND`
 * and never rewritten. Lines are batched per turn of the event loop and written with one
 * `write` each batch; at most `maxPendingBytes` wait for the disk, beyond which records are
 * dropped and counted rather than held without bound.
 *
 * Disk use is bounded: a file that would grow past `maxBytes` is rotated (`audit.jsonl` becomes
 * `audit.jsonl.1`, `.1` becomes `.2`, ..., and the oldest beyond `maxFiles` is removed), so the
 * log never holds more than `maxBytes` times `maxFiles + 1`. A file renamed or removed by
 * someone else (logrotate) is noticed within a second and a new one opened at the path.
 *
 * @module
 */

import { closeSync, fstatSync, openSync, renameSync, rmSync, statSync, write } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { writeFailureOf } from "../../internal/mod.ts";
import { AgentSetupError } from "../setup-error.ts";

/** One decision. */
export interface AuditRecord {
  /** When the decision was made, as an ISO 8601 UTC time. */
  time: string;
  /** The listener's name (for outbound, the upstream service). */
  listener: string;
  /** `inbound` (a peer to the local service) or `outbound` (the local app to an upstream). */
  direction: "inbound" | "outbound";
  /** What was enforced. */
  decision: "allow" | "deny";
  /**
   * Why: `policy` (a policy decided), `default` (no ALLOW policy exists), `no-allow-policy-matched`,
   * `secure-naming`, `unverified-peer` (its SVID did not verify), `revoked-while-open`, `plaintext-refused`,
   * `malformed-request` (HTTP mode: answered 400 before any policy read it).
   */
  reason: string;
  /** The policy that decided, when one did. */
  policy?: string;
  /** Which rule of `policy` matched (0-based), when one did. */
  ruleIndex?: number;
  /** The verdict with dry-run policies enforced, when the listener has them. */
  dryRun?: { decision: "allow" | "deny"; policy?: string; ruleIndex?: number; reason: string };
  /** The peer's verified SPIFFE ID; absent for plain text or an unverified peer. */
  peerId?: string;
  /** The serial number (hex) of the peer's verified SVID. */
  peerSerial?: string;
  /**
   * With a verified peer: how far its revocation was checked. `checked` (against a current CRL),
   * `unchecked-no-crl` (no CRL of its authority held) or `stale-crl` (one past its nextUpdate);
   * the last two only under `proxy.revocation: best-effort`.
   */
  revocation?: "checked" | "unchecked-no-crl" | "stale-crl";
  /** What the peer presented, when it did not verify (the validator's code and message). */
  error?: { code: string; message: string };
  /** Where the peer connected from. */
  source?: string;
  /** Where the connection goes: the local service (inbound) or the upstream (outbound). */
  destination: string;
  /** `mtls`, or `plaintext` for a connection the listener let in without TLS. */
  transport: "mtls" | "plaintext";
  /** The TLS session was resumed; it was verified again all the same. */
  resumed?: boolean;
  /** The connection's number, counted from 1 in this proxy: a connection's records share it. */
  connection: number;
  /** HTTP mode: the request's method. */
  method?: string;
  /** HTTP mode: the request's normalized path, as policies matched it. */
  path?: string;
  /**
   * A summary of records about peers without a verified identity: this many more like it (same
   * listener, direction, decision, reason, policy and source address) came between `since` and
   * `time`, and were counted, not written one by one. Its other fields are the first one's.
   */
  repeated?: number;
  /** With `repeated`: when the first of them came. */
  since?: string;
}

/** Bounds of an {@link AuditLog}. */
export interface AuditLogOptions {
  /** A file that would grow past this is rotated. Default 64 MiB. */
  maxBytes?: number;
  /** Rotated files kept (`.1` newest). Default 4. */
  maxFiles?: number;
  /** Records waiting for the disk at most; beyond, they are dropped and counted. Default 8 MiB. */
  maxPendingBytes?: number;
}

/**
 * Makes `directory` and the directories on its way. Node's recursive mkdir says ENOENT where the
 * file system is read-only; made one at a time, the error is the file system's own (EROFS).
 */
async function makeDirectory(directory: string, mode: number): Promise<void> {
  try {
    await mkdir(directory, { recursive: true, mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    const parent = dirname(directory);
    if (parent !== directory) await makeDirectory(parent, mode);
    await mkdir(directory, { mode });
  }
}

/**
 * Why the audit log cannot be opened, and what to do: on Kubernetes with a read-only root file
 * system, a path without a writable volume mounted there is the usual cause.
 */
function whyUnopened(err: unknown): string {
  const { code, path, message } = err as NodeJS.ErrnoException;
  const failure = writeFailureOf(code);
  if (code === "EROFS") return `${failure} (EROFS): mount a writable volume there`;
  if (failure) return `${failure} (${code}) at ${path}`;
  if (code === "ENOENT") return `cannot make ${path} (ENOENT): a directory on its way is missing`;
  // A file, or a symbolic link to nothing, where a directory is needed.
  if (code === "EEXIST") return `${path} is not a directory (EEXIST)`;
  if (code === "ENOTDIR") return `a part of ${path} is not a directory (ENOTDIR)`;
  if (code === "EISDIR") return "it is a directory (EISDIR): name a file in it";
  return String(message ?? err).split("\n")[0];
}

/** How often the file at the path is compared with the one open (rename, removal). */
const REOPEN_CHECK_MS = 1000;

/** Appends audit records to a file, and hands each to the subscribers in this process. */
export class AuditLog {
  #fd = -1;
  #isOpen = false;
  /** The open file's identity, to tell when the path names another one. */
  #inode?: { dev: number; ino: number };
  #size = 0;
  #checkedAt = 0;
  readonly #listeners = new Set<(record: AuditRecord) => void>();
  #pending: string[] = [];
  #pendingBytes = 0;
  #isWriting = false;
  #isScheduled = false;
  #dropped = 0;
  #rotations = 0;
  #flushed: (() => void)[] = [];
  readonly maxBytes: number;
  readonly maxFiles: number;
  readonly maxPendingBytes: number;

  constructor(readonly path: string, options: AuditLogOptions = {}) {
    this.maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    this.maxFiles = options.maxFiles ?? 4;
    this.maxPendingBytes = options.maxPendingBytes ?? 8 * 1024 * 1024;
  }

  /** Records dropped because the disk did not keep up. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Files rotated so far (by size). */
  get rotations(): number {
    return this.#rotations;
  }

  /**
   * Opens (creating, mode 0640) for appending. A file that cannot be opened is an
   * {@link AgentSetupError} that names the setting, the path and why, in one line.
   */
  async open(): Promise<void> {
    try {
      // A directory made here is the owner's alone: by default it is the agent's state
      // directory, which must not be open to others (it holds keys).
      await makeDirectory(dirname(this.path), 0o700);
      this.#openFile();
    } catch (err) {
      throw new AgentSetupError(`cannot open the audit log (auditLog) ${this.path}: ${whyUnopened(err)}`, {
        cause: err,
      });
    }
    this.#isOpen = true;
  }

  /** Calls `listener` with every record appended from now on; answers a function that unsubscribes. */
  subscribe(listener: (record: AuditRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Queues one record. */
  append(record: AuditRecord): void {
    if (!this.#isOpen) return;
    for (const listener of this.#listeners) {
      try {
        listener(record);
      } catch {
        // A subscriber's failure is its own: the record is written all the same.
      }
    }
    const line = `${JSON.stringify(record)}\n`;
    if (this.#pendingBytes + line.length > this.maxPendingBytes) {
      this.#dropped++;
      return;
    }
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    if (!this.#isScheduled && !this.#isWriting) {
      this.#isScheduled = true;
      setImmediate(() => this.#write());
    }
  }

  /** Resolves once every record queued so far is written. */
  flush(): Promise<void> {
    if (this.#pending.length === 0 && !this.#isWriting) return Promise.resolve();
    return new Promise((resolve) => this.#flushed.push(resolve));
  }

  /** Writes what is queued and closes the file. */
  async close(): Promise<void> {
    await this.flush();
    this.#isOpen = false;
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  #openFile(): void {
    const fd = openSync(this.path, "a", 0o640);
    const stat = fstatSync(fd);
    this.#fd = fd;
    this.#inode = { dev: stat.dev, ino: stat.ino };
    this.#size = stat.size;
    this.#checkedAt = Date.now();
  }

  #reopen(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
    this.#openFile();
  }

  /** The path no longer names the open file (renamed or removed by logrotate): open the one there now. */
  #followRename(): void {
    const now = Date.now();
    if (now - this.#checkedAt < REOPEN_CHECK_MS) return;
    this.#checkedAt = now;
    let current: { dev: number; ino: number } | undefined;
    try {
      current = statSync(this.path);
    } catch {
      current = undefined;
    }
    if (!current || current.dev !== this.#inode?.dev || current.ino !== this.#inode?.ino) this.#reopen();
  }

  /** `audit.jsonl` becomes `.1`, `.1` becomes `.2`, ...; the oldest beyond maxFiles goes. */
  #rotate(): void {
    closeSync(this.#fd);
    this.#fd = -1;
    rmSync(`${this.path}.${this.maxFiles}`, { force: true });
    for (let i = this.maxFiles - 1; i >= 1; i--) {
      try {
        renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    renameSync(this.path, `${this.path}.1`);
    this.#rotations++;
    this.#openFile();
  }

  #write(): void {
    this.#isScheduled = false;
    if (this.#pending.length === 0) {
      this.#settle();
      return;
    }
    const text = this.#pending.join("");
    this.#pending = [];
    this.#pendingBytes = 0;
    const data = new TextEncoder().encode(text);
    try {
      if (this.#fd < 0) this.#openFile();
      else this.#followRename();
      if (this.#size > 0 && this.#size + data.length > this.maxBytes) this.#rotate();
    } catch {
      // The file cannot be reopened or rotated (disk full, permissions): the batch is lost, and counted.
      this.#dropped += text.split("\n").length - 1;
      this.#settle();
      return;
    }
    this.#isWriting = true;
    const writeFrom = (offset: number) => {
      write(this.#fd, data, offset, data.length - offset, null, (err, written) => {
        if (!err) this.#size += written;
        if (!err && offset + written < data.length) return writeFrom(offset + written);
        if (err) this.#dropped += text.split("\n").length - 1;
        this.#isWriting = false;
        if (this.#pending.length) this.#write();
        else this.#settle();
      });
    };
    writeFrom(0);
  }

  #settle(): void {
    if (this.#pending.length || this.#isWriting) return;
    for (const resolve of this.#flushed.splice(0)) resolve();
  }
}
