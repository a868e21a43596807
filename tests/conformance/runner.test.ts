// `npm run conformance` in a checkout that has no ../shared beside it (a fresh clone): one
// line that says where the x509-limbo cases go and how to get them, and a non-zero exit, not
// a stack trace. The runner is copied into such a checkout; lib/ and node_modules/ are links.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
declare const Deno: unknown;
const NODE = typeof Deno === "undefined" ? process.execPath : "node";

test("the conformance runner without ../shared says in one line where the cases go, and exits 1", async () => {
  const scratch = await mkdtemp(join(tmpdir(), "meshauth-clone-"));
  try {
    const checkout = join(scratch, "meshauth");
    await mkdir(join(checkout, "scripts"), { recursive: true });
    for (const file of ["conformance.ts", "conformance-skips.ts", "limbo-suite.ts"]) {
      await copyFile(join(ROOT, "scripts", file), join(checkout, "scripts", file));
    }
    await copyFile(join(ROOT, "package.json"), join(checkout, "package.json"));
    await symlink(join(ROOT, "lib"), join(checkout, "lib"), "dir");
    await symlink(join(ROOT, "node_modules"), join(checkout, "node_modules"), "dir");
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        NODE,
        ["--import", "tsx", "scripts/conformance.ts"],
        { cwd: checkout, timeout: 60_000, encoding: "utf8" },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, stdout, stderr }),
      );
    });
    assert.equal(result.code, 1);
    assert.equal(result.stdout, "");
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], /^meshauth: the x509-limbo conformance cases are not in this repository/);
    assert.ok(
      lines[0].includes(join(scratch, "shared/conformance/x509-limbo/limbo-dev.json")),
      "it names the path it reads",
    );
    assert.match(lines[0], /does not exist/);
    assert.match(lines[0], /github\.com\/C2SP\/x509-limbo/);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
});
