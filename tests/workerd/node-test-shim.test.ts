// The workerd node:test shim runs what a file registers the way node:test does: hooks in
// order, suites nested, skips, todos, subtests, done callbacks and timeouts reported.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as shim from "./node-test-shim.ts";

function statuses(results: shim.TestResult[]): Record<string, string> {
  return Object.fromEntries(results.map((r) => [r.name, r.status]));
}

test("the shim runs hooks around tests in node:test's order", async () => {
  const log: string[] = [];
  await shim.runFile("hooks", () => {
    shim.before(() => log.push("before"));
    shim.beforeEach(() => log.push("beforeEach"));
    shim.afterEach(() => log.push("afterEach"));
    shim.after(() => log.push("after"));
    shim.test("a", () => log.push("a"));
    shim.describe("suite", () => {
      shim.before(() => log.push("suite before"));
      shim.beforeEach(() => log.push("suite beforeEach"));
      shim.afterEach(() => log.push("suite afterEach"));
      shim.it("b", () => log.push("b"));
    });
    return Promise.resolve();
  });
  assert.deepEqual(log, [
    "before",
    "beforeEach",
    "a",
    "afterEach",
    "suite before",
    "beforeEach",
    "suite beforeEach",
    "b",
    "suite afterEach",
    "afterEach",
    "after",
  ]);
});

test("the shim reports passes, failures, skips, todos and subtests", async () => {
  const results = await shim.runFile("kinds", () => {
    shim.test("passes", () => {});
    shim.test("fails", () => {
      throw new Error("boom");
    });
    shim.test("skipped by option", { skip: "not here" }, () => {});
    shim.test.skip("skipped by method", () => {});
    shim.test("skips itself", (t) => t.skip("at run time"));
    shim.test.todo("to do");
    shim.test("done callback", (_t, done) => {
      queueMicrotask(() => done?.());
    });
    shim.test("parent", async (t) => {
      await t.test("child", () => {});
    });
    shim.describe.skip("skipped suite", () => {
      shim.test("inside", () => {});
    });
    return Promise.resolve();
  });
  assert.deepEqual(statuses(results), {
    "passes": "passed",
    "fails": "failed",
    "skipped by option": "skipped",
    "skipped by method": "skipped",
    "skips itself": "skipped",
    "to do": "todo",
    "done callback": "passed",
    "parent > child": "passed",
    "parent": "passed",
    "skipped suite > inside": "skipped",
  });
  assert.equal(results.find((r) => r.name === "fails")?.error?.message, "boom");
});

test("the shim fails a test that outlives its timeout", async () => {
  const results = await shim.runFile("timeout", () => {
    shim.test("hangs", { timeout: 50 }, () => new Promise(() => {}));
    return Promise.resolve();
  });
  assert.equal(results[0].status, "failed");
  assert.match(results[0].error?.message ?? "", /timed out after 50 ms/);
});

test("the shim reports a file that throws while loading as one failure", async () => {
  const results = await shim.runFile("broken", () => Promise.reject(new Error("top-level failure")));
  assert.equal(results.length, 1);
  assert.equal(results[0].status, "failed");
  assert.equal(results[0].error?.message, "top-level failure");
});

test("the shim runs only the tests marked only when a file has any", async () => {
  const results = await shim.runFile("only", () => {
    shim.test("ignored", () => {});
    shim.test.only("chosen", () => {});
    return Promise.resolve();
  });
  assert.deepEqual(statuses(results), { ignored: "skipped", chosen: "passed" });
});
