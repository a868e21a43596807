// Builds scripts/fuzz/compat-shim.c (the three symbols the prebuilt libFuzzer addon needs on a
// glibc older than 2.38; see native-compat.cjs) into a shared object, once.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const source = join(dirname(fileURLToPath(import.meta.url)), "compat-shim.c");

/**
 * Builds the shim at `shimPath` unless it is there; true when it is there afterwards. The
 * compiler writes beside the final name and the result is renamed into place, so an
 * interrupted build, a failed one, or two fuzzers building at once never leave a half-written
 * .so at `shimPath`, where every later run would preload it.
 */
export function buildCompatShim(shimPath, { cc = "cc" } = {}) {
  if (existsSync(shimPath)) return true;
  mkdirSync(dirname(shimPath), { recursive: true });
  const partial = `${shimPath}.${process.pid}.tmp`;
  const built = spawnSync(cc, ["-shared", "-fPIC", "-O2", "-o", partial, source], { stdio: "inherit" });
  if (built.status !== 0) {
    rmSync(partial, { force: true });
    return false;
  }
  renameSync(partial, shimPath);
  return true;
}
