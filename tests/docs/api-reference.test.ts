// docs/api/ is generated from the doc comments by `npm run docs:api` (TypeDoc), never written
// by hand: regenerating it must change nothing, so a changed export cannot leave it stale. And
// every export of the public entries is documented: `deno doc --lint` passes on them.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { requireRuntime, skipUnlessRuntime } from "../runtimes/runtimes.mjs";

const ROOT = new URL("../..", import.meta.url).pathname;

function tree(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.set(relative(dir, path), readFileSync(path, "utf8"));
    }
  };
  walk(dir);
  return files;
}

test("docs/api is what npm run docs:api generates from the doc comments", { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), "meshauth-api-"));
  try {
    await promisify(execFile)(
      join(ROOT, "node_modules/.bin/typedoc"),
      ["--out", out, "--logLevel", "Error"],
      {
        cwd: ROOT,
      },
    );
    const expected = tree(out);
    const committed = tree(join(ROOT, "docs/api"));
    const stale = [...new Set([...expected.keys(), ...committed.keys()])]
      .filter((file) => expected.get(file) !== committed.get(file))
      .sort();
    assert.deepEqual(stale, [], "docs/api is stale: run npm run docs:api and commit the result");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

// The entries `deno doc --lint` holds to "every export documented, every type a public signature
// names exported": every public entry, as the `doc` task in deno.json runs it.
const DOCUMENTED_ENTRIES = ["mod.ts", "ca-server/mod.ts", "agent/mod.ts"];

test(
  "deno doc --lint passes on the public entries",
  { timeout: 120_000, skip: skipUnlessRuntime("deno") },
  async () => {
    const result = await promisify(execFile)(
      requireRuntime("deno"),
      ["doc", "--lint", ...DOCUMENTED_ENTRIES],
      {
        cwd: ROOT,
        env: { ...process.env, NO_COLOR: "1" },
        maxBuffer: 16 * 1024 * 1024,
      },
    ).then(
      () => ({ ok: true, report: "" }),
      (err: { stdout?: string; stderr?: string }) => ({
        ok: false,
        report: `${err.stdout ?? ""}${err.stderr ?? ""}`,
      }),
    );
    // The report without deno's warnings about the @types/node files it does not resolve.
    const errors = result.report.split("\n").filter((line, i, lines) =>
      !line.startsWith("Warning ") && !(lines[i - 1]?.startsWith("Warning ") && /^\s+at /.test(line))
    ).join("\n");
    assert.ok(
      result.ok,
      `deno doc --lint ${DOCUMENTED_ENTRIES.join(" ")} failed:\n${errors.slice(0, 20_000)}`,
    );
  },
);
