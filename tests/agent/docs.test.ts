// docs/agent.md's walkthrough, run as written: every shell block between the doc-test markers,
// in order, in a fresh directory, the background ones (the CA, the agent) left running until
// their line appears. `npm run ca` and `npx meshauth` run what package.json says they run (its
// start script and its bin's source), so that the state stays in the temporary directory; the
// two fixed ports of the text (8443, 8444) become the free ones the processes took.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ROOT } from "../ca-server/helpers.ts";
import {
  checkoutEnv,
  listeningUrl,
  runShell,
  startBackground,
  stopBackground,
  walkthrough,
} from "../support/walkthrough.ts";
import { keyMatches, readOneGeneration, tempDir } from "./helpers.ts";

let work: { path: string; remove(): Promise<void> } | undefined;
after(async () => {
  await stopBackground();
  await work?.remove();
});

test("docs/agent.md: from npm run ca's CA to an agent delivering two workloads' files, as written", async () => {
  const markdown = await readFile(join(ROOT, "docs/agent.md"), "utf8");
  const blocks = walkthrough(markdown);
  assert.equal(blocks.length, 6, "the walkthrough's six steps");

  // What `npm run ca` and `npx meshauth` run in a checkout, by package.json and the build.
  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
  assert.equal(pkg.scripts.ca, "exec node --import tsx cli/dev-ca.ts");
  assert.equal(pkg.bin.meshauth, "./dist/cli.js");
  assert.match(
    await readFile(join(ROOT, "scripts/build.mjs"), "utf8"),
    /in: "cli\/main\.ts", out: "cli\.js"/,
  );
  work = await tempDir("meshauth-docs-");
  const env = await checkoutEnv(work.path, ROOT);
  const ports: Record<string, string> = {};
  let output = "";
  for (const block of blocks) {
    const script = block.script.replace(/\b(8443|8444)\b/g, (port) => ports[port] ?? port);
    if (block.waitFor) {
      const lines = await startBackground(script, work.path, env, block.waitFor);
      const url = new URL(listeningUrl(lines));
      // The port the process took replaces the text's in the blocks that follow; ca.url is used
      // as agent.yaml writes it (https://localhost:<port>), not overridden.
      if (script.includes("npm run ca")) ports["8443"] = url.port;
      else ports["8444"] = url.port;
      continue;
    }
    const r = await runShell(script, work.path, env);
    assert.equal(r.code, 0, `${script}\n${r.output}`);
    output += r.output;
  }

  assert.match(output, /key\.pem -> \.\.data\/key\.pem/);
  assert.match(output, /svid_key\.pem -> \.\.data\/svid_key\.pem/);
  assert.match(output, /tls\.pem -> \.\.data\/tls\.pem/);
  assert.match(output, /workloads\/web\/cert-chain\.pem: OK/);
  assert.match(output, /URI:spiffe:\/\/meshauth\.local\/demo\/db/);
  assert.match(output, /\{"status":"ready"\}/);
  const web = await readOneGeneration(join(work.path, ".meshauth/workloads/web"));
  assert.ok(keyMatches(web.keyPem, web.chainPem));
  const db = await readOneGeneration(join(work.path, ".meshauth/workloads/db"), {
    chain: "svid.pem",
    key: "svid_key.pem",
    bundle: "svid_bundle.pem",
  });
  assert.ok(keyMatches(db.keyPem, db.chainPem));
});
