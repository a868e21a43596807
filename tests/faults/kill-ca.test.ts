// kill -9 anywhere, for the CA: one CA process (TLS, the embedded file store with a small
// segment so compactions run and get killed too, or PostgreSQL) is killed with SIGKILL at
// random moments, in its start-up as well as under load, and started again, while clients
// issue with single-use join tokens, renew over mutual TLS, revoke, and fetch the CRL. Then:
// no acknowledged issuance or revocation is lost, no CRL number names two different CRLs and
// none goes backwards, a CRL fetched after a revocation lists it, no single-use token is spent
// twice (and ERR_TOKEN_USED comes only after an attempt whose answer was lost), and no revoked
// certificate renews. The short variant runs in npm test; MESHAUTH_FAULTS=long makes 200 kills.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseCrl } from "../../mod.ts";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  cli,
  csrFor,
  openTestStore,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "../ca-server/helpers.ts";
import { startPostgres } from "../ca-server/postgres.ts";
import {
  type HttpsAnswer,
  httpsCall,
  IS_LONG,
  killLoop,
  killPoints,
  randomInt,
  readyTimes,
  type RunningProcess,
  sleep,
  startProcess,
  timeoutMs,
} from "./support.ts";

interface Held {
  serial: string;
  spiffeId: string;
  chainPem: string;
  keyPem: string;
}

interface TokenUse {
  spiffeId: string;
  accepted: number;
  /** Attempts sent whose answer never came (the CA died): the token may or may not have been spent. */
  lost: number;
  outcomes: string[];
}

interface SeenCrl {
  number: bigint;
  digest: string;
  serials: Set<string>;
  startedAt: number;
}

/** The whole run's record of what the CA acknowledged, and what went wrong. */
class Ledger {
  readonly issued = new Map<string, Held>();
  readonly tokenUses: TokenUse[] = [];
  /** Serial number to the time its revocation was acknowledged. */
  readonly revoked = new Map<string, number>();
  readonly crls: SeenCrl[] = [];
  readonly violations: string[] = [];
  renewals = 0;
  refusedRevoked = 0;
  lostAnswers = 0;

  holdable(): Held | undefined {
    const candidates = [...this.issued.values()].filter((h) => !this.revoked.has(h.serial));
    return candidates[randomInt(0, candidates.length)];
  }

  /** A certificate whose revocation was acknowledged: a renewal with it must be refused. */
  revokedHeld(): Held | undefined {
    const serials = [...this.revoked.keys()];
    return this.issued.get(serials[randomInt(0, serials.length)]);
  }
}

const isDown = (answer: HttpsAnswer) => answer.status === 0 || answer.status === 503;

async function runKillRun(kind: "file" | "postgres", t: { diagnostic(message: string): void }) {
  const points = killPoints(3);
  const dir = await tempDir("meshauth-kill-ca-");
  const db = kind === "postgres" ? await startPostgres() : undefined;
  let ca: RunningProcess | undefined;
  let store: CaStore | undefined;
  try {
    const configPath = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      store: kind === "file" ? { kind: "file", segmentBytes: 16_384 } : { kind: "postgres", url: db!.url },
      rateLimit: { requestsPerSecond: 1000, burst: 1000 },
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", configPath])).code, 0);
    let port = 0;
    const start = () =>
      startProcess(["cli/main.ts", "ca", "serve", "--config", configPath], {
        env: port ? { MESHAUTH_LISTEN_PORT: String(port) } : {},
        isReadyLine: (e) => e.msg === "listening",
      });
    const first = start();
    await first.ready;
    port = Number(first.logs.find((e) => e.msg === "listening")!.port);
    const url = `https://127.0.0.1:${port}`;
    const bundlePem = await readFile(join(dir.path, "data", "bundle.pem"), "utf8");
    store = await openTestStore(dir.path, db?.url);
    const admin = await token(store, { role: "admin", ttlSeconds: 86400 });
    const ledger = new Ledger();
    const call = (path: string, init: Omit<Parameters<typeof httpsCall>[1], "ca"> = {}) =>
      httpsCall(`${url}${path}`, { ca: bundlePem, timeoutMs: 5000, ...init });
    let stopping = false;

    /** Single-use join tokens, each for an identity of its own, sent again until a definite answer. */
    const issue = async (worker: number) => {
      for (let i = 0; !stopping; i++) {
        const spiffeId = `spiffe://${TRUST_DOMAIN}/kill/${worker}-${i}`;
        let once: string;
        try {
          once = await token(store!, { role: "workload", spiffeId });
        } catch {
          await sleep(50);
          continue;
        }
        const { csr, keyPem } = await csrFor(spiffeId);
        const use: TokenUse = { spiffeId, accepted: 0, lost: 0, outcomes: [] };
        ledger.tokenUses.push(use);
        for (let attempt = 0; attempt < 100 && !stopping; attempt++) {
          const answer = await call("/v1/certificates", { method: "POST", bearer: once, body: { csr } });
          use.outcomes.push(answer.json?.code ?? String(answer.status));
          // Refused connections never reached the CA; any other failure may have.
          if (answer.status === 0 && !/ECONNREFUSED/.test(answer.error ?? "")) {
            use.lost++;
            ledger.lostAnswers++;
          }
          if (isDown(answer)) {
            await sleep(50);
            continue;
          }
          if (answer.status === 201) {
            use.accepted++;
            const held = {
              serial: answer.json.serialNumber,
              spiffeId,
              chainPem: answer.json.certificateChain.join(""),
              keyPem,
            };
            ledger.issued.set(held.serial, held);
          } else if (answer.json?.code === "ERR_TOKEN_USED") {
            if (use.lost === 0) {
              ledger.violations.push(`${spiffeId}: ERR_TOKEN_USED with no lost attempt before`);
            }
          } else {
            ledger.violations.push(
              `${spiffeId}: unexpected ${answer.status} ${answer.body.toString().slice(0, 200)}`,
            );
          }
          break;
        }
      }
    };

    /** Renewals over mutual TLS with a certificate the CA issued. */
    const renew = async () => {
      while (!stopping) {
        // One renewal in five tries a revoked certificate: a revocation the CA acknowledged
        // must hold in every process started after it, not only be stored.
        const held = (Math.random() < 0.2 && ledger.revokedHeld()) || ledger.holdable();
        if (!held) {
          await sleep(20);
          continue;
        }
        const startedAt = Date.now();
        const { csr, keyPem } = await csrFor(held.spiffeId);
        const answer = await call("/v1/certificates", {
          method: "POST",
          body: { csr },
          cert: held.chainPem,
          key: held.keyPem,
        });
        const revokedAt = ledger.revoked.get(held.serial);
        if (answer.status === 201) {
          ledger.renewals++;
          if (revokedAt !== undefined && revokedAt < startedAt) {
            ledger.violations.push(`${held.serial} renewed after its revocation was acknowledged`);
          }
          const renewed = {
            serial: answer.json.serialNumber,
            spiffeId: held.spiffeId,
            chainPem: answer.json.certificateChain.join(""),
            keyPem,
          };
          ledger.issued.set(renewed.serial, renewed);
        } else if (answer.json?.code === "ERR_CLIENT_CERT_REVOKED") {
          ledger.refusedRevoked++;
        } else if (!isDown(answer)) {
          ledger.violations.push(
            `renewal of ${held.serial}: ${answer.status} ${answer.body.toString().slice(0, 200)}`,
          );
        }
        if (isDown(answer)) await sleep(50);
      }
    };

    /** Revocations by serial number, sent again until the CA answers. */
    const revoke = async () => {
      while (!stopping) {
        await sleep(100);
        const target = ledger.holdable();
        if (!target) continue;
        for (let attempt = 0; attempt < 100 && !stopping; attempt++) {
          const answer = await call("/v1/revocations", {
            method: "POST",
            bearer: admin,
            body: { serialNumber: target.serial, reason: "superseded" },
          });
          if (isDown(answer)) {
            await sleep(50);
            continue;
          }
          if (answer.status === 200) ledger.revoked.set(target.serial, Date.now());
          else {ledger.violations.push(
              `revoking ${target.serial}: ${answer.status} ${answer.body.toString()}`,
            );}
          break;
        }
      }
    };

    /** The CRL, fetched one request after another. */
    const fetchCrls = async () => {
      while (!stopping) {
        const startedAt = Date.now();
        const answer = await call("/v1/crl");
        if (answer.status === 200) {
          const crl = parseCrl(new Uint8Array(answer.body));
          ledger.crls.push({
            number: crl.crlNumber!,
            digest: createHash("sha256").update(answer.body).digest("hex"),
            serials: new Set(crl.revoked.map((e) => e.serialNumber)),
            startedAt,
          });
        }
        await sleep(40);
      }
    };

    const clients = Promise.all([issue(0), issue(1), renew(), renew(), revoke(), fetchCrls()]);
    const { report, last } = await killLoop({
      points,
      maxLifeMs: 1500,
      start,
      first,
      label: `kill -9 the CA (${kind})`,
    }).catch((err) => {
      // The clients stop too, so a failed run ends instead of looping on.
      stopping = true;
      throw err;
    });
    ca = last;
    // A last stretch of load on the survivor (longer when the kills, many of them in start-up,
    // left little of it), then the clients stop.
    const hasEnoughLoad = () =>
      ledger.issued.size >= 10 && ledger.revoked.size >= 3 && ledger.crls.length >= 10;
    await sleep(1000);
    for (const deadline = Date.now() + 15_000; !hasEnoughLoad() && Date.now() < deadline;) await sleep(200);
    stopping = true;
    await clients;

    // What the store holds now, read by a process that never saw the kills.
    const checker = await openTestStore(dir.path, db?.url);
    try {
      const lost: string[] = [];
      for (const serial of ledger.issued.keys()) {
        if (!(await checker.findCertificate(serial))) lost.push(serial);
      }
      assert.deepEqual(lost, [], `${lost.length} acknowledged issuances lost`);
      const unrevoked: string[] = [];
      for (const serial of ledger.revoked.keys()) {
        if (!(await checker.isRevoked(serial))) unrevoked.push(serial);
      }
      assert.deepEqual(unrevoked, [], `${unrevoked.length} acknowledged revocations lost`);
      for (const use of ledger.tokenUses) {
        assert.ok(use.accepted <= 1, `${use.spiffeId}: a single-use token accepted ${use.accepted} times`);
        const listed = await checker.listCertificates({ spiffeId: use.spiffeId });
        const fromToken = listed.filter((c) => c.method === "join-token");
        assert.ok(
          fromToken.length <= 1,
          `${use.spiffeId}: ${fromToken.length} certificates from one single-use token`,
        );
      }
    } finally {
      await checker.close();
    }
    const final = await call("/v1/crl");
    assert.equal(final.status, 200);
    const finalSerials = new Set(parseCrl(new Uint8Array(final.body)).revoked.map((e) => e.serialNumber));
    for (const serial of ledger.revoked.keys()) {
      assert.ok(finalSerials.has(serial), `the final CRL lacks ${serial}`);
    }

    const byNumber = new Map<bigint, string>();
    let previous = -1n;
    for (const crl of ledger.crls) {
      assert.equal(
        byNumber.get(crl.number) ?? crl.digest,
        crl.digest,
        `two different CRLs numbered ${crl.number}`,
      );
      byNumber.set(crl.number, crl.digest);
      assert.ok(crl.number >= previous, `CRL ${crl.number} came after CRL ${previous}`);
      previous = crl.number;
      for (const [serial, ackedAt] of ledger.revoked) {
        if (crl.startedAt > ackedAt) {
          assert.ok(
            crl.serials.has(serial),
            `CRL ${crl.number}, fetched after ${serial} was revoked, lacks it`,
          );
        }
      }
    }
    assert.deepEqual(ledger.violations, []);
    assert.deepEqual(report.crashes, [], "the CA exited on its own");
    if (kind === "file") {
      const { readdir } = await import("node:fs/promises");
      assert.ok((await readdir(join(dir.path, "data", "store", "archive"))).length > 0, "no compaction ran");
    }
    const figures =
      `${kind} store: ${report.kills} kills (${report.killedStarting} during start-up; ${
        readyTimes(report)
      }); ` +
      `${ledger.issued.size} certificates acknowledged (${ledger.renewals} by renewal), ` +
      `${ledger.tokenUses.length} single-use tokens (${ledger.lostAnswers} attempts whose answer a kill lost), ` +
      `${ledger.revoked.size} revocations, ${ledger.refusedRevoked} renewals refused as revoked, ` +
      `${ledger.crls.length} CRLs (numbers ${ledger.crls[0]?.number}..${previous})`;
    t.diagnostic(figures);
    if (IS_LONG) console.log(`kill -9 the CA, ${figures}`);
    assert.equal(report.kills, points);
    assert.ok(hasEnoughLoad(), figures);
  } finally {
    await ca?.kill();
    await store?.close();
    await db?.stop();
    await dir.remove();
  }
}

describe("kill -9 anywhere: the CA", { timeout: timeoutMs(120_000, 3 * 3600_000) }, () => {
  it("on the file store loses nothing it acknowledged", async (t) => {
    await runKillRun("file", t);
  });

  it("on PostgreSQL loses nothing it acknowledged", async (t) => {
    await runKillRun("postgres", t);
  });
});
