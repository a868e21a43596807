/**
 * Corpus minimisation for one fuzz target, in place of libFuzzer's -merge=1 (which re-executes
 * the fuzzer binary per attempt, and Jazzer.js's in-process engine cannot be re-executed so).
 * Every input of the repository corpus and of the local one runs through the target under V8's
 * block coverage, smallest first; an input is kept when it reaches a block of lib/ or
 * ca-server/ that no kept input reached, or reaches one a new number of times (in powers of
 * two, as libFuzzer counts features). Findings never make it in: an input that throws
 * anything is reported and left out, and so is one longer than the target's maximum length or 16 KB. The kept inputs replace tests/fuzz/corpus/<target>/.
 *
 * Run: node --import tsx scripts/fuzz/minimize.ts <target>   (npm run fuzz -- --merge <target>)
 * @module
 */
import { Session } from "node:inspector/promises";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TARGETS } from "../../tests/fuzz/targets/index.ts";

const root = new URL("../../", import.meta.url).pathname;
const name = process.argv[2];
const target = TARGETS[name];
if (!target) {
  console.error(`usage: minimize.ts <${Object.keys(TARGETS).join("|")}>`);
  process.exit(2);
}
const repoDir = join(root, "tests/fuzz/corpus", name);
const localDir = join(root, ".fuzz/corpus", name);
const inputs = new Map<string, Uint8Array>();
// Findings, once fixed, stay in the repository corpus whatever coverage they add.
const findings = new Map<string, Uint8Array>();
if (existsSync(repoDir)) {
  for (const f of readdirSync(repoDir).filter((f) => f.startsWith("crash-"))) {
    findings.set(f, new Uint8Array(readFileSync(join(repoDir, f))));
  }
}
for (const dir of [repoDir, localDir]) {
  if (!existsSync(dir)) continue;
  for (const f of readdirSync(dir)) {
    if (f.startsWith("crash-")) continue;
    const data = new Uint8Array(readFileSync(join(dir, f)));
    inputs.set(createHash("sha1").update(data).digest("hex"), data);
  }
}
// Inputs longer than the fuzzer's -max_len (seeds from x509-limbo can be) stay out, and so do
// inputs over 16 KB: the repository corpus stays small, and the local one keeps them.
const MAX_KEPT_BYTES = Math.min(target.maxLength, 16 * 1024);
const ordered = [...inputs].filter(([, data]) => data.length <= MAX_KEPT_BYTES)
  .sort((a, b) => a[1].length - b[1].length);

const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
const watched = (url: string) => url.includes("/lib/") || url.includes("/ca-server/");
const bucket = (count: number) => Math.min(8, Math.floor(Math.log2(count)));

const seen = new Set<string>();
const kept: Array<[string, Uint8Array]> = [];
let refused = 0;
await session.post("Profiler.takePreciseCoverage"); // reset counts
for (const [hash, data] of ordered) {
  let failed = false;
  try {
    await target.check(data);
  } catch (err) {
    failed = true;
    refused++;
    console.log(`left out ${hash}: ${err instanceof Error ? err.message : err}`);
  }
  const { result } = await session.post("Profiler.takePreciseCoverage");
  if (failed) continue;
  let fresh = false;
  for (const script of result) {
    if (!watched(script.url)) continue;
    for (const fn of script.functions) {
      for (const range of fn.ranges) {
        if (range.count === 0) continue;
        const feature = `${script.url}:${range.startOffset}:${range.endOffset}:${bucket(range.count)}`;
        if (!seen.has(feature)) {
          seen.add(feature);
          fresh = true;
        }
      }
    }
  }
  if (fresh) kept.push([hash, data]);
}
await session.post("Profiler.stopPreciseCoverage");
session.disconnect();

rmSync(repoDir, { recursive: true, force: true });
mkdirSync(repoDir, { recursive: true });
let bytes = 0;
for (const [file, data] of findings) {
  await target.check(data); // a finding that fails again is a regression: stop here
  writeFileSync(join(repoDir, file), data);
  bytes += data.length;
}
for (const [hash, data] of kept) {
  writeFileSync(join(repoDir, hash), data);
  bytes += data.length;
}
console.log(
  `${name}: ${kept.length} of ${inputs.size} inputs kept, and ${findings.size} fixed findings (${
    (bytes / 1024).toFixed(0)
  } KB, ${seen.size} block features)` +
    (refused ? `, ${refused} left out as findings` : ""),
);
