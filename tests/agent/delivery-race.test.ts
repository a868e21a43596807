// A workload that races the agent's writes: a real process running as uid 1001
// (tests/agent/fixtures/racer.c, compiled here with gcc) renames each new generation directory
// away as inotify reports it and plants a symlink to a root-owned file or directory in its
// place. The agent (root) must never chmod, chown or write anything outside the workload's
// directory: a directory the workload owns is refused outright, and in the agent's own
// directory the racer cannot touch a thing. Needs root, gcc and inotify; without them the test
// fails under CI=true and says why it was skipped otherwise.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmod, chown, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { credentialFiles, DeliveryRefused, writeGeneration } from "../../agent/mod.ts";
import { ROOT } from "../ca-server/helpers.ts";
import { tempDir } from "./helpers.ts";

const isCi = /^(1|true|yes)$/i.test(process.env.CI ?? "");
const WORKLOAD_UID = 1001;
const ATTEMPTS = 300;

function whyNot(): string | undefined {
  if (process.platform !== "linux") return "the racer uses inotify (Linux)";
  if (process.getuid?.() !== 0) return "the agent's side of the race runs as root";
  if (spawnSync("gcc", ["--version"]).status !== 0) return "gcc is not installed (apt-get install gcc)";
  return undefined;
}

let dir: { path: string; remove(): Promise<void> } | undefined;
let racerBinary = "";
const racers: ChildProcess[] = [];

before(async () => {
  if (whyNot()) return;
  dir = await tempDir("meshauth-race-");
  // The workload must be able to reach its directory, as a pod reaches its volume.
  await chmod(dir.path, 0o755);
  racerBinary = join(dir.path, "racer");
  const cc = spawnSync("gcc", ["-O2", "-o", racerBinary, join(ROOT, "tests/agent/fixtures/racer.c")]);
  assert.equal(cc.status, 0, `compiling the racer failed: ${cc.stderr}`);
});
after(async () => {
  for (const racer of racers) if (racer.exitCode === null) racer.kill("SIGKILL");
  await dir?.remove();
});

/** Starts the racer as uid 1001 on `directory`, aiming at `target`; resolves once it watches. */
function startRacer(directory: string, target: string): Promise<ChildProcess> {
  // setpriv starts it without root at all; the racer also drops root itself.
  const hasSetpriv = spawnSync("setpriv", ["--version"]).status === 0;
  const [command, args] = hasSetpriv
    ? ["setpriv", [`--reuid=${WORKLOAD_UID}`, `--regid=${WORKLOAD_UID}`, "--clear-groups", racerBinary]]
    : [racerBinary, []];
  const racer = spawn(command, [...args, directory, target], { stdio: ["ignore", "pipe", "pipe"] });
  racers.push(racer);
  return new Promise((resolve, reject) => {
    let output = "";
    const onData = (d: unknown) => {
      output += String(d);
      if (output.includes("ready")) resolve(racer);
    };
    racer.stdout!.on("data", onData);
    racer.stderr!.on("data", onData);
    racer.once("exit", (code) => reject(new Error(`the racer exited (${code}): ${output}`)));
  });
}

const files = credentialFiles(
  { certificateChainPem: "chain\n", privateKeyPem: "key\n", trustBundlePem: "bundle\n" },
  { layout: "istio", keyFileMode: 0o600 },
);
const owner = { uid: WORKLOAD_UID, gid: WORKLOAD_UID };

/** The root-owned things the racer aims at, and a check that they are as they were. */
async function victims(name: string) {
  const file = join(dir!.path, `${name}-victim`);
  const directory = join(dir!.path, `${name}-victimdir`);
  await writeFile(file, "root's secret\n", { mode: 0o600 });
  await chmod(file, 0o600);
  await mkdir(directory, { mode: 0o700 });
  await chmod(directory, 0o700);
  return {
    file,
    directory,
    async assertUntouched(attempt: number) {
      const f = await stat(file);
      assert.equal(
        f.mode & 0o7777,
        0o600,
        `attempt ${attempt}: the root-owned file is now mode ${(f.mode & 0o7777).toString(8)}`,
      );
      assert.equal(f.uid, 0, `attempt ${attempt}: the root-owned file now belongs to ${f.uid}`);
      assert.equal(await readFile(file, "utf8"), "root's secret\n");
      const d = await stat(directory);
      assert.equal(
        d.mode & 0o7777,
        0o700,
        `attempt ${attempt}: the root-owned directory is now mode ${(d.mode & 0o7777).toString(8)}`,
      );
      assert.deepEqual(
        await readdir(directory),
        [],
        `attempt ${attempt}: files appeared in the root-owned directory`,
      );
    },
  };
}

describe("a workload racing the agent's writes", () => {
  test("into a directory the workload owns: refused, and nothing outside it changes", async (t) => {
    const reason = whyNot();
    if (reason) {
      if (isCi) assert.fail(`the race test cannot run here (CI=true): ${reason}`);
      t.skip(reason);
      return;
    }
    const root = join(dir!.path, "owned-root");
    await mkdir(root, { mode: 0o755 });
    const workload = join(root, "wl");
    await mkdir(workload, { mode: 0o755 });
    await chown(workload, WORKLOAD_UID, WORKLOAD_UID);
    for (const aim of ["file", "directory"] as const) {
      const v = await victims(`owned-${aim}`);
      const racer = await startRacer(workload, aim === "file" ? v.file : v.directory);
      let refused = 0;
      try {
        for (let i = 0; i < ATTEMPTS; i++) {
          try {
            await writeGeneration(workload, files, owner, { root });
          } catch (err) {
            if (err instanceof DeliveryRefused) refused++;
          }
          await v.assertUntouched(i);
        }
      } finally {
        racer.kill("SIGKILL");
      }
      assert.equal(refused, ATTEMPTS, "every write into a directory the workload owns is refused");
    }
  });

  test("into the agent's own directory: every write lands, owned by the workload, and the racer achieves nothing", async (t) => {
    const reason = whyNot();
    if (reason) {
      if (isCi) assert.fail(`the race test cannot run here (CI=true): ${reason}`);
      t.skip(reason);
      return;
    }
    const root = join(dir!.path, "agent-root");
    const workload = join(root, "wl");
    await mkdir(workload, { recursive: true, mode: 0o755 });
    for (const aim of ["file", "directory"] as const) {
      const v = await victims(`agent-${aim}`);
      const racer = await startRacer(workload, aim === "file" ? v.file : v.directory);
      try {
        for (let i = 0; i < ATTEMPTS / 3; i++) {
          await writeGeneration(workload, files, owner, { root });
          await v.assertUntouched(i);
        }
      } finally {
        racer.kill("SIGKILL");
      }
      const key = await stat(join(workload, "key.pem"));
      assert.deepEqual([key.uid, key.gid, key.mode & 0o777], [WORKLOAD_UID, WORKLOAD_UID, 0o600]);
      assert.deepEqual((await readdir(workload)).filter((n) => n.startsWith("moved")), []);
    }
  });
});
