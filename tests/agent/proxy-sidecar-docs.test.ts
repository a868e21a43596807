// docs/proxy.md's "Try it without Kubernetes", run as written: every shell block between the
// doc-test markers, in order, in a fresh directory, the background ones (the CA, the agent, the
// service, the two sidecars) left running until their line appears. `npm run ca` and `npx
// meshauth` run what package.json says they run, as in docs.test.ts (docs/agent.md's
// walkthrough). The CA's and the agent's ports (8443, 8444) become the free ones they took; the
// service's, the sidecars' listeners' and their ops ports, fixed in the text's files, become
// ports free a moment before. Another test running beside this one may take one of those in the
// seconds before the service or a sidecar binds it: a start that fails for a port in use runs the
// walkthrough again, from the start, with other ports (at most three tries).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { ROOT } from "../ca-server/helpers.ts";
import {
  type Block,
  checkoutEnv,
  listeningUrl,
  runShell,
  startBackground,
  stopBackground,
  walkthrough,
} from "../support/walkthrough.ts";
import { tempDir, waitFor } from "./helpers.ts";

let work: { path: string; remove(): Promise<void> } | undefined;
after(async () => {
  await stopBackground();
  await work?.remove();
});

/** `count` ports free now (held together, so they differ, then released). */
async function freePorts(count: number): Promise<string[]> {
  const servers: Server[] = [];
  for (let i = 0; i < count; i++) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    servers.push(server);
  }
  const ports = servers.map((s) => String((s.address() as { port: number }).port));
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

function logLines(lines: string[]): Record<string, unknown>[] {
  return lines.flatMap((line) => {
    try {
      return [JSON.parse(line)];
    } catch {
      return [];
    }
  });
}

/** What a start of the walkthrough's service or a sidecar says when its port was taken. */
const PORT_IN_USE = /EADDRINUSE|ERR_PROXY_LISTEN|ERR_STATUS_PORT_IN_USE/;
const TRIES = 3;

/** A start that failed because another process held a port the walkthrough was given. */
class PortTaken extends Error {}

/** A run of the walkthrough: its directory, its shell steps' outputs, the two sidecars' log lines. */
interface Run {
  path: string;
  outputs: string[];
  sidecarLogs: string[][];
}

/**
 * Runs the walkthrough's blocks in a fresh directory (left in `work`), the text's fixed ports
 * replaced by ports free now.
 */
async function runWalkthrough(blocks: Block[]): Promise<Run> {
  const dir = work = await tempDir("meshauth-sidecar-docs-");
  const env = await checkoutEnv(dir.path, ROOT);
  const fixed = ["8080", "15006", "15001", "15020", "15021"];
  const ports: Record<string, string> = Object.fromEntries(
    (await freePorts(fixed.length)).map((port, i) => [fixed[i], port]),
  );
  const sidecarLogs: string[][] = [];
  const outputs: string[] = [];
  for (const block of blocks) {
    const script = block.script.replace(
      /\b(8443|8444|8080|15006|15001|15020|15021)\b/g,
      (p) => ports[p] ?? p,
    );
    if (block.waitFor) {
      let lines: string[];
      try {
        lines = await startBackground(script, dir.path, env, block.waitFor);
      } catch (err) {
        const message = (err as Error).message;
        throw PORT_IN_USE.test(message) ? new PortTaken(message) : err;
      }
      if (script.includes("npm run ca")) ports["8443"] = new URL(listeningUrl(lines)).port;
      else if (script.includes("meshauth agent")) ports["8444"] = new URL(listeningUrl(lines)).port;
      else if (script.includes("meshauth proxy")) sidecarLogs.push(lines);
      continue;
    }
    const r = await runShell(script, dir.path, env);
    assert.equal(r.code, 0, `${script}\n${r.output}`);
    outputs.push(r.output);
  }
  return { path: dir.path, outputs, sidecarLogs };
}

test("docs/proxy.md: two sidecars without Kubernetes, from npm run ca to a curl through both, as written", async () => {
  const markdown = await readFile(join(ROOT, "docs/proxy.md"), "utf8");
  const blocks = walkthrough(markdown);
  assert.equal(blocks.length, 10, "the walkthrough's ten steps");

  let run: Run | undefined;
  const taken: string[] = [];
  for (let attempt = 1; !run; attempt++) {
    try {
      run = await runWalkthrough(blocks);
    } catch (err) {
      if (!(err instanceof PortTaken)) throw err;
      taken.push(`try ${attempt}: ${err.message}`);
      await stopBackground();
      await work?.remove();
      work = undefined;
      if (attempt === TRIES) {
        assert.fail(
          `another process took a port the walkthrough was given, on each of ${TRIES} tries:\n${
            taken.join("\n")
          }`,
        );
      }
    }
  }
  const { outputs, sidecarLogs } = run;
  const check = outputs[3];
  const calls = outputs[4];

  // --check: valid, the listener as db, CRLs from the CA that took the text's port.
  assert.match(
    check,
    /^configuration is valid: credentials .*workloads\/db \(istio\), CRLs from https:\/\/localhost:\d+/,
  );
  assert.match(check, /inbound db: 127\.0\.0\.1:\d+ \(STRICT http, as db\)/);
  assert.match(
    check,
    /^credentials now: spiffe:\/\/meshauth\.local\/demo\/db \(serial [0-9a-f]+\), valid until /m,
  );
  // Through both sidecars: db's service saw web's verified identity, by db's sidecar.
  assert.match(
    calls,
    /^db was called by By=spiffe:\/\/meshauth\.local\/demo\/db;Hash=[0-9a-f]{64};URI=spiffe:\/\/meshauth\.local\/demo\/web\n403\n\{"status":"ready"\}/,
  );
  // Both decisions in db's audit log, once its writer has caught up.
  const auditFile = join(run.path, ".meshauth/sidecars/db-audit.jsonl");
  const auditLines = async () => (await readFile(auditFile, "utf8").catch(() => "")).trim().split("\n");
  await waitFor("db's two audit records", async () => (await auditLines()).length >= 2);
  const audit = (await auditLines()).map((line) => JSON.parse(line));
  assert.deepEqual(
    audit.map((e) => [e.listener, e.method, e.decision, e.peerId]),
    [
      ["db", "GET", "allow", "spiffe://meshauth.local/demo/web"],
      ["db", "POST", "deny", "spiffe://meshauth.local/demo/web"],
    ],
  );
  // Each sidecar's start names the SPIFFE ID of the SVID it read, the one the agent delivered.
  const [db, web] = sidecarLogs.map(logLines);
  assert.equal(
    db.find((l) => l.msg === "proxy sidecar started")?.spiffeId,
    "spiffe://meshauth.local/demo/db",
  );
  assert.equal(
    web.find((l) => l.msg === "proxy sidecar started")?.spiffeId,
    "spiffe://meshauth.local/demo/web",
  );
  // What the text says after the walkthrough.
  assert.match(
    markdown,
    /`db was called by By=spiffe:\/\/meshauth\.local\/demo\/db;Hash=\.\.\.;URI=spiffe:\/\/meshauth\.local\/demo\/web`/,
  );

  // Stopped by SIGTERM, as Ctrl-C stops them: each sidecar says so, and says no "no SVID" on the
  // way out (its listeners closed; no workload lost its SVID: no alert at a rolling restart).
  await stopBackground();
  for (const lines of sidecarLogs) {
    assert.ok(logLines(lines).some((l) => l.msg === "stopped"), lines.join("\n"));
    assert.ok(!logLines(lines).some((l) => String(l.msg).startsWith("no SVID")), lines.join("\n"));
  }
});
