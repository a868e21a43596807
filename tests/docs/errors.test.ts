// docs/errors.md is where users look up an `err.code`: every MeshAuthError class the three
// public entries export has a row there naming the class and its code, so that a new error
// cannot ship undocumented.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as core from "../../mod.ts";
import * as caServer from "../../ca-server/mod.ts";
import * as agent from "../../agent/mod.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

function errorClassesOf(entry: Record<string, unknown>): [string, typeof core.MeshAuthError][] {
  return Object.entries(entry).filter((pair): pair is [string, typeof core.MeshAuthError] => {
    const value = pair[1];
    return typeof value === "function" &&
      (value === core.MeshAuthError || value.prototype instanceof core.MeshAuthError);
  });
}

const entries = { "meshauth": core, "meshauth/ca-server": caServer, "meshauth/agent": agent };

for (const [name, entry] of Object.entries(entries)) {
  test(`docs/errors.md has a row with the class and code of each error ${name} exports`, async () => {
    const rows = (await readFile(join(ROOT, "docs/errors.md"), "utf8"))
      .split("\n")
      .filter((line) => line.startsWith("|"));
    const classes = errorClassesOf(entry as Record<string, unknown>);
    assert.ok(classes.length > 0, `${name} exports no MeshAuthError class`);
    const missing = classes
      .filter(([exported, errorClass]) =>
        !rows.some((row) => row.includes(`\`${exported}\``) && row.includes(`\`${errorClass.code}\``))
      )
      .map(([exported, errorClass]) => `${exported} (${errorClass.code})`);
    assert.deepEqual(missing, []);
  });
}
