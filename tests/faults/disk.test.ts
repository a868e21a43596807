// A full disk and a read-only data directory, for the CA (the file store, on a small ext4 that
// a disk error turns read-only under its open files) and for the agent (its state directory
// and the workloads' directories, on a tmpfs remounted read-only); mounting needs root. While the disk refuses writes: the CA answers writes
// `503 ERR_NOT_READY` with a message that says what is wrong and where, and keeps serving what
// it has (the CRL, listings); the agent keeps every workload's previous files and its stored
// state, and a restart serves them. Everything acknowledged before is intact, and both recover
// by themselves, without a restart, once the disk takes writes again.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseCrl, SpiffeId } from "../../mod.ts";
import { CaClient, NodeAgent, StaticSource, type WorkloadSpec } from "../../agent/mod.ts";
import {
  keyMatches,
  readOneGeneration,
  recordingLogger,
  startTestCa,
  TRUST_DOMAIN,
  waitFor,
} from "../agent/helpers.ts";
import {
  cli,
  csrFor,
  openTestStore,
  tempDir,
  token,
  TRUST_DOMAIN as CA_TRUST_DOMAIN,
  writeConfig,
} from "../ca-server/helpers.ts";
import { isCi } from "../runtimes/runtimes.mjs";
import { httpsCall, type RunningProcess, startProcess, timeoutMs } from "./support.ts";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot && !isCi ? "a full or read-only file system is a tmpfs mounted by root" : false;

/** A tmpfs of `size` at `path` (nothing keeps a file open on it, so it can be remounted read-only). */
function smallDisk(path: string, size: string) {
  const mount = (...options: string[]) => {
    const r = spawnSync("mount", options);
    assert.equal(r.status, 0, `mount ${options.join(" ")}: ${r.stderr}`);
  };
  return {
    mount: () => mount("-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", path),
    readOnly: () => mount("-o", "remount,ro", path),
    writable: () => mount("-o", "remount,rw", path),
    unmount: () => spawnSync("umount", ["-l", path]),
    fill: () => fillDisk(path),
  };
}

/**
 * An ext4 file system of `sizeMiB` in an image file, loop-mounted at `path` with
 * `errors=remount-ro`, so that an error (triggered through sysfs) makes it read-only at once,
 * for files already open too, as a failing disk does; only an unmount, fsck and mount again
 * make it writable.
 */
function ext4Disk(image: string, path: string, sizeMiB: number) {
  const run = (cmd: string, ...args: string[]) => {
    const r = spawnSync(cmd, args);
    assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
  };
  const device = () => {
    const line = spawnSync("findmnt", ["-n", "-o", "SOURCE", path]).stdout.toString().trim();
    return line.split("/").at(-1)!;
  };
  return {
    create() {
      run("dd", "if=/dev/zero", `of=${image}`, "bs=1M", `count=${sizeMiB}`, "status=none");
      run("mkfs.ext4", "-q", "-m", "0", image);
    },
    mount: (...options: string[]) =>
      run("mount", "-o", ["loop", "errors=remount-ro", ...options].join(","), image, path),
    unmount: () => spawnSync("umount", [path]),
    fsck: () => spawnSync("fsck.ext4", ["-f", "-y", image]),
    /** The kernel finds an error on the file system: it turns read-only (emergency_ro) at once. */
    fail: () => run("sh", "-c", `echo 1 > /sys/fs/ext4/${device()}/trigger_fs_error`),
    fill: () => fillDisk(path),
  };
}

/**
 * Writes a file at `path` until its disk is full to the last byte (in ever smaller writes);
 * answers the file's path. Files already open may still grow into the free part of their last block.
 */
async function fillDisk(path: string): Promise<string> {
  const filler = join(path, "filler");
  const { open } = await import("node:fs/promises");
  const handle = await open(filler, "w");
  try {
    for (const size of [1 << 20, 64 * 1024, 4096, 512, 1]) {
      try {
        for (;;) await handle.write(new Uint8Array(size));
      } catch (err) {
        assert.equal((err as { code?: string }).code, "ENOSPC");
      }
    }
  } finally {
    await handle.close();
  }
  return filler;
}

describe(
  "a full or read-only disk: the CA's data directory",
  { skip, timeout: timeoutMs(90_000, 180_000) },
  () => {
    let dir: { path: string; remove(): Promise<void> };
    let disk: ReturnType<typeof ext4Disk>;
    let ca: RunningProcess | undefined;
    let configPath: string;
    let url: string;
    let port = 0;
    let bundlePem: string;
    let admin: string;
    let workload: string;
    const id = `spiffe://${CA_TRUST_DOMAIN}/disk/w`;
    const acknowledged: string[] = [];
    const start = () =>
      startProcess(["cli/main.ts", "ca", "serve", "--config", configPath], {
        env: port ? { MESHAUTH_LISTEN_PORT: String(port) } : {},
        isReadyLine: (e) => e.msg === "listening",
      });
    const call = (path: string, init: Omit<Parameters<typeof httpsCall>[1], "ca"> = {}) =>
      httpsCall(`${url}${path}`, { ca: bundlePem, timeoutMs: 10_000, ...init });
    const issue = async () => {
      const answer = await call("/v1/certificates", {
        method: "POST",
        bearer: workload,
        body: { csr: (await csrFor(id)).csr },
      });
      if (answer.status === 201) acknowledged.push(answer.json.serialNumber);
      return answer;
    };
    /** A start that must fail: its one line on stderr. */
    const failedStart = async () => {
      const refused = start();
      await assert.rejects(refused.ready);
      const message = refused.stderr.join("").trim();
      assert.equal(message.split("\n").length, 1, message);
      return message;
    };

    before(async () => {
      dir = await tempDir("meshauth-disk-ca-");
      await mkdir(join(dir.path, "data"));
      disk = ext4Disk(join(dir.path, "disk.img"), join(dir.path, "data"), 16);
      disk.create();
      disk.mount();
      configPath = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0 },
        store: { kind: "file" },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", configPath])).code, 0);
      const store = await openTestStore(dir.path);
      admin = await token(store, { role: "admin", ttlSeconds: 3600 });
      workload = await token(store, { role: "workload", spiffeId: id, isSingleUse: false, ttlSeconds: 3600 });
      await store.close();
      ca = start();
      await ca.ready;
      url = String(ca.logs.find((e) => e.msg === "listening")!.url);
      port = Number(new URL(url).port);
      bundlePem = await readFile(join(dir.path, "data", "bundle.pem"), "utf8");
      for (let i = 0; i < 5; i++) assert.equal((await issue()).status, 201);
      const revoked = await call("/v1/revocations", {
        method: "POST",
        bearer: admin,
        body: { serialNumber: acknowledged[0], reason: "keyCompromise" },
      });
      assert.equal(revoked.status, 200);
      // The CRL that lists it is signed and stored now; a CRL signed later needs a write.
      assert.equal((await call("/v1/crl")).status, 200);
    });
    after(async () => {
      await ca?.kill();
      disk?.unmount();
      await dir?.remove();
    });

    /** Every acknowledged certificate is listed, and the revoked one is in the CRL. */
    async function assertIntact(): Promise<void> {
      for (const serial of acknowledged) {
        const listed = await call(`/v1/certificates?serialNumber=${serial}`, { bearer: admin });
        assert.equal(listed.status, 200, listed.body.toString());
        assert.equal(listed.json.certificates.length, 1, `${serial} is listed`);
      }
      const crl = await call("/v1/crl");
      assert.equal(crl.status, 200, crl.body.toString());
      assert.ok(parseCrl(new Uint8Array(crl.body)).revoked.some((e) => e.serialNumber === acknowledged[0]));
    }

    /**
     * Writes are refused with 503 and a message naming the cause (the journal's last block may
     * take a few more records first); reads still answer, and nothing acknowledged is missing.
     */
    async function assertRefusesWrites(cause: RegExp): Promise<void> {
      let refused = await issue();
      for (let i = 0; i < 50 && refused.status === 201; i++) refused = await issue();
      assert.equal(refused.status, 503, refused.body.toString());
      assert.equal(refused.json.code, "ERR_NOT_READY");
      assert.equal(refused.headers["content-type"], "application/problem+json");
      assert.ok(Number(refused.headers["retry-after"]) >= 1);
      assert.match(refused.json.detail, cause);
      const revoke = await call("/v1/revocations", {
        method: "POST",
        bearer: admin,
        body: { serialNumber: acknowledged[1], reason: "keyCompromise" },
      });
      assert.equal(revoke.status, 503, revoke.body.toString());
      assert.match(revoke.json.detail, cause);
      await assertIntact();
    }

    it("full: refuses writes with 503 and a message that says why, serves what it has, recovers by itself", async () => {
      const filler = await disk.fill();
      try {
        await assertRefusesWrites(/^the disk is full \(ENOSPC\) writing \/.+/);
      } finally {
        await rm(filler);
      }
      assert.equal((await issue()).status, 201, "issues again once there is room, without a restart");
      await assertIntact();
    });

    it("full: a start says why in one line; a restart once there is room finds everything acknowledged", async () => {
      await ca!.kill();
      const filler = await disk.fill();
      try {
        assert.match(await failedStart(), /^meshauth: ERR_STORE: the disk is full \(ENOSPC\) writing \//);
      } finally {
        await rm(filler);
      }
      ca = start();
      await ca.ready;
      await assertIntact();
      assert.equal((await issue()).status, 201);
    });

    it("read-only (a disk error): refuses writes with 503 and says why; after fsck a restart finds everything", async () => {
      disk.fail();
      await assertRefusesWrites(/^the file system is read-only \(EROFS\) writing \/.+/);
      // The operator's repair: stop the CA, unmount, fsck, mount. Mounted read-only, a start says so.
      await ca!.kill();
      assert.equal(disk.unmount().status, 0);
      disk.fsck();
      disk.mount("ro");
      assert.match(await failedStart(), /^meshauth: ERR_STORE: the file system is read-only \(EROFS\)/);
      assert.equal(disk.unmount().status, 0);
      disk.mount();
      ca = start();
      await ca.ready;
      await assertIntact();
      assert.equal((await issue()).status, 201);
    });
  },
);

describe("a full or read-only disk: the agent's state and workload directories", {
  skip,
  timeout: timeoutMs(60_000, 120_000),
}, () => {
  const names = ["web", "db"];
  const idOf = (name: string) => SpiffeId.parse(`spiffe://${TRUST_DOMAIN}/disk/${name}`);
  let ca: Awaited<ReturnType<typeof startTestCa>>;
  let dir: { path: string; remove(): Promise<void> };
  let disk: ReturnType<typeof smallDisk>;
  let token: string;
  const directoryOf = (name: string) => join(dir.path, "disk", "pods", name);
  const stateDir = () => join(dir.path, "disk", "state");
  const specs = (): WorkloadSpec[] =>
    names.map((name) => ({
      name,
      spiffeId: idOf(name),
      directory: directoryOf(name),
      owner: {},
      keyFileMode: 0o600,
      keyAlgorithm: "ECDSA-P256",
      layout: "istio",
      ttlSeconds: 14,
      origin: { source: "static" },
    }));
  const startAgent = async () => {
    const logs = recordingLogger();
    const agent = new NodeAgent({
      trustDomain: TRUST_DOMAIN,
      nodeName: "node-d",
      bootstrapToken: () => token,
      client: new CaClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 }),
      trustBundlePem: ca.bundlePem,
      stateDir: stateDir(),
      deliveryRoots: [join(dir.path, "disk", "pods")],
      sources: [new StaticSource(specs())],
      backoff: { initialMs: 200, maxMs: 1000 },
      minRefreshSeconds: 1,
      maxRefreshSeconds: 1,
      logger: logs,
      keepAlive: false,
    });
    await agent.start();
    return { agent, logs };
  };

  before(async () => {
    ca = await startTestCa({ "node-d": names.map((n) => idOf(n).toString()) });
    token = await ca.nodeToken("node-d");
    dir = await tempDir("meshauth-disk-agent-");
    await mkdir(join(dir.path, "disk"));
    disk = smallDisk(join(dir.path, "disk"), "256k");
    disk.mount();
  });
  after(async () => {
    disk?.unmount();
    await ca?.remove();
    await dir?.remove();
  });

  async function assertEveryDirectoryMatches(): Promise<string[]> {
    const generations: string[] = [];
    for (const name of names) {
      const files = await readOneGeneration(directoryOf(name));
      assert.ok(keyMatches(files.keyPem, files.chainPem), `${name} holds a matching pair`);
      generations.push(files.generation);
    }
    return generations;
  }

  for (const fault of ["full", "read-only"] as const) {
    it(`${fault}: keeps the previous files and state, restarts from them, and recovers by itself`, async () => {
      let running = await startAgent();
      try {
        await waitFor("every workload delivered", () => running.agent.readiness().isReady);
        const before = await assertEveryDirectoryMatches();
        const filler = fault === "full" ? await disk.fill() : undefined;
        if (fault === "read-only") disk.readOnly();
        try {
          // The certificates renew every few seconds: each renewal now fails to be stored and delivered.
          const cause = fault === "full" ? "ENOSPC" : "EROFS";
          await waitFor(
            "a renewal that could not be stored or delivered",
            () =>
              running.logs.entries.some((e) =>
                e.msg === "delivering the workload's files failed; previous files kept" && e.cause === cause
              ) &&
              running.logs.entries.some((e) =>
                e.msg === "storing the certificate in the state directory failed" && e.cause === cause
              ),
          );
          assert.deepEqual(await assertEveryDirectoryMatches(), before, "the previous generation stays");
          assert.ok(running.agent.readiness().isReady, "the previous certificates still serve");
          // A restart meanwhile serves the stored certificates at once.
          await running.agent.stop();
          running = await startAgent();
          assert.ok(
            running.logs.entries.filter((e) => e.msg === "certificate restored from the state directory")
              .length >=
              1,
          );
          assert.ok(running.logs.entries.some((e) => e.msg === "node identity restored"));
          assert.ok(running.agent.readiness().isReady, "ready from the state directory alone");
          await assertEveryDirectoryMatches();
        } finally {
          if (filler) await rm(filler);
          if (fault === "read-only") disk.writable();
        }
        await waitFor("new generations delivered", async () => {
          const now = await assertEveryDirectoryMatches();
          return now.every((g, i) => g !== before[i]);
        });
        const stored = JSON.parse(await readFile(join(stateDir(), "workloads", "web.json"), "utf8"));
        assert.equal(
          stored.serialNumber ?? stored.svid?.serialNumber,
          running.agent.svid("web")!.serialNumber,
        );
      } finally {
        await running.agent.stop();
      }
    });
  }
});
