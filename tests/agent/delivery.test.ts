// Delivery into a workload directory the way Kubernetes projects a Secret: generations behind a
// `..data` symlink swapped by rename, visible names through it, modes and owners, refusal of
// directories others can write, cleanup, and a failed write (a full file system, or one the
// agent may not write) that keeps the previous files.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmod,
  chown,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import {
  credentialFiles,
  DeliveryFailed,
  DeliveryRefused,
  isDelivered,
  LAYOUTS,
  readGeneration,
  removeDelivery,
  writeGeneration,
} from "../../agent/mod.ts";
import { tempDir } from "./helpers.ts";

let dir: { path: string; remove(): Promise<void> };
before(async () => {
  dir = await tempDir("meshauth-delivery-");
});
after(() => dir?.remove());

const credentials = (n: number) => ({
  certificateChainPem: `chain ${n}\n`,
  privateKeyPem: `key ${n}\n`,
  trustBundlePem: `bundle ${n}\n`,
});

describe("writeGeneration", () => {
  test("Istio's layout: visible names are symlinks through ..data to one generation; the key is 0600", async () => {
    const target = join(dir.path, "istio");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    const names = (await readdir(target)).sort();
    assert.equal(names.filter((n) => n.startsWith("..2")).length, 1);
    assert.deepEqual(names.filter((n) => !n.startsWith("..")), [
      "cert-chain.pem",
      "key.pem",
      "root-cert.pem",
    ]);
    for (const name of ["cert-chain.pem", "key.pem", "root-cert.pem"]) {
      assert.ok((await lstat(join(target, name))).isSymbolicLink());
      assert.equal(await readlink(join(target, name)), `..data/${name}`);
    }
    assert.match(await readlink(join(target, "..data")), /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\./);
    assert.equal(await readFile(join(target, "key.pem"), "utf8"), "key 1\n");
    assert.equal((await stat(join(target, "key.pem"))).mode & 0o777, 0o600);
    assert.equal((await stat(join(target, "cert-chain.pem"))).mode & 0o777, 0o644);
  });

  test("the SPIFFE helper's layout and a combined file holding the chain then the key", async () => {
    const target = join(dir.path, "helper");
    await writeGeneration(
      target,
      credentialFiles(credentials(1), {
        layout: "spiffe-helper",
        keyFileMode: 0o640,
        combinedFile: "tls.pem",
      }),
    );
    assert.deepEqual((await readdir(target)).filter((n) => !n.startsWith("..")).sort(), [
      "svid.pem",
      "svid_bundle.pem",
      "svid_key.pem",
      "tls.pem",
    ]);
    assert.equal(await readFile(join(target, "tls.pem"), "utf8"), "chain 1\nkey 1\n");
    assert.equal((await stat(join(target, "tls.pem"))).mode & 0o777, 0o640);
    assert.equal((await stat(join(target, "svid_key.pem"))).mode & 0o777, 0o640);
  });

  test("a new generation replaces the old one, which is removed", async () => {
    const target = join(dir.path, "generations");
    const options = { layout: "istio" as const, keyFileMode: 0o600 };
    await writeGeneration(target, credentialFiles(credentials(1), options));
    const first = await readlink(join(target, "..data"));
    await writeGeneration(target, credentialFiles(credentials(2), options));
    const second = await readlink(join(target, "..data"));
    assert.notEqual(first, second);
    assert.deepEqual((await readdir(target)).filter((n) => n.startsWith("..2")), [second.slice(0)]);
    assert.equal(await readFile(join(target, "cert-chain.pem"), "utf8"), "chain 2\n");
  });

  test("a layout change removes the visible names of the old layout", async () => {
    const target = join(dir.path, "relayout");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    await writeGeneration(
      target,
      credentialFiles(credentials(1), { layout: "spiffe-helper", keyFileMode: 0o600 }),
    );
    assert.deepEqual((await readdir(target)).filter((n) => !n.startsWith("..")).sort(), [
      "svid.pem",
      "svid_bundle.pem",
      "svid_key.pem",
    ]);
  });

  test("the leftovers of a write killed half-way (a generation, ..data_tmp) are swept by the next", async () => {
    const target = join(dir.path, "leftovers");
    const options = { layout: "istio" as const, keyFileMode: 0o600 };
    await writeGeneration(target, credentialFiles(credentials(1), options));
    await mkdir(join(target, "..2020_01_01_00_00_00.abcdef"));
    await writeFile(join(target, "..2020_01_01_00_00_00.abcdef", "key.pem"), "half");
    await symlink("..2020_01_01_00_00_00.abcdef", join(target, "..data_tmp"));
    await writeGeneration(target, credentialFiles(credentials(2), options));
    const hidden = (await readdir(target)).filter((n) => n.startsWith(".."));
    assert.deepEqual(hidden.sort(), ["..data", await readlink(join(target, "..data"))].sort());
  });

  test("a file the agent did not make under a visible name is refused and left as it is", async () => {
    const target = join(dir.path, "plain");
    await mkdir(target);
    await writeFile(join(target, "key.pem"), "the workload's own key");
    await assert.rejects(
      writeGeneration(target, credentialFiles(credentials(3), { layout: "istio", keyFileMode: 0o600 })),
      (err: unknown) =>
        err instanceof DeliveryRefused && /key\.pem is a file the agent did not make/.test(err.message),
    );
    assert.equal(await readFile(join(target, "key.pem"), "utf8"), "the workload's own key");
    assert.deepEqual(await readdir(target), ["key.pem"]);
    // A symlink of someone else's under a visible name is refused the same way.
    await rm(join(target, "key.pem"));
    await symlink("/etc/hostname", join(target, "key.pem"));
    await assert.rejects(
      writeGeneration(target, credentialFiles(credentials(3), { layout: "istio", keyFileMode: 0o600 })),
      /key\.pem is a symbolic link the agent did not make/,
    );
    assert.equal(await readlink(join(target, "key.pem")), "/etc/hostname");
  });

  test("legacy files of the same program are replaced by the links, or removed when no longer written", async () => {
    const target = join(dir.path, "legacy");
    await mkdir(target);
    for (const name of ["svid.pem", "svid_key.pem", "bundle.pem"]) await writeFile(join(target, name), "old");
    await writeGeneration(
      target,
      credentialFiles(credentials(4), { layout: "spiffe-helper", keyFileMode: 0o600 }),
      {},
      { legacyFiles: ["svid.pem", "svid_key.pem", "bundle.pem"] },
    );
    assert.deepEqual((await readdir(target)).filter((n) => !n.startsWith("..")).sort(), [
      "svid.pem",
      "svid_bundle.pem",
      "svid_key.pem",
    ]);
    assert.equal(await readFile(join(target, "svid_key.pem"), "utf8"), "key 4\n");
  });

  test("a directory others can write is refused, and nothing is written into it", async () => {
    const target = join(dir.path, "open");
    await mkdir(target);
    await chmod(target, 0o777);
    await assert.rejects(
      writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 })),
      (err: unknown) =>
        err instanceof DeliveryRefused && /group or others can write to it \(mode 0777\)/.test(err.message),
    );
    assert.deepEqual(await readdir(target), []);
  });

  test("a symlink in place of the directory is refused", async () => {
    const real = join(dir.path, "real");
    await mkdir(real);
    await symlink(real, join(dir.path, "link"));
    await assert.rejects(
      writeGeneration(
        join(dir.path, "link"),
        credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }),
      ),
      DeliveryRefused,
    );
  });

  test("files get the workload's owner and group", async (t) => {
    if (process.getuid?.() !== 0) {
      // chown to another user needs root (CAP_CHOWN), which the CI containers have.
      t.diagnostic("not root: checking that the refusal is reported instead");
      await assert.rejects(
        writeGeneration(join(dir.path, "owned"), [{ name: "key.pem", content: "k", mode: 0o600 }], {
          uid: 4321,
        }),
        (err: unknown) => err instanceof DeliveryFailed && err.causeCode === "EPERM",
      );
      return;
    }
    const target = join(dir.path, "owned");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }), {
      uid: 4321,
      gid: 8765,
    });
    for (const name of ["key.pem", "cert-chain.pem"]) {
      const s = await stat(join(target, name));
      assert.equal(s.uid, 4321);
      assert.equal(s.gid, 8765);
    }
  });

  test("a file name that could escape the directory is refused", async () => {
    await assert.rejects(
      writeGeneration(join(dir.path, "names"), [{ name: "../x", content: "", mode: 0o600 }]),
      DeliveryRefused,
    );
    await assert.rejects(
      writeGeneration(join(dir.path, "names"), [{ name: "..data", content: "", mode: 0o600 }]),
      DeliveryRefused,
    );
  });
});

describe("a write that fails keeps the previous files", () => {
  // Root ignores permissions, so as root the failure is a real full file system: a small tmpfs
  // filled up. Without root, a directory the agent may not write.
  const asRoot = process.getuid?.() === 0;
  let mount: string;
  before(async () => {
    mount = join(dir.path, "small");
    await mkdir(mount);
    if (asRoot) {
      const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", mount]);
      assert.equal(r.status, 0, `mounting a tmpfs failed: ${r.stderr}`);
    }
  });
  after(() => {
    if (asRoot) spawnSync("umount", [mount]);
  });

  test("the write fails with its cause, the old generation stays whole, and a retry succeeds", async () => {
    const target = join(mount, "workload");
    const options = { layout: "istio" as const, keyFileMode: 0o600 };
    await writeGeneration(target, credentialFiles(credentials(1), options));
    const before = await readlink(join(target, "..data"));
    const filler = join(mount, "filler");
    if (asRoot) await writeFile(filler, new Uint8Array(60 * 1024)).catch(() => {});
    else await chmod(target, 0o555);
    const big = { ...credentials(2), certificateChainPem: "x".repeat(16 * 1024) };
    await assert.rejects(
      writeGeneration(target, credentialFiles(big, options)),
      (err: unknown) => err instanceof DeliveryFailed && /ENOSPC|EACCES/.test(err.causeCode ?? ""),
    );
    assert.equal(await readlink(join(target, "..data")), before);
    const files = await readGeneration(target, Object.values(LAYOUTS.istio));
    assert.equal(files?.get("key.pem"), "key 1\n");
    assert.equal(files?.get("cert-chain.pem"), "chain 1\n");
    assert.deepEqual((await readdir(target)).filter((n) => n.startsWith("..2")), [before]);

    if (asRoot) await writeFile(filler, "");
    else await chmod(target, 0o755);
    await writeGeneration(target, credentialFiles(big, options));
    assert.equal(
      (await readGeneration(target, ["cert-chain.pem"]))?.get("cert-chain.pem"),
      big.certificateChainPem,
    );
  });
});

describe("removeDelivery", () => {
  test("deletes the visible links, ..data and the generations, then the empty directory", async () => {
    const target = join(dir.path, "removed");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    await removeDelivery(target);
    await assert.rejects(stat(target), { code: "ENOENT" });
  });

  test("leaves files it did not write, and the directory that holds them", async () => {
    const target = join(dir.path, "shared");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    await writeFile(join(target, "app.conf"), "the workload's own");
    await removeDelivery(target);
    assert.deepEqual(await readdir(target), ["app.conf"]);
  });
});

describe("the delivery root: every directory from it down is the agent's", () => {
  const asRoot = process.getuid?.() === 0;
  const files = () => credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 });

  test("missing directories below the root are made 0755 and the write lands", async () => {
    const root = join(dir.path, "root-made");
    await writeGeneration(join(root, "a", "b", "web"), files(), {}, { root });
    for (const path of [root, join(root, "a"), join(root, "a", "b"), join(root, "a", "b", "web")]) {
      assert.equal((await stat(path)).mode & 0o777, 0o755, path);
    }
  });

  test("a directory outside the root is refused", async () => {
    const root = join(dir.path, "root-outside");
    await assert.rejects(
      writeGeneration(join(dir.path, "elsewhere"), files(), {}, { root }),
      (err: unknown) => err instanceof DeliveryRefused && /not inside the delivery root/.test(err.message),
    );
    await assert.rejects(stat(join(dir.path, "elsewhere")), { code: "ENOENT" });
  });

  test("a group-writable directory, or one between it and the root, is refused", async () => {
    const root = join(dir.path, "root-group");
    await mkdir(join(root, "middle", "web"), { recursive: true });
    await chmod(join(root, "middle", "web"), 0o775);
    await assert.rejects(
      writeGeneration(join(root, "middle", "web"), files(), {}, { root }),
      (err: unknown) =>
        err instanceof DeliveryRefused &&
        /middle\/web: its group or others can write to it \(mode 0775\)/.test(err.message),
    );
    await chmod(join(root, "middle", "web"), 0o755);
    await chmod(join(root, "middle"), 0o770);
    await assert.rejects(
      writeGeneration(join(root, "middle", "web"), files(), {}, { root }),
      /middle: its group or others can write to it \(mode 0770\)/,
    );
    assert.deepEqual(await readdir(join(root, "middle", "web")), []);
  });

  test("a directory owned by another user (the workload), or one above it, is refused", async (t) => {
    if (!asRoot) {
      t.diagnostic("not root: a directory of another user cannot be made here; the uid check runs as root");
      return;
    }
    const root = join(dir.path, "root-owner");
    await mkdir(join(root, "middle", "web"), { recursive: true });
    await chown(join(root, "middle", "web"), 1001, 1001);
    await assert.rejects(
      writeGeneration(join(root, "middle", "web"), files(), { uid: 1001 }, { root }),
      (err: unknown) =>
        err instanceof DeliveryRefused && /belongs to uid 1001, not to root or the agent/.test(err.message),
    );
    await chown(join(root, "middle", "web"), 0, 0);
    await chown(join(root, "middle"), 1001, 1001);
    await assert.rejects(
      writeGeneration(join(root, "middle", "web"), files(), { uid: 1001 }, { root }),
      /middle: it belongs to uid 1001/,
    );
    assert.deepEqual(await readdir(join(root, "middle", "web")), []);
  });

  test("a symlink between the root and the directory is refused, not followed", async () => {
    const root = join(dir.path, "root-link");
    const elsewhere = join(dir.path, "root-link-target");
    await mkdir(root);
    await mkdir(elsewhere);
    await symlink(elsewhere, join(root, "middle"));
    await assert.rejects(
      writeGeneration(join(root, "middle", "web"), files(), {}, { root }),
      (err: unknown) =>
        err instanceof DeliveryRefused && /symbolic link or not a directory/.test(err.message),
    );
    assert.deepEqual(await readdir(elsewhere), []);
  });
});

describe("reading what was delivered", () => {
  test("a FIFO in place of a delivered file is not opened for reading (no hang) and reads as not delivered", async () => {
    const target = join(dir.path, "fifo");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    const generation = await readlink(join(target, "..data"));
    await rm(join(target, generation, "cert-chain.pem"));
    const made = spawnSync("mkfifo", [join(target, generation, "cert-chain.pem")]);
    assert.equal(made.status, 0, String(made.stderr));
    const read = await Promise.race([
      readGeneration(target, ["cert-chain.pem", "key.pem"]),
      new Promise((resolve) => setTimeout(() => resolve("hung"), 2000)),
    ]);
    assert.equal(read, undefined);
    const files = credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 });
    assert.equal(await isDelivered(target, files), false);
  });

  test("isDelivered: true for what was written; false once the mode, the names or the content differ", async () => {
    const target = join(dir.path, "delivered");
    const options = { layout: "istio" as const, keyFileMode: 0o600 };
    const files = credentialFiles(credentials(1), options);
    await writeGeneration(target, files);
    assert.equal(await isDelivered(target, files), true);
    assert.equal(
      await isDelivered(target, credentialFiles(credentials(1), { ...options, keyFileMode: 0o640 })),
      false,
    );
    assert.equal(
      await isDelivered(target, credentialFiles(credentials(1), { ...options, combinedFile: "tls.pem" })),
      false,
    );
    assert.equal(
      await isDelivered(target, credentialFiles(credentials(1), { ...options, layout: "spiffe-helper" })),
      false,
    );
    assert.equal(await isDelivered(target, credentialFiles(credentials(2), options)), false);
    if (process.getuid?.() === 0) assert.equal(await isDelivered(target, files, { uid: 4321 }), false);
  });
});

describe("removeDelivery never follows a symlink", () => {
  test("a link planted in a generation is removed, what it points to stays", async () => {
    const target = join(dir.path, "remove-links");
    const outside = join(dir.path, "remove-links-outside");
    await mkdir(outside);
    await writeFile(join(outside, "keep.txt"), "keep");
    await writeGeneration(target, credentialFiles(credentials(1), { layout: "istio", keyFileMode: 0o600 }));
    const generation = await readlink(join(target, "..data"));
    await symlink(outside, join(target, generation, "escape"));
    await removeDelivery(target);
    await assert.rejects(stat(target), { code: "ENOENT" });
    assert.deepEqual(await readdir(outside), ["keep.txt"]);
  });
});
