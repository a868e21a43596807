/**
 * A lock between the processes of one host, kept in a directory, that a crashed holder cannot
 * leave held and that no two processes can ever hold at once.
 *
 * Each contender creates a file of its own, named for its process (host, boot, pid namespace,
 * pid, the process's start time, a random nonce), and then looks for other live contenders'
 * files: it holds the lock if there are none, and otherwise removes its file and tries again
 * after a random pause. Of two contenders, the one that creates its file second always sees
 * the first's, so at most one holds. A file of a process this one can see (same host, same
 * boot, same pid namespace) whose process is dead (no such pid, or the pid now belongs to a
 * process started later) is removed by whoever finds it: the name says exactly which process
 * it was, so removing it can never take the lock from a live holder, which is how breaking a
 * stale `O_EXCL` lock file went wrong.
 *
 * A pid means nothing outside its pid namespace: containers of one pod, or `docker run
 * --network host`, share a host name but not their pids, and a pid that is free (or another
 * process's) here may be a live holder there. So a file from another pid namespace, another
 * boot or another host is foreign: its pid is never looked at. Its holder touches it every
 * {@link FileLockOptions.staleMs}/6 (10 s by default) while it holds the lock, and it counts as
 * live until it has gone untouched for `staleMs` (a minute): a crashed foreign holder blocks
 * the others for at most that long.
 *
 * @module
 */

import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  unlinkSync,
  utimesSync,
} from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { toHex } from "../../internal/mod.ts";
import { StoreError } from "./store.ts";

/** Options of {@link FileLock}. */
export interface FileLockOptions {
  /** How long a foreign holder's file may go untouched before it counts as dead. Default 60 s. */
  staleMs?: number;
}

interface ProcessIdentity {
  host: string;
  boot: string;
  /** The inode of the process's pid namespace; "-" where there is none to read (not Linux). */
  pidNamespace: string;
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
  let pidNamespace = "-";
  try {
    boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim().replaceAll("-", "").slice(0, 12);
    // "pid:[4026531836]"
    pidNamespace = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/pid"))?.[1] ?? "-";
  } catch {
    // Not Linux: liveness rests on the pid alone.
  }
  self = {
    host: encodeURIComponent(hostname()),
    boot,
    pidNamespace,
    pid: process.pid,
    start: startTimeOf("self") ?? "-",
  };
  return self;
}

function parseName(name: string): ProcessIdentity | undefined {
  // Names without the pid namespace (an earlier version's) are foreign: "?" is no namespace.
  const m = /^([^~]+)~([^~]+)~(?:([^~]+)~)?(\d+)~([^~]+)~[0-9a-f]+\.lock$/.exec(name);
  return m
    ? { host: m[1], boot: m[2], pidNamespace: m[3] ?? "?", pid: Number(m[4]), start: m[5] }
    : undefined;
}

/** Whether this process can check `holder`'s pid: the same host, boot and pid namespace. */
function isLocal(holder: ProcessIdentity): boolean {
  const me = identity();
  return holder.host === me.host && holder.boot === me.boot && holder.pidNamespace === me.pidNamespace;
}

function describeHolder(holder: ProcessIdentity): string {
  const me = identity();
  const namespace = holder.host === me.host && holder.pidNamespace !== me.pidNamespace
    ? ` in pid namespace ${holder.pidNamespace} (this process is in ${me.pidNamespace})`
    : "";
  return `pid ${holder.pid}${namespace} on ${decodeURIComponent(holder.host)}`;
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
  readonly #staleMs: number;

  constructor(readonly dir: string, options: FileLockOptions = {}) {
    this.#staleMs = options.staleMs ?? 60_000;
  }

  /** True unless the process named by a lock file is certainly gone. */
  #isAlive(holder: ProcessIdentity, path: string): boolean {
    if (!isLocal(holder)) {
      try {
        return Date.now() - statSync(path).mtimeMs < this.#staleMs;
      } catch {
        return false;
      }
    }
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
      if (holder && !this.#isAlive(holder, path)) {
        try {
          unlinkSync(path);
        } catch {
          // Another contender removed it first.
        }
        continue;
      }
      // A file of no known shape is left alone and counts as held, so nothing is assumed.
      live.push(holder ? describeHolder(holder) : name);
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
    const nonce = toHex(crypto.getRandomValues(new Uint8Array(6)));
    return `${me.host}~${me.boot}~${me.pidNamespace}~${me.pid}~${me.start}~${nonce}.lock`;
  }

  #held(name: string): HeldLock {
    const path = join(this.dir, name);
    // Keeps the file fresh for contenders that cannot check this process's pid.
    const heartbeat = setInterval(() => {
      try {
        const now = new Date();
        utimesSync(path, now, now);
      } catch {
        // Gone: released meanwhile.
      }
    }, this.#staleMs / 6);
    (heartbeat as { unref?: () => void }).unref?.();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        clearInterval(heartbeat);
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
