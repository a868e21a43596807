/**
 * Writing a set of files into a directory so that every reader sees one whole generation, the
 * way Kubernetes projects a Secret into a pod volume (its AtomicWriter):
 *
 * ```
 * <dir>/..2025_01_31_12_00_00.a1b2c3/   one generation: every file, fsynced
 * <dir>/..data -> ..2025_01_31_12_00_00.a1b2c3   swapped with one rename
 * <dir>/key.pem -> ..data/key.pem        visible names, stable, through ..data
 * ```
 *
 * The new generation is written and made durable in a hidden directory, then a `..data`
 * symlink pointing to it replaces the old one by `rename`, so the whole set switches at one
 * instant: a reader that resolves `..data` once reads one generation's key and certificate,
 * never a mix, and a crash (SIGKILL, power loss) at any moment leaves `..data` on a complete
 * generation, old or new. Old generations are removed after the swap; a failed write removes
 * its own half-written generation and leaves the current one in place.
 *
 * The agent runs as root and writes files a workload owns, so the directories it writes into
 * are its own, as the kubelet's are: the delivery directory and every directory from the
 * delivery root down to it must be owned by root or the agent and writable by neither group
 * nor others, and every step works through an open handle on the directory (see
 * `directory-handle.ts`), never re-resolving a path a workload could have changed. The
 * workload gets its files by their owner and mode; it never owns a directory the agent writes
 * in. A visible name that is not a link the agent made (a file of the workload's, a symlink
 * of someone else's) is never replaced.
 *
 * @module
 */

import { constants, promises as fs } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { MeshAuthError } from "../../mod.ts";
import { bytesEqual } from "../../internal/mod.ts";
import { agentUid, DirectoryHandle } from "./directory-handle.ts";
import { DeliveryFailed, DeliveryRefused } from "./errors.ts";

export { DeliveryFailed, DeliveryRefused };

/** One file of a generation. */
export interface PayloadFile {
  /** A plain name: no `/`, not starting with `..`. */
  name: string;
  /** What the file holds; a string is written as UTF-8. */
  content: string | Uint8Array;
  /** Permission bits, e.g. `0o600`; set exactly (the umask does not narrow them). */
  mode: number;
}

/** Who owns the files (the directories stay the agent's); unset fields keep the agent's own. */
export interface FileOwner {
  /** Numeric user ID the files are given to (the workload's); the agent's when unset. */
  uid?: number;
  /** Numeric group ID the files are given to; the agent's when unset. */
  gid?: number;
}

/** Where a delivery directory may be. */
export interface DirectoryOptions {
  /**
   * The delivery root: the directory must be inside it (or be it), and every directory from
   * the root down is checked (owned by root or the agent, not writable by group or others) and
   * opened without following symlinks. Symlinks in the root's own path are the operator's and
   * are followed. Without a root only the directory itself is checked.
   */
  root?: string;
}

/** How {@link writeGeneration} writes. */
export interface WriteOptions extends DirectoryOptions {
  /**
   * Plain files of these names are what an earlier version of the same program wrote into its
   * own directory (before the `..data` layout): they are replaced by the visible links, or
   * removed when the layout no longer has them. Any other file in the way is refused.
   */
  legacyFiles?: readonly string[];
}

/** Where workload directories go when the agent's configuration names no delivery root. */
export const DEFAULT_DELIVERY_ROOT = "/var/run/meshauth";

const DATA = "..data";
const DATA_TMP = "..data_tmp";
const VISIBLE_TMP = /^\.\.visible_tmp\./;
const GENERATION = /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.[A-Za-z0-9]{6}$/;
/** Largest file {@link readGeneration} reads: a chain, a key and a bundle are a few KiB. */
const MAX_READ_BYTES = 1 << 20;

function checkName(name: string): void {
  if (!name || name.includes("/") || name.includes("\0") || name.startsWith("..") || name === ".") {
    throw new DeliveryRefused(".", `${JSON.stringify(name)} is not a plain file name`);
  }
}

function generationName(now = new Date()): string {
  const p = (n: number, width = 2) => String(n).padStart(width, "0");
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const random = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => alphabet[b % alphabet.length]);
  return `..${now.getUTCFullYear()}_${p(now.getUTCMonth() + 1)}_${p(now.getUTCDate())}_` +
    `${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}.${random.join("")}`;
}

function openDelivery(
  directory: string,
  options: DirectoryOptions,
  create: boolean,
): Promise<DirectoryHandle> {
  return DirectoryHandle.openBelow(options.root, directory, create);
}

/**
 * Creates `directory` if missing (mode 0755, and the missing directories above it up to the
 * root) and checks that it is safe to write credentials into: it and every directory from the
 * delivery root down are real directories (not symlinks that could point anywhere), owned by
 * root or the agent, that neither group nor others can write, since whoever can write a
 * directory can swap `..data` or the visible links to files of their choosing.
 */
export async function prepareDirectory(directory: string, options: DirectoryOptions = {}): Promise<void> {
  await (await openDelivery(directory, options, true)).close();
}

async function writeOne(generation: DirectoryHandle, file: PayloadFile, owner: FileOwner): Promise<void> {
  const handle = await generation.openFile(
    file.name,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
    file.mode,
  );
  try {
    // The umask may have narrowed the mode, and a new file starts as the agent's: set both on
    // the open file before the content is written, so a key is never readable by anyone else.
    await handle.chmod(file.mode);
    if (owner.uid !== undefined || owner.gid !== undefined) {
      await handle.chown(owner.uid ?? -1, owner.gid ?? -1);
    }
    await handle.writeFile(file.content);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A new, empty generation directory of the agent's; answers its name. */
async function makeGeneration(directory: DirectoryHandle): Promise<string> {
  for (let attempt = 1;; attempt++) {
    const name = generationName();
    try {
      await directory.mkdir(name, 0o755);
      return name;
    } catch (err) {
      if ((err as { code?: string }).code !== "EEXIST" || attempt >= 8) throw err;
    }
  }
}

/**
 * Refuses a visible name held by something the agent did not make: a file, a directory, or a
 * symlink that does not go through `..data`. A workload's own `key.pem` is never replaced.
 */
async function checkVisibleNames(
  directory: DirectoryHandle,
  names: readonly string[],
  legacyFiles: readonly string[],
): Promise<void> {
  for (const name of names) {
    const stat = await directory.lstat(name);
    if (!stat) continue;
    if (stat.isSymbolicLink()) {
      if ((await directory.readlink(name)) === `${DATA}/${name}`) continue;
      throw new DeliveryRefused(
        directory.path,
        `${name} is a symbolic link the agent did not make; move it away`,
      );
    }
    if (stat.isFile() && legacyFiles.includes(name)) continue;
    throw new DeliveryRefused(
      directory.path,
      `${name} is a ${stat.isDirectory() ? "directory" : "file"} the agent did not make; move it away`,
    );
  }
}

/**
 * Writes `files` as a new generation of `directory` and switches `..data` to it. On failure
 * before the switch, the half-written generation is removed and the previous one stays.
 */
export async function writeGeneration(
  directory: string,
  files: readonly PayloadFile[],
  owner: FileOwner = {},
  options: WriteOptions = {},
): Promise<void> {
  for (const file of files) checkName(file.name);
  const names = files.map((f) => f.name);
  const legacyFiles = options.legacyFiles ?? [];
  let dir: DirectoryHandle;
  try {
    dir = await openDelivery(directory, options, true);
  } catch (err) {
    throw failed(directory, err);
  }
  try {
    let generation: string | undefined;
    try {
      await checkVisibleNames(dir, names, legacyFiles);
      generation = await makeGeneration(dir);
      const handle = await dir.child(generation, false);
      try {
        await handle.handle.chmod(0o755);
        for (const file of files) await writeOne(handle, file, owner);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await dir.unlink(DATA_TMP);
      await dir.symlink(generation, DATA_TMP);
      await dir.rename(DATA_TMP, DATA);
    } catch (err) {
      if (generation) await dir.removeTree(generation).catch(() => {});
      throw failed(directory, err);
    }
    try {
      await dir.sync();
      await tidy(dir, names, generation, legacyFiles);
    } catch (err) {
      throw failed(directory, err);
    }
  } finally {
    await dir.close();
  }
}

function failed(directory: string, err: unknown): MeshAuthError {
  if (err instanceof MeshAuthError) return err;
  const e = err as { code?: string; message?: string };
  return new DeliveryFailed(directory, e.code, String(e.message ?? err).split("\n")[0]);
}

/**
 * After a swap, in one listing of the directory: makes each visible name a symlink through
 * `..data`, removes the links of names no longer delivered, and removes generations other
 * than `current` with the leftovers of interrupted writes.
 */
async function tidy(
  directory: DirectoryHandle,
  names: readonly string[],
  current: string,
  legacyFiles: readonly string[],
): Promise<void> {
  const entries = await directory.entries();
  const byName = new Map(entries.map((e) => [e.name, e]));
  for (const name of names) {
    const target = `${DATA}/${name}`;
    const existing = byName.get(name);
    if (existing?.isSymbolicLink() && (await directory.readlink(name)) === target) continue;
    // Only a legacy file of the same program may be in the way (checked before the write);
    // the new link replaces it in one rename.
    if (existing && !(existing.isFile() && legacyFiles.includes(name))) {
      throw new DeliveryRefused(directory.path, `${name} is something the agent did not make; move it away`);
    }
    const tmp = `..visible_tmp.${crypto.randomUUID()}`;
    await directory.symlink(target, tmp);
    await directory.rename(tmp, name);
  }
  for (const entry of entries) {
    if (entry.name.startsWith("..")) {
      if (entry.name !== DATA && entry.name !== current && isLeftover(entry.name)) {
        await directory.removeTree(entry.name);
      }
    } else if (names.includes(entry.name)) {
      continue;
    } else if (entry.isSymbolicLink() && (await directory.readlink(entry.name))?.startsWith(`${DATA}/`)) {
      await directory.unlink(entry.name);
    } else if (entry.isFile() && legacyFiles.includes(entry.name)) {
      await directory.unlink(entry.name);
    }
  }
}

/** A generation, or the temporary link of an interrupted swap. */
/**
 * True for the name of a generation directory as {@link writeGeneration} makes them
 * (`..2025_01_31_12_00_00.a1b2c3`): the only kind `..data` is followed to. The kubelet's own
 * (a Secret or ConfigMap volume's) end in Go's `os.MkdirTemp` suffix, a decimal number that
 * almost always has more than six digits.
 */
export function isGenerationName(name: string): boolean {
  return GENERATION.test(name);
}

function isLeftover(name: string): boolean {
  return name === DATA_TMP || VISIBLE_TMP.test(name) || GENERATION.test(name);
}

/** What one file of the current generation holds, read without following a symlink. */
export interface StoredFile {
  content: Uint8Array;
  /** Permission bits (`mode & 0o7777`) of the file read. */
  mode: number;
  uid: number;
  gid: number;
}

/**
 * Reads one regular file of `directory`, at most {@link MAX_READ_BYTES}: `O_NONBLOCK` so that a
 * FIFO or a device in its place never blocks the agent, `O_NOFOLLOW` and a check of what was
 * opened so that only a regular file is read. Undefined for anything else.
 */
async function readRegular(directory: DirectoryHandle, name: string): Promise<StoredFile | undefined> {
  let handle: FileHandle;
  try {
    handle = await directory.openFile(name, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch {
    return undefined;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile() || stat.size > MAX_READ_BYTES) return undefined;
    const buffer = new Uint8Array(stat.size + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      // Grew since the stat: not the file that was delivered.
      if (length > stat.size) return undefined;
    }
    return { content: buffer.subarray(0, length), mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
  } finally {
    await handle.close();
  }
}

/** Opens the current generation (the one `..data` names), or undefined. */
async function openCurrent(
  directory: string,
  options: DirectoryOptions,
): Promise<{ dir: DirectoryHandle; generation: DirectoryHandle } | undefined> {
  let dir: DirectoryHandle;
  try {
    dir = await openDelivery(directory, options, false);
  } catch {
    return undefined;
  }
  try {
    const target = await dir.readlink(DATA);
    if (!target || !GENERATION.test(target)) {
      await dir.close();
      return undefined;
    }
    return { dir, generation: await dir.child(target, false) };
  } catch {
    await dir.close();
    return undefined;
  }
}

/**
 * Reads the named files of the current generation, resolving `..data` once, so that the files
 * answered belong together. Undefined when nothing was delivered, a file is missing or is not
 * a regular file, or the directory is not safe to deliver into (a symlink or a directory group
 * or others can write, from the delivery root down).
 */
export async function readGeneration(
  directory: string,
  names: readonly string[],
  options: DirectoryOptions = {},
): Promise<Map<string, string> | undefined> {
  const files = await readGenerationFiles(directory, names, options);
  if (!files) return undefined;
  return new Map([...files].map(([name, file]) => [name, new TextDecoder().decode(file.content)]));
}

/** {@link readGeneration}, with each file's mode and owner as read. */
export async function readGenerationFiles(
  directory: string,
  names: readonly string[],
  options: DirectoryOptions = {},
): Promise<Map<string, StoredFile> | undefined> {
  for (const name of names) checkName(name);
  const current = await openCurrent(directory, options);
  if (!current) return undefined;
  try {
    const out = new Map<string, StoredFile>();
    for (const name of names) {
      const file = await readRegular(current.generation, name);
      if (!file) return undefined;
      out.set(name, file);
    }
    return out;
  } finally {
    await current.generation.close();
    await current.dir.close();
  }
}

/**
 * True when `directory` holds exactly `files` as {@link writeGeneration} would write them now:
 * the current generation has these names and no others, each with this content, this mode and
 * this owner, every visible name is the link through `..data`, and nothing an interrupted
 * write left (another generation, a temporary link) is beside it. A restart uses this to
 * decide whether a stored certificate must be written again.
 */
export async function isDelivered(
  directory: string,
  files: readonly PayloadFile[],
  owner: FileOwner = {},
  options: DirectoryOptions = {},
): Promise<boolean> {
  for (const file of files) checkName(file.name);
  const current = await openCurrent(directory, options);
  if (!current) return false;
  try {
    const present = (await current.generation.entries()).map((e) => e.name).sort();
    const wanted = files.map((f) => f.name).sort();
    if (present.join("/") !== wanted.join("/")) return false;
    const uid = owner.uid ?? agentUid();
    for (const file of files) {
      const stored = await readRegular(current.generation, file.name);
      if (!stored || stored.mode !== file.mode) return false;
      if (uid !== undefined && stored.uid !== uid) return false;
      if (owner.gid !== undefined && stored.gid !== owner.gid) return false;
      const content = typeof file.content === "string"
        ? new TextEncoder().encode(file.content)
        : file.content;
      if (!bytesEqual(stored.content, content)) return false;
    }
    const target = await current.dir.readlink(DATA);
    for (const entry of await current.dir.entries()) {
      // What an interrupted write left (a generation may hold a key): a new write sweeps it.
      if (entry.name !== DATA && entry.name !== target && isLeftover(entry.name)) return false;
      if (entry.name.startsWith("..")) continue;
      const link = entry.isSymbolicLink() ? await current.dir.readlink(entry.name) : undefined;
      const isWanted = wanted.includes(entry.name);
      if (isWanted && link !== `${DATA}/${entry.name}`) return false;
      // A link of a name no longer delivered (a layout change) is tidied by a new write.
      if (!isWanted && link?.startsWith(`${DATA}/`)) return false;
    }
    for (const name of wanted) if (!(await current.dir.lstat(name))) return false;
    return true;
  } finally {
    await current.generation.close();
    await current.dir.close();
  }
}

/**
 * Removes everything {@link writeGeneration} made in `directory` (visible links, `..data`,
 * generations), never following a symlink, then the directory itself if nothing else is left
 * in it. A directory that is not safe to deliver into (a symlink or a directory group or others
 * can write, from the delivery root down) is refused and left as it is.
 */
export async function removeDelivery(directory: string, options: DirectoryOptions = {}): Promise<void> {
  let dir: DirectoryHandle;
  try {
    dir = await openDelivery(directory, options, false);
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return;
    throw failed(directory, err);
  }
  try {
    for (const entry of await dir.entries()) {
      if (entry.name.startsWith("..") || !entry.isSymbolicLink()) continue;
      if ((await dir.readlink(entry.name))?.startsWith(`${DATA}/`)) await dir.unlink(entry.name);
    }
    if ((await dir.lstat(DATA))?.isSymbolicLink()) await dir.unlink(DATA);
    for (const entry of await dir.entries()) {
      if (isLeftover(entry.name)) await dir.removeTree(entry.name);
    }
  } catch (err) {
    throw failed(directory, err);
  } finally {
    await dir.close();
  }
  // rmdir removes only an empty directory and never follows a final symlink.
  await fs.rmdir(directory).catch(() => {});
}
