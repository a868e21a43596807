// Workload sources: the watched drop-in directory (files added, changed, removed while it runs;
// malformed ones reported by file and field and skipped; a valid file turned malformed keeps
// its previous version) and the static list.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, chown, mkdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  DirectorySource,
  StaticSource,
  type WorkloadProblem,
  type WorkloadSink,
  type WorkloadSpec,
} from "../../agent/mod.ts";
import { tempDir, waitFor } from "./helpers.ts";

let dir: { path: string; remove(): Promise<void> };
before(async () => {
  dir = await tempDir("meshauth-sources-");
});
after(() => dir?.remove());

function recordingSink(): WorkloadSink & {
  sets: WorkloadSpec[][];
  problems: WorkloadProblem[];
  last(): WorkloadSpec[];
} {
  const sets: WorkloadSpec[][] = [];
  const problems: WorkloadProblem[] = [];
  return {
    sets,
    problems,
    last: () => sets.at(-1) ?? [],
    replace: (_source, workloads) => {
      sets.push([...workloads]);
    },
    problem: (p) => problems.push(p),
    delivered: () => Promise.resolve(),
  };
}

const entry = (id: string, directory: string) =>
  `spiffeId: spiffe://meshauth.local/${id}\ndirectory: ${directory}\n`;

describe("DirectorySource", () => {
  test("workloads come and go with their files while it runs", async () => {
    const drop = join(dir.path, "live");
    await mkdir(drop);
    await writeFile(join(drop, "web.yaml"), entry("web", "out/web"));
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local", debounceMs: 20 });
    await source.start(sink);
    try {
      assert.deepEqual(sink.last().map((w) => w.name), ["web"]);
      assert.equal(sink.last()[0].directory, join(drop, "out/web"));
      assert.deepEqual(sink.last()[0].origin, { source: `directory:${drop}`, file: join(drop, "web.yaml") });

      await writeFile(
        join(drop, "db.json"),
        JSON.stringify({ spiffeId: "spiffe://meshauth.local/db", directory: "/run/db" }),
      );
      await waitFor("db to be added", () => sink.last().length === 2);
      assert.deepEqual(sink.last().map((w) => w.name).sort(), ["db", "web"]);

      await writeFile(join(drop, "web.yaml"), entry("web2", "out/web"));
      await waitFor(
        "web to change",
        () => sink.last().find((w) => w.name === "web")?.spiffeId.path === "/web2",
      );

      await rm(join(drop, "db.json"));
      await waitFor("db to be removed", () => sink.last().length === 1);
      assert.equal(sink.problems.length, 0);
    } finally {
      await source.stop();
    }
  });

  test("a malformed file is reported with its path and field and skipped; the others are served", async () => {
    const drop = join(dir.path, "bad");
    await mkdir(drop);
    await writeFile(join(drop, "good.yaml"), entry("good", "/run/good"));
    await writeFile(
      join(drop, "foreign.yaml"),
      "spiffeId: spiffe://elsewhere.example/x\ndirectory: /run/x\n",
    );
    await writeFile(join(drop, "broken.yaml"), "spiffeId: [unclosed\n");
    await writeFile(join(drop, "typo.yaml"), entry("typo", "/run/t") + "layot: istio\n");
    await writeFile(join(drop, "bad name.yaml"), entry("n", "/run/n"));
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local" });
    await source.start(sink);
    await source.stop();
    assert.deepEqual(sink.last().map((w) => w.name), ["good"]);
    const byFile = (name: string) => sink.problems.filter((p) => p.file === join(drop, name));
    assert.equal(byFile("foreign.yaml")[0].field, "spiffeId");
    assert.match(byFile("foreign.yaml")[0].message, /not in this agent's trust domain meshauth.local/);
    assert.match(byFile("broken.yaml")[0].message, /not valid YAML/);
    assert.equal(byFile("typo.yaml")[0].field, "layot");
    assert.equal(byFile("bad name.yaml")[0].field, "name");
    assert.match(byFile("bad name.yaml")[0].message, /the file name "bad name" is not a workload name/);
  });

  test("a valid file turned malformed keeps its previous version until fixed", async () => {
    const drop = join(dir.path, "edit");
    await mkdir(drop);
    await writeFile(join(drop, "web.yaml"), entry("web", "/run/web"));
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local", debounceMs: 20 });
    await source.start(sink);
    try {
      await writeFile(join(drop, "web.yaml"), "spiffeId: spiffe://meshauth.local/web\ndirectory: \n");
      await waitFor("the problem to be reported", () => sink.problems.length > 0);
      assert.match(sink.problems[0].message, /previous version stays in force/);
      assert.deepEqual(sink.last().map((w) => w.spiffeId.toString()), ["spiffe://meshauth.local/web"]);
      await writeFile(join(drop, "web.yaml"), entry("fixed", "/run/web"));
      await waitFor("the fix", () => sink.last()[0]?.spiffeId.path === "/fixed");
    } finally {
      await source.stop();
    }
  });

  test("hidden files and other extensions are ignored; a ConfigMap's ..data symlinks are followed", async () => {
    const drop = join(dir.path, "configmap");
    await mkdir(join(drop, "..2025_01_01_00_00_00.abc"), { recursive: true });
    await writeFile(join(drop, "..2025_01_01_00_00_00.abc", "web.yaml"), entry("web", "/run/web"));
    await symlink("..2025_01_01_00_00_00.abc", join(drop, "..data"));
    await symlink("..data/web.yaml", join(drop, "web.yaml"));
    await writeFile(join(drop, ".web.yaml.swp"), "garbage");
    await writeFile(join(drop, "README.md"), "notes");
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local" });
    await source.start(sink);
    await source.stop();
    assert.deepEqual(sink.last().map((w) => w.name), ["web"]);
    assert.equal(sink.problems.length, 0);
  });

  test("a directory that does not exist yet is reported, and picked up once it appears", async () => {
    const drop = join(dir.path, "later");
    const sink = recordingSink();
    const source = new DirectorySource({
      directory: drop,
      trustDomain: "meshauth.local",
      rescanIntervalMs: 50,
      debounceMs: 10,
    });
    await source.start(sink);
    try {
      assert.match(sink.problems[0].message, /does not exist/);
      const staging = join(dir.path, "staging");
      await mkdir(staging);
      await writeFile(join(staging, "web.yaml"), entry("web", "/run/web"));
      await rename(staging, drop);
      await waitFor("the workload to appear", () => sink.last().length === 1);
    } finally {
      await source.stop();
    }
  });
});

describe("DirectorySource refuses what it cannot trust", () => {
  test("a group- or other-writable directory of entries: reported, nothing read from it until fixed", async () => {
    const drop = join(dir.path, "open-drop");
    await mkdir(drop);
    await writeFile(join(drop, "web.yaml"), entry("web", "/run/web"));
    await chmod(drop, 0o777);
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local", debounceMs: 10 });
    await source.start(sink);
    try {
      assert.deepEqual(sink.last(), []);
      assert.equal(sink.problems.length, 1);
      assert.match(
        sink.problems[0].message,
        /not safe to take entries from: its group or others can write to it \(mode 0777\)/,
      );
      await chmod(drop, 0o755);
      await source.scan();
      assert.deepEqual(sink.last().map((w) => w.name), ["web"]);
    } finally {
      await source.stop();
    }
  });

  test("a directory of entries owned by another user is refused", async (t) => {
    if (process.getuid?.() !== 0) {
      t.diagnostic("not root: a directory of another user cannot be made here; the uid check runs as root");
      return;
    }
    const drop = join(dir.path, "foreign-drop");
    await mkdir(drop);
    await writeFile(join(drop, "web.yaml"), entry("web", "/run/web"));
    await chown(drop, 1001, 1001);
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local" });
    await source.start(sink);
    await source.stop();
    assert.deepEqual(sink.last(), []);
    assert.match(sink.problems[0].message, /belongs to uid 1001, not to root or the agent/);
  });

  test("an entry file that is group-writable, or another user's, is skipped and reported", async () => {
    const drop = join(dir.path, "file-modes");
    await mkdir(drop);
    await writeFile(join(drop, "good.yaml"), entry("good", "/run/good"));
    await writeFile(join(drop, "open.yaml"), entry("open", "/run/open"));
    await chmod(join(drop, "open.yaml"), 0o664);
    if (process.getuid?.() === 0) {
      await writeFile(join(drop, "theirs.yaml"), entry("theirs", "/run/theirs"));
      await chown(join(drop, "theirs.yaml"), 1001, 1001);
    }
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local" });
    await source.start(sink);
    await source.stop();
    assert.deepEqual(sink.last().map((w) => w.name), ["good"]);
    const byFile = (name: string) => sink.problems.find((p) => p.file === join(drop, name));
    assert.match(byFile("open.yaml")!.message, /group or others can write to the file \(mode 0664\)/);
    if (process.getuid?.() === 0) assert.match(byFile("theirs.yaml")!.message, /belongs to uid 1001/);
  });

  test("a file over 64 KiB is refused; one just under is read", async () => {
    const drop = join(dir.path, "sizes");
    await mkdir(drop);
    const base = entry("big", "/run/big");
    await writeFile(join(drop, "big.yaml"), base + "#".repeat(64 * 1024 - base.length) + "\n");
    await writeFile(join(drop, "fits.yaml"), entry("fits", "/run/fits") + "#".repeat(60 * 1024) + "\n");
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local" });
    await source.start(sink);
    await source.stop();
    assert.deepEqual(sink.last().map((w) => w.name), ["fits"]);
    assert.match(
      sink.problems.find((p) => p.file === join(drop, "big.yaml"))!.message,
      /larger than 65536 bytes/,
    );
  });

  test("entries are sent in file name order, whatever order the files appeared in", async () => {
    const drop = join(dir.path, "order");
    await mkdir(drop);
    await writeFile(join(drop, "b.yaml"), entry("b", "/run/b"));
    const sink = recordingSink();
    const source = new DirectorySource({ directory: drop, trustDomain: "meshauth.local", debounceMs: 10 });
    await source.start(sink);
    try {
      await writeFile(join(drop, "a.yaml"), entry("a", "/run/a"));
      await waitFor("a to be added", () => sink.last().length === 2);
      assert.deepEqual(sink.last().map((w) => w.name), ["a", "b"]);
    } finally {
      await source.stop();
    }
  });
});

describe("StaticSource", () => {
  test("sends its list and reports the entries that were skipped", async () => {
    const sink = recordingSink();
    const problem = {
      source: "static",
      file: "agent.yaml",
      field: "workloads[1].spiffeId",
      message: "required",
    };
    await new StaticSource([], [problem]).start(sink);
    assert.deepEqual(sink.sets, [[]]);
    assert.deepEqual(sink.problems, [problem]);
  });
});
