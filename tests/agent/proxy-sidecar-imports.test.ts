// What `meshauth proxy` loads: the sidecar's modules do not reach the node agent (its daemon,
// NodeAgent, workload sources), which a sidecar never runs; only its error class is shared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Every module `entry` loads by its static imports (type-only ones are erased), relative to the root. */
function staticImports(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    const name = relative(ROOT, file);
    if (seen.has(name)) return;
    seen.add(name);
    const source = readFileSync(file, "utf8");
    for (const match of source.matchAll(/^(?:import|export)\s+(type\s+)?[^;]*?from\s+"(\.[^"]+)"/gm)) {
      if (!match[1]) visit(join(dirname(file), match[2]));
    }
  };
  visit(join(ROOT, entry));
  return seen;
}

test("the sidecar (agent/proxy/sidecar.ts) does not load the node agent's daemon, NodeAgent or sources", () => {
  const loaded = [...staticImports("agent/proxy/sidecar.ts")];
  assert.ok(loaded.includes(join("agent", "proxy", "file-credentials.ts")), loaded.join(", "));
  const agentOnly = loaded.filter((m) =>
    m === join("agent", "daemon.ts") || m === join("agent", "node-agent.ts") ||
    m.startsWith(join("agent", "sources"))
  );
  assert.deepEqual(agentOnly, []);
});
