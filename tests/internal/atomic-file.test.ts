// writeFileAtomic: what the CA's key and state files and the agent's SVID files rely on.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { removeStaleTemporaries, writeFileAtomic } from "../../internal/atomic-file.ts";

describe("writeFileAtomic", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "meshauth-atomic-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("writes the content with exactly the mode asked for, whatever the umask", async () => {
    const previous = process.umask(0o077);
    try {
      await writeFileAtomic(join(dir, "bundle.pem"), "bundle\n", 0o644);
    } finally {
      process.umask(previous);
    }
    await writeFileAtomic(join(dir, "key.pem"), new TextEncoder().encode("key\n"), 0o600);
    assert.equal((await stat(join(dir, "bundle.pem"))).mode & 0o777, 0o644);
    assert.equal((await stat(join(dir, "key.pem"))).mode & 0o777, 0o600);
    assert.equal(await readFile(join(dir, "key.pem"), "utf8"), "key\n");
  });

  it("replaces a file whole and leaves no temporary file behind", async () => {
    const path = join(dir, "state.json");
    await writeFile(path, "old");
    await Promise.all(Array.from({ length: 8 }, (_, i) => writeFileAtomic(path, `new ${i}`, 0o600)));
    assert.match(await readFile(path, "utf8"), /^new [0-7]$/);
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".tmp")), []);
  });

  it("keeps the old content and cleans up when the write fails", async () => {
    const path = join(dir, "kept.txt");
    await writeFile(path, "old");
    await assert.rejects(writeFileAtomic(path, 42 as unknown as string, 0o600));
    assert.equal(await readFile(path, "utf8"), "old");
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".tmp")), []);
  });

  it("writes content that comes in chunks, and keeps the old content when a chunk fails", async () => {
    const path = join(dir, "snapshot.jsonl");
    async function* chunks(fail: boolean) {
      yield "header\n";
      yield new TextEncoder().encode("a\n");
      if (fail) throw new Error("the source failed");
      yield "b\n";
    }
    await writeFileAtomic(path, chunks(false), 0o600);
    assert.equal(await readFile(path, "utf8"), "header\na\nb\n");
    await assert.rejects(writeFileAtomic(path, chunks(true), 0o600), /the source failed/);
    assert.equal(await readFile(path, "utf8"), "header\na\nb\n");
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".tmp")), []);
  });

  it("fails without a trace when the directory does not exist", async () => {
    await assert.rejects(writeFileAtomic(join(dir, "missing", "x"), "x", 0o600), { code: "ENOENT" });
  });

  it("sweeps only its own stale temporary files", async () => {
    const sweep = await mkdtemp(join(dir, "sweep-"));
    const stale = join(sweep, "ca.key.pem.3f2b8a10-1c2d-4e5f-8a9b-0c1d2e3f4a5b.tmp");
    const fresh = join(sweep, "ca.key.pem.4a5b6c7d-1c2d-4e5f-8a9b-0c1d2e3f4a5b.tmp");
    const foreign = join(sweep, "notes.1234.tmp");
    for (const path of [stale, fresh, foreign]) await writeFile(path, "x");
    const longAgo = new Date(Date.now() - 3600_000);
    await utimes(stale, longAgo, longAgo);
    await utimes(foreign, longAgo, longAgo);
    assert.equal(await removeStaleTemporaries(sweep), 1);
    assert.deepEqual(
      (await readdir(sweep)).sort(),
      [fresh, foreign].map((p) => p.slice(sweep.length + 1)).sort(),
    );
    assert.equal(await removeStaleTemporaries(join(dir, "no-such-directory")), 0);
  });
});
