/**
 * The embedded store: a data directory that survives crashes and is safe to share between the
 * processes of one host (the CA's workers, a second CA, the CLI).
 *
 * - `journal.jsonl` and `archive/segment-<n>.jsonl`: the journal of issued certificates and
 *   audit events ({@link Journal}), with group commit. An issuance and its audit entry share
 *   one `fdatasync`.
 * - `denials/journal.jsonl` and `denials/archive/segment-<n>.jsonl`: refused requests (`denied`
 *   audit events), a journal of their own, rotated at `segmentBytes` with one archived segment
 *   kept, so that a flood of refusals from any number of addresses can never push issuances
 *   and revocations out of the archive.
 * - `snapshot.jsonl`: the certificates still of use at the last compaction ({@link writeSnapshot}).
 *   Start-up reads it, then the segments archived after it, then `journal.jsonl`.
 * - `state.json`: revocations, the CRL number, join tokens ({@link StateFile}), replaced whole
 *   under `locks/state` ({@link FileLock}).
 *
 * Compaction: once `journal.jsonl` passes `segmentBytes`, one process (under `locks/compaction`)
 * archives it, writes a new snapshot and removes the oldest archived segments past
 * `keepSegments`; the archive is the audit trail's history. Certificates expired for longer than
 * `retainExpiredSeconds` leave memory and the next snapshot; the archive keeps them.
 *
 * @example
 * ```ts
 * import { FileStore } from "meshauth/ca-server";
 * const store = new FileStore("./.meshauth/store");
 * await store.open();
 * ```
 * @module
 */

import { mkdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { type Logger, removeStaleTemporaries, toHex } from "../../internal/mod.ts";
import { AUDIT_PREFIX, readAuditTail } from "./audit-tail.ts";
import { CertificateIndex, recordOf } from "./certificate-index.ts";
import { CrlFiles } from "./crl-files.ts";
import { FileLock } from "./file-lock.ts";
import { Journal } from "./journal.ts";
import { parseLine, startsWith } from "./lines.ts";
import { readSnapshot, snapshotSegment, writeSnapshot } from "./snapshot.ts";
import { prune, type State, StateFile } from "./state-file.ts";
import type {
  AuditEvent,
  CaStore,
  CertificateRecord,
  CrlClaim,
  CrlStatus,
  JoinTokenRecord,
  RevocationOutcome,
  RevocationRecord,
  RevocationSelector,
  SignedCrl,
} from "./store.ts";
import { writeFailure } from "./store.ts";

/** Options of {@link FileStore}. */
export interface FileStoreOptions {
  /** `false` trades the last second of journal on a machine crash for latency (see `journal.ts`). */
  isDurable?: boolean;
  /** Compact once `journal.jsonl` passes this many bytes. Default 64 MiB. */
  segmentBytes?: number;
  /** Archived journal segments kept (the audit trail's history); 0 keeps every one. Default 32. */
  keepSegments?: number;
  /** How long an expired certificate can still be found, listed and revoked. Default 1 day. */
  retainExpiredSeconds?: number;
  /**
   * Whether this process compacts and loads the certificate index at `open()` (servers: true, the
   * default). A short-lived one (the CLI) leaves compaction to the servers and loads the index
   * only if a command needs it, so `meshauth ca token create` does not read the journal.
   */
  isCompacting?: boolean;
  /** Where compaction and recovery are logged; silent by default. */
  logger?: Logger;
  /** The clock that expires certificates and tokens; the system's by default. */
  now?: () => Date;
}

const LOCK_WAIT_MS = 10_000;
const MAINTENANCE_MS = 1000;
const EVICTION_MS = 60_000;
const RELOAD_ATTEMPTS = 5;

const idPool = new Uint8Array(4096);
let idPoolOffset = idPool.length;

/** 8 random bytes in hex, drawn from a pool filled 4 KiB at a time (a call per event cost more than the rest of it). */
function auditId(): string {
  if (idPoolOffset + 8 > idPool.length) {
    crypto.getRandomValues(idPool);
    idPoolOffset = 0;
  }
  return toHex(idPool.subarray(idPoolOffset, idPoolOffset += 8));
}

/** {@link CaStore} in a data directory. */
export class FileStore implements CaStore {
  readonly description: string;
  readonly #options: Required<Omit<FileStoreOptions, "logger" | "now">> & Pick<FileStoreOptions, "logger">;
  readonly #now: () => Date;
  readonly #journal: Journal;
  readonly #denials: Journal;
  readonly #state: StateFile;
  readonly #crls: CrlFiles;
  readonly #stateLock: FileLock;
  readonly #compactionLock: FileLock;
  #index: CertificateIndex;
  #revokedSerials: { state?: State; serials: Set<string> } = { serials: new Set() };
  #localLock: Promise<unknown> = Promise.resolve();
  #loaded?: Promise<void>;
  #reloading?: Promise<void>;
  #compacting?: Promise<boolean>;
  #maintaining?: Promise<void>;
  #timer?: ReturnType<typeof setInterval>;
  #lastEvictionMs = 0;

  /** A store in `dir` (a journal and its segments); call `open()` before use. */
  constructor(readonly dir: string, options: FileStoreOptions = {}) {
    this.description = `file:${dir}`;
    this.#options = {
      isDurable: options.isDurable ?? true,
      segmentBytes: options.segmentBytes ?? 64 * 1024 * 1024,
      keepSegments: options.keepSegments ?? 32,
      retainExpiredSeconds: options.retainExpiredSeconds ?? 86400,
      isCompacting: options.isCompacting ?? true,
      logger: options.logger,
    };
    this.#now = options.now ?? (() => new Date());
    this.#index = new CertificateIndex(this.#options.retainExpiredSeconds * 1000);
    this.#journal = new Journal(dir, { isDurable: this.#options.isDurable, onLine: (l) => this.#apply(l) });
    // Written and read back by readAudit alone: nothing in it goes into the index.
    this.#denials = new Journal(join(dir, "denials"), {
      isDurable: this.#options.isDurable,
      onLine: () => {},
    });
    this.#state = new StateFile(join(dir, "state.json"));
    this.#crls = new CrlFiles(join(dir, "crls"));
    this.#stateLock = new FileLock(join(dir, "locks", "state"));
    this.#compactionLock = new FileLock(join(dir, "locks", "compaction"));
  }

  /** Certificates in memory now. */
  get certificateCount(): number {
    return this.#index.size;
  }

  async open(): Promise<void> {
    const started = performance.now();
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      // What a crash in the middle of a state, snapshot or CRL write left behind.
      await removeStaleTemporaries(this.dir);
      await removeStaleTemporaries(join(this.dir, "crls"));
      this.#state.current();
      this.#journal.open();
      mkdirSync(this.#denials.dir, { recursive: true, mode: 0o700 });
      this.#denials.open();
    } catch (err) {
      // A read-only or full data directory is said as such, with the path, not as a stack.
      throw writeFailure(err, this.dir);
    }
    if (this.#options.isCompacting) {
      await this.#ensureLoaded();
      this.#options.logger?.info("store opened", {
        store: this.description,
        certificates: this.#index.size,
        ms: Math.round(performance.now() - started),
      });
    }
    this.#timer = setInterval(() => void this.#maintain(), MAINTENANCE_MS);
    (this.#timer as { unref?: () => void }).unref?.();
    if (this.#options.isCompacting) void this.#maintain();
  }

  /** Stops the background sync, waits for compaction and pending writes, and closes the journal. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#maintaining;
    await this.#compacting?.catch(() => {});
    await this.#localLock;
    await this.#journal.close();
    await this.#denials.close();
    this.#state.close();
    this.#crls.close();
  }

  // A journal line into the index. Audit lines are recognised by their first bytes and never parsed.
  #apply(line: Uint8Array): void {
    if (startsWith(line, AUDIT_PREFIX)) return;
    const r = parseLine(line) as Record<string, unknown> | undefined;
    if (r?.kind !== "certificate" || typeof r.serialNumber !== "string" || typeof r.spiffeId !== "string") {
      return;
    }
    this.#index.add({
      serialNumber: r.serialNumber,
      spiffeId: r.spiffeId,
      notBefore: Date.parse(r.notBefore as string),
      notAfter: Date.parse(r.notAfter as string),
      issuedAt: Date.parse(r.issuedAt as string),
      requester: String(r.requester),
      method: String(r.method),
      authorityId: String(r.authorityId),
    }, this.#now().getTime());
  }

  // The index from the snapshot, the segments archived after it and the current one. A
  // compaction elsewhere may remove a segment before it is read: then again from its snapshot.
  async #load(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      this.#index = new CertificateIndex(this.#options.retainExpiredSeconds * 1000);
      const nowMs = this.#now().getTime();
      const segment = await readSnapshot(this.dir, (c) => this.#index.add(c, nowMs));
      this.#journal.readArchivesAfter(segment ?? 0);
      if ((await this.#journal.catchUp()) === "ok") return;
      if (attempt === RELOAD_ATTEMPTS) {
        throw new Error(`${this.dir}: journal segments vanished while loading`);
      }
      await this.#journal.restartReading();
    }
  }

  #ensureLoaded(): Promise<void> {
    this.#loaded ??= this.#load().catch((err) => {
      this.#loaded = undefined;
      throw err;
    });
    return this.#loaded;
  }

  // Reads what any process appended since the last call into the index.
  async #catchUp(): Promise<void> {
    await this.#ensureLoaded();
    await this.#reloading;
    if ((await this.#journal.catchUp()) === "ok") return;
    // So far behind that segments it needed were compacted away: start again from the snapshot.
    this.#reloading ??= (async () => {
      await this.#journal.restartReading();
      await this.#load();
    })().finally(() => this.#reloading = undefined);
    await this.#reloading;
  }

  #maintain(): Promise<void> {
    // A process that has not needed the index (the CLI creating a token) does not load it.
    if (!this.#loaded && !this.#options.isCompacting) return Promise.resolve();
    this.#maintaining ??= (async () => {
      try {
        await this.#catchUp();
        const nowMs = this.#now().getTime();
        if (nowMs - this.#lastEvictionMs >= EVICTION_MS) {
          this.#lastEvictionMs = nowMs;
          this.#index.evict(nowMs);
        }
        const segmentBytes = this.#options.segmentBytes;
        const isFull = this.#journal.currentSize() >= segmentBytes ||
          this.#denials.currentSize() >= segmentBytes;
        if (this.#options.isCompacting && isFull) await this.compact();
      } catch (err) {
        this.#options.logger?.error("store maintenance failed", { store: this.description, error: err });
      }
    })().finally(() => this.#maintaining = undefined);
    return this.#maintaining;
  }

  /**
   * Archives the current journal segment and writes a snapshot, unless another process is
   * doing so or (without `force`) the segment is under `segmentBytes`. Answers whether it did.
   * Rotates the refusals' journal too once it passes `segmentBytes`.
   */
  compact(options: { force?: boolean } = {}): Promise<boolean> {
    this.#compacting ??= this.#compact(options.force ?? false).finally(() => this.#compacting = undefined);
    return this.#compacting;
  }

  async #compact(force: boolean): Promise<boolean> {
    const held = this.#compactionLock.tryAcquire();
    if (!held) return false;
    try {
      await this.#rotateDenials();
      const size = this.#journal.currentSize();
      if (size === 0 || (!force && size < this.#options.segmentBytes)) return false;
      const started = performance.now();
      const archived = this.#journal.archivedSegments();
      const seq = Math.max(snapshotSegment(this.dir), archived.at(-1)?.seq ?? 0) + 1;
      await this.#journal.rotate(seq);
      // Everything up to the end of the archived segment, into the index, then out to the snapshot.
      await this.#catchUp();
      this.#index.evict(this.#now().getTime());
      await writeSnapshot(this.dir, seq, this.#index.all());
      const segments = this.#journal.archivedSegments();
      const excess = this.#options.keepSegments > 0 ? segments.length - this.#options.keepSegments : 0;
      for (const segment of segments.slice(0, Math.max(0, excess))) unlinkSync(segment.path);
      this.#options.logger?.info("store compacted", {
        store: this.description,
        segment: seq,
        certificates: this.#index.size,
        removedSegments: Math.max(0, excess),
        ms: Math.round(performance.now() - started),
      });
      return true;
    } finally {
      held.release();
    }
  }

  // The refusals: the current segment and one archived, about twice segmentBytes at most.
  async #rotateDenials(): Promise<void> {
    if (this.#denials.currentSize() < this.#options.segmentBytes) return;
    const archived = this.#denials.archivedSegments();
    await this.#denials.rotate((archived.at(-1)?.seq ?? 0) + 1);
    for (const segment of archived) unlinkSync(segment.path);
  }

  /** Records one issued certificate. */
  async recordIssuance(certificate: CertificateRecord): Promise<void> {
    await this.#journal.append({ kind: "certificate", ...certificate });
  }

  /** The issued certificate with this serial number, if the store has it. */
  async findCertificate(serialNumber: string): Promise<CertificateRecord | undefined> {
    await this.#catchUp();
    const found = this.#index.get(serialNumber);
    return found && recordOf(found);
  }

  async listCertificates(query: { spiffeId?: string; limit?: number }): Promise<CertificateRecord[]> {
    await this.#catchUp();
    return this.#index.newest(query.limit ?? 1000, query.spiffeId).map(recordOf);
  }

  revoke(selector: RevocationSelector, at: Date): Promise<RevocationOutcome> {
    return this.#mutate(async (state) => {
      await this.#catchUp();
      const existing = new Map(state.revocations.map((r) => [r.serialNumber, r]));
      let targets = "serialNumber" in selector
        ? [this.#index.get(selector.serialNumber)].filter((c) => c !== undefined)
        : this.#index.ofIdentity(selector.spiffeId).filter((c) => c.notAfter > at.getTime());
      const alreadyRevoked = targets.flatMap((c) => existing.get(c.serialNumber) ?? []);
      // A revoked certificate may have left the index; its revocation is still known.
      if ("serialNumber" in selector && targets.length === 0 && existing.has(selector.serialNumber)) {
        alreadyRevoked.push(existing.get(selector.serialNumber)!);
      }
      targets = targets.filter((c) => !existing.has(c.serialNumber));
      const revoked: RevocationRecord[] = targets.map((c) => ({
        serialNumber: c.serialNumber,
        spiffeId: c.spiffeId,
        revokedAt: at,
        reason: selector.reason,
        notAfter: new Date(c.notAfter),
        authorityId: c.authorityId,
      }));
      if (revoked.length > 0) {
        state.revocations.push(...revoked);
        state.revision++;
        state.revocationsTotal = (state.revocationsTotal ?? 0) + revoked.length;
      }
      return { revoked, alreadyRevoked };
    });
  }

  listRevocations(at: Date): Promise<RevocationRecord[]> {
    return Promise.resolve(this.#state.current().revocations.filter((r) => r.notAfter > at));
  }

  /** Whether the certificate with this serial number is revoked. */
  isRevoked(serialNumber: string): Promise<boolean> {
    const state = this.#state.current();
    if (this.#revokedSerials.state !== state) {
      this.#revokedSerials = { state, serials: new Set(state.revocations.map((r) => r.serialNumber)) };
    }
    return Promise.resolve(this.#revokedSerials.serials.has(serialNumber));
  }

  revocationRevision(): Promise<number> {
    return Promise.resolve(this.#state.current().revision);
  }

  revocationsTotal(): Promise<number> {
    return Promise.resolve(this.#state.current().revocationsTotal ?? 0);
  }

  nextCrl(at: Date): Promise<CrlClaim> {
    return this.#mutate((state) => {
      const crlNumber = BigInt(state.crlNumber) + 1n;
      state.crlNumber = crlNumber.toString();
      return Promise.resolve({
        crlNumber,
        revision: state.revision,
        revocations: state.revocations.filter((r) => r.notAfter > at),
      });
    });
  }

  crlStatus(authorityId: string): Promise<CrlStatus> {
    const latest = this.#crls.latest(authorityId);
    return Promise.resolve({
      revision: this.#state.current().revision,
      latest: latest &&
        {
          authorityId,
          crlNumber: latest.crlNumber,
          revision: latest.revision,
          thisUpdate: latest.thisUpdate,
        },
    });
  }

  latestCrl(authorityId: string): Promise<SignedCrl | undefined> {
    return Promise.resolve(this.#crls.latest(authorityId));
  }

  saveCrl(crl: SignedCrl): Promise<SignedCrl> {
    return this.#locked(() => this.#crls.save(crl));
  }

  /** Stores a new join token. */
  async saveJoinToken(token: JoinTokenRecord): Promise<void> {
    await this.#mutate((state) => {
      state.joinTokens = state.joinTokens.filter((t) => t.id !== token.id);
      state.joinTokens.push(token);
      return Promise.resolve();
    });
  }

  /** The join token with this id, if any. */
  findJoinToken(id: string): Promise<JoinTokenRecord | undefined> {
    return Promise.resolve(this.#state.current().joinTokens.find((t) => t.id === id));
  }

  markJoinTokenUsed(id: string, at: Date): Promise<boolean> {
    return this.#mutate((state) => {
      const token = state.joinTokens.find((t) => t.id === id);
      if (!token || token.usedAt) return Promise.resolve(false);
      token.usedAt = at;
      return Promise.resolve(true);
    });
  }

  async appendAudit(event: AuditEvent): Promise<void> {
    // The id tells the two copies apart that a rotation can leave of one event.
    const id = auditId();
    await (event.action === "denied" ? this.#denials : this.#journal).append({ kind: "audit", id, ...event });
  }

  async readAudit(limit: number): Promise<AuditEvent[]> {
    const pathsOf = (
      journal: Journal,
    ) => [journal.path, ...journal.archivedSegments().reverse().map((s) => s.path)];
    const [history, denials] = await Promise.all([
      readAuditTail(pathsOf(this.#journal), limit),
      readAuditTail(pathsOf(this.#denials), limit),
    ]);
    // Each is oldest first; together, in the order they happened.
    return [...history, ...denials].sort((a, b) => a.at.getTime() - b.at.getTime()).slice(-limit);
  }

  // Serialised within the process by a promise chain and across processes by the lock. A write
  // the file system refuses (full, read-only) is a StoreError that says so; state.json stays.
  #locked<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#localLock.then(async () => {
      try {
        const held = await this.#stateLock.acquire(LOCK_WAIT_MS);
        try {
          return await work();
        } finally {
          held.release();
        }
      } catch (err) {
        throw writeFailure(err, this.dir);
      }
    });
    this.#localLock = run.catch(() => {});
    return run;
  }

  #mutate<T>(change: (state: State) => Promise<T>): Promise<T> {
    return this.#locked(async () => {
      const draft = structuredClone(this.#state.current());
      const result = await change(draft);
      prune(draft, this.#now());
      await this.#state.write(draft);
      return result;
    });
  }
}
