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
 * @module
 */

import { constants, promises as fs } from "node:fs";
import { join } from "node:path";
import { MeshAuthError } from "../../mod.ts";

/** One file of a generation. */
export interface PayloadFile {
  /** A plain name: no `/`, not starting with `..`. */
  name: string;
  content: string | Uint8Array;
  mode: number;
}

/** Who owns the files (the directory stays the agent's); unset fields keep the agent's own. */
export interface FileOwner {
  uid?: number;
  gid?: number;
}

/** The directory is not safe to deliver into (others may write it, or it is not a directory). */
export class DeliveryRefused extends MeshAuthError {
  static override code = "ERR_DELIVERY_REFUSED";
  override name = "DeliveryRefused";
  override code = DeliveryRefused.code;
  constructor(readonly directory: string, reason: string) {
    super(`refusing to deliver into ${directory}: ${reason}`);
  }
}

/** Writing a generation failed (full disk, no permission...); the previous files are in place. */
export class DeliveryFailed extends MeshAuthError {
  static override code = "ERR_DELIVERY_FAILED";
  override name = "DeliveryFailed";
  override code = DeliveryFailed.code;
  constructor(readonly directory: string, readonly causeCode: string | undefined, reason: string) {
    super(`writing into ${directory} failed, previous files kept: ${reason}`);
  }
}

const DATA = "..data";
const DATA_TMP = "..data_tmp";
const VISIBLE_TMP = /^\.\.visible_tmp\./;

function checkName(name: string): void {
  if (!name || name.includes("/") || name.includes("\0") || name.startsWith("..") || name === ".") {
    throw new DeliveryRefused(".", `${JSON.stringify(name)} is not a plain file name`);
  }
}

function generationName(now = new Date()): string {
  const p = (n: number, width = 2) => String(n).padStart(width, "0");
  return `..${now.getUTCFullYear()}_${p(now.getUTCMonth() + 1)}_${p(now.getUTCDate())}_` +
    `${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}.`;
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await fs.open(directory, constants.O_RDONLY);
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems cannot fsync a directory; the rename is as durable there as it gets.
    const code = (error as { code?: string }).code;
    if (code !== "EINVAL" && code !== "ENOTSUP" && code !== "EISDIR") throw error;
  } finally {
    await handle.close();
  }
}

/**
 * Creates `directory` if missing (mode 0755) and checks that it is safe to write credentials
 * into: a real directory (not a symlink that could point anywhere), that users other than the
 * agent, root and the workload's owner cannot write, since whoever can write it can swap
 * `..data` or the visible links to files of their choosing.
 */
export async function prepareDirectory(directory: string, owner: FileOwner = {}): Promise<void> {
  await fs.mkdir(directory, { recursive: true, mode: 0o755 });
  const stat = await fs.lstat(directory);
  if (stat.isSymbolicLink()) throw new DeliveryRefused(directory, "it is a symbolic link");
  if (!stat.isDirectory()) throw new DeliveryRefused(directory, "it is not a directory");
  if (stat.mode & 0o002) {
    throw new DeliveryRefused(
      directory,
      `others can write to it (mode ${(stat.mode & 0o7777).toString(8).padStart(4, "0")})`,
    );
  }
  const me = process.getuid?.();
  if (me !== undefined && stat.uid !== me && stat.uid !== 0 && stat.uid !== owner.uid) {
    throw new DeliveryRefused(
      directory,
      `it belongs to uid ${stat.uid}, neither the agent, root nor the workload`,
    );
  }
}

async function writeOne(path: string, file: PayloadFile, owner: FileOwner): Promise<void> {
  const handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, file.mode);
  try {
    // The umask may have narrowed the mode, and a new file starts as the agent's: set both
    // before the content is written, so a key is never readable by anyone else.
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

/**
 * Writes `files` as a new generation of `directory` and switches `..data` to it. On failure
 * before the switch, the half-written generation is removed and the previous one stays.
 */
export async function writeGeneration(
  directory: string,
  files: readonly PayloadFile[],
  owner: FileOwner = {},
): Promise<void> {
  for (const file of files) checkName(file.name);
  try {
    await prepareDirectory(directory, owner);
  } catch (err) {
    throw failed(directory, err);
  }
  let generation: string | undefined;
  try {
    generation = await fs.mkdtemp(join(directory, generationName()));
    await fs.chmod(generation, 0o755);
    for (const file of files) {
      await writeOne(join(generation, file.name), file, owner);
    }
    await syncDirectory(generation);
    const tmp = join(directory, DATA_TMP);
    await fs.rm(tmp, { force: true });
    await fs.symlink(generation.slice(directory.length + 1), tmp);
    await fs.rename(tmp, join(directory, DATA));
  } catch (err) {
    if (generation) await fs.rm(generation, { recursive: true, force: true }).catch(() => {});
    throw failed(directory, err);
  }
  const current = generation.slice(directory.length + 1);
  try {
    await syncDirectory(directory);
    await tidy(directory, files.map((f) => f.name), current);
  } catch (err) {
    throw failed(directory, err);
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
async function tidy(directory: string, names: readonly string[], current: string): Promise<void> {
  const entries = await fs.readdir(directory, { withFileTypes: true });
  const byName = new Map(entries.map((e) => [e.name, e]));
  for (const name of names) {
    const path = join(directory, name);
    const target = `${DATA}/${name}`;
    const existing = byName.get(name);
    if (existing?.isSymbolicLink() && (await fs.readlink(path)) === target) continue;
    if (existing?.isDirectory()) throw new DeliveryRefused(directory, `${name} is a directory`);
    // A new link replaces whatever had the name (a plain file from an older writer) in one rename.
    const tmp = join(directory, `..visible_tmp.${crypto.randomUUID()}`);
    await fs.symlink(target, tmp);
    await fs.rename(tmp, path);
  }
  for (const entry of entries) {
    const path = join(directory, entry.name);
    if (entry.name.startsWith("..")) {
      if (entry.name !== DATA && entry.name !== current && isLeftover(entry.name)) {
        await fs.rm(path, { recursive: true, force: true });
      }
    } else if (
      !names.includes(entry.name) && entry.isSymbolicLink() &&
      (await fs.readlink(path)).startsWith(`${DATA}/`)
    ) {
      await fs.unlink(path);
    }
  }
}

/** A generation, or the temporary link of an interrupted swap. */
function isLeftover(name: string): boolean {
  return name === DATA_TMP || VISIBLE_TMP.test(name) || /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\./.test(name);
}

/**
 * Reads the named files of the current generation, resolving `..data` once, so that the files
 * answered belong together. Undefined when nothing was delivered (or a file is missing).
 */
export async function readGeneration(
  directory: string,
  names: readonly string[],
): Promise<Map<string, string> | undefined> {
  let generation: string;
  try {
    generation = await fs.readlink(join(directory, DATA));
  } catch {
    return undefined;
  }
  const out = new Map<string, string>();
  for (const name of names) {
    checkName(name);
    try {
      out.set(name, await fs.readFile(join(directory, generation, name), "utf8"));
    } catch {
      return undefined;
    }
  }
  return out;
}

/**
 * Removes everything {@link writeGeneration} made in `directory` (visible links, `..data`,
 * generations), then the directory itself if nothing else is left in it.
 */
export async function removeDelivery(directory: string): Promise<void> {
  let entries: string[];
  try {
    entries = await fs.readdir(directory);
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return;
    throw failed(directory, err);
  }
  try {
    for (const entry of entries) {
      if (entry.startsWith("..")) continue;
      const path = join(directory, entry);
      const stat = await fs.lstat(path).catch(() => undefined);
      if (stat?.isSymbolicLink() && (await fs.readlink(path)).startsWith(`${DATA}/`)) await fs.unlink(path);
    }
    await fs.rm(join(directory, DATA), { force: true });
    for (const entry of await fs.readdir(directory)) {
      if (isLeftover(entry)) await fs.rm(join(directory, entry), { recursive: true, force: true });
    }
    await fs.rmdir(directory).catch(() => {});
  } catch (err) {
    throw failed(directory, err);
  }
}
