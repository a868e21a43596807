// The proxy's audit log holds a bounded amount on disk: it rotates by size, follows a rename by
// logrotate, and writes what unauthenticated peers cause at most once per source per interval.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, mkdir, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { AuditLog, type AuditRecord } from "../../agent/proxy/audit.ts";
import { sourceGroup, UnverifiedAudit } from "../../agent/proxy/audit-aggregation.ts";
import {
  echoServer,
  exchange,
  IDS,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
  until,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let sources: Record<string, TestSource>;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  sources = {
    "photo-backend": new TestSource(await ca.issue(IDS.backend), ca.bundle()),
    "photo-frontend": new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
  };
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await dir?.remove();
});

function record(n: number, source = "10.0.0.1:40000"): AuditRecord {
  return {
    time: new Date().toISOString(),
    listener: "l",
    direction: "inbound",
    decision: "deny",
    reason: "plaintext-refused",
    source,
    destination: "127.0.0.1:8080",
    transport: "plaintext",
    connection: n,
  };
}

async function lines(path: string): Promise<AuditRecord[]> {
  const text = await readFile(path, "utf8").catch(() => "");
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

test("the audit log rotates before a file grows past maxBytes, and keeps maxFiles rotated files", async () => {
  const path = join(dir.path, "rotate", "audit.jsonl");
  const log = new AuditLog(path, { maxBytes: 4096, maxFiles: 2 });
  await log.open();
  for (let n = 1; n <= 200; n++) {
    log.append(record(n));
    // Several batches: rotation happens between writes.
    if (n % 10 === 0) await log.flush();
  }
  await log.close();
  assert.deepEqual((await readdir(join(dir.path, "rotate"))).sort(), [
    "audit.jsonl",
    "audit.jsonl.1",
    "audit.jsonl.2",
  ]);
  for (const name of ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]) {
    assert.ok((await stat(join(dir.path, "rotate", name))).size <= 4096, name);
  }
  const kept = [...await lines(`${path}.2`), ...await lines(`${path}.1`), ...await lines(path)];
  const numbers = kept.map((r) => r.connection);
  // The newest records, in order, none lost between the files kept.
  assert.equal(numbers.at(-1), 200);
  assert.deepEqual(numbers, numbers.map((_, i) => 200 - numbers.length + 1 + i));
  assert.ok(log.rotations >= 3, `${log.rotations} rotations`);
});

/** What opening an audit log at `path` is refused with (it must be refused). */
async function refusal(path: string): Promise<Error & { code?: string }> {
  const err = await new AuditLog(path).open().then(() => undefined, (e) => e);
  assert.ok(err instanceof Error, "the open is refused");
  assert.equal((err as { code?: string }).code, "ERR_AGENT_SETUP");
  assert.ok(!err.message.includes("\n"), err.message);
  return err;
}

test("an audit log whose place is a file or a directory is ERR_AGENT_SETUP naming auditLog, the path and why", async () => {
  const file = join(dir.path, "db-policy.yaml");
  await writeFile(file, "policies: []\n");
  assert.equal(
    (await refusal(join(file, "audit.jsonl"))).message,
    `cannot open the audit log (auditLog) ${file}/audit.jsonl: ${file} is not a directory (EEXIST)`,
  );
  assert.equal(
    (await refusal(join(file, "log", "audit.jsonl"))).message,
    `cannot open the audit log (auditLog) ${file}/log/audit.jsonl: a part of ${file}/log is not a directory (ENOTDIR)`,
  );
  const directory = join(dir.path, "audit-dir");
  await mkdir(directory);
  assert.equal(
    (await refusal(directory)).message,
    `cannot open the audit log (auditLog) ${directory}: it is a directory (EISDIR): name a file in it`,
  );
});

test("an audit log on a file system it cannot write says so: read-only (mount a writable volume), or no permission", async () => {
  // Root ignores permissions, so as root the file system is a real read-only one (a tmpfs mounted
  // ro, as a container's root with readOnlyRootFilesystem); without root, a directory it may not write.
  const asRoot = process.getuid?.() === 0;
  const place = join(dir.path, "read-only");
  await mkdir(place);
  if (asRoot) {
    const r = spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", place]);
    assert.equal(r.status, 0, `mounting a read-only tmpfs failed: ${r.stderr}`);
  } else await chmod(place, 0o555);
  try {
    const path = join(place, "log", "audit.jsonl");
    assert.equal(
      (await refusal(path)).message,
      asRoot
        ? `cannot open the audit log (auditLog) ${path}: the file system is read-only (EROFS): mount a writable volume there`
        : `cannot open the audit log (auditLog) ${path}: permission is denied (EACCES) at ${
          join(place, "log")
        }`,
    );
  } finally {
    if (asRoot) spawnSync("umount", [place]);
  }
});

test("an audit log renamed away (logrotate) is followed: new records go to a new file at the path", async () => {
  const path = join(dir.path, "logrotate", "audit.jsonl");
  const log = new AuditLog(path);
  await log.open();
  log.append(record(1));
  await log.flush();
  await rename(path, `${path}.old`);
  // The open file is compared with the path's at most once a second.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  log.append(record(2));
  await log.flush();
  await log.close();
  assert.deepEqual((await lines(`${path}.old`)).map((r) => r.connection), [1]);
  assert.deepEqual((await lines(path)).map((r) => r.connection), [2]);
});

test("records about unverified peers are written once per source and interval, then summarized", () => {
  const written: AuditRecord[] = [];
  let folded = 0;
  const limit = new UnverifiedAudit({
    intervalMs: 60_000,
    maxSources: 3,
    write: (r) => written.push(r),
    folded: () => folded++,
  });
  for (let n = 0; n < 50; n++) limit.add(record(n, "10.0.0.1:1"));
  // One IPv6 /64 is one source, wherever in it the peer is.
  for (let n = 0; n < 50; n++) limit.add(record(n, `[2001:db8:0:1::${n.toString(16)}]:443`));
  // Beyond maxSources, all further sources share one group.
  for (let n = 0; n < 50; n++) limit.add(record(n, `10.1.${n}.1:1`));
  assert.equal(written.length, 3 + 1);
  limit.flush();
  assert.deepEqual(written.slice(4).map((r) => [r.source, r.repeated, r.since !== undefined]), [
    ["10.0.0.1", 49, true],
    ["2001:db8:0:1::/64", 49, true],
    ["*", 48, true],
  ]);
  assert.equal(folded, 49 + 49 + 48);
  assert.equal(sourceGroup("[::ffff:10.2.3.4]:5"), "10.2.3.4");
  assert.equal(sourceGroup("[2001:db8::1]:5"), "2001:db8:0:0::/64");
});

test(
  "a flood of unauthenticated connections writes a bounded number of audit records, counted in metrics; verified peers' decisions are each written",
  { timeout: 60_000 },
  async () => {
    const echo = await echoServer();
    closers.push(echo.close);
    const auditDir = join(dir.path, "flood");
    const servers = await startProxy(
      {
        auditLog: join(auditDir, "audit.jsonl"),
        auditUnverifiedIntervalSeconds: 1,
        inbound: [{
          name: "strict",
          workload: "photo-backend",
          listen: "127.0.0.1:0",
          forward: `127.0.0.1:${echo.port}`,
          defaultAction: "ALLOW",
        }],
      },
      dir.path,
      sources,
    );
    closers.push(() => servers.proxy.stop());
    const port = servers.port("strict");
    const plaintext = () =>
      new Promise<void>((resolve) => {
        const socket = connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\n\r\n"));
        socket.on("error", () => {});
        socket.on("close", () => resolve());
        socket.resume();
      });
    for (let round = 0; round < 4; round++) await Promise.all(Array.from({ length: 50 }, plaintext));
    const metrics = servers.proxy.metrics;
    assert.equal(
      metrics.connections.value({
        listener: "strict",
        direction: "inbound",
        transport: "plaintext",
        outcome: "plaintext_refused",
      }),
      200,
    );
    assert.equal(metrics.decisions.value({ listener: "strict", decision: "deny", policy: "" }), 200);
    // The summary comes at the end of the interval (or at stop).
    await until(
      async () => (await lines(join(auditDir, "audit.jsonl"))).some((r) => r.repeated !== undefined),
      5000,
    );
    const records = await lines(join(auditDir, "audit.jsonl"));
    assert.ok(records.length <= 4, `${records.length} records for 200 refused connections`);
    const written = records.filter((r) => r.repeated === undefined);
    const repeated = records.reduce((sum, r) => sum + (r.repeated ?? 0), 0);
    assert.equal(written.length + repeated, 200);
    assert.ok(records.every((r) => r.reason === "plaintext-refused" && r.source?.startsWith("127.0.0.1")));
    assert.equal(
      metrics.auditAggregated.value({ listener: "strict", reason: "plaintext-refused" }),
      repeated,
    );
    // A verified peer's decisions name who made them: each is written.
    const clients = await startProxy(
      {
        auditLog: join(auditDir, "client-audit.jsonl"),
        outbound: [{
          name: "to-strict",
          service: "photo-backend",
          workload: "photo-frontend",
          listen: "127.0.0.1:0",
          upstream: `127.0.0.1:${port}`,
          allowedIds: [IDS.backend],
        }],
      },
      dir.path,
      sources,
    );
    closers.push(() => clients.proxy.stop());
    for (let n = 0; n < 5; n++) {
      assert.equal((await exchange({ port: clients.port("to-strict") }, "hello")).reply, "hello");
    }
    await until(async () =>
      (await lines(join(auditDir, "audit.jsonl"))).filter((r) => r.peerId === IDS.frontend).length === 5
    );
  },
);
