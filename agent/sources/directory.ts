/**
 * Workloads from a directory of drop-in files, one per workload (`web.yaml`, `db.json`; the
 * file's base name is the workload's name), watched so that workloads come and go while the
 * agent runs. A file that is malformed is reported with its path and field and skipped; one
 * that was valid and becomes malformed (an edit in progress, a typo) keeps its previous
 * version until it is fixed or deleted, so a slip of the keyboard never deletes a running
 * workload's certificate. Hidden files and other extensions are ignored, which also skips the
 * `..data` machinery of a Kubernetes ConfigMap mounted there.
 *
 * An entry names a directory and an owner that the agent (root) writes files for, so the
 * directory of entries is checked as the state directory is: it must belong to root or the
 * agent and be writable by neither its group nor others (a read-only mount, as a ConfigMap's
 * is, may have any mode). Each file is read through one open descriptor, at most 64 KiB, and
 * must itself be a regular file of root or the agent that neither group nor others can write
 * (a symlink is followed, as a ConfigMap's are, and what it leads to is checked). Entries are
 * applied in file name order, the same at every scan and every restart.
 *
 * Changes are picked up by a file system watch, debounced, which re-reads only the files it
 * names (a thousand files dropped in at once cost a thousand reads, not a thousand rescans),
 * and by a periodic full rescan in case a watch misses one (network file systems, a directory
 * replaced). An event for a hidden name (a ConfigMap's `..data` swap) rescans everything.
 *
 * @example
 * ```ts
 * import { DirectorySource } from "meshauth/agent";
 * const source = new DirectorySource({ directory: "/etc/meshauth/workloads.d", trustDomain: "prod.example" });
 * ```
 * @module
 */

import { constants, type FSWatcher, promises as fs, type Stats, watch } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { TrustDomain } from "../../mod.ts";
import { ConfigError, loadConfigFile } from "../../internal/mod.ts";
import type { WorkloadProblem, WorkloadSink, WorkloadSource, WorkloadSpec } from "./source.ts";
import { problemOf, readWorkloadEntry, WORKLOAD_DEFAULTS, type WorkloadDefaults } from "./workload-entry.ts";

/** Options of {@link DirectorySource}. */
export interface DirectorySourceOptions {
  /** The directory watched: each `*.yaml`, `*.yml` or `*.json` file is one workload, named by the file. */
  directory: string;
  /** The agent's trust domain; an entry whose SPIFFE ID is outside it is skipped as a problem. */
  trustDomain: TrustDomain | string;
  /** Values for the fields an entry leaves out. Default {@link WORKLOAD_DEFAULTS}. */
  defaults?: WorkloadDefaults;
  /** Rescan everything this often even without a watch event. Default 60 s. */
  rescanIntervalMs?: number;
  /** Wait this long after an event for more before scanning. Default 100 ms. */
  debounceMs?: number;
}

/** Files larger than this are refused: a workload entry is a few hundred bytes. */
const MAX_FILE_BYTES = 64 * 1024;
const EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

interface FileState {
  /** Size, modification time and inode: a change of any means the file is read again. */
  signature: string;
  /** The entry in force: this version's, or the last valid one's when this one is malformed. */
  spec?: WorkloadSpec;
  problems: WorkloadProblem[];
}

/** A drop-in file's name: not hidden, with a YAML or JSON extension. */
function isEntryName(name: string): boolean {
  return !name.startsWith(".") && EXTENSIONS.has(extname(name));
}

/** A watched directory of drop-in workload files. */
export class DirectorySource implements WorkloadSource {
  readonly name: string;
  readonly #options: DirectorySourceOptions;
  readonly #trustDomain: TrustDomain;
  readonly #files = new Map<string, FileState>();
  #sink?: WorkloadSink;
  #watcher?: FSWatcher;
  #rescan?: ReturnType<typeof setInterval>;
  #debounce?: ReturnType<typeof setTimeout>;
  #scanning: Promise<void> = Promise.resolve();
  /** The names watch events reported since the last scan, or "all" for a full rescan. */
  #dirty: Set<string> | "all" = "all";
  #isStopped = false;
  #missingReported = false;
  #unsafeReported = false;

  /** Reads nothing yet: {@link DirectorySource.start} lists the directory and watches it. */
  constructor(options: DirectorySourceOptions) {
    this.#options = options;
    this.#trustDomain = TrustDomain.from(options.trustDomain);
    this.name = `directory:${options.directory}`;
  }

  async start(sink: WorkloadSink): Promise<void> {
    this.#sink = sink;
    this.#isStopped = false;
    // Watching before the first listing: a file dropped in while it runs is not missed until
    // the next rescan.
    this.#watch();
    await this.scan();
    this.#rescan = setInterval(() => void this.scan(), this.#options.rescanIntervalMs ?? 60_000);
    this.#rescan.unref?.();
  }

  stop(): Promise<void> {
    this.#isStopped = true;
    clearInterval(this.#rescan);
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
    return this.#scanning;
  }

  /** Reads the whole directory now (scans never overlap) and reports any change to the sink. */
  scan(): Promise<void> {
    this.#dirty = "all";
    return this.#enqueueScan();
  }

  #enqueueScan(): Promise<void> {
    const next = this.#scanning.then(() => {
      const dirty = this.#dirty;
      this.#dirty = new Set();
      return dirty === "all" || !this.#watcher ? this.#scanOnce() : this.#scanNames(dirty);
    }).catch(() => {});
    this.#scanning = next;
    return next;
  }

  #watch(): void {
    if (this.#watcher || this.#isStopped) return;
    try {
      this.#watcher = watch(
        this.#options.directory,
        { persistent: false },
        (_event, filename) => this.#changed(typeof filename === "string" ? filename : undefined),
      );
      this.#watcher.on("error", () => {
        // The directory went away (or the watch broke): the rescan finds it again.
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch {
      this.#watcher = undefined;
    }
  }

  #changed(filename: string | undefined): void {
    if (!filename || filename.startsWith(".") || filename.includes("/")) this.#dirty = "all";
    else if (this.#dirty !== "all") this.#dirty.add(filename);
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.#enqueueScan(), this.#options.debounceMs ?? 100);
    this.#debounce.unref?.();
  }

  async #scanOnce(): Promise<void> {
    if (this.#isStopped || !this.#sink) return;
    const directory = this.#options.directory;
    let names: string[];
    try {
      names = await fs.readdir(directory);
      this.#missingReported = false;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (!this.#missingReported) {
        this.#missingReported = true;
        this.#sink.problem({
          source: this.name,
          file: directory,
          message: code === "ENOENT"
            ? "the workload directory does not exist; its workloads are removed until it does"
            : `the workload directory cannot be read (${code}); its workloads are kept as they were`,
        });
      }
      // Gone means no workloads; unreadable means unknown, so nothing changes.
      if (code === "ENOENT" && this.#files.size > 0) {
        this.#files.clear();
        this.#sink.replace(this.name, []);
      }
      return;
    }
    this.#watch();
    const unsafe = await unsafeSourceReason(directory);
    if (unsafe) {
      if (!this.#unsafeReported) {
        this.#unsafeReported = true;
        this.#sink.problem({
          source: this.name,
          file: directory,
          message: `the workload directory is not safe to take entries from: ${unsafe}; ` +
            "no entry is read from it until that is fixed (the workloads already read are kept)",
        });
      }
      return;
    }
    this.#unsafeReported = false;
    let isChanged = false;
    const present = new Set<string>();
    for (const name of names.sort()) {
      if (!isEntryName(name)) continue;
      present.add(name);
      if (await this.#update(name)) isChanged = true;
    }
    for (const name of [...this.#files.keys()]) {
      if (!present.has(name)) {
        this.#files.delete(name);
        isChanged = true;
      }
    }
    if (isChanged) this.#report();
  }

  /** Re-reads only the files watch events named. */
  async #scanNames(names: Set<string>): Promise<void> {
    if (this.#unsafeReported || await unsafeSourceReason(this.#options.directory)) {
      return await this.#scanOnce();
    }
    let isChanged = false;
    for (const name of [...names].sort()) {
      if (isEntryName(name) && await this.#update(name)) isChanged = true;
    }
    if (isChanged) this.#report();
  }

  /** Reads one file if it changed (or forgets it if it is gone); answers whether anything changed. */
  async #update(name: string): Promise<boolean> {
    const path = join(this.#options.directory, name);
    const previous = this.#files.get(name);
    // One descriptor for the checks and the read; O_NONBLOCK so that a FIFO never blocks.
    let handle: FileHandle | undefined;
    let stat: Stats | undefined;
    try {
      handle = await fs.open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
      stat = await handle.stat();
    } catch {
      stat = undefined;
    }
    try {
      if (!handle || !stat?.isFile()) {
        if (!previous) return false;
        this.#files.delete(name);
        return true;
      }
      const signature = `${stat.size}:${stat.mtimeMs}:${stat.ino}:${stat.uid}:${stat.mode}`;
      if (previous?.signature === signature) return false;
      const state = await this.#read(handle, stat, path, name, signature, previous);
      this.#files.set(name, state);
      for (const problem of state.problems) this.#sink!.problem(problem);
      return true;
    } finally {
      await handle?.close();
    }
  }

  /** The specs in force, in file name order: the first of two conflicting entries wins. */
  #report(): void {
    const byName = [...this.#files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.#sink!.replace(this.name, byName.flatMap(([, f]) => (f.spec ? [f.spec] : [])));
  }

  async #read(
    handle: FileHandle,
    stat: Stats,
    path: string,
    fileName: string,
    signature: string,
    previous: FileState | undefined,
  ): Promise<FileState> {
    const origin = { source: this.name, file: path };
    const keep = (problems: WorkloadProblem[]): FileState => ({
      signature,
      spec: previous?.spec,
      problems: problems.map((p) => ({
        ...p,
        message: previous?.spec ? `${p.message} (the previous version stays in force)` : p.message,
      })),
    });
    const unsafe = unsafeEntryReason(stat);
    if (unsafe) return keep([{ ...origin, message: `refused: ${unsafe}` }]);
    // The bound applies to what is read, not to what a stat said a moment before.
    const buffer = new Uint8Array(MAX_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_FILE_BYTES) {
        return keep([{ ...origin, message: `larger than ${MAX_FILE_BYTES} bytes: not a workload entry` }]);
      }
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(buffer.subarray(0, length));
    } catch {
      return keep([{ ...origin, message: "not UTF-8 text: not a workload entry" }]);
    }
    const name = basename(fileName, extname(fileName));
    try {
      const spec = await loadConfigFile({ path, text }, {}, (raw, fields) =>
        readWorkloadEntry(fields, raw, {
          trustDomain: this.#trustDomain,
          defaults: this.#options.defaults ?? WORKLOAD_DEFAULTS,
          origin,
          name,
          prefix: "",
        }));
      return { signature, spec, problems: [] };
    } catch (err) {
      if (err instanceof ConfigError) return keep(err.problems.map((text) => problemOf(origin, text)));
      return keep([{ ...origin, message: (err as Error).message }]);
    }
  }
}

/** Root, or the agent itself: the only owners whose files and directories are trusted. */
function isTrustedOwner(uid: number): boolean {
  const me = process.getuid?.();
  return me === undefined || uid === 0 || uid === me;
}

/** Why the directory of entries is not safe to read entries from, or undefined. */
async function unsafeSourceReason(directory: string): Promise<string | undefined> {
  let stat: Stats;
  try {
    stat = await fs.stat(directory);
  } catch {
    return undefined; // reported as missing or unreadable by the scan
  }
  if (!isTrustedOwner(stat.uid)) {
    return `it belongs to uid ${stat.uid}, not to root or the agent`;
  }
  if (stat.mode & 0o022 && !(await isReadOnly(directory))) {
    return `its group or others can write to it (mode ${(stat.mode & 0o7777).toString(8).padStart(4, "0")})`;
  }
  return undefined;
}

/** Why one entry file (as opened) is not to be trusted, or undefined. */
function unsafeEntryReason(stat: Stats): string | undefined {
  if (!isTrustedOwner(stat.uid)) return `the file belongs to uid ${stat.uid}, not to root or the agent`;
  if (stat.mode & 0o022) {
    return `its group or others can write to the file (mode ${
      (stat.mode & 0o7777).toString(8).padStart(4, "0")
    })`;
  }
  return undefined;
}

/** True on a read-only mount (a ConfigMap volume), where nobody can write whatever the mode. */
async function isReadOnly(directory: string): Promise<boolean> {
  try {
    await fs.access(directory, constants.W_OK);
    return false;
  } catch (err) {
    return (err as { code?: string }).code === "EROFS";
  }
}
