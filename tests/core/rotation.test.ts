import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { renewalTime } from "../../mod.ts";

const notBefore = new Date("2026-06-01T00:00:00Z");
const notAfter = new Date("2026-06-02T00:00:00Z");
const validity = { notBefore, notAfter };
const LIFETIME_MS = 24 * 3600 * 1000;

function at(fraction: number): number {
  return notBefore.getTime() + Math.floor(LIFETIME_MS * fraction);
}

const invalidArgument = { name: "InvalidArgument", code: "ERR_INVALID_ARGUMENT" };

describe("renewalTime", () => {
  test("renews at half the lifetime when the random draw is 0", () => {
    assert.equal(renewalTime(validity, { random: () => 0 }).getTime(), at(0.5));
  });

  test("takes up to 10% of the lifetime off by default", () => {
    const latest = at(0.5);
    const earliest = at(0.4);
    for (const draw of [0, 0.25, 0.5, 0.75, 0.999999]) {
      const t = renewalTime(validity, { random: () => draw }).getTime();
      assert.ok(t <= latest && t > earliest, `draw ${draw} gave ${new Date(t).toISOString()}`);
    }
  });

  test("subtracts jitter times the draw from the ratio", () => {
    assert.equal(
      renewalTime(validity, { ratio: 0.75, jitter: 0.25, random: () => 0.5 }).getTime(),
      at(0.625),
    );
  });

  test("with no jitter renews exactly at the ratio", () => {
    assert.equal(renewalTime(validity, { ratio: 0.75, jitter: 0, random: () => 0.9 }).getTime(), at(0.75));
  });

  test("a ratio of 1 with no jitter renews at notAfter", () => {
    assert.equal(renewalTime(validity, { ratio: 1, jitter: 0 }).getTime(), notAfter.getTime());
  });

  test("without a random source stays within the default bounds", () => {
    // Up to 10% off, rounded down to the millisecond: a draw within about 1e-7 of 1 lands on
    // the 40% mark itself, so the bound is inclusive (a CI run once drew one).
    for (let i = 0; i < 50; i++) {
      const t = renewalTime(validity).getTime();
      assert.ok(t <= at(0.5) && t >= at(0.4), `${new Date(t).toISOString()}`);
    }
  });

  test("is never before notBefore", () => {
    const t = renewalTime(validity, { ratio: 0.01, jitter: 0.0099, random: () => 0.999999 });
    assert.ok(t.getTime() >= notBefore.getTime());
  });

  for (const ratio of [0, -0.5, 1.01, Number.NaN]) {
    test(`refuses a ratio of ${ratio}`, () => {
      assert.throws(() => renewalTime(validity, { ratio }), { ...invalidArgument, argument: "ratio" });
    });
  }

  for (const jitter of [-0.1, 0.5, 0.6, Number.NaN]) {
    test(`refuses a jitter of ${jitter} with the default ratio 0.5`, () => {
      assert.throws(() => renewalTime(validity, { jitter }), { ...invalidArgument, argument: "jitter" });
    });
  }

  test("refuses a notAfter that is not after notBefore", () => {
    assert.throws(() => renewalTime({ notBefore, notAfter: notBefore }), {
      ...invalidArgument,
      argument: "validity",
    });
    assert.throws(() => renewalTime({ notBefore: notAfter, notAfter: notBefore }), invalidArgument);
  });

  for (const draw of [1, -0.1, 7, Number.NaN]) {
    test(`refuses a random source that returns ${draw}`, () => {
      assert.throws(() => renewalTime(validity, { random: () => draw }), {
        ...invalidArgument,
        argument: "random",
      });
    });
  }

  test("refuses an invalid date", () => {
    assert.throws(() => renewalTime({ notBefore, notAfter: new Date("not a date") }), invalidArgument);
  });
});
