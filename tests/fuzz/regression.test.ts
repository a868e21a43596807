// The fuzz corpora as regression tests (issue 18): every input kept in tests/fuzz/corpus/<target>/
// (the inputs that reached new coverage, and every finding, once fixed) runs through its target
// again, which must neither crash nor find anything. `npm run fuzz -- <target> <seconds>`
// fuzzes further; this replays what is known, in a few seconds per target.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { TARGETS } from "./targets/index.ts";

const corpusRoot = new URL("./corpus/", import.meta.url);

for (const [name, target] of Object.entries(TARGETS)) {
  test(`fuzz target ${name}: its corpus replays without a finding`, async () => {
    const dir = new URL(`${name}/`, corpusRoot);
    assert.ok(existsSync(dir), `tests/fuzz/corpus/${name} is missing`);
    const files = readdirSync(dir).sort();
    assert.ok(files.length > 0, `tests/fuzz/corpus/${name} is empty`);
    for (const file of files) {
      const data = new Uint8Array(readFileSync(new URL(file, dir)));
      try {
        await target.check(data);
      } catch (err) {
        assert.fail(
          `tests/fuzz/corpus/${name}/${file}: ${err instanceof Error ? `${err.name}: ${err.message}` : err}`,
        );
      }
    }
  });
}
