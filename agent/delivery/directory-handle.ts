/**
 * Working inside a directory through an open handle rather than by path, so that nothing a
 * workload does to the path between a check and a use (renaming a directory away, planting a
 * symlink in its place) can redirect the agent's writes, chmods, chowns or removals.
 *
 * Node has no `openat`/`mkdirat`/`renameat`, so on Linux every operation names its target as
 * `/proc/self/fd/<fd>/<name>`: the kernel resolves the magic link to the directory the handle
 * holds (wherever it has been moved), then looks up one plain name in it; a final component
 * that is a symlink is never followed where it matters (`O_NOFOLLOW`, `lstat`, `unlink`,
 * `rename`, `rmdir`). Where `/proc/self/fd` does not work (macOS), the directory's path is used
 * after checking, before each change, that it still names the directory the handle holds.
 *
 * A directory is opened only from a trusted root downwards, one plain name at a time with
 * `O_DIRECTORY | O_NOFOLLOW`, and each level is checked: a real directory, owned by root or by
 * the agent, that neither its group nor others can write. Whoever can write a directory can
 * swap what is in it, so a directory that passes these checks holds only what root or the
 * agent put there.
 *
 * @module
 */

import { constants, type Dirent, promises as fs, type Stats } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { syncDirectory } from "../../internal/mod.ts";
import { DeliveryRefused } from "./errors.ts";

const DIRECTORY_FLAGS = constants.O_RDONLY | (constants.O_DIRECTORY ?? 0) | (constants.O_NOFOLLOW ?? 0);

/** The agent's uid, or undefined where there are no uids (Windows). */
export function agentUid(): number | undefined {
  return process.getuid?.();
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Why `stat` (of `path`) is not a directory to write credentials into, or undefined: it must be
 * a directory owned by root or the agent that neither its group nor others can write.
 */
export function unsafeDirectoryReason(stat: Stats): string | undefined {
  if (!stat.isDirectory()) return "it is not a directory";
  const me = agentUid();
  if (me !== undefined && stat.uid !== 0 && stat.uid !== me) {
    return `it belongs to uid ${stat.uid}, not to root or the agent (uid ${me}); ` +
      "a workload reads its files by their owner and mode, it must not own the directory";
  }
  if (stat.mode & 0o022) return `its group or others can write to it (mode ${modeText(stat.mode)})`;
  return undefined;
}

let procFdWorks: boolean | undefined;

async function checkProcFd(handle: FileHandle, stat: Stats): Promise<boolean> {
  if (procFdWorks === undefined) {
    try {
      const seen = await fs.stat(`/proc/self/fd/${handle.fd}`);
      procFdWorks = seen.ino === stat.ino && seen.dev === stat.dev;
    } catch {
      procFdWorks = false;
    }
  }
  return procFdWorks;
}

/** An open, checked directory; every name passed to its methods is one plain file name. */
export class DirectoryHandle {
  private constructor(
    /** The directory's path when it was opened (for messages, and where /proc is missing). */
    readonly path: string,
    readonly handle: FileHandle,
    readonly stat: Stats,
    readonly isProcFd: boolean,
  ) {}

  /**
   * Opens `root` (created 0755 if missing and `create`); symlinks in the root's own path are
   * resolved (it is the operator's), and the directory it names is checked unless `check` is
   * false.
   */
  static async openRoot(root: string, create: boolean, check = true): Promise<DirectoryHandle> {
    if (create) await fs.mkdir(root, { recursive: true, mode: 0o755 });
    const real = await fs.realpath(root);
    return await DirectoryHandle.#open(real, real, root, check);
  }

  /**
   * Opens `directory`, walking down from `root` one name at a time without following a
   * symlink, checking each level from `root` down (and creating missing ones, 0755, when
   * `create`). Without a root, only `directory` itself is checked, opened from its parent.
   * Throws {@link DeliveryRefused} for a level that fails a check or a directory outside `root`.
   */
  static async openBelow(
    root: string | undefined,
    directory: string,
    create: boolean,
  ): Promise<DirectoryHandle> {
    const target = resolve(directory);
    let current: DirectoryHandle;
    let names: string[];
    if (root === undefined) {
      if (target === sep) throw new DeliveryRefused(directory, "it is the file system's root");
      current = await DirectoryHandle.openRoot(dirname(target), create, false);
      names = [basename(target)];
    } else {
      const rel = relative(resolve(root), target);
      if (rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
        throw new DeliveryRefused(directory, `it is not inside the delivery root ${root}`);
      }
      current = await DirectoryHandle.openRoot(root, create);
      names = rel ? rel.split(sep) : [];
    }
    try {
      for (const name of names) {
        const next = await current.child(name, create);
        await current.close();
        current = next;
      }
    } catch (err) {
      await current.close();
      throw err;
    }
    return current;
  }

  static async #open(
    target: string,
    shown: string,
    refusedAs = shown,
    check = true,
  ): Promise<DirectoryHandle> {
    let handle: FileHandle;
    try {
      handle = await fs.open(target, DIRECTORY_FLAGS);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ELOOP" || code === "ENOTDIR") {
        throw new DeliveryRefused(refusedAs, "it is a symbolic link or not a directory");
      }
      throw err;
    }
    try {
      const stat = await handle.stat();
      const reason = check ? unsafeDirectoryReason(stat) : undefined;
      if (reason) throw new DeliveryRefused(refusedAs, reason);
      return new DirectoryHandle(shown, handle, stat, await checkProcFd(handle, stat));
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** The path that names `name` inside this directory, for one system call. */
  async at(name: string): Promise<string> {
    checkPlainName(name);
    if (this.isProcFd) return `/proc/self/fd/${this.handle.fd}/${name}`;
    // No /proc: the path must still lead to the directory this handle holds.
    const seen = await fs.lstat(this.path).catch(() => undefined);
    if (!seen || seen.ino !== this.stat.ino || seen.dev !== this.stat.dev) {
      throw new DeliveryRefused(this.path, "it was replaced while the agent was writing into it");
    }
    return join(this.path, name);
  }

  /** Opens (creating it first, 0755, if `create`) the directory `name` inside this one, checked. */
  async child(name: string, create: boolean, mode = 0o755): Promise<DirectoryHandle> {
    const path = await this.at(name);
    if (create) {
      await fs.mkdir(path, { mode }).catch((err) => {
        if ((err as { code?: string }).code !== "EEXIST") throw err;
      });
    }
    return await DirectoryHandle.#open(path, join(this.path, name));
  }

  /** Creates the directory `name`; fails if it exists. */
  async mkdir(name: string, mode: number): Promise<void> {
    await fs.mkdir(await this.at(name), { mode });
  }

  async entries(): Promise<Dirent[]> {
    return await fs.readdir(await this.at("."), { withFileTypes: true });
  }

  async lstat(name: string): Promise<Stats | undefined> {
    try {
      return await fs.lstat(await this.at(name));
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** The target of the symlink `name`, or undefined when it is missing or not a symlink. */
  async readlink(name: string): Promise<string | undefined> {
    try {
      return await fs.readlink(await this.at(name));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ENOENT" || code === "EINVAL") return undefined;
      throw err;
    }
  }

  /** Opens the file `name` without following a symlink (`flags` are added to O_NOFOLLOW). */
  async openFile(name: string, flags: number, mode?: number): Promise<FileHandle> {
    return await fs.open(await this.at(name), flags | (constants.O_NOFOLLOW ?? 0), mode);
  }

  async symlink(target: string, name: string): Promise<void> {
    await fs.symlink(target, await this.at(name));
  }

  async rename(from: string, to: string): Promise<void> {
    await fs.rename(await this.at(from), await this.at(to));
  }

  async unlink(name: string): Promise<void> {
    await fs.unlink(await this.at(name)).catch((err) => {
      if ((err as { code?: string }).code !== "ENOENT") throw err;
    });
  }

  async rmdir(name: string): Promise<void> {
    await fs.rmdir(await this.at(name));
  }

  /**
   * Removes `name` and, if it is a directory, everything in it, never following a symlink: a
   * link is removed, not what it points to. A directory that fails the checks (it is not the
   * agent's) is refused and left alone.
   */
  async removeTree(name: string): Promise<void> {
    const stat = await this.lstat(name);
    if (!stat) return;
    if (!stat.isDirectory()) return await this.unlink(name);
    const child = await this.child(name, false);
    try {
      for (const entry of await child.entries()) await child.removeTree(entry.name);
    } finally {
      await child.close();
    }
    await this.rmdir(name);
  }

  /** Makes renames in this directory durable, where the file system can. */
  async sync(): Promise<void> {
    await syncDirectory(this.handle);
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => {});
  }
}

/** A name inside a directory: no `/`, not empty, not `.` or `..` (`.` only for listing). */
function checkPlainName(name: string): void {
  if (!name || name.includes("/") || name.includes("\0") || name === "..") {
    throw new DeliveryRefused(".", `${JSON.stringify(name)} is not a plain file name`);
  }
}
