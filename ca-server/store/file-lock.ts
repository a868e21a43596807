/**
 * A lock between the processes of one host, kept in a directory, that a crashed holder cannot
 * leave held and that no two processes can ever hold at once.
 *
 * Each contender creates a file of its own, named for its process (host, boot, pid, the
 * process's start time, a random nonce), and then looks for other live contenders' files: it
 * holds the lock if there are none, and otherwise removes its file and tries again after a
 * random pause. Of two contenders, the one that creates its file second always sees the
 * first's, so at most one holds. A file whose process is dead (no such pid, or the pid now
 * belongs to a process started later, or the machine rebooted since) is removed by whoever
 * finds it: the name says exactly which process it was, so removing it can never take the
 * lock from a live holder, which is how breaking a stale `O_EXCL` lock file went wrong.
 *
 * A holder on another host (a data directory shared over a network file system, which the
 * file store does not support) cannot be checked: its file counts as live until it is a
 * minute old.
 *
 * @module
 */

import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { StoreError } from "./store.ts";

const FOREIGN_STALE_MS = 60_000;

interface ProcessIdentity {
  host: string;
  boot: string;
  pid: number;
  start: string;
}

let self: ProcessIdentity | undefined;

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot. */
function startTimeOf(pid: number | "self"): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count from its last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function identity(): ProcessIdentity {
  if (self) return self;
  let boot = "-";
  try {
    boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim().replaceAll("-", "").slice(0, 12);
  } catch {
    // Not Linux: liveness rests on the pid alone.
  }
  self = { host: encodeURIComponent(hostname()), boot, pid: process.pid, start: startTimeOf("self") ?? "-" };
  return self;
}

function parseName(name: string): (ProcessIdentity & { nonce: string }) | undefined {
  const m = /^([^~]+)~([^~]+)~(\d+)~([^~]+)~([0-9a-f]+)\.lock$/.exec(name);
  return m ? { host: m[1], boot: m[2], pid: Number(m[3]), start: m[4], nonce: m[5] } : undefined;
}

/** True unless the process named by a lock file is certainly gone. */
function isAlive(holder: ProcessIdentity, path: string): boolean {
  const me = identity();
  if (holder.host !== me.host) {
    try {
      return Date.now() - statSync(path).mtimeMs < FOREIGN_STALE_MS;
    } catch {
      return false;
    }
  }
  if (holder.boot !== "-" && me.boot !== "-" && holder.boot !== me.boot) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (holder.start === "-") return true;
  // The pid may have been given to a new process since (a restarted container's pid 1).
  // Unreadable (another user's process under hidepid): it exists, so it counts as live.
  const start = startTimeOf(holder.pid);
  return start === undefined || start === holder.start;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A held lock; `release` ends it. */
export interface HeldLock {
  release(): void;
}

/** A lock in directory `dir` (created if missing). */
export class FileLock {
  constructor(readonly dir: string) {}

  /** Live contenders' files other than `mine`; dead ones are removed on the way. */
  #others(mine: string): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      names = [];
    }
    const live: string[] = [];
    for (const name of names) {
      if (name === mine) continue;
      const holder = parseName(name);
      const path = join(this.dir, name);
      if (holder && !isAlive(holder, path)) {
        try {
          unlinkSync(path);
        } catch {
          // Another contender removed it first.
        }
        continue;
      }
      // A file of no known shape is left alone and counts as held, so nothing is assumed.
      live.push(holder ? `pid ${holder.pid} on ${decodeURIComponent(holder.host)}` : name);
    }
    return live;
  }

  #attempt(name: string): boolean {
    if (this.#others(name).length > 0) return false;
    const path = join(this.dir, name);
    closeSync(openSync(path, "wx", 0o600));
    if (this.#others(name).length === 0) return true;
    unlinkSync(path);
    return false;
  }

  #name(): string {
    const me = identity();
    const nonce = Array.from(
      crypto.getRandomValues(new Uint8Array(6)),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("");
    return `${me.host}~${me.boot}~${me.pid}~${me.start}~${nonce}.lock`;
  }

  #held(name: string): HeldLock {
    const path = join(this.dir, name);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(path);
        } catch {
          // Already gone: nothing to give back.
        }
      },
    };
  }

  /** Takes the lock, waiting at most `waitMs`. */
  async acquire(waitMs = 10_000): Promise<HeldLock> {
    const name = this.#name();
    const deadline = Date.now() + waitMs;
    for (let attempt = 0;; attempt++) {
      if (this.#attempt(name)) return this.#held(name);
      if (Date.now() > deadline) {
        const holders = this.#others(name);
        throw new StoreError(
          `could not lock ${this.dir} within ${waitMs / 1000}s (held by ${
            holders.join(", ") || "nobody now"
          })`,
        );
      }
      // A random pause, so two contenders that saw each other do not meet again in step.
      await sleep(1 + Math.random() * Math.min(50, 2 + attempt * 2));
    }
  }

  /** Takes the lock if nobody holds it, without waiting. */
  tryAcquire(): HeldLock | undefined {
    const name = this.#name();
    return this.#attempt(name) ? this.#held(name) : undefined;
  }
}
