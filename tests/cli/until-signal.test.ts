// How `meshauth agent` and `meshauth proxy` stop (cli/until-signal.ts, shared by both): a
// signal once running closes what was started and answers the signal; a signal while starting
// logs "stopped" and exits 0 at once; a start that fails throws; none leaves a handler behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runUntilSignal } from "../../cli/until-signal.ts";
import { recordingLogger } from "../agent/helpers.ts";

const handlers = () => process.listenerCount("SIGTERM") + process.listenerCount("SIGINT");

test("SIGTERM once running closes what was started and answers the signal; no handler stays", async () => {
  const before = handlers();
  let closes = 0;
  const run = runUntilSignal(
    () => Promise.resolve({ close: () => Promise.resolve(void closes++) }),
    { logger: recordingLogger(), exit: () => assert.fail("exit while running") },
  );
  // Started: every promise of the start has settled.
  await new Promise((resolve) => setImmediate(resolve));
  process.emit("SIGTERM", "SIGTERM");
  assert.equal(await run, "SIGTERM");
  assert.equal(closes, 1);
  assert.equal(handlers(), before);
});

test("SIGINT while starting logs stopped (whileStarting) and exits 0 at once", () => {
  const before = handlers();
  const logger = recordingLogger();
  const exits: number[] = [];
  // A start that never ends: a node agent waiting for a CA that does not answer.
  void runUntilSignal(() => new Promise(() => {}), { logger, exit: (code) => void exits.push(code) });
  assert.equal(handlers(), before + 2);
  process.emit("SIGINT", "SIGINT");
  assert.deepEqual(exits, [0]);
  assert.ok(
    logger.entries.some((e) => e.msg === "stopped" && e.whileStarting === true && e.signal === "SIGINT"),
  );
  assert.equal(handlers(), before);
});

test("a start that fails throws its error and leaves no handler", async () => {
  const before = handlers();
  await assert.rejects(
    runUntilSignal(() => Promise.reject(new Error("port in use")), { logger: recordingLogger() }),
    /port in use/,
  );
  assert.equal(handlers(), before);
});
