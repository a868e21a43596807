// The JSON logger writes an error as its message with its stable code beside it, so that a log
// line can be looked up in docs/errors.md and selected by code; the CLI's one-line failure puts
// the code first.
import { test } from "node:test";
import assert from "node:assert/strict";
import { codeOf, errorLine, jsonLogger } from "../../internal/mod.ts";
import { PolicyFileError } from "../../agent/mod.ts";

function logged(fields: Record<string, unknown>): Record<string, unknown> {
  const lines: string[] = [];
  jsonLogger({ write: (line) => lines.push(line) }).error("failed", fields);
  assert.equal(lines.length, 1);
  return JSON.parse(lines[0]);
}

test("an error field is written as its message with its code beside it", () => {
  const entry = logged({ listener: "web", error: new PolicyFileError("/etc/p.yaml", "not valid YAML") });
  assert.equal(entry.error, "/etc/p.yaml: not valid YAML");
  assert.equal(entry.code, "ERR_PROXY_POLICY");
  assert.equal(entry.listener, "web");
});

test("a system error's code is written too, and an error without a code has none", () => {
  const system = Object.assign(new Error("EROFS: read-only file system, open '/x'"), { code: "EROFS" });
  assert.equal(logged({ error: system }).code, "EROFS");
  assert.equal("code" in logged({ error: new Error("plain") }), false);
});

test("an error in another field has its code in <field>Code; a code field given is kept", () => {
  const entry = logged({ cleanup: new PolicyFileError("/p.yaml", "gone"), code: "mine" });
  assert.equal(entry.cleanup, "/p.yaml: gone");
  assert.equal(entry.cleanupCode, "ERR_PROXY_POLICY");
  assert.equal(logged({ error: new PolicyFileError("/p.yaml", "gone"), code: "mine" }).code, "mine");
});

test("errorLine puts the code first once; codeOf answers only codes", () => {
  assert.equal(errorLine(new PolicyFileError("/p.yaml", "bad")), "ERR_PROXY_POLICY: /p.yaml: bad");
  const system = Object.assign(new Error("EROFS: read-only file system"), { code: "EROFS" });
  assert.equal(errorLine(system), "EROFS: read-only file system");
  assert.equal(errorLine(new Error("plain")), "plain");
  assert.equal(codeOf({ code: 503 }), undefined);
  assert.equal(codeOf({ code: "not a code" }), undefined);
});

test("a thrown value that is not an Error is written as its message, never as the whole object", () => {
  // What a library or a listener may throw: an object with a message, holding what must not be
  // written (a request with its headers), even one that refers to itself.
  const thrown: Record<string, unknown> = {
    message: "upstream refused",
    code: "ERR_UPSTREAM",
    request: { headers: { authorization: "Bearer s3cret" } },
  };
  thrown.self = thrown;
  const entry = logged({ error: thrown });
  assert.equal(entry.error, "upstream refused");
  assert.equal(entry.code, "ERR_UPSTREAM");
  assert.equal(logged({ error: Object.create(null) }).error, "[object without a message]");
  assert.equal(logged({ error: "a string thrown" }).error, "a string thrown");
});
