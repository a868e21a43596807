/**
 * Replays fuzz inputs through a target outside the fuzzer, printing what each does: for
 * looking at a finding, and for checking a fix. `node --import tsx scripts/fuzz-replay.ts
 * <target> <file or directory>...`
 * @module
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { TARGETS } from "../tests/fuzz/targets/index.ts";
import { describeError, timed } from "../tests/fuzz/harness.ts";

const [name, ...paths] = process.argv.slice(2);
const target = TARGETS[name];
if (!target || paths.length === 0) {
  console.error(`usage: fuzz-replay.ts <${Object.keys(TARGETS).join("|")}> <file or directory>...`);
  process.exit(2);
}
const files = paths.flatMap((p) => statSync(p).isDirectory() ? readdirSync(p).map((f) => join(p, f)) : [p]);
const run = timed(target);
let failures = 0;
for (const file of files) {
  const t0 = performance.now();
  try {
    await run(new Uint8Array(readFileSync(file)));
    console.log(`ok    ${file} (${(performance.now() - t0).toFixed(1)} ms)`);
  } catch (err) {
    failures++;
    console.log(`FAIL  ${file}: ${describeError(err)}`);
    if (process.env.VERBOSE) console.log(err);
  }
}
console.log(`${files.length - failures} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
