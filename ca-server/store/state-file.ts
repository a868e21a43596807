/**
 * The file store's `state.json`: revocations, the CRL number, join tokens and counters. It is
 * only ever replaced whole (write a temporary file, fsync, rename, fsync the directory), under
 * the store's lock, so an interrupted write leaves the previous state intact.
 *
 * Readers see every replacement that completed before they asked ({@link ReplacedFile}).
 *
 * @module
 */

import { writeFileAtomic } from "../../internal/mod.ts";
import { isAcceptedReason, reviveDates } from "./records.ts";
import { ReplacedFile } from "./replaced-file.ts";
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
  readonly #file: ReplacedFile<State>;
  /** One object while there is no file, so callers can cache what they derive from it. */
  readonly #empty = emptyState();

  constructor(readonly path: string) {
    this.#file = new ReplacedFile(path, (text) => this.#parse(text));
  }

  /** The current state (do not change it: {@link write} a changed copy under the lock). */
  current(): State {
    return this.#file.current() ?? this.#empty;
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

  /** Replaces `state.json` with `state`; call only under the store's lock. */
  async write(state: State): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify(state), 0o600);
    this.#file.written(state);
  }

  close(): void {
    this.#file.close();
  }
}
