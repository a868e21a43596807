// Refused requests cost the CA little and cannot grow its audit trail without bound: a
// throttled address is refused before its credentials are looked at (a right guess included),
// and a burst of unauthenticated and malformed requests adds a bounded amount of journal per
// request, after which revocation and listing still work.
import assert from "node:assert/strict";
import { request } from "node:http";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CertificateAuthority } from "../../mod.ts";
import {
  type Authenticator,
  Authorities,
  type CaStore,
  createCaApp,
  FileStore,
  MemoryKeyManager,
  Problem,
  type RateLimit,
  RateLimiter,
  type RateLimitOptions,
} from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  openTestStore,
  postJson,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A POST from a chosen loopback address (127.0.0.2: not the administrator's 127.0.0.1). */
function postFrom(
  localAddress: string,
  url: string,
  headers: Record<string, string>,
  body: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/certificates`, { method: "POST", headers, localAddress }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode!));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Bytes in the store's journals (the refusals' included), archived segments included. */
function journalBytes(storeDir: string): number {
  let total = 0;
  for (const name of readdirSync(storeDir, { recursive: true }) as string[]) {
    if (/(^|\/)(journal|segment-\d+)\.jsonl$/.test(name)) total += statSync(join(storeDir, name)).size;
  }
  return total;
}

describe("the address limit comes before the credentials", () => {
  it("answers 429 to a throttled address without calling any authenticator", async () => {
    const keys = new MemoryKeyManager();
    const root = await CertificateAuthority.createRoot({ trustDomain: "abuse.example" });
    await keys.add({ ...(await root.exportPem()), activeFrom: new Date(Date.now() - 1000) });
    const authorities = await Authorities.load(keys, { trustDomain: "abuse.example" });
    const dir = await tempDir();
    try {
      const store = new FileStore(dir.path);
      await store.open();
      let checked = 0;
      const guessing: Authenticator = {
        method: "join-token",
        authenticate: (credentials) => {
          checked++;
          if (credentials.bearerToken !== "right") return Promise.reject(new Error("unreachable"));
          return Promise.resolve({
            method: "join-token",
            requester: "spiffe://abuse.example/w",
            allowedIds: [],
            isAdmin: false,
          });
        },
      };
      // A wrong guess is refused by the authenticator as invalid.
      const authenticators: Authenticator[] = [{
        method: "join-token",
        authenticate: async (credentials) => {
          if (credentials.bearerToken === "wrong") {
            checked++;
            const { Problem } = await import("../../ca-server/mod.ts");
            throw new Problem("ERR_TOKEN_INVALID", "wrong");
          }
          return undefined;
        },
      }, guessing];
      const app = createCaApp({
        authorities,
        store,
        authenticators,
        // A clock that stands still: no token comes back while the test runs.
        rateLimit: { requestsPerSecond: 1, burst: 3, now: () => 0 },
        clientAddress: () => "198.51.100.7",
      });
      const send = (bearer: string) =>
        app.request("/v1/revocations", {
          method: "POST",
          headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
          body: "{}",
        });
      for (let i = 0; i < 3; i++) assert.equal((await send("wrong")).status, 401);
      const checkedBefore = checked;
      const right = await send("right");
      assert.equal(right.status, 429, "a right guess from a throttled address is refused too");
      assert.equal((await right.json()).code, "ERR_RATE_LIMITED");
      assert.equal((await send("wrong")).status, 429);
      assert.equal(checked, checkedBefore, "no credential was looked at once the address was throttled");
      await store.close();
    } finally {
      await dir.remove();
    }
  });

  it("over HTTP: a right token from a throttled address gets 429, and is not spent", async () => {
    const dir = await tempDir();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      // One token in 1000 s: none comes back while the test runs.
      rateLimit: { requestsPerSecond: 0.001, burst: 3 },
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    const ca = await startCa(config);
    const store = await openTestStore(dir.path);
    try {
      const id = `spiffe://${TRUST_DOMAIN}/abuse/right`;
      const right = await token(store, { role: "workload", spiffeId: id });
      const wrong = `${right.split(".")[0]}.${"A".repeat(43)}`;
      const body = JSON.stringify({ csr: (await csrFor(id)).csr });
      const headers = (bearer: string) => ({
        "content-type": "application/json",
        authorization: `Bearer ${bearer}`,
      });
      const guesses = await Promise.all(
        Array.from({ length: 3 }, () => postFrom("127.0.0.3", ca.url, headers(wrong), body)),
      );
      assert.deepEqual(guesses, [401, 401, 401]);
      assert.equal(await postFrom("127.0.0.3", ca.url, headers(right), body), 429);
      // From another address, whose bucket is full: the token was not spent by the refusal.
      assert.equal(await postFrom("127.0.0.4", ca.url, headers(right), body), 201);
    } finally {
      await ca.stop();
      await store.close();
      await dir.remove();
    }
  });

  it("throttles an address whose requests fail on the server's side (503) like any failure", async () => {
    let reviews = 0;
    const unavailable: Authenticator = {
      method: "kubernetes",
      authenticate: () => {
        reviews++;
        return Promise.reject(new Problem("ERR_NOT_READY", "the Kubernetes TokenReview API answered 503"));
      },
    };
    const { app, close } = await inProcessCa([unavailable], { requestsPerSecond: 1, burst: 3, now: () => 0 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 20; i++) statuses.push((await send(app, "x.y.z")).status);
      assert.deepEqual(statuses, [...Array(3).fill(503), ...Array(17).fill(429)]);
      assert.equal(reviews, 3, "the authenticator was asked only while the address had tokens");
    } finally {
      await close();
    }
  });

  it("costs an authenticated request two operations on shared buckets: its address's, then its requester's", async () => {
    const calls: string[] = [];
    const primary = new RateLimiter({ requestsPerSecond: 1, burst: 3, now: () => 0 });
    // Stands for the primary's or the database's buckets: every call is a round trip.
    const shared: RateLimit = {
      take: (charges, refund) => {
        calls.push(`take ${charges.map((c) => c.key).join(" ")}${refund ? ` refund ${refund}` : ""}`);
        return primary.take(charges, refund);
      },
    };
    const right: Authenticator = {
      method: "join-token",
      authenticate: ({ bearerToken }) => {
        if (bearerToken !== "right") return Promise.reject(new Problem("ERR_TOKEN_INVALID", "wrong"));
        return Promise.resolve({
          method: "join-token",
          requester: "spiffe://abuse.example/w",
          allowedIds: [],
          isAdmin: false,
        });
      },
    };
    const { app, close } = await inProcessCa(
      [right],
      { requestsPerSecond: 1, burst: 3, now: () => 0 },
      shared,
    );
    try {
      assert.equal((await send(app, "right")).status, 400, "authenticated (the body is empty)");
      assert.deepEqual(calls, [
        "take address:198.51.100.7",
        "take spiffe://abuse.example/w refund address:198.51.100.7",
      ]);
      calls.length = 0;
      const statuses: number[] = [];
      for (let i = 0; i < 20; i++) statuses.push((await send(app, "wrong")).status);
      assert.deepEqual(statuses, [...Array(3).fill(401), ...Array(17).fill(429)]);
      assert.equal(calls.length, 3, "once over its limit here, the address is refused without a round trip");
    } finally {
      await close();
    }
  });
});

/** A CA app in this process, for one client address (198.51.100.7). */
async function inProcessCa(
  authenticators: Authenticator[],
  rateLimit: RateLimitOptions,
  rateLimiter?: RateLimit,
): Promise<{ app: ReturnType<typeof createCaApp>; close: () => Promise<void> }> {
  const keys = new MemoryKeyManager();
  const root = await CertificateAuthority.createRoot({ trustDomain: "abuse.example" });
  await keys.add({ ...(await root.exportPem()), activeFrom: new Date(Date.now() - 1000) });
  const authorities = await Authorities.load(keys, { trustDomain: "abuse.example" });
  const dir = await tempDir();
  const store = new FileStore(dir.path);
  await store.open();
  const app = createCaApp({
    authorities,
    store,
    authenticators,
    rateLimit,
    rateLimiter,
    clientAddress: () => "198.51.100.7",
  });
  return {
    app,
    close: async () => {
      await store.close();
      await dir.remove();
    },
  };
}

/** An issuance request with a bearer token and an empty JSON body. */
function send(app: ReturnType<typeof createCaApp>, bearer: string): Promise<Response> {
  return Promise.resolve(app.request("/v1/certificates", {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    body: "{}",
  }));
}

describe("a burst of unauthenticated and malformed requests", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;
  let store: CaStore;
  const storeDir = () => join(dir.path, "data", "store");

  before(async () => {
    dir = await tempDir();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      log: { level: "warn" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    // The listening line is at info level; quieter logs for the burst itself are not needed.
    await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      log: { level: "info" },
    });
    ca = await startCa(config);
    store = await openTestStore(dir.path);
  });

  after(async () => {
    await ca?.stop();
    await store?.close();
    await dir?.remove();
  });

  it("adds a bounded amount of journal per refused request; revocation and listing still work", async (t) => {
    const id = `spiffe://${TRUST_DOMAIN}/abuse/victim`;
    const issued = await postJson(`${ca.url}/v1/certificates`, { csr: (await csrFor(id)).csr }, {
      authorization: `Bearer ${await token(store, { role: "workload", spiffeId: id })}`,
    });
    assert.equal(issued.status, 201);
    const before = journalBytes(storeDir());
    const longType = `text/plain; ${"x".repeat(12_000)}`;
    const kinds: { headers: Record<string, string>; body: string }[] = [
      { headers: { "content-type": longType }, body: "hello" },
      { headers: { "content-type": "application/json" }, body: "{not json" },
      { headers: { "content-type": "application/json" }, body: JSON.stringify({ csr: "z".repeat(100_000) }) },
      { headers: { "content-type": "application/json", authorization: "Bearer nope.nope" }, body: "{}" },
      {
        headers: { "content-type": "application/json", authorization: `Basic ${"y".repeat(8000)}` },
        body: "{}",
      },
    ];
    const count = 400;
    const statuses = new Map<number, number>();
    for (let sent = 0; sent < count; sent += 20) {
      const batch = await Promise.all(
        Array.from({ length: 20 }, (_, i) => {
          const kind = kinds[(sent + i) % kinds.length];
          return postFrom("127.0.0.2", ca.url, kind.headers, kind.body).catch(() => 0);
        }),
      );
      for (const status of batch) statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    await sleep(300);
    const grown = journalBytes(storeDir()) - before;
    t.diagnostic(
      `${count} refused requests (${
        [...statuses].map(([s, n]) => `${n}x${s}`).join(", ")
      }) grew the journal by ${grown} bytes: ${(grown / count).toFixed(1)} bytes per request`,
    );
    assert.ok([...statuses.keys()].every((s) => s === 401 || s === 429), `statuses ${[...statuses]}`);
    // Every refusal is small (each string in an entry is cut at 256 characters), and once the
    // address is over its rate, refusals are audited once a minute, not one by one.
    assert.ok(grown / count <= 1024, `${grown / count} bytes per refused request`);
    assert.ok(grown <= 64 * 1024, `the journal grew by ${grown} bytes`);
    const audit = await store.readAudit(1000);
    const denials = audit.filter((e) => e.action === "denied" && e.details.address === "127.0.0.2");
    assert.ok(denials.length > 0 && denials.length <= 60, `${denials.length} denials audited`);
    assert.ok(denials.every((e) => JSON.stringify(e).length < 1024), "every denial entry is under 1 KiB");

    const admin = await token(store, { role: "admin" });
    const revoked = await postJson(`${ca.url}/v1/revocations`, {
      serialNumber: issued.json.serialNumber,
      reason: "keyCompromise",
    }, { authorization: `Bearer ${admin}` });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.json));
    const listed = await fetch(`${ca.url}/v1/certificates?spiffeId=${encodeURIComponent(id)}`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(listed.status, 200);
    assert.equal((await listed.json()).certificates[0].isRevoked, true);
  });
});
