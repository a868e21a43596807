// The embedded file store on its own: concurrent reads, other processes' changes, compaction
// (crash-safe, concurrent with appends), eviction of expired certificates, the audit tail.
import assert from "node:assert/strict";
import {
  appendFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type CertificateRecord, FileStore } from "../../ca-server/mod.ts";
import { tempDir } from "./helpers.ts";

const HOUR = 3600_000;

function cert(serialNumber: string, spiffeId = "spiffe://s.example/a", notAfterMs = Date.now() + HOUR) {
  return {
    serialNumber,
    spiffeId,
    notBefore: new Date(notAfterMs - 2 * HOUR),
    notAfter: new Date(notAfterMs),
    issuedAt: new Date(),
    requester: spiffeId,
    method: "join-token",
    authorityId: "a1",
  } satisfies CertificateRecord;
}

const serialOf = (i: number) => i.toString(16).padStart(8, "0");

async function withDir(run: (path: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await run(dir.path);
  } finally {
    await dir.remove();
  }
}

describe("FileStore reads", () => {
  it("finds a certificate issued after ten concurrent listings (reads no longer skip records)", async () => {
    await withDir(async (dir) => {
      const store = new FileStore(dir);
      await store.open();
      await store.recordIssuance(cert("01"));
      await Promise.all(Array.from({ length: 10 }, () => store.listCertificates({})));
      await store.recordIssuance(cert("02"));
      assert.equal((await store.findCertificate("02"))?.serialNumber, "02");
      assert.deepEqual((await store.listCertificates({})).map((c) => c.serialNumber), ["02", "01"]);
      await store.close();
    });
  });

  it("sees another process's revocation at once, not within a recheck interval", async () => {
    await withDir(async (dir) => {
      const a = new FileStore(dir);
      const b = new FileStore(dir);
      await a.open();
      await b.open();
      await a.recordIssuance(cert("0a"));
      assert.equal(await b.isRevoked("0a"), false);
      const before = await b.revocationRevision();
      for (let i = 0; i < 5; i++) {
        const serial = `0${"abcde"[i]}`;
        if (i > 0) await a.recordIssuance(cert(serial));
        await a.revoke({ serialNumber: serial, reason: "keyCompromise" }, new Date());
        assert.equal(await b.isRevoked(serial), true, `revocation ${i} unseen`);
        assert.equal(await b.revocationRevision(), before + i + 1);
        const claim = await b.nextCrl(new Date());
        assert.ok(claim.revocations.some((r) => r.serialNumber === serial));
      }
      await a.close();
      await b.close();
    });
  });

  it("says which certificates were already revoked, and counts every revocation", async () => {
    await withDir(async (dir) => {
      const store = new FileStore(dir);
      await store.open();
      await store.recordIssuance(cert("0a", "spiffe://s.example/twice"));
      await store.recordIssuance(cert("0b", "spiffe://s.example/twice"));
      const first = await store.revoke({ serialNumber: "0a", reason: "keyCompromise" }, new Date());
      assert.deepEqual([first.revoked.length, first.alreadyRevoked.length], [1, 0]);
      const again = await store.revoke({ serialNumber: "0a", reason: "superseded" }, new Date());
      assert.deepEqual(again.revoked, []);
      assert.equal(again.alreadyRevoked[0].reason, "keyCompromise", "the first reason stands");
      const byId = await store.revoke(
        { spiffeId: "spiffe://s.example/twice", reason: "superseded" },
        new Date(),
      );
      assert.deepEqual(byId.revoked.map((r) => r.serialNumber), ["0b"]);
      assert.deepEqual(byId.alreadyRevoked.map((r) => r.serialNumber), ["0a"]);
      assert.equal(await store.revocationsTotal(), 2);
      await store.close();
    });
  });
});

describe("FileStore writes", () => {
  it("keeps an acknowledged record that follows a line another process tore", async () => {
    await withDir(async (dir) => {
      const store = new FileStore(dir);
      await store.open();
      await store.recordIssuance(cert("01"));
      // Another process that died in the middle of its write: a line without its newline.
      appendFileSync(join(dir, "journal.jsonl"), '{"kind":"certificate","serialNumber":"ee","spiff');
      await store.recordIssuance(cert("02"));
      await store.close();
      const fresh = new FileStore(dir);
      await fresh.open();
      assert.equal((await fresh.findCertificate("02"))?.serialNumber, "02", "the record after the torn line");
      assert.ok(await fresh.findCertificate("01"));
      assert.equal(fresh.certificateCount, 2);
      await fresh.close();
    });
  });
});

describe("FileStore in a short-lived process", () => {
  it("loads the certificate index only when an operation needs it", async () => {
    await withDir(async (dir) => {
      const server = new FileStore(dir);
      await server.open();
      for (let i = 0; i < 100; i++) await server.recordIssuance(cert(serialOf(i)));
      await server.close();
      const cli = new FileStore(dir, { isCompacting: false });
      await cli.open();
      await cli.saveJoinToken({
        id: "0123456789abcdef",
        secretSha256: "00".repeat(32),
        role: "admin",
        expiresAt: new Date(Date.now() + HOUR),
        isSingleUse: false,
        createdAt: new Date(),
      });
      assert.equal(cli.certificateCount, 0, "a token needs no index");
      assert.ok(await cli.findCertificate(serialOf(99)));
      assert.equal(cli.certificateCount, 100);
      await cli.close();
    });
  });
});

describe("FileStore compaction", () => {
  it("writes a snapshot and a short journal, and a restart finds every certificate", async () => {
    await withDir(async (dir) => {
      // Compacted here, at known points, rather than by the store's own timer.
      const store = new FileStore(dir, { segmentBytes: 16 * 1024, keepSegments: 3, isCompacting: false });
      await store.open();
      for (let round = 0; round < 6; round++) {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) => store.recordIssuance(cert(serialOf(round * 100 + i)))),
        );
        assert.equal(await store.compact(), true, "over segmentBytes: compacted");
      }
      assert.equal(await store.compact(), false, "under segmentBytes: left alone");
      await store.close();
      assert.ok(statSync(join(dir, "journal.jsonl")).size < 16 * 1024, "the journal is short");
      assert.ok(existsSync(join(dir, "snapshot.jsonl")));
      const archived = readdirSync(join(dir, "archive"));
      assert.deepEqual(archived, [
        "segment-0000000004.jsonl",
        "segment-0000000005.jsonl",
        "segment-0000000006.jsonl",
      ]);
      const reopened = new FileStore(dir);
      await reopened.open();
      assert.equal(reopened.certificateCount, 600);
      for (let i = 0; i < 600; i++) assert.ok(await reopened.findCertificate(serialOf(i)), serialOf(i));
      assert.equal((await reopened.listCertificates({ limit: 1 }))[0].serialNumber, serialOf(599));
      await reopened.close();
    });
  });

  it("loses nothing when a crash stops a compaction before or while its snapshot is written", async () => {
    await withDir(async (dir) => {
      const store = new FileStore(dir);
      await store.open();
      for (let i = 0; i < 50; i++) await store.recordIssuance(cert(serialOf(i)));
      await store.compact({ force: true });
      for (let i = 50; i < 80; i++) await store.recordIssuance(cert(serialOf(i)));
      await store.close();
      // A crash just after the segment was archived: the snapshot does not hold it yet.
      await mkdir(join(dir, "archive"), { recursive: true });
      renameSync(join(dir, "journal.jsonl"), join(dir, "archive", "segment-0000000002.jsonl"));
      // ... and one halfway through writing the next snapshot.
      writeFileSync(
        join(dir, "snapshot.jsonl.0b9e2a4c-8f0e-4c8e-9d6a-2f4b7c1e5a3d.tmp"),
        '{"version":1,"seg',
      );
      const reopened = new FileStore(dir);
      await reopened.open();
      for (let i = 0; i < 80; i++) assert.ok(await reopened.findCertificate(serialOf(i)), serialOf(i));
      // The next compaction numbers its segment after the one the crash left.
      await reopened.recordIssuance(cert(serialOf(80)));
      await reopened.compact({ force: true });
      assert.ok(existsSync(join(dir, "archive", "segment-0000000003.jsonl")));
      await reopened.close();
    });
  });

  it("writes a record again to the next segment when its segment was archived under it; each is read once", async () => {
    await withDir(async (dir) => {
      // Three processes' stores: one that only writes, one that compacts, one that only reads.
      const writer = new FileStore(dir, { isCompacting: false });
      const compactor = new FileStore(dir, { keepSegments: 0 });
      const reader = new FileStore(dir, { isCompacting: false });
      await Promise.all([writer.open(), compactor.open(), reader.open()]);
      const event = (n: number) => ({ at: new Date(), action: "issued", requester: "test", details: { n } });
      await writer.recordIssuance(cert("01"));
      await writer.appendAudit(event(1));
      // The reader has read the first segment to its end before it is archived.
      assert.ok(await reader.findCertificate("01"));
      assert.equal(await compactor.compact({ force: true }), true);
      // The writer still has the archived segment open: its next write (an issuance and its
      // audit entry, one batch) lands there, and then, once it sees the segment was archived,
      // again in the new one.
      await Promise.all([writer.recordIssuance(cert("02")), writer.appendAudit(event(2))]);
      const archived = readFileSync(join(dir, "archive", "segment-0000000001.jsonl"), "utf8");
      const current = readFileSync(join(dir, "journal.jsonl"), "utf8");
      for (const text of [archived, current]) {
        assert.ok(text.includes('"serialNumber":"02"') && text.includes('"n":2'), "written to both segments");
      }
      // The snapshot holds the first segment as it was when compacted, without "02".
      assert.ok(!readFileSync(join(dir, "snapshot.jsonl"), "utf8").includes('"02"'));
      const fresh = new FileStore(dir, { isCompacting: false });
      await fresh.open();
      for (const store of [fresh, reader, compactor]) {
        const listed = (await store.listCertificates({})).map((c) => c.serialNumber);
        assert.deepEqual(listed, ["02", "01"], "each certificate found, once");
      }
      const audit = await fresh.readAudit(10);
      assert.deepEqual(audit.map((e) => e.details.n), [1, 2], "each audit event once");
      await Promise.all([writer.close(), compactor.close(), reader.close(), fresh.close()]);
    });
  });

  it("keeps every record when another process compacts while this one appends", async () => {
    await withDir(async (dir) => {
      const writer = new FileStore(dir, { isCompacting: false });
      // Every archived segment kept, so the whole audit trail can be read back.
      const compactor = new FileStore(dir, { keepSegments: 0 });
      await writer.open();
      await compactor.open();
      let isWriting = true;
      const writing = (async () => {
        for (let batch = 0; batch < 40; batch++) {
          await Promise.all(
            Array.from({ length: 25 }, (_, i) => writer.recordIssuance(cert(serialOf(batch * 25 + i)))),
          );
          await writer.appendAudit({
            at: new Date(),
            action: "issued",
            requester: "test",
            details: { batch },
          });
        }
        isWriting = false;
      })();
      let compactions = 0;
      while (isWriting) {
        if (await compactor.compact({ force: true })) compactions++;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await writing;
      assert.ok(compactions >= 5, `only ${compactions} compactions`);
      const fresh = new FileStore(dir);
      await fresh.open();
      for (const store of [writer, compactor, fresh]) {
        const listed = (await store.listCertificates({ limit: 1000 })).map((c) => c.serialNumber);
        assert.equal(listed.length, 1000, "each certificate once");
        assert.equal(new Set(listed).size, 1000);
      }
      const audit = await fresh.readAudit(40);
      assert.deepEqual(audit.map((e) => e.details.batch), Array.from({ length: 40 }, (_, i) => i));
      await Promise.all([writer.close(), compactor.close(), fresh.close()]);
    });
  });
});

describe("FileStore audit trail", () => {
  it("keeps refusals apart and bounded, so a flood of them never pushes issuances and revocations out", async () => {
    await withDir(async (dir) => {
      const segmentBytes = 8 * 1024;
      const store = new FileStore(dir, { segmentBytes, keepSegments: 2, isCompacting: false });
      await store.open();
      const at = new Date();
      for (let i = 0; i < 5; i++) {
        await store.recordIssuance(cert(serialOf(i)));
        await store.appendAudit({
          at,
          action: "issued",
          requester: "w",
          details: { serialNumber: serialOf(i) },
        });
      }
      await store.appendAudit({
        at,
        action: "revoked",
        requester: "admin",
        details: { serialNumber: serialOf(0) },
      });
      // Refused requests from ever new addresses (one IPv6 address each), compacted as the
      // servers' maintenance does between them.
      for (let round = 0; round < 30; round++) {
        await Promise.all(Array.from({ length: 20 }, (_, i) =>
          store.appendAudit({
            at: new Date(),
            action: "denied",
            requester: "anonymous",
            details: {
              path: "/v1/certificates",
              code: "ERR_TOKEN_INVALID",
              address: `2001:db8::${round}:${i}`,
            },
          })));
        await store.compact();
      }
      const audit = await store.readAudit(100_000);
      assert.equal(audit.filter((e) => e.action === "issued").length, 5, "every issuance is still there");
      assert.equal(audit.filter((e) => e.action === "revoked").length, 1, "the revocation is still there");
      assert.ok(audit.some((e) => e.details.address === "2001:db8::29:19"), "the newest refusals are there");
      assert.ok(audit.length < 5 + 1 + 600, "the oldest refusals have been rotated out");
      let denialBytes = 0;
      for (const name of readdirSync(join(dir, "denials"), { recursive: true }) as string[]) {
        if (name.endsWith(".jsonl")) denialBytes += statSync(join(dir, "denials", name)).size;
      }
      assert.ok(denialBytes <= 3 * segmentBytes, `${denialBytes} bytes of refusals kept`);
      await store.close();
    });
  });
});

describe("FileStore eviction", () => {
  it("forgets certificates expired for longer than the retention; the archive keeps them", async () => {
    await withDir(async (dir) => {
      let now = Date.now();
      const store = new FileStore(dir, { retainExpiredSeconds: 60, now: () => new Date(now) });
      await store.open();
      await store.recordIssuance(cert("0e", "spiffe://s.example/old", now + 30_000));
      await store.recordIssuance(cert("0f", "spiffe://s.example/new", now + HOUR));
      assert.ok(await store.findCertificate("0e"));
      now += 30_000 + 60_000 + 1;
      await store.compact({ force: true });
      assert.equal(await store.findCertificate("0e"), undefined);
      assert.equal(store.certificateCount, 1);
      await store.close();
      const snapshot = readFileSync(join(dir, "snapshot.jsonl"), "utf8");
      assert.ok(!snapshot.includes('"0e"') && snapshot.includes('"0f"'));
      assert.ok(readFileSync(join(dir, "archive", "segment-0000000001.jsonl"), "utf8").includes('"0e"'));
      const reopened = new FileStore(dir, { retainExpiredSeconds: 60, now: () => new Date(now) });
      await reopened.open();
      assert.equal(reopened.certificateCount, 1);
      await reopened.close();
    });
  });
});
