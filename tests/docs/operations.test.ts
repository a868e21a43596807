// docs/operations.md's walkthrough, run as written in a fresh directory: an offline root made
// with OpenSSL, the CA's intermediate signed by it and imported, the CA serving, a workload's
// certificate, its revocation seen in the served CRL, and a backup restored into a new data
// directory that still knows the revocation. `npx meshauth` runs the bin's source; the text's
// port (8443) becomes the free one the CA took.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  listeningUrl,
  runShell,
  startBackground,
  stopBackground,
  walkthrough,
} from "../support/walkthrough.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
let work: string | undefined;
after(async () => {
  await stopBackground();
  if (work) await rm(work, { recursive: true, force: true });
});

test("docs/operations.md: an offline root, a revocation and a restored backup, as written", async () => {
  const markdown = await readFile(join(ROOT, "docs/operations.md"), "utf8");
  const blocks = walkthrough(markdown);
  assert.equal(blocks.length, 8, "the walkthrough's eight steps");
  work = await mkdtemp(join(tmpdir(), "meshauth-operations-"));
  const bin = join(work, ".bin");
  await mkdir(bin);
  const tsx = createRequire(join(ROOT, "package.json")).resolve("tsx");
  await writeFile(
    join(bin, "npx"),
    `#!/bin/sh\n[ "$1" = meshauth ] || exit 127\nshift\nexec node --import "${tsx}" "${ROOT}cli/main.ts" "$@"\n`,
  );
  await chmod(join(bin, "npx"), 0o755);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    MESHAUTH_LISTEN_PORT: "0",
  };
  let port = "8443";
  const outputs: string[] = [];
  for (const block of blocks) {
    const script = block.script.replaceAll("8443", port);
    if (block.waitFor) {
      port = new URL(listeningUrl(await startBackground(script, work, env, block.waitFor))).port;
      continue;
    }
    const r = await runShell(script, work, env);
    assert.equal(r.code, 0, `${script}\n${r.output}`);
    outputs.push(r.output);
  }
  const [, , imported, issued, revoked, , restored] = outputs; // the background block (4) prints elsewhere

  // The CA signs with the intermediate, under the offline root.
  assert.match(imported, /imported authority [0-9a-f]{32} for prod\.example/);
  const chain = await readFile(join(work, "cart.pem"), "utf8");
  const [leaf, intermediate] = chain.split(/(?<=-----END CERTIFICATE-----\n)/).map((pem) =>
    new X509Certificate(pem)
  );
  const root = new X509Certificate(await readFile(join(work, "offline-root.pem")));
  assert.ok(leaf.verify(intermediate.publicKey) && intermediate.verify(root.publicKey));
  assert.equal(leaf.subjectAltName, "URI:spiffe://prod.example/ns/shop/sa/cart");
  assert.match(issued, /cart\.pem: OK/);
  // The served CRL lists it, by the serial the API gave.
  const serial = (await readFile(join(work, "cart.serial"), "utf8")).trim();
  assert.match(revoked, new RegExp(`Serial Number: ${serial.toUpperCase()}`));
  assert.equal(JSON.parse(revoked.slice(0, revoked.lastIndexOf("}") + 1)).revoked[0].serialNumber, serial);
  // The restored store knows the revocation (and says it was there before).
  const answer = JSON.parse(restored.slice(restored.indexOf("{"), restored.lastIndexOf("}") + 1));
  assert.deepEqual(answer.revoked, []);
  assert.equal(answer.alreadyRevoked[0].serialNumber, serial);
  assert.match(restored, /was already revoked at .* \(keyCompromise\); left as it was/);
  // What the text says after the walkthrough.
  assert.match(markdown, /`openssl verify` answers `cart\.pem: OK`, the CRL lists the serial/);
});
