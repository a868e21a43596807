#!/usr/bin/env node
// `node tests/runtimes/run.mjs <runtime> [args...]`: runs one of the test runtimes (node24,
// deno, bun, workerd), installing them first from tests/runtimes/package-lock.json if needed.
// package.json's fmt script uses it for `deno fmt`.
import { spawnSync } from "node:child_process";
import { ensureRuntimes, requireRuntime, RUNTIME_BINARIES } from "./runtimes.mjs";

const [name, ...args] = process.argv.slice(2);
if (!name || !(name in RUNTIME_BINARIES)) {
  console.error(`usage: node tests/runtimes/run.mjs <${Object.keys(RUNTIME_BINARIES).join("|")}> [args...]`);
  process.exit(2);
}
ensureRuntimes({ log: (line) => console.error(line) });
const result = spawnSync(requireRuntime(name), args, { stdio: "inherit" });
process.exit(result.status ?? 1);
