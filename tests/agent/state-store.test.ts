// The agent's state directory: it holds every private key of the node, so one that others can
// read or write, that belongs to another user, or that is a symlink, is refused; records are
// written 0600, and the trust bundle is stored once rather than in every workload's record.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, chown, mkdir, readFile, stat, symlink } from "node:fs/promises";
import { join } from "node:path";
import { SpiffeId } from "../../mod.ts";
import { StateDirectoryUnsafe, StateStore } from "../../agent/mod.ts";
import { tempDir } from "./helpers.ts";

let dir: { path: string; remove(): Promise<void> };
before(async () => {
  dir = await tempDir("meshauth-state-");
});
after(() => dir?.remove());

describe("StateStore.open refuses an unsafe state directory", () => {
  test("one that its group or others can read or enter", async () => {
    const state = join(dir.path, "open");
    await mkdir(state);
    await chmod(state, 0o750);
    await assert.rejects(
      new StateStore(state).open(),
      (err: unknown) =>
        err instanceof StateDirectoryUnsafe && err.code === "ERR_STATE_DIRECTORY_UNSAFE" &&
        /is open to others \(mode 0750\) but holds private keys; chmod 700 it/.test(err.message),
    );
  });

  test("one that belongs to another user", async (t) => {
    if (process.getuid?.() !== 0) {
      t.diagnostic("not root: a directory of another user cannot be made here; the uid check runs as root");
      return;
    }
    const state = join(dir.path, "theirs");
    await mkdir(state, { mode: 0o700 });
    await chown(state, 1001, 1001);
    await assert.rejects(new StateStore(state).open(), /belongs to uid 1001, not to root or the agent/);
  });

  test("a symlink in its place", async () => {
    const real = join(dir.path, "real");
    await mkdir(real, { mode: 0o700 });
    await symlink(real, join(dir.path, "link"));
    await assert.rejects(new StateStore(join(dir.path, "link")).open(), /is not a directory/);
  });
});

test("a workload's record is 0600 and does not carry the trust bundle; loading fills in the one held", async () => {
  const store = new StateStore(join(dir.path, "records"));
  await store.open();
  const svid = {
    spiffeId: SpiffeId.parse("spiffe://agent.test/web"),
    serialNumber: "01",
    notBefore: new Date("2030-01-01T00:00:00Z"),
    expiresAt: new Date("2030-01-01T01:00:00Z"),
    obtainedAt: new Date("2030-01-01T00:00:30Z"),
    certificateChainPem: "chain",
    privateKeyPem: "key",
    trustBundlePem: "the bundle at issuance",
  };
  await store.saveWorkload({ name: "web", directory: "/run/web", keyAlgorithm: "ECDSA-P256", svid });
  const path = join(dir.path, "records", "workloads", "web.json");
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.doesNotMatch(await readFile(path, "utf8"), /the bundle at issuance/);
  const loaded = (await store.loadWorkloads("the bundle now")).get("web")!;
  assert.equal(loaded.svid.trustBundlePem, "the bundle now");
  assert.deepEqual(loaded.svid.obtainedAt, svid.obtainedAt);
});
