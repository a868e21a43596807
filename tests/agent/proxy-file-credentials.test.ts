// The sidecar's credentials from a delivered directory (FileCredentialSource): each way a
// directory cannot be used is CredentialDirectoryUnusable with its reason and the directory in
// its message; a bad rotation keeps the credentials in service and is counted; a good one is
// put into service; both layouts of the delivery are read.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  CredentialDirectoryUnusable,
  credentialFiles,
  FileCredentialSource,
  type LayoutName,
  ProxyMetrics,
  readCredentialDirectory,
  writeGeneration,
} from "../../agent/mod.ts";
import { jsonLogger } from "../../internal/mod.ts";
import { tempDir } from "../ca-server/helpers.ts";
import { type CaFollowingSource, TestCaServer } from "./proxy-ca-support.ts";
import { waitFor } from "./helpers.ts";

const ID = "spiffe://test.example/ns/demo/sa/backend";

describe("FileCredentialSource", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let ca: TestCaServer;
  let first: CaFollowingSource;
  let second: CaFollowingSource;
  let n = 0;

  before(async () => {
    dir = await tempDir("meshauth-file-credentials-");
    ca = await TestCaServer.start("test.example");
    first = await ca.issue(ID);
    second = await ca.issue(ID);
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  const files = (
    svid: CaFollowingSource,
    overrides: { chain?: string; key?: string } = {},
    layout: LayoutName = "istio",
  ) =>
    credentialFiles({
      certificateChainPem: overrides.chain ?? svid.svid.certificateChainPem,
      privateKeyPem: overrides.key ?? svid.svid.privateKeyPem,
      trustBundlePem: svid.bundle.toPem(),
    }, { layout, keyFileMode: 0o600 });

  /** A new directory with one generation of `payload` (none for undefined). */
  const deliver = async (payload?: ReturnType<typeof files>): Promise<string> => {
    const directory = join(dir.path, `pod-${++n}`);
    if (payload) await writeGeneration(directory, payload, {}, { root: dir.path });
    return directory;
  };

  const refusal = async (directory: string, reason: string) => {
    const err = await readCredentialDirectory(directory).then(() => undefined, (e) => e);
    assert.ok(err instanceof CredentialDirectoryUnusable, `${err}`);
    assert.equal(err.code, "ERR_CREDENTIAL_DIRECTORY_UNUSABLE");
    assert.equal(err.reason, reason);
    assert.equal(err.directory, directory);
    assert.ok(err.message.includes(directory) && !err.message.includes("\n"), err.message);
    return err;
  };

  test("reads the SVID, key and bundle of the current generation, and what they are", async () => {
    const read = await readCredentialDirectory(await deliver(files(first)));
    assert.equal(read.id.toString(), ID);
    assert.equal(read.serialNumber, first.svid.serialNumber);
    assert.equal(read.privateKeyPem, first.svid.privateKeyPem);
  });

  test("reads the spiffe-helper layout when told to", async () => {
    const directory = await deliver(files(first, {}, "spiffe-helper"));
    assert.equal(
      (await readCredentialDirectory(directory, "spiffe-helper")).serialNumber,
      first.svid.serialNumber,
    );
    await refusal(directory, "incomplete");
  });

  test("a directory that does not exist is missing", async () => {
    await refusal(join(dir.path, "nowhere"), "missing");
  });

  test("a directory with nothing delivered (no ..data) is missing", async () => {
    const directory = await deliver();
    await mkdir(directory);
    await refusal(directory, "missing");
  });

  test("a generation without the key is incomplete, and says which file", async () => {
    const err = await refusal(await deliver(files(first).filter((f) => f.name !== "key.pem")), "incomplete");
    assert.match(err.message, /key\.pem/);
  });

  test("a certificate chain that does not parse is invalid", async () => {
    await refusal(await deliver(files(first, { chain: "not a certificate\n" })), "invalid");
  });

  test("a chain the delivered bundle does not verify (another CA's roots) is invalid, and says so", async () => {
    const other = await TestCaServer.start("test.example");
    try {
      const payload = credentialFiles({
        certificateChainPem: first.svid.certificateChainPem,
        privateKeyPem: first.svid.privateKeyPem,
        trustBundlePem: other.bundlePem,
      }, { layout: "istio", keyFileMode: 0o600 });
      const err = await refusal(await deliver(payload), "invalid");
      assert.match(err.message, /does not verify against root-cert\.pem/);
    } finally {
      await other.stop();
    }
  });

  test("a directory others can write (who could swap ..data) is refused as invalid", async () => {
    const directory = await deliver(files(first));
    await chmod(directory, 0o777);
    await refusal(directory, "invalid");
  });

  test("a ..data that names no generation of the agent's (a kubelet Secret volume's) is invalid, and says so", async () => {
    // The kubelet's AtomicWriter: ..<time>.<numeric suffix>, every file there, the visible links.
    const directory = await deliver();
    const generation = "..2026_12_06_09_00_00.1234567890";
    await mkdir(join(directory, generation), { recursive: true });
    for (const file of files(first)) {
      await writeFile(join(directory, generation, file.name), file.content, { mode: file.mode });
      await symlink(join("..data", file.name), join(directory, file.name));
    }
    await symlink(generation, join(directory, "..data"));
    const err = await refusal(directory, "invalid");
    assert.match(
      err.message,
      /\.\.data points to "\.\.2026_12_06_09_00_00\.1234567890", which is not a generation/,
    );
    assert.match(err.message, /Secret or ConfigMap/);
    assert.doesNotMatch(err.message, /regular file|writable/);
  });

  test("a trust bundle group or others can write (who would choose the roots) is refused as invalid", async () => {
    const payload = files(first).map((f) => f.name === "root-cert.pem" ? { ...f, mode: 0o664 } : f);
    const err = await refusal(await deliver(payload), "invalid");
    assert.match(err.message, /root-cert\.pem is writable by group or others \(mode 0664\)/);
  });

  test("a read under way when the source is closed puts nothing into service", async () => {
    const directory = await deliver(files(first));
    const source = new FileCredentialSource({ directory });
    await source.start();
    source.close();
    await writeGeneration(directory, files(second), {}, { root: dir.path });
    let changes = 0;
    source.on("change", () => changes++);
    await source.reload();
    assert.equal(source.credentials?.serialNumber, first.svid.serialNumber);
    assert.equal(changes, 0);
  });

  test("the key of another certificate is a key mismatch", async () => {
    await refusal(await deliver(files(first, { key: second.svid.privateKeyPem })), "key-mismatch");
  });

  test("a refused read is logged on one JSON line with its reason and its code", async () => {
    const directory = await deliver(files(first, { key: second.svid.privateKeyPem }));
    const lines: string[] = [];
    const source = new FileCredentialSource({
      directory,
      logger: jsonLogger({ write: (l) => lines.push(l) }),
    });
    await source.start();
    source.close();
    const entry = lines.map((line) => JSON.parse(line)).find((e) => e.reason === "key-mismatch");
    assert.ok(entry, lines.join("\n"));
    assert.equal(entry.code, "ERR_CREDENTIAL_DIRECTORY_UNUSABLE");
    assert.equal(entry.error, source.lastError?.message);
  });

  test("a bad rotation keeps the credentials in service and is counted; a good one is put into service", async () => {
    const directory = await deliver(files(first));
    const metrics = new ProxyMetrics();
    const source = new FileCredentialSource({ directory, metrics, pollIntervalMs: 100 });
    let changes = 0;
    source.on("change", () => changes++);
    await source.start();
    try {
      assert.equal(source.credentials?.serialNumber, first.svid.serialNumber);
      // The new certificate with the old key: what a reader mixing two generations would see.
      await writeGeneration(directory, files(second, { key: first.svid.privateKeyPem }), {}, {
        root: dir.path,
      });
      await waitFor("the refused rotation", () => source.refusedReads > 0);
      assert.equal(source.lastError?.reason, "key-mismatch");
      assert.equal(source.current()?.certificateChainPem, first.svid.certificateChainPem);
      assert.match(
        metrics.render(),
        /meshauth_proxy_credential_files_refused_total\{reason="key-mismatch"\} [1-9]/,
      );
      await writeGeneration(directory, files(second), {}, { root: dir.path });
      await waitFor("the rotation", () => source.credentials?.serialNumber === second.svid.serialNumber);
      assert.equal(source.lastError, undefined);
      assert.equal(changes, 2);
    } finally {
      source.close();
    }
  });
});
