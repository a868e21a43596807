/**
 * The audit log: one JSON line per authorization decision (allowed or denied, by which policy
 * and rule, for which peer and destination, when), appended to a file opened with `O_APPEND`
 * and never rewritten. Lines are batched per turn of the event loop and written with one
 * `write` each batch; at most `maxPendingBytes` wait for the disk, beyond which records are
 * dropped and counted rather than held without bound.
 *
 * @module
 */

import { closeSync, openSync, write } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";

/** One decision. */
export interface AuditRecord {
  time: string;
  /** The listener's name (for outbound, the upstream service). */
  listener: string;
  direction: "inbound" | "outbound";
  decision: "allow" | "deny";
  /**
   * Why: `policy` (a policy decided), `default` (no ALLOW policy exists), `no-allow-policy-matched`,
   * `secure-naming`, `unverified-peer` (its SVID did not verify), `revoked-while-open`, `plaintext-refused`,
   * `malformed-request` (HTTP mode: answered 400 before any policy read it).
   */
  reason: string;
  policy?: string;
  ruleIndex?: number;
  /** The verdict with dry-run policies enforced, when the listener has them. */
  dryRun?: { decision: "allow" | "deny"; policy?: string; ruleIndex?: number; reason: string };
  /** The peer's verified SPIFFE ID; absent for plain text or an unverified peer. */
  peerId?: string;
  /** The serial number (hex) of the peer's verified SVID. */
  peerSerial?: string;
  /** What the peer presented, when it did not verify (the validator's code and message). */
  error?: { code: string; message: string };
  /** Where the peer connected from. */
  source?: string;
  /** Where the connection goes: the local service (inbound) or the upstream (outbound). */
  destination: string;
  transport: "mtls" | "plaintext";
  /** The TLS session was resumed; it was verified again all the same. */
  resumed?: boolean;
  connection: number;
  method?: string;
  path?: string;
}

/** Appends audit records to a file. */
export class AuditLog {
  #fd = -1;
  #pending: string[] = [];
  #pendingBytes = 0;
  #isWriting = false;
  #isScheduled = false;
  #dropped = 0;
  #flushed: (() => void)[] = [];

  constructor(readonly path: string, readonly maxPendingBytes = 8 * 1024 * 1024) {}

  /** Records dropped because the disk did not keep up. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Opens (creating, mode 0640) for appending. */
  async open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    this.#fd = openSync(this.path, "a", 0o640);
  }

  /** Queues one record. */
  append(record: AuditRecord): void {
    if (this.#fd < 0) return;
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
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  #write(): void {
    this.#isScheduled = false;
    if (this.#pending.length === 0 || this.#fd < 0) {
      this.#settle();
      return;
    }
    const text = this.#pending.join("");
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#isWriting = true;
    const data = new TextEncoder().encode(text);
    const writeFrom = (offset: number) => {
      write(this.#fd, data, offset, data.length - offset, null, (err, written) => {
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
