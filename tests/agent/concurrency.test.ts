// ConcurrencyLimit: at most `limit` operations at once; waiting callers go in order of
// priority (the agent passes a certificate's expiry: after an outage, the one closest to
// running out is renewed first), then of arrival.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConcurrencyLimit } from "../../agent/mod.ts";

test("ConcurrencyLimit runs at most its limit at once", async () => {
  const limit = new ConcurrencyLimit(2);
  let running = 0;
  let most = 0;
  await Promise.all(Array.from({ length: 10 }, () =>
    limit.run(async () => {
      most = Math.max(most, ++running);
      await new Promise((resolve) => setTimeout(resolve, 5));
      running--;
    })));
  assert.equal(most, 2);
});

test("ConcurrencyLimit lets waiting callers in by priority, lowest first, then in arrival order", async () => {
  const limit = new ConcurrencyLimit(1);
  let release!: () => void;
  const blocker = limit.run(() => new Promise<void>((resolve) => release = resolve));
  const order: string[] = [];
  const waiting = [
    ["expires in an hour", 3600],
    ["expires in a minute", 60],
    ["no certificate yet", 0],
    ["also in an hour", 3600],
    ["expires in ten minutes", 600],
  ].map(([name, priority]) =>
    limit.run(() => Promise.resolve(order.push(name as string)), { priority: priority as number })
  );
  assert.equal(limit.waiting, 5);
  release();
  await Promise.all([blocker, ...waiting]);
  assert.deepEqual(order, [
    "no certificate yet",
    "expires in a minute",
    "expires in ten minutes",
    "expires in an hour",
    "also in an hour",
  ]);
});
