// The CA's rate limits as a fleet meets them: a node agent's bucket is sized for the workloads
// placed on its node (a node renewing 300 workloads at once is not held to one workload's
// burst), each identity a node asks for has a bucket of its own, the whole CA's issuances have
// one bucket that sheds load with 429 and Retry-After, and a process refuses issuances beyond
// what it handles at once. The buckets take all of a request's tokens or none, in this
// process and in PostgreSQL, where concurrent statements from two replicas neither over-allow
// nor deadlock.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CertificateAuthority, createCsr, generateKeyPair } from "../../mod.ts";
import {
  type Authenticator,
  Authorities,
  ConfigError,
  createCaApp,
  FileStore,
  loadConfig,
  MemoryKeyManager,
  PostgresStore,
  type Principal,
  type RateLimit,
  RateLimiter,
  type RateLimitOptions,
} from "../../ca-server/mod.ts";
import { tempDir } from "./helpers.ts";
import { startPostgres, type TestPostgres } from "./postgres.ts";

const TD = "limits.example";
const NODE = `spiffe://${TD}/node/node-a`;
const workloadId = (i: number) => `spiffe://${TD}/w/${i}`;

describe("rateLimit in the configuration", () => {
  it("reads a node's per-workload growth, the global bucket and the concurrency, with defaults", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "ca.yaml");
      await writeFile(path, "rateLimit: { global: { requestsPerSecond: 400, burst: 800 } }\n");
      assert.deepEqual((await loadConfig({ path })).rateLimit, {
        requestsPerSecond: 5,
        burst: 50,
        perWorkload: { requestsPerSecond: 0.1, burst: 2 },
        global: { requestsPerSecond: 400, burst: 800 },
        maxConcurrentIssuances: 64,
      });
      await writeFile(
        path,
        "rateLimit: { perWorkload: { rate: 1 }, global: { burst: 0 }, maxConcurrentIssuances: 0 }\n",
      );
      const err = await loadConfig({ path }).catch((e) => e);
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /rateLimit\.perWorkload\.rate: unknown field/);
      assert.match(err.message, /rateLimit\.global\.burst: expected a number from 1 to 1000000, got 0/);
      assert.match(err.message, /rateLimit\.maxConcurrentIssuances: expected a whole number from 1/);
    } finally {
      await dir.remove();
    }
  });
});

describe("RateLimiter", () => {
  it("takes a token from every bucket of a request, or from none", () => {
    const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 2, now: () => 0 });
    assert.equal(limiter.take([{ key: "b" }]).allowed, true);
    assert.equal(limiter.take([{ key: "b" }]).allowed, true);
    const refused = limiter.take([{ key: "a" }, { key: "b" }]);
    assert.deepEqual(refused, { allowed: false, retryAfterSeconds: 1, refusedKey: "b" });
    // "a" kept both its tokens: the refused request took none.
    assert.equal(limiter.take([{ key: "a" }]).allowed, true);
    assert.equal(limiter.take([{ key: "a" }]).allowed, true);
    assert.equal(limiter.take([{ key: "a" }]).allowed, false);
  });

  it("sizes a bucket by its charge's limit, and gives a refund back whatever the verdict", () => {
    const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 1, now: () => 0 });
    const big = { requestsPerSecond: 1, burst: 5 };
    const allowed = Array.from({ length: 6 }, () => limiter.take([{ key: "node", limit: big }]).allowed);
    assert.deepEqual(allowed, [true, true, true, true, true, false]);
    assert.equal(limiter.take([{ key: "address" }]).allowed, true);
    assert.equal(limiter.take([{ key: "node", limit: big }], "address").allowed, false);
    assert.equal(limiter.take([{ key: "address" }]).allowed, true, "the address got its token back");
  });

  it("answers the longest wait among the buckets that refused", () => {
    const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 1, now: () => 0 });
    const slow = { requestsPerSecond: 0.1, burst: 1 };
    limiter.take([{ key: "fast" }, { key: "slow", limit: slow }]);
    assert.deepEqual(limiter.take([{ key: "fast" }, { key: "slow", limit: slow }]), {
      allowed: false,
      retryAfterSeconds: 10,
      refusedKey: "slow",
    });
  });
});

describe("PostgresRateLimit (two replicas' pools on one database)", () => {
  let db: TestPostgres;
  const stores: PostgresStore[] = [];
  before(async () => {
    db = await startPostgres();
    for (let i = 0; i < 2; i++) {
      const store = new PostgresStore({ connectionString: db.url, maxConnections: 8 });
      await store.open();
      stores.push(store);
    }
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await db?.stop();
  });
  const options = { requestsPerSecond: 0.001, burst: 3 };
  const limits = () => stores.map((s) => s.sharedRateLimit(options));

  it("takes a token from every bucket of a request, or from none", async () => {
    const [a] = limits();
    assert.equal((await a.take([{ key: "pg:b" }, { key: "pg:c" }])).allowed, true);
    for (let i = 0; i < 2; i++) assert.equal((await a.take([{ key: "pg:b" }])).allowed, true);
    const refused = await a.take([{ key: "pg:a" }, { key: "pg:b" }]);
    assert.equal(refused.allowed, false);
    assert.equal(refused.refusedKey, "pg:b");
    assert.ok(refused.retryAfterSeconds > 900, `retry in ${refused.retryAfterSeconds}s`);
    for (let i = 0; i < 3; i++) assert.equal((await a.take([{ key: "pg:a" }])).allowed, true, `take ${i}`);
    assert.equal((await a.take([{ key: "pg:a" }])).allowed, false);
    // A refund comes back whatever the verdict; "pg:c" has two tokens left, and gets one more.
    assert.equal((await a.take([{ key: "pg:a" }], "pg:c")).allowed, false);
    for (let i = 0; i < 3; i++) assert.equal((await a.take([{ key: "pg:c" }])).allowed, true, `take ${i}`);
  });

  it("allows a burst exactly once across replicas under concurrent, overlapping requests, without deadlock", async () => {
    const [a, b] = limits();
    const big = { requestsPerSecond: 0.001, burst: 40 };
    // 120 requests at once from both replicas, each charged to the shared key and one of three
    // others in varying order: the shared bucket allows exactly its burst.
    const verdicts = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        (i % 2 ? a : b).take(
          i % 3
            ? [{ key: "pg:shared", limit: big }, { key: `pg:other-${i % 3}`, limit: big }]
            : [{ key: `pg:other-${i % 3}`, limit: big }, { key: "pg:shared", limit: big }],
          `pg:refund-${i % 5}`,
        )),
    );
    assert.equal(verdicts.filter((v) => v.allowed).length, 40);
  });
});

interface InProcessCa {
  app: ReturnType<typeof createCaApp>;
  issue(bearer: string, id: string): Promise<{ status: number; retryAfter: string | null; body: any }>;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

/** An authenticator that maps a bearer word to a principal. */
function byWord(principals: Record<string, Principal>): Authenticator {
  return {
    method: "join-token",
    authenticate: ({ bearerToken }) => Promise.resolve(bearerToken ? principals[bearerToken] : undefined),
  };
}

/** A CA app in this process, for one client address. */
async function inProcessCa(
  authenticators: Authenticator[],
  rateLimit: RateLimitOptions,
  rateLimiter?: RateLimit,
): Promise<InProcessCa> {
  const keys = new MemoryKeyManager();
  const root = await CertificateAuthority.createRoot({ trustDomain: TD });
  await keys.add({ ...(await root.exportPem()), activeFrom: new Date(Date.now() - 1000) });
  const authorities = await Authorities.load(keys, { trustDomain: TD });
  const dir = await tempDir();
  // No fsync: these tests count answers, not durability.
  const store = new FileStore(dir.path, { isDurable: false });
  await store.open();
  const app = createCaApp({
    authorities,
    store,
    authenticators,
    rateLimit,
    rateLimiter,
    clientAddress: () => "198.51.100.9",
  });
  const keyPair = await generateKeyPair("ECDSA-P256");
  return {
    app,
    async issue(bearer, id) {
      const response = await app.request("/v1/certificates", {
        method: "POST",
        headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
        body: JSON.stringify({ csr: await createCsr({ keys: keyPair, id }) }),
      });
      return {
        status: response.status,
        retryAfter: response.headers.get("retry-after"),
        body: await response.json(),
      };
    },
    metrics: async () => await (await app.request("/metrics")).text(),
    close: async () => {
      await store.close();
      await dir.remove();
    },
  };
}

function nodePrincipal(workloads: number): Principal {
  return {
    method: "mtls",
    requester: NODE,
    allowedIds: [NODE, ...Array.from({ length: workloads }, (_, i) => workloadId(i))],
    isAdmin: false,
    node: "node-a",
  };
}

// The defaults, with a clock that stands still: no token comes back while a test runs.
const DEFAULTS: RateLimitOptions = { requestsPerSecond: 5, burst: 50, now: () => 0 };

describe("the CA's limits for a fleet", () => {
  it("lets a node agent renew each of its 300 workloads at once (one workload's burst is 50)", async () => {
    const ca = await inProcessCa([byWord({ node: nodePrincipal(300) })], DEFAULTS);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 300; i++) statuses.push((await ca.issue("node", workloadId(i))).status);
      assert.deepEqual(statuses.filter((s) => s !== 201), [], "every workload renewed");
      // The node's bucket is 50 + 2 per workload: 650. Each workload's own (50) has 49 left, so
      // 350 more spread over the workloads go through and the node's bucket refuses the next.
      const more: number[] = [];
      for (let i = 0; i < 351; i++) more.push((await ca.issue("node", workloadId(i % 300))).status);
      assert.deepEqual(more, [...Array(350).fill(201), 429]);
    } finally {
      await ca.close();
    }
  });

  it("holds one of a node's identities to its own rate, and lets the node's others through", async () => {
    const ca = await inProcessCa([byWord({ node: nodePrincipal(10) })], DEFAULTS);
    try {
      const looped: number[] = [];
      for (let i = 0; i < 55; i++) looped.push((await ca.issue("node", workloadId(3))).status);
      assert.deepEqual(looped, [...Array(50).fill(201), ...Array(5).fill(429)]);
      const refused = await ca.issue("node", workloadId(3));
      assert.match(refused.body.detail, /too many requests from spiffe:\/\/limits\.example\/w\/3/);
      assert.equal(
        (await ca.issue("node", workloadId(4))).status,
        201,
        "a sibling workload is not held back",
      );
      assert.match(await ca.metrics(), /^meshauth_ca_rate_limited_total\{bucket="identity"\} 6$/m);
    } finally {
      await ca.close();
    }
  });

  it("sheds issuances over the whole CA's bucket with 429, Retry-After and a problem naming it", async () => {
    const principals = Object.fromEntries(
      Array.from({ length: 8 }, (_, i) => [`w${i}`, {
        method: "join-token" as const,
        requester: workloadId(i),
        allowedIds: [workloadId(i)],
        isAdmin: false,
      }]),
    );
    const ca = await inProcessCa([byWord(principals)], {
      ...DEFAULTS,
      global: { requestsPerSecond: 0.5, burst: 5 },
    });
    try {
      const answers = [];
      for (let i = 0; i < 8; i++) answers.push(await ca.issue(`w${i}`, workloadId(i)));
      assert.deepEqual(answers.map((a) => a.status), [201, 201, 201, 201, 201, 429, 429, 429]);
      assert.equal(answers[5].retryAfter, "2");
      assert.equal(answers[5].body.code, "ERR_RATE_LIMITED");
      assert.match(answers[5].body.detail, /the CA is issuing at its global limit; retry in 2s/);
      assert.match(await ca.metrics(), /^meshauth_ca_rate_limited_total\{bucket="global"\} 3$/m);
    } finally {
      await ca.close();
    }
  });

  it("refuses an issuance at once while the process already handles its most", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    let started = 0;
    // Stands for a slow authentication (a TokenReview, a busy store): requests wait inside the CA.
    const slow: Authenticator = {
      method: "mtls",
      authenticate: async () => {
        started++;
        await held;
        return { method: "mtls", requester: workloadId(1), allowedIds: [workloadId(1)], isAdmin: false };
      },
    };
    const ca = await inProcessCa([slow], { ...DEFAULTS, maxConcurrentIssuances: 2 });
    try {
      const first = [ca.issue("x", workloadId(1)), ca.issue("x", workloadId(1))];
      while (started < 2) await new Promise((resolve) => setTimeout(resolve, 5));
      const third = await ca.issue("x", workloadId(1));
      assert.equal(third.status, 429);
      assert.equal(third.retryAfter, "1");
      assert.match(third.body.detail, /handling 2 issuances at once/);
      assert.equal(started, 2, "the third request's credentials were not looked at");
      release();
      assert.deepEqual((await Promise.all(first)).map((r) => r.status), [201, 201]);
      assert.equal((await ca.issue("x", workloadId(1))).status, 201, "room again once they are answered");
      assert.match(await ca.metrics(), /^meshauth_ca_rate_limited_total\{bucket="concurrency"\} 1$/m);
    } finally {
      release();
      await ca.close();
    }
  });
});
