// The embedded store at size: a CA restarted on 200,000 issued certificates (start-up time and
// memory reported, from the journal alone and from a snapshot), and a journal over 1 GiB
// (made directly, not over HTTP) on which revocation, listing and `meshauth ca revoke` work.
// MESHAUTH_TEST_CERTIFICATES=1000000 measures another size (docs/ca-server.md has the figures).
import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type CertificateRecord, FileStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  openTestStore,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const CERTIFICATES = Number(process.env.MESHAUTH_TEST_CERTIFICATES ?? 200_000);

/** Resident memory of a process, from /proc. */
function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** A certificate as an issuance records it: 2,000 identities, a renewal every hour. */
function certificate(i: number, now: number): CertificateRecord {
  const spiffeId = `spiffe://${TRUST_DOMAIN}/ns/team-${i % 40}/sa/service-${i % 2000}`;
  return {
    serialNumber: (0x40000000_00000000n + BigInt(i) * 7919n).toString(16).padStart(32, "0"),
    spiffeId,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    issuedAt: new Date(now),
    requester: i % 10 === 0 ? `spiffe://${TRUST_DOMAIN}/node/node-${i % 50}` : spiffeId,
    method: i % 10 === 0 ? "join-token" : "mtls",
    authorityId: "5c0e1b2a9d7f4e3c8b6a5f4e3d2c1b0a",
  };
}

/** Starts the CA, and answers how long it took to listen, its memory, and its store's load time. */
async function measuredStart(
  config: string,
): Promise<{ ca: CaProcess; seconds: number; rss: number; loadMs: number }> {
  const started = performance.now();
  const ca = await startCa(config);
  const seconds = (performance.now() - started) / 1000;
  const opened = ca.logs.map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return {};
    }
  }).find((e) => e.msg === "store opened");
  return { ca, seconds, rss: residentBytes(ca.pid), loadMs: opened?.ms ?? NaN };
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(0)} MiB`;

describe("the embedded store at size", () => {
  it(`restarts on ${CERTIFICATES.toLocaleString("en")} certificates, and says how fast and in how much memory`, async (t) => {
    const dir = await tempDir();
    try {
      const config = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        // Compaction is asked for below, so that both start-ups are measured.
        store: { kind: "file", segmentBytes: 2 ** 40 },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      const empty = await measuredStart(config);
      await empty.ca.stop();

      const filling = performance.now();
      const store = new FileStore(join(dir.path, "data", "store"), { isCompacting: false });
      await store.open();
      const now = Date.now();
      for (let i = 0; i < CERTIFICATES; i += 2000) {
        await Promise.all(
          Array.from(
            { length: Math.min(2000, CERTIFICATES - i) },
            (_, j) => store.recordIssuance(certificate(i + j, now)),
          ),
        );
      }
      await store.close();
      const journal = statSync(join(dir.path, "data", "store", "journal.jsonl")).size;
      t.diagnostic(
        `filled in ${((performance.now() - filling) / 1000).toFixed(1)} s: journal ${mib(journal)}`,
      );

      const fromJournal = await measuredStart(config);
      await fromJournal.ca.stop();
      const compacting = new FileStore(join(dir.path, "data", "store"), { isCompacting: false });
      await compacting.open();
      assert.equal(await compacting.compact({ force: true }), true);
      await compacting.close();
      const snapshot = statSync(join(dir.path, "data", "store", "snapshot.jsonl")).size;
      const fromSnapshot = await measuredStart(config);
      try {
        for (const [what, m] of [["journal", fromJournal], ["snapshot", fromSnapshot]] as const) {
          t.diagnostic(
            `start-up from the ${what}: listening after ${
              m.seconds.toFixed(2)
            } s (store loaded in ${m.loadMs} ms), ` +
              `RSS ${mib(m.rss)} (${mib(m.rss - empty.rss)} above an empty CA's ${mib(empty.rss)}, ` +
              `${Math.round((m.rss - empty.rss) / CERTIFICATES)} bytes per certificate)`,
          );
        }
        t.diagnostic(`snapshot ${mib(snapshot)}`);
        // The CA finds what it was given: by SPIFFE ID, and by serial to revoke it.
        const tokens = await openTestStore(dir.path);
        const admin = await token(tokens, { role: "admin" });
        await tokens.close();
        const last = certificate(CERTIFICATES - 1, now);
        const listed = await fetch(
          `${fromSnapshot.ca.url}/v1/certificates?limit=1000&spiffeId=${encodeURIComponent(last.spiffeId)}`,
          { headers: { authorization: `Bearer ${admin}` } },
        ).then((r) => r.json());
        assert.equal(listed.certificates.length, Math.min(1000, Math.ceil(CERTIFICATES / 2000)));
        assert.equal(listed.certificates[0].serialNumber, last.serialNumber);
        const revoked = await fetch(`${fromSnapshot.ca.url}/v1/revocations`, {
          method: "POST",
          headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
          body: JSON.stringify({ serialNumber: certificate(0, now).serialNumber, reason: "superseded" }),
        });
        assert.equal(revoked.status, 200);
      } finally {
        await fromSnapshot.ca.stop();
      }
    } finally {
      await dir.remove();
    }
  });

  it("revokes, lists and runs `meshauth ca revoke` on a journal over 1 GiB", async (t) => {
    const dir = await tempDir();
    try {
      const config = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      const storeDir = join(dir.path, "data", "store");
      const store = new FileStore(storeDir, { isCompacting: false });
      await store.open();
      const now = Date.now();
      const early = certificate(1, now);
      await store.recordIssuance(early);
      await store.close();
      // What the unauthenticated flood of the issue left: 12 KB audit lines, past 1 GiB.
      const path = join(storeDir, "journal.jsonl");
      const line = `${
        JSON.stringify({
          kind: "audit",
          at: new Date(now).toISOString(),
          action: "denied",
          requester: "anonymous",
          details: {
            path: "/v1/certificates",
            code: "ERR_UNSUPPORTED_MEDIA_TYPE",
            detail: `expected Content-Type application/json, got "text/plain; ${"x".repeat(12_000)}"`,
          },
        })
      }\n`;
      const block = new TextEncoder().encode(line.repeat(Math.floor((64 << 20) / line.length)));
      const fd = openSync(path, "a");
      try {
        while (statSync(path).size < 1.05 * 2 ** 30) writeSync(fd, block);
        const late = certificate(2001, now);
        writeSync(fd, `${JSON.stringify({ kind: "certificate", ...late })}\n`);
      } finally {
        closeSync(fd);
      }
      const size = statSync(path).size;
      assert.ok(size > 2 ** 30, `the journal is ${size} bytes`);
      t.diagnostic(`journal ${mib(size)}`);

      const cliStarted = performance.now();
      const revokedByCli = await cli([
        "ca",
        "revoke",
        "--config",
        config,
        "--serial",
        certificate(2001, now).serialNumber,
        "--reason",
        "keyCompromise",
      ]);
      t.diagnostic(`meshauth ca revoke took ${((performance.now() - cliStarted) / 1000).toFixed(1)} s`);
      assert.equal(revokedByCli.code, 0, revokedByCli.stderr);
      assert.equal(
        JSON.parse(revokedByCli.stdout).revoked[0].serialNumber,
        certificate(2001, now).serialNumber,
      );

      const started = performance.now();
      const ca = await startCa(config);
      t.diagnostic(`the CA listened after ${((performance.now() - started) / 1000).toFixed(1)} s`);
      try {
        const tokens = await openTestStore(dir.path);
        const admin = await token(tokens, { role: "admin" });
        await tokens.close();
        const listed = await fetch(
          `${ca.url}/v1/certificates?spiffeId=${encodeURIComponent(early.spiffeId)}`,
          {
            headers: { authorization: `Bearer ${admin}` },
          },
        ).then((r) => r.json());
        assert.deepEqual(
          listed.certificates.map((c: { serialNumber: string }) => c.serialNumber),
          [certificate(2001, now).serialNumber, early.serialNumber],
        );
        const revoked = await fetch(`${ca.url}/v1/revocations`, {
          method: "POST",
          headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
          body: JSON.stringify({ serialNumber: early.serialNumber, reason: "superseded" }),
        });
        assert.equal(revoked.status, 200);
        assert.equal((await revoked.json()).revoked[0].serialNumber, early.serialNumber);
      } finally {
        await ca.stop();
      }
    } finally {
      await dir.remove();
    }
  });
});
