/**
 * The services' sockets directory of one `npm start` (`$TMPDIR/meshauth-mesh-*`), with an
 * `owner.pid` file naming the process that made it. A run ended by SIGKILL (or a crash) cannot
 * remove its own; the next run removes every such directory of this user whose owner process is
 * gone. A directory without the owner file, another user's, a symbolic link, or one whose owner
 * still runs is left alone: only what a dead `npm start` provably left is removed.
 *
 * @module
 */

import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The prefix of a sockets directory's name in the temporary directory. */
export const SOCKETS_DIR_PREFIX = "meshauth-mesh-";
/** The file in it that names the process that made it. */
export const OWNER_FILE = "owner.pid";

/** Makes a sockets directory (0700, as mkdtemp makes it) owned by this process. */
export async function createSocketsDir(parent: string = tmpdir()): Promise<string> {
  const dir = await mkdtemp(join(parent, SOCKETS_DIR_PREFIX));
  await writeFile(join(dir, OWNER_FILE), `${process.pid}\n`, { mode: 0o600 });
  return dir;
}

/** Removes the sockets directories left by runs whose process is gone; answers their paths. */
export async function removeDeadSocketsDirs(parent: string = tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  const me = process.getuid?.();
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(SOCKETS_DIR_PREFIX)) continue;
    const dir = join(parent, name);
    try {
      const stat = await lstat(dir);
      if (!stat.isDirectory() || (me !== undefined && stat.uid !== me)) continue;
      const text = await readFile(join(dir, OWNER_FILE), "utf8");
      if (!/^\d+\n?$/.test(text)) continue;
      const pid = Number(text.trim());
      if (pid === process.pid || isAlive(pid)) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // No owner file, or gone meanwhile: not provably a dead run's, so left alone.
    }
  }
  return removed;
}

/** True while `pid` names a process (one of another user's counts: EPERM). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
