/**
 * Replacing a file so that readers and crashes only ever see the old content or the new:
 * write a temporary file beside it, fsync it, rename it over the old one, fsync the directory.
 * The CA's keys and state and the agent's SVID files are written this way.
 *
 * `ca-server/` and `agent/` reach it through `internal/mod.ts`; the core in `lib/` never does.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "../internal/mod.ts";
 * await writeFileAtomic("/run/svid/svid_key.pem", keyPem, 0o600);
 * ```
 * @module
 */

import { constants, promises as fs } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** `<name>.<uuid>.tmp`: the temporary files this module makes, and only those. */
const TEMPORARY = /^(.+)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

const encoder = new TextEncoder();

/**
 * Replaces `path` with `content` atomically and durably, with file mode `mode`. The temporary
 * file is created exclusively with that mode, so a private key is never readable by others,
 * not even for a moment. If writing or renaming fails, the temporary file is removed and
 * `path` keeps its old content. Content too large to hold at once (a store's snapshot) comes
 * as an async iterable of chunks, written one after another.
 */
export async function writeFileAtomic(
  path: string,
  content: string | Uint8Array | AsyncIterable<string | Uint8Array>,
  mode: number,
): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    const handle = await fs.open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    try {
      // The umask may have narrowed the mode; a key must be exactly 0600, a bundle readable.
      await handle.chmod(mode);
      const chunks = typeof content === "string" || content instanceof Uint8Array ? [content] : content;
      for await (const chunk of chunks) {
        const bytes = typeof chunk === "string" ? encoder.encode(chunk) : chunk;
        for (let offset = 0; offset < bytes.length;) {
          offset += (await handle.write(bytes, offset)).bytesWritten;
        }
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temporary, path);
  } catch (error) {
    await fs.rm(temporary, { force: true }).catch(() => {});
    throw error;
  }
  await syncDirectory(dirname(path));
}

/**
 * Makes a rename in `directory` (a path, or a handle open on it) durable, where the file
 * system can.
 */
export async function syncDirectory(directory: string | FileHandle): Promise<void> {
  const handle = typeof directory === "string" ? await fs.open(directory, constants.O_RDONLY) : directory;
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems (network and FUSE mounts) cannot fsync a directory; the rename
    // has happened, and is as durable there as it can be.
    const code = (error as { code?: string }).code;
    if (code !== "EINVAL" && code !== "ENOTSUP" && code !== "EISDIR") throw error;
  } finally {
    if (typeof directory === "string") await handle.close();
  }
}

/**
 * Removes the temporary files that a crash in the middle of {@link writeFileAtomic} left in
 * `directory` (a key's may hold private key material), if older than `olderThanMs`, so that
 * a write still in progress in another process is left alone. Answers how many it removed.
 */
export async function removeStaleTemporaries(directory: string, olderThanMs = 60_000): Promise<number> {
  let removed = 0;
  const cutoff = Date.now() - olderThanMs;
  for (const name of await fs.readdir(directory).catch(() => [] as string[])) {
    if (!TEMPORARY.test(basename(name))) continue;
    const path = join(directory, name);
    const stat = await fs.lstat(path).catch(() => undefined);
    if (!stat?.isFile() || stat.mtimeMs > cutoff) continue;
    await fs.rm(path, { force: true });
    removed++;
  }
  return removed;
}
