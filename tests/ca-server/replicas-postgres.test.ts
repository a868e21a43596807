// Two CA processes sharing one PostgreSQL: a certificate issued by one and revoked through the
// other appears in both CRLs, and both serve the one newest CRL (one number, one CRL).
import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  curl,
  openTestStore,
  run,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";
import { startPostgres, type TestPostgres } from "./postgres.ts";

describe("two CA replicas on one PostgreSQL", () => {
  let dir: { path: string; remove(): Promise<void> };
  let db: TestPostgres;
  let replicas: CaProcess[] = [];
  let store: CaStore;
  let rootPath: string;

  before(async () => {
    dir = await tempDir();
    db = await startPostgres();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      store: { kind: "postgres", url: db.url },
      log: { level: "info" },
    });
    const init = await cli(["ca", "init", "--config", config]);
    assert.equal(init.code, 0, init.stderr);
    const keysDir = join(dir.path, "data", "keys");
    const record = JSON.parse(
      await readFile(join(keysDir, (await readdir(keysDir)).find((n) => n.endsWith(".json"))!), "utf8"),
    );
    rootPath = join(dir.path, "root.pem");
    await writeFile(rootPath, record.certificateChainPem);
    // Both start together: the schema migration must happen once, under the advisory lock.
    replicas = await Promise.all([startCa(config), startCa(config)]);
    store = await openTestStore(dir.path, db.url);
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await store?.close().catch(() => {});
    await db?.stop();
    await dir?.remove();
  });

  async function crlText(replica: CaProcess): Promise<string> {
    const path = join(dir.path, `crl-${replica.port}.der`);
    const fetched = await run("curl", ["-sS", "--cacert", rootPath, "-o", path, `${replica.url}/v1/crl`]);
    assert.equal(fetched.code, 0, fetched.stderr);
    const text = await run("openssl", ["crl", "-inform", "DER", "-in", path, "-noout", "-text"]);
    assert.equal(text.code, 0, text.stderr);
    return text.stdout;
  }

  function crlNumber(text: string): bigint {
    return BigInt(/X509v3 CRL Number: *\n\s*(\d+)/.exec(text)![1]);
  }

  it("puts a certificate issued by one and revoked through the other in both CRLs", async () => {
    const [a, b] = replicas;
    const beforeA = crlNumber(await crlText(a));
    const beforeB = crlNumber(await crlText(b));
    assert.equal(beforeA, beforeB, "both replicas serve the newest stored CRL, not one each");

    const id = `spiffe://${TRUST_DOMAIN}/ns/shared/sa/app`;
    const t = await token(store, { role: "workload", spiffeId: id });
    const issued = await curl([
      "--cacert",
      rootPath,
      "-H",
      `Authorization: Bearer ${t}`,
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      "@-",
      `${a.url}/v1/certificates`,
    ], { input: JSON.stringify({ csr: (await csrFor(id)).csr }) });
    assert.equal(issued.status, 201, issued.body);
    const serial: string = JSON.parse(issued.body).serialNumber;

    const admin = await token(store, { role: "admin" });
    const revoked = await curl([
      "--cacert",
      rootPath,
      "-H",
      `Authorization: Bearer ${admin}`,
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      "@-",
      `${b.url}/v1/revocations`,
    ], { input: JSON.stringify({ serialNumber: serial, reason: "keyCompromise" }) });
    assert.equal(revoked.status, 200, revoked.body);

    const afterA = await crlText(a);
    const afterB = await crlText(b);
    for (const text of [afterA, afterB]) {
      assert.match(text.toUpperCase(), new RegExp(`SERIAL NUMBER: ${serial.toUpperCase()}`));
    }
    assert.equal(crlNumber(afterA), crlNumber(afterB), "one CRL for both");
    assert.ok(crlNumber(afterA) > beforeA, "the CRL number increases");
  });

  it("spends a single-use token once even when both replicas are asked at once", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/ns/shared/sa/race`;
    const t = await token(store, { role: "workload", spiffeId: id });
    const results = await Promise.all(replicas.map(async (replica) =>
      (await curl([
        "--cacert",
        rootPath,
        "-H",
        `Authorization: Bearer ${t}`,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@-",
        `${replica.url}/v1/certificates`,
      ], { input: JSON.stringify({ csr: (await csrFor(id)).csr }) })).status
    ));
    assert.deepEqual(results.sort(), [201, 401]);
  });

  it("keeps the audit trail append-only at the database: UPDATE, DELETE and TRUNCATE fail", async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      // The replicas may still be appending (the last test's refusals), so what must hold is that
      // every row there before is there after, unchanged.
      const snapshot = "SELECT id, at, action, requester, details::text FROM meshauth_audit ORDER BY id";
      const before = (await client.query(snapshot)).rows;
      assert.ok(before.length > 0);
      for (
        const statement of [
          "UPDATE meshauth_audit SET requester = 'someone else'",
          "DELETE FROM meshauth_audit",
          "TRUNCATE meshauth_audit",
        ]
      ) {
        await assert.rejects(client.query(statement), /meshauth_audit is append-only/, statement);
      }
      const after = (await client.query(snapshot)).rows;
      const ids = new Set(before.map((row) => row.id));
      assert.deepEqual(after.filter((row) => ids.has(row.id)), before);
    } finally {
      await client.end();
    }
  });

  it("answers 503 ERR_NOT_READY, and stays up, when the database goes away", async () => {
    await store.close();
    await db.stop();
    const ready = await curl(["--cacert", rootPath, `${replicas[0].url}/readyz`]);
    assert.equal(ready.status, 503, ready.body);
    assert.equal(JSON.parse(ready.body).code, "ERR_NOT_READY");
    const health = await curl(["--cacert", rootPath, `${replicas[1].url}/healthz`]);
    assert.equal(health.status, 200);
  });
});
