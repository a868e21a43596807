/**
 * The mounts behind a CSI volume, made with the system's `mount` and `umount` (util-linux, as
 * Kubernetes' mount-utils does): a small tmpfs per volume, so that keys live in memory only and
 * vanish with the volume, bound onto the kubelet's target path, read-only when the pod asks
 * for a read-only volume (the agent keeps writing through the tmpfs's own mount point). Which
 * paths are mount points is read from `/proc/self/mountinfo`.
 *
 * @module
 */

import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";

/** Size of one volume's tmpfs: a key, a chain, a bundle and a few generations of them. */
const TMPFS_OPTIONS = "size=1m,mode=0755,nosuid,nodev,noexec";

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const detail = String(stderr).trim().split("\n")[0] || err.message;
      reject(new Error(`${command} ${args.join(" ")}: ${detail}`));
    });
  });
}

/** Undoes the octal escapes of a mountinfo path (`\040` for a space). */
function unescape(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** The mount points of this process's mount namespace. */
export async function mountPoints(): Promise<Set<string>> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length > 4) out.add(unescape(fields[4]));
  }
  return out;
}

/** True when `path` is a mount point. */
export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountPoints()).has(path);
}

/** Mounts a fresh tmpfs on `path` (made if missing), unless one is there already. */
export async function mountTmpfs(path: string): Promise<void> {
  await fs.mkdir(path, { recursive: true, mode: 0o750 });
  if (await isMountPoint(path)) return;
  await run("mount", ["-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", path]);
}

/** Binds `source` onto `target` (made if missing), read-only when asked, unless already mounted. */
export async function bindMount(source: string, target: string, isReadOnly: boolean): Promise<void> {
  await fs.mkdir(target, { recursive: true, mode: 0o750 });
  if (await isMountPoint(target)) return;
  await run("mount", ["--bind", source, target]);
  // A bind mount takes its read-only flag from a remount (older util-linux ignores -o ro on --bind).
  if (isReadOnly) await run("mount", ["-o", "remount,bind,ro", target]);
}

/** Unmounts `path` while it is a mount point (a path mounted twice needs two), then removes it. */
export async function unmountAndRemove(path: string): Promise<void> {
  for (let i = 0; i < 8 && await isMountPoint(path); i++) await run("umount", [path]);
  if (await isMountPoint(path)) throw new Error(`${path} is still mounted`);
  await fs.rm(path, { recursive: true, force: true });
}
