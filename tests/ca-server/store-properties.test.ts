// A property test (fast-check): random interleavings of issue, list, revoke and CRL fetch over
// real HTTP against a CA of two worker processes, on the embedded store and on PostgreSQL,
// with 1, 2 and 8 concurrent clients. After each run: every issued certificate is found by
// serial and by SPIFFE ID, every revocation is in every CRL fetched after it, CRL numbers are
// unique (one CRL per number) and never go down from one fetch to a later one, and a
// single-use token sent several times at once is spent exactly once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { parseCrl } from "../../mod.ts";
import { toHex } from "../../internal/mod.ts";
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
import { startPostgres } from "./postgres.ts";

type Op =
  | { kind: "issue"; identity: number }
  | { kind: "list"; identity?: number }
  | { kind: "revoke"; bySerial: boolean; pick: number }
  | { kind: "crl" }
  | { kind: "single-use"; copies: number };

const IDENTITIES = 3;
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("issue" as const), identity: fc.nat(IDENTITIES - 1) }),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      { kind: fc.constant("list" as const), identity: fc.nat(IDENTITIES - 1) },
      { requiredKeys: ["kind"] },
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("revoke" as const), bySerial: fc.boolean(), pick: fc.nat(100) }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("crl" as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("single-use" as const),
      copies: fc.integer({ min: 2, max: 4 }),
    }),
  },
);

interface Done {
  op: Op;
  start: number;
  end: number;
  status: number;
  /** issue: the serial; revoke: the serials revoked or already revoked; list: the serials listed. */
  serials: string[];
  spiffeId?: string;
  crl?: { number: bigint; der: string; serials: Set<string> };
  spent?: number;
}

for (const backend of ["embedded file store", "PostgreSQL"] as const) {
  describe(`store invariants under random concurrent requests (${backend})`, () => {
    let dir: { path: string; remove(): Promise<void> };
    let db: { url?: string; stop(): Promise<void> } | undefined;
    let ca: CaProcess;
    let store: CaStore;
    let admin: string;
    let run = 0;
    /** Every CRL seen in this suite, by number: one number, one CRL. */
    const crlByNumber = new Map<bigint, string>();

    before(async () => {
      dir = await tempDir();
      db = backend === "PostgreSQL" ? await startPostgres() : undefined;
      const config = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        store: db ? { kind: "postgres", url: db.url } : { kind: "file", segmentBytes: 64 * 1024 },
        workers: 2,
        rateLimit: false,
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      ca = await startCa(config);
      store = await openTestStore(dir.path, db?.url);
      admin = await token(store, { role: "admin" });
    });

    after(async () => {
      await ca?.stop();
      await store?.close();
      await db?.stop();
      await dir?.remove();
    });

    async function call(
      method: string,
      path: string,
      bearer: string,
      body?: unknown,
    ): Promise<{ status: number; json?: any; bytes: Uint8Array }> {
      const response = await fetch(`${ca.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${bearer}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const json = /json/.test(response.headers.get("content-type") ?? "")
        ? JSON.parse(new TextDecoder().decode(bytes))
        : undefined;
      return { status: response.status, json, bytes };
    }

    /** Runs `ops` with `clients` concurrent clients and checks the invariants. */
    async function check(ops: Op[], clients: number): Promise<void> {
      const r = run++;
      const ids = Array.from({ length: IDENTITIES }, (_, i) => `spiffe://${TRUST_DOMAIN}/prop/r${r}/w${i}`);
      const tokens = await Promise.all(
        ids.map((id) => token(store, { role: "workload", spiffeId: id, isSingleUse: false })),
      );
      const csrs = await Promise.all(ids.map(async (id) => (await csrFor(id)).csr));
      const issued: { serial: string; spiffeId: string }[] = [];
      const done: Done[] = [];
      let next = 0;
      const execute = async (op: Op): Promise<Omit<Done, "op" | "start" | "end">> => {
        switch (op.kind) {
          case "issue": {
            const reply = await call("POST", "/v1/certificates", tokens[op.identity], {
              csr: csrs[op.identity],
            });
            assert.equal(reply.status, 201, JSON.stringify(reply.json));
            issued.push({ serial: reply.json.serialNumber, spiffeId: ids[op.identity] });
            return { status: 201, serials: [reply.json.serialNumber], spiffeId: ids[op.identity] };
          }
          case "list": {
            const query = op.identity === undefined
              ? ""
              : `&spiffeId=${encodeURIComponent(ids[op.identity])}`;
            const reply = await call("GET", `/v1/certificates?limit=1000${query}`, admin);
            assert.equal(reply.status, 200);
            return {
              status: 200,
              serials: reply.json.certificates.map((c: { serialNumber: string }) => c.serialNumber),
              spiffeId: op.identity === undefined ? undefined : ids[op.identity],
            };
          }
          case "revoke": {
            const target = issued[op.pick % Math.max(1, issued.length)];
            const body = op.bySerial && target
              ? { serialNumber: target.serial, reason: "superseded" }
              : { spiffeId: target?.spiffeId ?? ids[op.pick % IDENTITIES], reason: "superseded" };
            const reply = await call("POST", "/v1/revocations", admin, body);
            assert.equal(
              reply.status,
              200,
              `revoking ${JSON.stringify(body)}: ${JSON.stringify(reply.json)}`,
            );
            const serials = [...reply.json.revoked, ...reply.json.alreadyRevoked].map((
              e: { serialNumber: string },
            ) => e.serialNumber);
            if (op.bySerial && target) assert.deepEqual(serials, [target.serial]);
            return { status: 200, serials };
          }
          case "crl": {
            const reply = await call("GET", "/v1/crl", admin);
            assert.equal(reply.status, 200);
            const crl = parseCrl(reply.bytes);
            return {
              status: 200,
              serials: [],
              crl: {
                number: crl.crlNumber!,
                der: toHex(crl.der),
                serials: new Set(crl.revoked.map((e) => e.serialNumber)),
              },
            };
          }
          case "single-use": {
            const id = `spiffe://${TRUST_DOMAIN}/prop/r${r}/once${next}`;
            const once = await token(store, { role: "workload", spiffeId: id });
            const { csr } = await csrFor(id);
            const replies = await Promise.all(
              Array.from({ length: op.copies }, () => call("POST", "/v1/certificates", once, { csr })),
            );
            for (const reply of replies) {
              assert.ok(
                reply.status === 201 || reply.json?.code === "ERR_TOKEN_USED",
                `${reply.status} ${JSON.stringify(reply.json)}`,
              );
            }
            const accepted = replies.filter((reply) => reply.status === 201);
            for (const reply of accepted) issued.push({ serial: reply.json.serialNumber, spiffeId: id });
            return {
              status: 200,
              serials: accepted.map((a) => a.json.serialNumber),
              spent: accepted.length,
              spiffeId: id,
            };
          }
        }
      };
      await Promise.all(Array.from({ length: clients }, async () => {
        while (next < ops.length) {
          const op = ops[next++];
          const start = performance.now();
          const outcome = await execute(op);
          done.push({ op, start, end: performance.now(), ...outcome });
        }
      }));

      // A single-use token sent several times at once is spent exactly once.
      for (const d of done.filter((d) => d.op.kind === "single-use")) assert.equal(d.spent, 1, "spent once");
      assert.equal(new Set(issued.map((c) => c.serial)).size, issued.length, "serials are unique");
      const issues = done.filter((d) => d.op.kind === "issue" || d.op.kind === "single-use");
      // A listing that started after an issuance ended lists it.
      for (const list of done.filter((d) => d.op.kind === "list")) {
        for (const issue of issues.filter((i) => i.end < list.start)) {
          if (list.spiffeId !== undefined && issue.spiffeId !== list.spiffeId) continue;
          for (const serial of issue.serials) {
            assert.ok(list.serials.includes(serial), `listing lacks ${serial}`);
          }
        }
      }
      // Every revocation is in every CRL fetched after it; one number, one CRL; numbers never go down.
      const crls = done.filter((d) => d.crl);
      for (const fetched of crls) {
        const { number, der } = fetched.crl!;
        assert.equal(crlByNumber.get(number) ?? der, der, `two different CRLs are numbered ${number}`);
        crlByNumber.set(number, der);
        for (const revocation of done.filter((d) => d.op.kind === "revoke" && d.end < fetched.start)) {
          for (const serial of revocation.serials) {
            assert.ok(
              fetched.crl!.serials.has(serial),
              `CRL ${number} lacks ${serial}, revoked before it was fetched`,
            );
          }
        }
        for (const earlier of crls.filter((c) => c.end < fetched.start)) {
          assert.ok(earlier.crl!.number <= number, `CRL ${number} fetched after CRL ${earlier.crl!.number}`);
        }
      }
      // Every issued certificate is found by its SPIFFE ID and by its serial number.
      for (const { serial, spiffeId } of issued) {
        const listed = await call(
          "GET",
          `/v1/certificates?limit=1000&spiffeId=${encodeURIComponent(spiffeId)}`,
          admin,
        );
        assert.ok(listed.json.certificates.some((c: { serialNumber: string }) => c.serialNumber === serial));
        // Asked of the server's index (a revocation by serial would answer 200 for a revoked
        // serial from the revocation list alone).
        const found = await call("GET", `/v1/certificates?serialNumber=${serial}`, admin);
        assert.deepEqual(
          found.json.certificates.map((c: { serialNumber: string }) => c.serialNumber),
          [serial],
          `${serial} not found by serial: ${JSON.stringify(found.json)}`,
        );
      }
    }

    for (const clients of [1, 2, 8]) {
      it(`keeps every invariant with ${clients} concurrent client${clients > 1 ? "s" : ""}`, async (t) => {
        const started = performance.now();
        await fc.assert(
          fc.asyncProperty(
            fc.array(opArbitrary, { minLength: 4, maxLength: 24 }),
            (ops) => check(ops, clients),
          ),
          {
            numRuns: 25,
            interruptAfterTimeLimit: 90_000,
            markInterruptAsFailure: true,
            includeErrorInReport: true,
          },
        );
        t.diagnostic(`25 runs in ${Math.round(performance.now() - started)} ms`);
      });
    }
  });
}
