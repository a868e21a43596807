// Leases of shared rate-limit tokens (LeasedRateLimit over the primary's RateLimiter): a busy
// key costs a round trip per lease, not per request; the processes together never spend more
// than the bucket holds, nor are refused while it holds a token that no process has leased;
// unspent tokens go back.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type LeasableRateLimit, type Lease, LeasedRateLimit, RateLimiter } from "../../ca-server/mod.ts";

/** The primary's buckets, with a clock that stands still, counting the round trips. */
function primary(burst: number, holders: number) {
  const buckets = new RateLimiter({ requestsPerSecond: 1, burst, now: () => 0 }, holders);
  const calls = { lease: 0, giveBack: 0 };
  const shared: LeasableRateLimit = {
    take: (charges, refund) => buckets.take(charges, refund),
    lease: (
      charges,
      refund,
    ): Promise<Lease> => (calls.lease++, Promise.resolve(buckets.lease(charges, refund))),
    giveBack: (tokens) => (calls.giveBack++, buckets.giveBack(tokens)),
  };
  return { buckets, shared, calls };
}

describe("LeasedRateLimit", () => {
  it("spends a busy key's tokens from leases: a round trip per lease, not per request", async () => {
    const { shared, calls } = primary(10_000, 2);
    const limit = new LeasedRateLimit(shared, { now: () => 0 });
    for (let i = 0; i < 1000; i++) {
      assert.equal((await limit.take([{ key: "spiffe://a.example/w" }])).allowed, true);
    }
    // Leases of 1, 2, 4 ... 64 extra tokens, then 64 each: about 7 + 1000 / 65.
    assert.ok(calls.lease <= 25, `${calls.lease} round trips for 1000 requests`);
    limit.close();
  });

  it("costs a key seen for the first time one round trip, and leases it nothing extra", async () => {
    const { buckets, shared, calls } = primary(100, 2);
    const limit = new LeasedRateLimit(shared, { now: () => 0 });
    assert.equal((await limit.take([{ key: "address:192.0.2.1" }])).allowed, true);
    assert.equal(calls.lease, 1);
    // The bucket lost exactly the one token: 99 more takes of the primary's own succeed.
    for (let i = 0; i < 99; i++) assert.equal(buckets.take([{ key: "address:192.0.2.1" }]).allowed, true);
    assert.equal(buckets.take([{ key: "address:192.0.2.1" }]).allowed, false);
    limit.close();
  });

  it("lets two processes together spend exactly the bucket, never more", async () => {
    const { shared } = primary(40, 2);
    const processes = [
      new LeasedRateLimit(shared, { now: () => 0 }),
      new LeasedRateLimit(shared, { now: () => 0 }),
    ];
    let allowed = 0;
    // Mostly the first process, so that it leases; the second asks now and then.
    for (let i = 0; i < 200; i++) {
      if ((await processes[i % 5 === 0 ? 1 : 0].take([{ key: "spiffe://a.example/w" }])).allowed) allowed++;
    }
    // What one process still holds is spent by it; nothing more comes from anywhere.
    for (let i = 0; i < 50; i++) {
      if ((await processes[0].take([{ key: "spiffe://a.example/w" }])).allowed) allowed++;
    }
    assert.equal(allowed, 40);
    for (const p of processes) p.close();
  });

  it("never refuses a process while the bucket's lower half has a token", async () => {
    const { shared } = primary(40, 2);
    const busy = new LeasedRateLimit(shared, { now: () => 0 });
    const other = new LeasedRateLimit(shared, { now: () => 0 });
    // The busy process stops in the middle of a lease, holding tokens it has not spent.
    for (let i = 0; i < 14; i++) assert.equal((await busy.take([{ key: "k" }])).allowed, true);
    let others = 0;
    while ((await other.take([{ key: "k" }])).allowed) others++;
    // Leases come from the upper half only: the lower half is the other's, one round trip at a time.
    assert.ok(others >= 20, `the other process got ${others}`);
    let busyMore = 0;
    while ((await busy.take([{ key: "k" }])).allowed) busyMore++;
    assert.equal(14 + others + busyMore, 40, "the busy process spends what it held, and no more");
    busy.close();
    other.close();
  });

  it("refuses a key the shared buckets refused without asking again until a token is due", async () => {
    const { shared, calls } = primary(3, 2);
    const limit = new LeasedRateLimit(shared, { now: () => 0 });
    const verdicts = [];
    for (let i = 0; i < 20; i++) verdicts.push((await limit.take([{ key: "address:198.51.100.7" }])).allowed);
    assert.deepEqual(verdicts, [...Array(3).fill(true), ...Array(17).fill(false)]);
    assert.equal((await limit.take([{ key: "address:198.51.100.7" }])).refusedKey, "address:198.51.100.7");
    assert.ok(calls.lease <= 4, `${calls.lease} round trips`);
    limit.close();
  });

  it("keeps a refunded token for the key's next request", async () => {
    const { shared, calls } = primary(100, 2);
    const limit = new LeasedRateLimit(shared, { now: () => 0 });
    assert.equal((await limit.take([{ key: "address:192.0.2.1" }])).allowed, true);
    assert.equal((await limit.take([{ key: "spiffe://a.example/w" }], "address:192.0.2.1")).allowed, true);
    const before = calls.lease;
    assert.equal((await limit.take([{ key: "address:192.0.2.1" }])).allowed, true);
    assert.equal(calls.lease, before, "the address's next request spent the token it got back");
    limit.close();
  });

  it("gives unspent tokens back once they have been idle", async () => {
    const { buckets, shared, calls } = primary(1000, 1);
    const limit = new LeasedRateLimit(shared, { holdMs: 20 });
    for (let i = 0; i < 100; i++) await limit.take([{ key: "k" }]);
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.ok(calls.giveBack >= 1, "given back");
    // Every token not spent is the bucket's again: 900 of them.
    let left = 0;
    while (buckets.take([{ key: "k" }]).allowed) left++;
    assert.equal(left, 900);
    limit.close();
  });

  it("leases nothing extra for a request that is not a number, and takes nothing back that is not", () => {
    const buckets = new RateLimiter({ requestsPerSecond: 1, burst: 10, now: () => 0 }, 2);
    assert.deepEqual(buckets.lease([{ key: "k", want: Number.NaN }]), {
      allowed: true,
      retryAfterSeconds: 0,
      extra: [0],
      waitMs: 0,
    });
    buckets.giveBack([["k", Number.NaN], ["k", Number.POSITIVE_INFINITY]]);
    // One token spent; nine left, no more and no fewer.
    let left = 0;
    while (buckets.take([{ key: "k" }]).allowed) left++;
    assert.equal(left, 9);
  });

  it("charges a request to its requester and the whole CA at once, and takes neither when one is empty", async () => {
    const { buckets, shared } = primary(100, 2);
    const global = { requestsPerSecond: 1, burst: 4 };
    const limit = new LeasedRateLimit(shared, { now: () => 0 });
    const charges = [{ key: "spiffe://a.example/node" }, { key: "global:issuance", limit: global }];
    const verdicts = [];
    for (let i = 0; i < 6; i++) verdicts.push((await limit.take(charges)).allowed);
    assert.deepEqual(verdicts, [true, true, true, true, false, false]);
    limit.close();
    // The requester paid for the four issuances, not for the two refused: 96 left.
    let left = 0;
    while (buckets.take([{ key: "spiffe://a.example/node" }]).allowed) left++;
    assert.equal(left, 96);
  });

  it("lets two processes together spend exactly the whole CA's bucket, with a limit of its own", async () => {
    const { shared } = primary(10_000, 2);
    const global = { requestsPerSecond: 1, burst: 40 };
    const processes = [
      new LeasedRateLimit(shared, { now: () => 0 }),
      new LeasedRateLimit(shared, { now: () => 0 }),
    ];
    let allowed = 0;
    for (let i = 0; i < 300; i++) {
      const charges = [{ key: `spiffe://a.example/node-${i % 7}` }, {
        key: "global:issuance",
        limit: global,
      }];
      if ((await processes[i % 3 === 0 ? 1 : 0].take(charges)).allowed) allowed++;
    }
    assert.equal(allowed, 40);
    for (const p of processes) p.close();
  });
});
