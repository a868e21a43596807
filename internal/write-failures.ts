/**
 * What a file system says when it cannot take a write, in words for an operator: the CA's store
 * and the proxy's audit log say it alike.
 *
 * @module
 */

const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: "the disk is full",
  EDQUOT: "the disk quota is used up",
  EROFS: "the file system is read-only",
  EACCES: "permission is denied",
  EPERM: "permission is denied",
  EIO: "the disk failed (an I/O error)",
};

/** `the file system is read-only` for `EROFS`, ...; undefined for a code that is not a refused write. */
export function writeFailureOf(code: unknown): string | undefined {
  return typeof code === "string" && Object.hasOwn(WRITE_FAILURES, code) ? WRITE_FAILURES[code] : undefined;
}
