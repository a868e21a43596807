// A CA of several processes behaves as one: two node:cluster workers share their rate limits
// and report their metrics together; two replicas on PostgreSQL share their rate limits; a
// revocation made with `meshauth ca revoke` is counted in meshauth_ca_revocations_total, and
// revoking a certificate twice says it was already revoked.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  openTestStore,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";
import { startPostgres, type TestPostgres } from "./postgres.ts";

// One token back in 1000 s: none while a test runs, so each bucket allows its burst exactly.
// The whole CA's issuances have a bucket of 16.
const RATE = { requestsPerSecond: 0.001, burst: 4, global: { requestsPerSecond: 0.001, burst: 16 } };

/** A request on a connection of its own, so that it may land on any worker. */
async function post(url: string, body: unknown, bearer?: string): Promise<{ status: number; json: any }> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      connection: "close",
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

/** A metric in a /metrics text: the sum of its series. */
function valueOf(text: string, name: string): number {
  return text.split("\n")
    .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

async function metric(url: string, name: string): Promise<number> {
  return valueOf(await (await fetch(`${url}/metrics`, { headers: { connection: "close" } })).text(), name);
}

/** The /metrics text, or nothing after 10 s without an answer. */
async function metricsText(url: string): Promise<string | undefined> {
  try {
    const response = await fetch(`${url}/metrics`, {
      headers: { connection: "close" },
      signal: AbortSignal.timeout(10_000),
    });
    return await response.text();
  } catch {
    return undefined;
  }
}

/**
 * Issuances for twenty identities of their own (so no identity's bucket refuses), one after
 * another, alternating over `urls`: the whole CA's bucket has what its burst holds less what
 * was issued before (`issuedBefore`), and not one more, whichever process is asked.
 */
async function assertGlobalBucket(urls: string[], store: CaStore, issuedBefore: number): Promise<void> {
  const statuses: number[] = [];
  const details = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const id = `spiffe://${TRUST_DOMAIN}/group/global-${i}`;
    const reply = await post(
      `${urls[i % urls.length]}/v1/certificates`,
      { csr: (await csrFor(id)).csr },
      await token(store, { role: "workload", spiffeId: id }),
    );
    statuses.push(reply.status);
    if (reply.status === 429) details.add(reply.json.detail.replace(/\d+s$/, "Ns"));
  }
  const left = RATE.global.burst - issuedBefore;
  assert.ok(left > 0 && left < 20, `${left} left of the global bucket`);
  assert.deepEqual(statuses, [...Array(left).fill(201), ...Array(20 - left).fill(429)]);
  assert.deepEqual([...details], ["the CA is issuing at its global limit; retry in Ns"]);
}

/**
 * Twelve issuances for one identity, one after another (so that only the identity's bucket,
 * not the address's, can refuse them), each on a connection of its own, alternating over
 * `urls`: the statuses.
 */
async function burstOfOneIdentity(urls: string[], store: CaStore, name: string): Promise<number[]> {
  const id = `spiffe://${TRUST_DOMAIN}/group/${name}`;
  const t = await token(store, { role: "workload", spiffeId: id, isSingleUse: false });
  const { csr } = await csrFor(id);
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    statuses.push((await post(`${urls[i % urls.length]}/v1/certificates`, { csr }, t)).status);
  }
  return statuses;
}

describe("a CA of two worker processes on one file store", () => {
  let dir: { path: string; remove(): Promise<void> };
  let config: string;
  let ca: CaProcess;
  let store: CaStore;

  before(async () => {
    dir = await tempDir();
    config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      workers: 2,
      rateLimit: RATE,
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    ca = await startCa(config);
    for (let i = 0; i < 100 && ca.logs.filter((l) => l.includes('"msg":"listening"')).length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    store = await openTestStore(dir.path);
  });

  after(async () => {
    await ca?.stop();
    await store?.close();
    await dir?.remove();
  });

  it("holds an identity to its rate across both workers, not to twice it", async () => {
    const statuses = await burstOfOneIdentity([ca.url], store, "one-identity");
    assert.deepEqual(statuses, [...Array(RATE.burst).fill(201), ...Array(12 - RATE.burst).fill(429)]);
  });

  it("reports every worker's counts on /metrics, whichever worker answers", async () => {
    const before = await metric(ca.url, "meshauth_ca_certificates_issued_total");
    for (let i = 0; i < 6; i++) {
      const id = `spiffe://${TRUST_DOMAIN}/group/metered-${i}`;
      const reply = await post(
        `${ca.url}/v1/certificates`,
        { csr: (await csrFor(id)).csr },
        await token(store, {
          role: "workload",
          spiffeId: id,
        }),
      );
      assert.equal(reply.status, 201, JSON.stringify(reply.json));
    }
    const seen = await Promise.all(
      Array.from({ length: 6 }, () => metric(ca.url, "meshauth_ca_certificates_issued_total")),
    );
    assert.deepEqual(seen, Array(6).fill(before + 6));
    assert.equal(await metric(ca.url, "meshauth_ca_processes"), 2);
  });

  it("never lowers a counter on /metrics while a worker does not answer", async () => {
    const before = await metric(ca.url, "meshauth_ca_certificates_issued_total");
    assert.ok(before >= 10, `${before} issued so far, by both workers`);
    const workers = readFileSync(`/proc/${ca.pid}/task/${ca.pid}/children`, "utf8").trim().split(/\s+/).map(
      Number,
    );
    assert.equal(workers.length, 2, `workers ${workers}`);
    // Each in turn: at least one of them issued some of the certificates counted so far.
    for (const pid of workers) {
      process.kill(pid, "SIGSTOP");
      try {
        // A connection handed to the stopped worker waits: the first answer is the other's,
        // once the primary has given up waiting for the stopped one's counts. On Bun each
        // worker has its own SO_REUSEPORT socket and the kernel spreads connections by their
        // addresses, so enough of them are sent that one surely reaches the running worker.
        const reads = Array.from({ length: 12 }, () => metricsText(ca.url));
        const text = await Promise.any(reads.map((r) => r.then((t) => t ?? Promise.reject())));
        const issued = valueOf(text, "meshauth_ca_certificates_issued_total");
        assert.ok(
          issued >= before,
          `issued went down from ${before} to ${issued} with worker ${pid} stopped`,
        );
        assert.equal(valueOf(text, "meshauth_ca_processes"), 2);
        process.kill(pid, "SIGCONT");
        await Promise.all(reads);
      } finally {
        process.kill(pid, "SIGCONT");
      }
    }
  });

  it("counts a revocation made with `meshauth ca revoke`, and says when one was revoked already", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/group/revoked-by-cli`;
    const issued = await post(
      `${ca.url}/v1/certificates`,
      { csr: (await csrFor(id)).csr },
      await token(store, {
        role: "workload",
        spiffeId: id,
      }),
    );
    const serial: string = issued.json.serialNumber;
    const before = await metric(ca.url, "meshauth_ca_revocations_total");
    const revoke = ["ca", "revoke", "--config", config, "--serial", serial, "--reason", "keyCompromise"];
    const first = await cli(revoke);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(JSON.parse(first.stdout).revoked.map((r: { serialNumber: string }) => r.serialNumber), [
      serial,
    ]);
    const seen = await Promise.all(
      Array.from({ length: 4 }, () => metric(ca.url, "meshauth_ca_revocations_total")),
    );
    assert.deepEqual(seen, Array(4).fill(before + 1));
    const again = await cli(revoke);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout).revoked, []);
    assert.equal(JSON.parse(again.stdout).alreadyRevoked[0].serialNumber, serial);
    assert.match(again.stderr, new RegExp(`${serial} was already revoked at .* \\(keyCompromise\\)`));
    assert.equal(await metric(ca.url, "meshauth_ca_revocations_total"), before + 1);
  });

  it("holds the whole CA's issuances to its global bucket across both workers", async () => {
    await assertGlobalBucket([ca.url], store, await metric(ca.url, "meshauth_ca_certificates_issued_total"));
  });

  // Last: it spends the loopback address's budget.
  it("holds an address to its rate across both workers", async () => {
    const replies = await Promise.all(
      Array.from({ length: 12 }, () => post(`${ca.url}/v1/certificates`, { csr: "x" })),
    );
    const statuses = replies.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array(RATE.burst).fill(401), ...Array(12 - RATE.burst).fill(429)]);
  });
});

describe("two CA replicas on one PostgreSQL", () => {
  let dir: { path: string; remove(): Promise<void> };
  let db: TestPostgres;
  let replicas: CaProcess[] = [];
  let store: CaStore;

  before(async () => {
    dir = await tempDir();
    db = await startPostgres();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      store: { kind: "postgres", url: db.url },
      rateLimit: RATE,
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    replicas = await Promise.all([startCa(config), startCa(config)]);
    store = await openTestStore(dir.path, db.url);
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await store?.close();
    await db?.stop();
    await dir?.remove();
  });

  it("holds an identity to its rate across both replicas", async () => {
    const statuses = await burstOfOneIdentity(replicas.map((r) => r.url), store, "replicated");
    assert.deepEqual(statuses, [...Array(RATE.burst).fill(201), ...Array(12 - RATE.burst).fill(429)]);
  });

  it("holds the whole CA's issuances to its global bucket across both replicas", async () => {
    const issued = await Promise.all(
      replicas.map((r) => metric(r.url, "meshauth_ca_certificates_issued_total")),
    );
    await assertGlobalBucket(replicas.map((r) => r.url), store, issued[0] + issued[1]);
  });

  it("holds an address to its rate across both replicas", async () => {
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => post(`${replicas[i % 2].url}/v1/certificates`, { csr: "x" })),
    );
    const statuses = replies.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array(RATE.burst).fill(401), ...Array(12 - RATE.burst).fill(429)]);
  });
});
