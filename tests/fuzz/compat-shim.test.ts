// The fuzz runner's native shim is built under a temporary name and renamed into place: a
// compiler that fails or is interrupted after writing part of its output leaves nothing at the
// path every later fuzzing run preloads.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCompatShim } from "../../scripts/fuzz/compat-shim.mjs";

test("a compiler that writes half its output and fails leaves no shim behind", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshauth-shim-"));
  try {
    // Writes a truncated ELF header to its -o path, then dies as an interrupted compiler would.
    const cc = join(dir, "half-cc");
    writeFileSync(
      cc,
      '#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\nprintf "\\177ELF" > "$2"\nexit 1\n',
    );
    chmodSync(cc, 0o755);
    const shim = join(dir, "cache", "compat-shim.so");
    assert.equal(buildCompatShim(shim, { cc }), false);
    assert.equal(existsSync(shim), false, "a partial shim was left where the next run preloads it");
    assert.deepEqual(readdirSync(join(dir, "cache")), [], "the partial output was not removed");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a compiler that succeeds puts the shim in place, with nothing left beside it", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshauth-shim-"));
  try {
    const cc = join(dir, "cc");
    writeFileSync(cc, '#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\nprintf "shared object" > "$2"\n');
    chmodSync(cc, 0o755);
    const shim = join(dir, "cache", "compat-shim.so");
    assert.equal(buildCompatShim(shim, { cc }), true);
    assert.equal(readFileSync(shim, "utf8"), "shared object");
    assert.deepEqual(readdirSync(join(dir, "cache")), ["compat-shim.so"]);
    assert.equal(
      buildCompatShim(shim, { cc: join(dir, "missing-cc") }),
      true,
      "an existing shim is not rebuilt",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
