// When a held certificate renews: over its usable life, from when it was obtained to its
// notAfter; the CA's backdating of notBefore (30 s by default) is not life. And how long a
// failed attempt waits: the backoff grows with failures, not with the CA's pacing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff, renewalMoment, usableFrom } from "../../agent/mod.ts";
import { renewalRetryWait } from "../../agent/lifecycle/backoff.ts";

const at = (ms: number) => new Date(ms);

test("a 35 s certificate backdated 30 s renews at half its 35 s, not a few seconds after it came", () => {
  const now = Date.UTC(2030, 0, 1);
  const svid = { notBefore: at(now - 30_000), expiresAt: at(now + 35_000), obtainedAt: at(now) };
  for (const random of [() => 0, () => 0.999]) {
    const moment = renewalMoment(svid, { ratio: 0.5, jitter: 0.1, random }, now).getTime() - now;
    assert.ok(moment >= 0.4 * 35_000 - 1 && moment <= 0.5 * 35_000, `renews ${moment} ms after issuance`);
  }
});

test("a record without obtainedAt counts from notBefore; one restored late in its life renews soon, not at once", () => {
  const now = Date.UTC(2030, 0, 1);
  const old = { notBefore: at(now - 3_000_000), expiresAt: at(now + 600_000) };
  assert.deepEqual(usableFrom(old), old.notBefore);
  // Past its half-life: a tenth of what is left from now.
  assert.equal(renewalMoment(old, { random: () => 0 }, now).getTime(), now + 60_000);
});

test("obtainedAt before notBefore (a clock behind the CA's) counts from notBefore", () => {
  const svid = { notBefore: at(1_000_000), expiresAt: at(2_000_000), obtainedAt: at(900_000) };
  assert.deepEqual(usableFrom(svid), svid.notBefore);
});

test("Backoff.pace waits what the CA asked plus at most a quarter (up to 1 s) and counts no failure", () => {
  const backoff = new Backoff({ initialMs: 1000, maxMs: 60_000, random: () => 0.999 });
  for (let i = 0; i < 6; i++) backoff.next();
  assert.equal(backoff.failures, 6);
  assert.equal(backoff.pace(1000), 1249);
  assert.equal(backoff.pace(30_000), 30_999);
  assert.equal(backoff.failures, 6, "pacing is not a failure");
  // The failures counted before still set the next real failure's wait.
  assert.equal(backoff.next(), Math.floor(30_000 + 0.999 * 60_000 / 2));
});

test("renewalRetryWait: failures without Retry-After still grow the backoff; a valid certificate bounds every wait", () => {
  const backoff = new Backoff({ initialMs: 1000, maxMs: 60_000, random: () => 0.999 });
  const unreachable = { retryAfterMs: 0 };
  const waits = [0, 1, 2, 3].map(() => renewalRetryWait(backoff, unreachable));
  assert.deepEqual(waits, [999, 1999, 3998, 7996]);
  assert.equal(backoff.failures, 4);
  // A tenth of what is left: 20 s left, 2 s; 5 s left, not under 1 s; none left, the backoff's.
  assert.equal(renewalRetryWait(backoff, { retryAfterMs: 30_000, certificateMsLeft: 20_000 }), 2000);
  assert.equal(renewalRetryWait(backoff, { ...unreachable, certificateMsLeft: 5_000 }), 1000);
  assert.equal(
    renewalRetryWait(backoff, { ...unreachable, certificateMsLeft: -1 }),
    Math.floor(16_000 + 0.999 * 16_000),
  );
  // A refusal's Retry-After is not pacing: the refusal counts.
  const before = backoff.failures;
  renewalRetryWait(backoff, { retryAfterMs: 1000, isRefusal: true });
  assert.equal(backoff.failures, before + 1);
});
