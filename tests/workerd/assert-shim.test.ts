// The workerd assert shim must judge like Node's node:assert/strict, or a test that passes in
// workerd would mean less than the same test on Node. Each case runs through both and they
// must agree on passing or failing. (Inside workerd node:assert is the shim itself, so there
// the cases only check that the shim runs.)
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as shim from "./assert-shim.ts";

type Check = (a: typeof assert) => unknown;

function outcome(check: () => unknown): "passes" | "fails" {
  try {
    check();
    return "passes";
  } catch {
    return "fails";
  }
}

async function outcomeAsync(check: () => Promise<unknown>): Promise<"passes" | "fails"> {
  try {
    await check();
    return "passes";
  } catch {
    return "fails";
  }
}

class Point {
  constructor(readonly x: number) {}
}

class CodedError extends Error {
  code = "ERR_CODED";
}

const shimAssert = shim.default as unknown as typeof assert;

const SYNC_CASES: [string, Check][] = [
  ["equal on equal numbers", (a) => a.equal(1, 1)],
  ["equal on 1 and '1'", (a) => a.equal(1, "1" as unknown as number)],
  ["equal on NaN", (a) => a.equal(NaN, NaN)],
  ["equal on 0 and -0", (a) => a.equal(0, -0)],
  ["notEqual on different strings", (a) => a.notEqual("a", "b")],
  ["ok on 0", (a) => a.ok(0)],
  ["deepEqual on equal objects", (a) => a.deepEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] })],
  ["deepEqual on different key order", (a) => a.deepEqual({ a: 1, b: 2 }, { b: 2, a: 1 })],
  ["deepEqual on a missing key", (a) => a.deepEqual({ a: 1 }, { a: 1, b: undefined })],
  ["deepEqual on 0 and -0", (a) => a.deepEqual(0, -0)],
  ["deepEqual on equal bytes", (a) => a.deepEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))],
  ["deepEqual on different bytes", (a) => a.deepEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))],
  ["deepEqual on Uint8Array and Uint16Array", (a) => a.deepEqual(new Uint8Array([1]), new Uint16Array([1]))],
  ["deepEqual on a class and a plain object", (a) => a.deepEqual(new Point(1), { x: 1 })],
  ["deepEqual on equal Maps", (a) => a.deepEqual(new Map([["k", { v: 1 }]]), new Map([["k", { v: 1 }]]))],
  ["deepEqual on different Maps", (a) => a.deepEqual(new Map([["k", 1]]), new Map([["k", 2]]))],
  ["deepEqual on equal Sets of objects", (a) => a.deepEqual(new Set([{ a: 1 }]), new Set([{ a: 1 }]))],
  ["deepEqual on different Sets", (a) => a.deepEqual(new Set([1]), new Set([2]))],
  ["deepEqual on equal Dates", (a) => a.deepEqual(new Date(5), new Date(5))],
  ["deepEqual on different Dates", (a) => a.deepEqual(new Date(5), new Date(6))],
  ["deepEqual on arrays of different length", (a) => a.deepEqual([1], [1, 2])],
  ["deepEqual on errors with different messages", (a) => a.deepEqual(new Error("a"), new Error("b"))],
  ["notDeepEqual on different objects", (a) => a.notDeepEqual({ a: 1 }, { a: 2 })],
  ["throws with a class that matches", (a) =>
    a.throws(() => {
      throw new CodedError("x");
    }, CodedError)],
  ["throws with a class that does not match", (a) =>
    a.throws(() => {
      throw new Error("x");
    }, CodedError)],
  ["throws with an object of matching properties", (a) =>
    a.throws(() => {
      throw new CodedError("boom");
    }, { code: "ERR_CODED", message: /bo+m/ })],
  ["throws with an object of different properties", (a) =>
    a.throws(() => {
      throw new CodedError("boom");
    }, { code: "ERR_OTHER" })],
  ["throws with a matching RegExp", (a) =>
    a.throws(() => {
      throw new TypeError("bad input");
    }, /TypeError: bad/)],
  ["throws with a RegExp that does not match", (a) =>
    a.throws(() => {
      throw new Error("bad");
    }, /good/)],
  ["throws with a validation function returning true", (a) =>
    a.throws(() => {
      throw new Error("x");
    }, (err) => err instanceof Error)],
  ["throws when nothing is thrown", (a) => a.throws(() => {})],
  ["doesNotThrow when something is thrown", (a) =>
    a.doesNotThrow(() => {
      throw new Error("x");
    })],
  ["match on a matching string", (a) => a.match("abc", /b/)],
  ["match on a string that does not match", (a) => a.match("abc", /d/)],
  ["doesNotMatch on a matching string", (a) => a.doesNotMatch("abc", /b/)],
  ["ifError on null", (a) => a.ifError(null)],
  ["ifError on an error", (a) => a.ifError(new Error("x"))],
];

const ASYNC_CASES: [string, (a: typeof assert) => Promise<unknown>][] = [
  [
    "rejects on a rejection that matches",
    (a) => a.rejects(Promise.reject(new CodedError("x")), { code: "ERR_CODED" }),
  ],
  ["rejects on a resolved promise", (a) => a.rejects(Promise.resolve(1))],
  [
    "rejects with a function returning a rejection",
    (a) => a.rejects(() => Promise.reject(new Error("x")), Error),
  ],
  ["doesNotReject on a rejection", (a) => a.doesNotReject(Promise.reject(new Error("x")))],
  ["doesNotReject on a resolved promise", (a) => a.doesNotReject(Promise.resolve(1))],
];

describe("the assert shim agrees with node:assert/strict", () => {
  for (const [name, check] of SYNC_CASES) {
    test(name, () => {
      assert.equal(outcome(() => check(shimAssert)), outcome(() => check(assert)));
    });
  }
  for (const [name, check] of ASYNC_CASES) {
    test(name, async () => {
      assert.equal(await outcomeAsync(() => check(shimAssert)), await outcomeAsync(() => check(assert)));
    });
  }
  test("its errors are AssertionErrors with code ERR_ASSERTION", () => {
    assert.throws(() => shim.equal(1, 2), { name: "AssertionError", code: "ERR_ASSERTION" });
  });
});
