/**
 * Replacing a file so that readers and crashes only ever see the old content or the new:
 * write a temporary file beside it, fsync it, rename it over the old one, fsync the directory.
 * The CA's keys and state and the agent's SVID files are written this way.
 *
 * `node/` holds what the Node-side entries (`ca-server/`, `agent/`) share; the core in `lib/`
 * never imports it.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "meshauth/agent";
 * await writeFileAtomic("/run/svid/svid_key.pem", keyPem, 0o600);
 * ```
 * @module
 */

import { constants, promises as fs } from "node:fs";
import { dirname } from "node:path";

/**
 * Replaces `path` with `content` atomically and durably, with file mode `mode`. The temporary
 * file is created exclusively with that mode, so a private key is never readable by others,
 * not even for a moment, and it is removed if any step fails.
 */
export async function writeFileAtomic(
  path: string,
  content: string | Uint8Array,
  mode: number,
): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  const handle = await fs.open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    // The umask may have narrowed the mode; a key must be exactly 0600, a bundle readable.
    await handle.chmod(mode);
    await handle.writeFile(content);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await fs.rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await fs.rename(temporary, path);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }
  const directory = await fs.open(dirname(path), constants.O_RDONLY);
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
