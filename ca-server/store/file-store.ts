/**
 * The embedded store: a data directory that survives crashes and is safe to share between
 * processes on one host (the CA's workers and the CLI).
 *
 * - `journal.jsonl`: the append-only journal of issued certificates and audit events, with
 *   group commit (one `write` and one `fdatasync` for every record that arrived meanwhile,
 *   before any of their requests is answered). One file, so an issuance and its audit entry
 *   cost one `fdatasync` between them.
 * - `state.json`: revocations, the CRL number and join tokens, replaced atomically by writing
 *   a temporary file, `fsync`ing it, renaming it over the old one and `fsync`ing the directory,
 *   so an interrupted write leaves the previous state intact.
 * - `state.lock`: a lock file (`O_EXCL`) held while state is read, changed and written.
 *
 * @example
 * ```ts
 * import { FileStore } from "meshauth/ca-server";
 * const store = new FileStore("./.meshauth/store");
 * await store.open();
 * ```
 * @module
 */

import { mkdir, open, readFile, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { removeStaleTemporaries, writeFileAtomic } from "../../internal/mod.ts";
import { Journal } from "./journal.ts";
import {
  type AuditEvent,
  type CaStore,
  type IssuedCertificate,
  type JoinTokenRecord,
  type Revocation,
  type RevocationSelector,
  StoreError,
} from "./store.ts";
import { isRevocationReason, reviveDates } from "./records.ts";

interface State {
  version: 1;
  revision: number;
  crlNumber: string;
  revocations: Revocation[];
  joinTokens: JoinTokenRecord[];
}

const EMPTY_STATE: State = { version: 1, revision: 0, crlNumber: "0", revocations: [], joinTokens: [] };
const LOCK_WAIT_MS = 10_000;
const STALE_LOCK_MS = 30_000;
const STATE_RECHECK_MS = 100;
const AUDIT_TAIL = 10_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

// Expired tokens and the revocations of long-expired certificates serve no one: the CRL
// leaves them out already (RFC 5280 3.3) and the journal keeps the history.
const TOKEN_RETENTION_MS = 24 * 3600_000;
const REVOCATION_RETENTION_MS = 30 * 24 * 3600_000;

function prune(state: State, now: Date): void {
  state.joinTokens = state.joinTokens.filter((t) =>
    t.expiresAt.getTime() + TOKEN_RETENTION_MS > now.getTime()
  );
  state.revocations = state.revocations.filter((r) =>
    r.notAfter.getTime() + REVOCATION_RETENTION_MS > now.getTime()
  );
}

/** {@link CaStore} in a data directory. */
export class FileStore implements CaStore {
  readonly description: string;
  readonly #journal: Journal;
  readonly #statePath: string;
  readonly #lockPath: string;
  #state: State = EMPTY_STATE;
  #stateStamp = "";
  #stateCheckedMs = 0;
  #bySerial = new Map<string, IssuedCertificate>();
  #byId = new Map<string, Set<string>>();
  #auditTail: AuditEvent[] = [];
  #revokedSerials: { state?: State; serials: Set<string> } = { serials: new Set() };
  #localLock: Promise<unknown> = Promise.resolve();

  /** `isDurable: false` trades the last second of journal on a machine crash for latency (see {@link Journal}). */
  constructor(readonly dir: string, options: { isDurable?: boolean } = {}) {
    this.description = `file:${dir}`;
    this.#journal = new Journal(join(dir, "journal.jsonl"), options);
    this.#statePath = join(dir, "state.json");
    this.#lockPath = join(dir, "state.lock");
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // What a crash in the middle of a state write left behind.
    await removeStaleTemporaries(this.dir);
    await this.#journal.open();
    await this.#reloadState();
  }

  async close(): Promise<void> {
    await this.#journal.close();
  }

  async recordIssuance(certificate: IssuedCertificate): Promise<void> {
    await this.#journal.append({ kind: "certificate", ...certificate });
  }

  async findCertificate(serialNumber: string): Promise<IssuedCertificate | undefined> {
    await this.#catchUp();
    return this.#bySerial.get(serialNumber);
  }

  async listCertificates(query: { spiffeId?: string; limit?: number }): Promise<IssuedCertificate[]> {
    await this.#catchUp();
    const limit = query.limit ?? 1000;
    const serials = query.spiffeId ? [...(this.#byId.get(query.spiffeId) ?? [])] : [...this.#bySerial.keys()];
    const out: IssuedCertificate[] = [];
    for (let i = serials.length - 1; i >= 0 && out.length < limit; i--) {
      out.push(this.#bySerial.get(serials[i])!);
    }
    return out;
  }

  revoke(selector: RevocationSelector, at: Date): Promise<Revocation[]> {
    return this.#mutate(async (state) => {
      await this.#catchUp();
      const already = new Set(state.revocations.map((r) => r.serialNumber));
      const targets = "serialNumber" in selector
        ? [this.#bySerial.get(selector.serialNumber)].filter((c) => c !== undefined)
        : [...(this.#byId.get(selector.spiffeId) ?? [])].map((s) => this.#bySerial.get(s)!)
          .filter((c) => c.notAfter > at);
      const added: Revocation[] = targets.filter((c) => !already.has(c.serialNumber)).map((c) => ({
        serialNumber: c.serialNumber,
        spiffeId: c.spiffeId,
        revokedAt: at,
        reason: selector.reason,
        notAfter: c.notAfter,
        authorityId: c.authorityId,
      }));
      if (added.length > 0) {
        state.revocations.push(...added);
        state.revision++;
      }
      return added;
    });
  }

  async listRevocations(at: Date): Promise<Revocation[]> {
    await this.#reloadStateIfChanged();
    return this.#state.revocations.filter((r) => r.notAfter > at);
  }

  async isRevoked(serialNumber: string): Promise<boolean> {
    await this.#reloadStateIfChanged();
    if (this.#revokedSerials.state !== this.#state) {
      this.#revokedSerials = {
        state: this.#state,
        serials: new Set(this.#state.revocations.map((r) => r.serialNumber)),
      };
    }
    return this.#revokedSerials.serials.has(serialNumber);
  }

  async revocationRevision(): Promise<number> {
    await this.#reloadStateIfChanged();
    return this.#state.revision;
  }

  nextCrlNumber(): Promise<bigint> {
    return this.#mutate((state) => {
      const next = BigInt(state.crlNumber) + 1n;
      state.crlNumber = next.toString();
      return Promise.resolve(next);
    });
  }

  async saveJoinToken(token: JoinTokenRecord): Promise<void> {
    await this.#mutate((state) => {
      state.joinTokens = state.joinTokens.filter((t) => t.id !== token.id);
      state.joinTokens.push(token);
      return Promise.resolve();
    });
  }

  async findJoinToken(id: string): Promise<JoinTokenRecord | undefined> {
    await this.#reloadStateIfChanged();
    const found = this.#state.joinTokens.find((t) => t.id === id);
    if (found) return found;
    // A token created a moment ago by `ca token create` must work at once.
    await this.#reloadStateIfChanged(true);
    return this.#state.joinTokens.find((t) => t.id === id);
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
    await this.#journal.append({ kind: "audit", ...event });
  }

  async readAudit(limit: number): Promise<AuditEvent[]> {
    await this.#catchUp();
    return this.#auditTail.slice(-limit);
  }

  // Reads what any process appended since the last call into the in-memory indexes.
  async #catchUp(): Promise<void> {
    await this.#journal.readNew((record) => {
      const { kind, ...fields } = reviveDates(record) as { kind?: string } & Record<string, unknown>;
      if (kind === "audit") {
        this.#auditTail.push(fields as unknown as AuditEvent);
        if (this.#auditTail.length > AUDIT_TAIL) {
          this.#auditTail.splice(0, this.#auditTail.length - AUDIT_TAIL);
        }
        return;
      }
      const cert = fields as unknown as IssuedCertificate;
      if (
        kind !== "certificate" || typeof cert.serialNumber !== "string" || typeof cert.spiffeId !== "string"
      ) return;
      this.#bySerial.set(cert.serialNumber, cert);
      let serials = this.#byId.get(cert.spiffeId);
      if (!serials) this.#byId.set(cert.spiffeId, serials = new Set());
      serials.add(cert.serialNumber);
    });
  }

  // Another process's change (a CLI revocation, another worker) is seen within STATE_RECHECK_MS;
  // this process's own changes are seen at once, and changes under the lock always re-read.
  async #reloadStateIfChanged(force = false): Promise<void> {
    const now = Date.now();
    if (!force && now - this.#stateCheckedMs < STATE_RECHECK_MS) return;
    this.#stateCheckedMs = now;
    let stamp = "";
    try {
      const s = await stat(this.#statePath);
      stamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      stamp = "";
    }
    if (stamp !== this.#stateStamp) await this.#reloadState();
  }

  async #reloadState(): Promise<void> {
    let text: string;
    try {
      const s = await stat(this.#statePath);
      text = await readFile(this.#statePath, "utf8");
      this.#stateStamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      this.#state = structuredClone(EMPTY_STATE);
      this.#stateStamp = "";
      return;
    }
    let parsed: State;
    try {
      parsed = reviveDates(JSON.parse(text)) as State;
    } catch (cause) {
      throw new StoreError(`${this.#statePath} is not valid JSON; restore it from a backup`, { cause });
    }
    if (parsed.version !== 1 || !Array.isArray(parsed.revocations) || !Array.isArray(parsed.joinTokens)) {
      throw new StoreError(`${this.#statePath} has an unknown layout (version ${parsed.version})`);
    }
    parsed.revocations = parsed.revocations.filter((r) => isRevocationReason(r.reason));
    this.#state = parsed;
  }

  // Serialised within the process by a promise chain and across processes by the lock file.
  #mutate<T>(change: (state: State) => Promise<T>): Promise<T> {
    const run = this.#localLock.then(async () => {
      await this.#acquireLock();
      try {
        await this.#reloadState();
        const draft = structuredClone(this.#state);
        const result = await change(draft);
        prune(draft, new Date());
        await this.#writeState(draft);
        return result;
      } finally {
        await unlink(this.#lockPath).catch(() => {});
      }
    });
    this.#localLock = run.catch(() => {});
    return run;
  }

  async #acquireLock(): Promise<void> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let attempt = 0;; attempt++) {
      try {
        const handle = await open(this.#lockPath, "wx", 0o600);
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      try {
        const holder = Number.parseInt(await readFile(this.#lockPath, "utf8"), 10);
        const age = Date.now() - (await stat(this.#lockPath)).mtimeMs;
        // A lock left by a process that died (or hung past any sane write) is broken.
        if ((Number.isInteger(holder) && holder > 0 && !isAlive(holder)) || age > STALE_LOCK_MS) {
          await unlink(this.#lockPath).catch(() => {});
          continue;
        }
      } catch {
        // The holder released it between our open and read: try again.
      }
      if (Date.now() > deadline) {
        throw new StoreError(`could not lock ${this.#lockPath} within ${LOCK_WAIT_MS / 1000}s`);
      }
      await sleep(Math.min(50, 2 + attempt));
    }
  }

  async #writeState(state: State): Promise<void> {
    await writeFileAtomic(this.#statePath, JSON.stringify(state), 0o600);
    this.#state = state;
    const s = await stat(this.#statePath);
    this.#stateStamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
  }
}
