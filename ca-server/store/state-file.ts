/**
 * The file store's `state.json`: revocations, the CRL number, join tokens and counters. It is
 * only ever replaced whole (write a temporary file, fsync, rename, fsync the directory), under
 * the store's lock, so an interrupted write leaves the previous state intact.
 *
 * Readers see every replacement that completed before they asked: each read compares the
 * inode of `state.json` with that of the copy it parsed last, which it keeps open, so the
 * inode number cannot be handed to a newer file while it is compared (a check on size and
 * modification time misses two writes within one clock tick).
 *
 * @module
 */

import { closeSync, fstatSync, openSync, readFileSync, statSync } from "node:fs";
import { writeFileAtomic } from "../../internal/mod.ts";
import { isAcceptedReason, reviveDates } from "./records.ts";
import { type JoinTokenRecord, type RevocationRecord, StoreError } from "./store.ts";

/** The content of `state.json`. */
export interface State {
  version: 1;
  /** Grows at each change of the revocation set. */
  revision: number;
  crlNumber: string;
  revocations: RevocationRecord[];
  joinTokens: JoinTokenRecord[];
  /** Every revocation ever made (revocations of long-expired certificates leave `revocations`). */
  revocationsTotal?: number;
}

function emptyState(): State {
  return { version: 1, revision: 0, crlNumber: "0", revocations: [], joinTokens: [], revocationsTotal: 0 };
}

// Expired tokens and the revocations of long-expired certificates serve no one: the CRL
// leaves them out already (RFC 5280 3.3) and the journal keeps the history.
const TOKEN_RETENTION_MS = 24 * 3600_000;
const REVOCATION_RETENTION_MS = 30 * 24 * 3600_000;

/** Drops expired tokens and revocations past their retention. */
export function prune(state: State, now: Date): void {
  state.joinTokens = state.joinTokens.filter((t) =>
    t.expiresAt.getTime() + TOKEN_RETENTION_MS > now.getTime()
  );
  state.revocations = state.revocations.filter((r) =>
    r.notAfter.getTime() + REVOCATION_RETENTION_MS > now.getTime()
  );
}

/** `state.json`, as last replaced by any process. */
export class StateFile {
  #fd?: number;
  #ino?: number;
  #state: State = emptyState();

  constructor(readonly path: string) {}

  /** The current state (do not change it: {@link write} a changed copy under the lock). */
  current(): State {
    let ino: number | undefined;
    try {
      ino = statSync(this.path).ino;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (ino !== this.#ino) this.#load();
    return this.#state;
  }

  #load(): void {
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      this.#replace(undefined, undefined, emptyState());
      return;
    }
    let state: State;
    try {
      state = this.#parse(readFileSync(fd, "utf8"));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#replace(fd, fstatSync(fd).ino, state);
  }

  #parse(text: string): State {
    let parsed: State;
    try {
      parsed = reviveDates(JSON.parse(text)) as State;
    } catch (cause) {
      throw new StoreError(`${this.path} is not valid JSON; restore it from a backup`, { cause });
    }
    if (parsed.version !== 1 || !Array.isArray(parsed.revocations) || !Array.isArray(parsed.joinTokens)) {
      throw new StoreError(`${this.path} has an unknown layout (version ${parsed.version})`);
    }
    parsed.revocations = parsed.revocations.filter((r) => isAcceptedReason(r.reason));
    // Written by a version that did not count: every revocation it kept is the best estimate.
    parsed.revocationsTotal ??= parsed.revocations.length;
    return parsed;
  }

  #replace(fd: number | undefined, ino: number | undefined, state: State): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = fd;
    this.#ino = ino;
    this.#state = state;
  }

  /** Replaces `state.json` with `state`; call only under the store's lock. */
  async write(state: State): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify(state), 0o600);
    // Under the lock nobody else writes: the file now there is this one.
    const fd = openSync(this.path, "r");
    this.#replace(fd, fstatSync(fd).ino, state);
  }

  close(): void {
    this.#replace(undefined, undefined, this.#state);
  }
}
