// Installing meshauth as the README and docs/ say, before it is on the npm registry: every
// registry line (`npm install meshauth`, `bun add meshauth`, `"npm:meshauth"`) is marked as
// being for after the first release, and the tarball they name is the one `npm pack` writes
// for this version (tests/package/pack.test.ts installs that tarball into a project).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
const { name, version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

function documents(): string[] {
  const docs = readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).map((f) => join("docs", f));
  return ["README.md", ...docs];
}

test("every registry install line in README and docs/ is marked as for after the first release", () => {
  const registry = /\b(npm install|npm i|bun add|deno add|pnpm add|yarn add) meshauth\b|"npm:meshauth"/;
  const later = /after the first release|once (it is )?released|until (its|the) first release/i;
  for (const file of documents()) {
    const lines = readFileSync(join(ROOT, file), "utf8").split("\n");
    lines.forEach((line, i) => {
      if (registry.test(line)) assert.match(line, later, `${file}:${i + 1}: ${line}`);
    });
  }
});

test("the tarball the docs install is the one npm pack writes for this version", () => {
  const tarball = `${name}-${version}.tgz`;
  let named = 0;
  for (const file of documents()) {
    for (const [found] of readFileSync(join(ROOT, file), "utf8").matchAll(/\bmeshauth-[\w.-]+\.tgz\b/g)) {
      assert.equal(found, tarball, file);
      named++;
    }
  }
  assert.ok(named > 0, "the docs say which tarball to install");
});
