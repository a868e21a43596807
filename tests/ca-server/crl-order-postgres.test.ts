// CRLs of two replicas on one PostgreSQL, with their store calls interleaved on purpose: a CRL
// with a higher number never lacks a revocation that a lower-numbered one has, and a revocation
// that commits after a later one (bigserial values commit out of order) still reaches the next
// CRL.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { CertificateAuthority, parseCrl } from "../../mod.ts";
import {
  Authorities,
  CaMetrics,
  CaService,
  type CaStore,
  MemoryKeyManager,
  PostgresStore,
  type Principal,
  silentLogger,
} from "../../ca-server/mod.ts";
import { startPostgres, type TestPostgres } from "./postgres.ts";

const TD = "order.example";
const admin: Principal = { method: "join-token", requester: "token:test", allowedIds: [], isAdmin: true };

describe("CRL order on PostgreSQL", () => {
  let db: TestPostgres;
  let stores: PostgresStore[] = [];
  let authorities: Authorities;

  before(async () => {
    db = await startPostgres();
    stores = [0, 1].map(() => new PostgresStore({ connectionString: db.url, maxConnections: 4 }));
    for (const store of stores) await store.open();
    const keys = new MemoryKeyManager();
    const root = await CertificateAuthority.createRoot({ trustDomain: TD });
    await keys.add({ ...(await root.exportPem()), activeFrom: new Date(Date.now() - 1000) });
    authorities = await Authorities.load(keys, { trustDomain: TD });
  });

  after(async () => {
    for (const store of stores) await store.close().catch(() => {});
    await db?.stop();
  });

  const service = (store: CaStore) =>
    new CaService({ authorities, store, logger: silentLogger, metrics: new CaMetrics() });

  async function issue(serialNumber: string): Promise<void> {
    await stores[0].recordIssuance({
      serialNumber,
      spiffeId: `spiffe://${TD}/w/${serialNumber}`,
      notBefore: new Date(Date.now() - 1000),
      notAfter: new Date(Date.now() + 3600_000),
      issuedAt: new Date(),
      requester: "test",
      method: "join-token",
      authorityId: authorities.active().record.id,
    });
  }

  const entries = (der: Uint8Array) => {
    const crl = parseCrl(der);
    return { number: crl.crlNumber!, serials: new Set(crl.revoked.map((e) => e.serialNumber)) };
  };

  it("never gives a higher CRL number to a CRL that lacks a lower one's revocation", async () => {
    await issue("0a01");
    // Replica A's third store call waits until replica B has revoked and served its CRL: the
    // third call comes after A read the revocations (in whichever way the service reads them).
    let calls = 0;
    let releaseA!: () => void;
    const gate = new Promise<void>((resolve) => releaseA = resolve);
    const delayedA = new Proxy(stores[0], {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          if (++calls === 3) await gate;
          return await value.apply(target, args);
        };
      },
    }) as CaStore;
    const crlOfA = service(delayedA).crl();
    while (calls < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    const b = service(stores[1]);
    await b.revoke(admin, { serialNumber: "0a01", reason: "keyCompromise" });
    const fromB = entries((await b.crl()).der);
    assert.ok(fromB.serials.has("0a01"));
    releaseA();
    const fromA = entries((await crlOfA).der);
    const [lower, higher] = fromA.number < fromB.number ? [fromA, fromB] : [fromB, fromA];
    for (const serial of lower.serials) {
      assert.ok(
        higher.serials.has(serial),
        `CRL ${higher.number} lacks ${serial}, which CRL ${lower.number} has`,
      );
    }
  });

  it("puts a revocation that commits after a later one into the next CRL", async () => {
    await issue("0b01");
    await issue("0b02");
    // The first revocation's insert takes its revision number, then waits before committing.
    const sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    await sql.query(`CREATE FUNCTION slow_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.serial_number = '0b01' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$`);
    await sql.query(`CREATE TRIGGER slow_revocation BEFORE INSERT ON meshauth_revocations
      FOR EACH ROW EXECUTE FUNCTION slow_revocation()`);
    try {
      const a = service(stores[0]);
      const b = service(stores[1]);
      const slow = b.revoke(admin, { serialNumber: "0b01", reason: "keyCompromise" });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await service(stores[0]).revoke(admin, { serialNumber: "0b02", reason: "keyCompromise" });
      const first = entries((await a.crl()).der);
      assert.ok(first.serials.has("0b02"));
      await slow;
      const second = entries((await a.crl()).der);
      assert.ok(second.serials.has("0b01"), `CRL ${second.number}, fetched after 0b01 was revoked, lacks it`);
      assert.ok(second.serials.has("0b02"));
    } finally {
      await sql.query("DROP TRIGGER slow_revocation ON meshauth_revocations");
      await sql.query("DROP FUNCTION slow_revocation()");
      await sql.end();
    }
  });
});
