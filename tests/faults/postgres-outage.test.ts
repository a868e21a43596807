// PostgreSQL away under load, two CA replicas on it: the database restarted (stopped at once,
// as by a crash, and started again), or unreachable (a partition: nothing passes, nothing is
// refused). While it is away every request is answered, within a bound, with `503` and a
// problem body (`ERR_NOT_READY`, `Retry-After`); the replicas recover by themselves once it is
// back; and every issuance they acknowledged is in the database. The short variant keeps it
// away 2 s (restarted) and 8 s (unreachable: past the store's 5 s timeout, `statementTimeoutMs`,
// for a connection or a statement, so the waiting requests' 503 is seen; a shorter partition is
// only a delay); MESHAUTH_FAULTS=long, 30 s each.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
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
  httpsCall,
  IS_LONG,
  Partition,
  type RunningProcess,
  sleep,
  startProcess,
  timeoutMs,
} from "./support.ts";

// Unreachable, a request waits for the store's query timeout (6 s) before its 503: the short
// outage must outlast it for a 503 to be seen.
const OUTAGE_MS = { restarted: IS_LONG ? 30_000 : 2000, unreachable: IS_LONG ? 30_000 : 8000 };
/** The longest a request may wait for its answer, database away or not. */
const ANSWER_BOUND_MS = 12_000;

interface Answer {
  replica: number;
  sentAt: number;
  tookMs: number;
  status: number;
  code?: string;
  contentType?: string;
  retryAfter?: string;
}

type Fault = keyof typeof OUTAGE_MS;

async function outages(faults: Fault[], t: { diagnostic(message: string): void }) {
  const dir = await tempDir("meshauth-pg-outage-");
  const db = await startPostgres();
  const partition = await Partition.open(db.port);
  const replicas: RunningProcess[] = [];
  try {
    const url = `postgres://meshauth@127.0.0.1:${partition.port}/meshauth`;
    const configPath = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      store: { kind: "postgres", url },
      rateLimit: { requestsPerSecond: 1000, burst: 1000 },
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", configPath])).code, 0);
    for (let i = 0; i < 2; i++) {
      replicas.push(startProcess(["cli/main.ts", "ca", "serve", "--config", configPath], {
        isReadyLine: (e) => e.msg === "listening",
      }));
    }
    await Promise.all(replicas.map((r) => r.ready));
    const urls = replicas.map((r) => String(r.logs.find((e) => e.msg === "listening")!.url));
    const bundlePem = await readFile(join(dir.path, "data", "bundle.pem"), "utf8");
    const store = await openTestStore(dir.path, db.url);
    const acknowledged = new Set<string>();
    const answers: Answer[] = [];
    try {
      const ids = Array.from({ length: 6 }, (_, i) => `spiffe://${TRUST_DOMAIN}/outage/w${i}`);
      const tokens = await Promise.all(
        ids.map((spiffeId) => token(store, { role: "workload", spiffeId, isSingleUse: false })),
      );
      let stopping = false;
      const send = async (replica: number, path: string, init: Parameters<typeof httpsCall>[1]) => {
        const sentAt = Date.now();
        const answer = await httpsCall(`${urls[replica]}${path}`, { timeoutMs: 30_000, ...init });
        answers.push({
          replica,
          sentAt,
          tookMs: Date.now() - sentAt,
          status: answer.status,
          code: answer.json?.code,
          contentType: String(answer.headers["content-type"] ?? ""),
          retryAfter: answer.headers["retry-after"] as string | undefined,
        });
        return answer;
      };
      // Each client renews over mutual TLS with the certificate it holds, or (when it holds none
      // yet) issues with its reusable token, against both replicas in turn.
      const client = async (i: number) => {
        let held: { chainPem: string; keyPem: string } | undefined;
        for (let n = 0; !stopping; n++) {
          const { csr, keyPem } = await csrFor(ids[i]);
          const answer = await send(n % 2, "/v1/certificates", {
            method: "POST",
            body: { csr },
            ca: bundlePem,
            ...(held ? { cert: held.chainPem, key: held.keyPem } : { bearer: tokens[i] }),
          });
          if (answer.status === 201) {
            acknowledged.add(answer.json.serialNumber);
            held = { chainPem: answer.json.certificateChain.join(""), keyPem };
          }
          await sleep(answer.status === 201 ? 50 : 200);
        }
      };
      const crls = async () => {
        for (let n = 0; !stopping; n++) {
          await send(n % 2, "/v1/crl", { ca: bundlePem });
          await sleep(100);
        }
      };
      const load = Promise.all([...ids.map((_, i) => client(i)), crls()]);
      const windows: { fault: Fault; faultAt: number; backAt: number; recovered: number[] }[] = [];
      try {
        for (const fault of faults) {
          await sleep(1000);
          const faultAt = Date.now();
          if (fault === "restarted") await db.crash();
          else partition.cut();
          await sleep(OUTAGE_MS[fault]);
          if (fault === "restarted") await db.restart();
          else partition.heal();
          const backAt = Date.now();
          // Recovered: each replica has issued again since the database came back.
          const recovered: number[] = [];
          for (let r = 0; r < 2; r++) {
            const deadline = backAt + 30_000;
            while (Date.now() < deadline) {
              const first = answers.find((a) => a.replica === r && a.sentAt >= backAt && a.status === 201);
              if (first) {
                recovered.push(first.sentAt + first.tookMs - backAt);
                break;
              }
              await sleep(100);
            }
          }
          windows.push({ fault, faultAt, backAt, recovered });
        }
        await sleep(1000);
      } finally {
        stopping = true;
        await load;
      }

      const unanswered = answers.filter((a) => a.status === 0);
      assert.deepEqual(unanswered, [], "every request is answered");
      const slow = answers.filter((a) => a.tookMs > ANSWER_BOUND_MS);
      assert.deepEqual(slow, [], `every answer within ${ANSWER_BOUND_MS} ms`);
      const failures = answers.filter((a) => a.status !== 200 && a.status !== 201);
      for (const a of failures) {
        assert.equal(a.status, 503, JSON.stringify(a));
        assert.equal(a.code, "ERR_NOT_READY", JSON.stringify(a));
        assert.equal(a.contentType, "application/problem+json", JSON.stringify(a));
        assert.ok(Number(a.retryAfter) >= 1, `Retry-After on ${JSON.stringify(a)}`);
        assert.ok(
          windows.some((w) => a.sentAt >= w.faultAt - 1000 && a.sentAt <= w.backAt + 15_000),
          `a 503 outside every outage: ${JSON.stringify(a)}`,
        );
      }
      const lost: string[] = [];
      for (const serial of acknowledged) if (!(await store.findCertificate(serial))) lost.push(serial);
      assert.deepEqual(lost, [], "an acknowledged issuance is missing from the database");
      for (const w of windows) {
        assert.equal(
          w.recovered.length,
          2,
          `${w.fault}: both replicas issue again once the database is back`,
        );
        // Answered while it was away: a request sent just before the cut is answered (503) once
        // the query timeout passes, and one sent later may wait for the heal and succeed.
        const during = answers.filter((a) => a.sentAt >= w.faultAt && a.sentAt + a.tookMs < w.backAt);
        assert.ok(
          during.some((a) => a.status === 503),
          `${w.fault}: the replicas answered 503 while it was away`,
        );
        const tooks = during.filter((a) => a.status === 503).map((a) => a.tookMs).sort((a, b) => a - b);
        const figures =
          `PostgreSQL ${w.fault} for ${OUTAGE_MS[w.fault] / 1000} s under load: ${during.length} ` +
          `requests answered while it was away, ${tooks.length} of them 503 (answer time p50 ` +
          `${tooks[Math.floor(tooks.length / 2)]} ms, max ${tooks.at(-1)} ms); the replicas issued again ` +
          `${w.recovered.map((ms) => `${(ms / 1000).toFixed(1)} s`).join(" and ")} after it was back`;
        t.diagnostic(figures);
        if (IS_LONG) console.log(figures);
      }
      t.diagnostic(`${acknowledged.size} issuances acknowledged, none lost`);
    } finally {
      await store.close();
    }
  } finally {
    await Promise.all(replicas.map((r) => r.stop()));
    await partition.close();
    await db.stop();
    await dir.remove();
  }
}

describe("PostgreSQL away under load", { timeout: timeoutMs(120_000, 600_000) }, () => {
  it("restarted, then unreachable: 503 with a problem body while it is gone, recovery by itself, nothing acknowledged lost", async (t) => {
    await outages(["restarted", "unreachable"], t);
  });
});
