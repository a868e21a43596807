// `npm start` (ca-server/main.ts): a development CA with no configuration whose printed
// openssl + curl lines obtain a certificate that `openssl verify` accepts against /v1/bundle.pem,
// and whose /v1/crl `openssl crl` reads.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type CaProcess, run, startServer, tempDir } from "./helpers.ts";

async function waitFor(logs: string[], pattern: RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!logs.some((l) => pattern.test(l))) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} in the output:\n${logs.join("\n")}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("npm start", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;
  const env = () => ({ MESHAUTH_DATA_DIR: join(dir.path, ".meshauth"), MESHAUTH_LISTEN_PORT: "0" });

  before(async () => {
    dir = await tempDir();
    ca = await startServer(["ca-server/main.ts"], env());
    await waitFor(ca.logs, /Stop with Ctrl-C/);
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  it("creates a development root on first run and listens with TLS on 127.0.0.1", () => {
    assert.ok(ca.logs.some((l) => l.includes("created a development root CA")));
    assert.match(ca.url, /^https:\/\/localhost:\d+$/);
    const listening = JSON.parse(ca.logs.find((l) => l.includes('"msg":"listening"'))!);
    assert.equal(listening.host, "127.0.0.1");
    assert.equal(listening.tls, true);
  });

  it("prints commands that obtain a certificate openssl verifies against /v1/bundle.pem", async () => {
    const printed = ca.logs.join("\n");
    const start = printed.indexOf("# 1.");
    const commands = printed.slice(start, printed.indexOf("Stop with Ctrl-C")).trim();
    const work = join(dir.path, "work");
    await run("mkdir", ["-p", work]);
    const r = await run("sh", ["-c", commands], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    const answer = JSON.parse(r.stdout);
    assert.equal(answer.spiffeId, "spiffe://meshauth.local/demo");
    await writeFile(join(work, "leaf.pem"), answer.certificateChain[0]);

    const bundle = await run("curl", [
      "-sS",
      "--cacert",
      join(dir.path, ".meshauth", "bundle.pem"),
      `${ca.url}/v1/bundle.pem`,
    ]);
    assert.equal(bundle.code, 0, bundle.stderr);
    await writeFile(join(work, "bundle.pem"), bundle.stdout);
    const verified = await run("openssl", [
      "verify",
      "-CAfile",
      join(work, "bundle.pem"),
      join(work, "leaf.pem"),
    ]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /leaf\.pem: OK/);
    const text = await run("openssl", ["x509", "-in", join(work, "leaf.pem"), "-noout", "-text"]);
    assert.match(text.stdout, /URI:spiffe:\/\/meshauth\.local\/demo/);
  });

  it("serves a CRL that openssl crl reads and verifies", async () => {
    const crlPath = join(dir.path, "crl.der");
    const fetched = await run("curl", [
      "-sS",
      "--cacert",
      join(dir.path, ".meshauth", "bundle.pem"),
      "-o",
      crlPath,
      `${ca.url}/v1/crl`,
    ]);
    assert.equal(fetched.code, 0, fetched.stderr);
    const r = await run("openssl", [
      "crl",
      "-inform",
      "DER",
      "-in",
      crlPath,
      "-noout",
      "-text",
      "-CAfile",
      join(dir.path, ".meshauth", "bundle.pem"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Certificate Revocation List/);
    assert.match(r.stderr + r.stdout, /verify OK/);
  });

  it("keeps the same root across restarts", async () => {
    const before = await readFile(join(dir.path, ".meshauth", "bundle.pem"), "utf8");
    await ca.stop();
    ca = await startServer(["ca-server/main.ts"], env());
    await waitFor(ca.logs, /Stop with Ctrl-C/);
    assert.ok(!ca.logs.some((l) => l.includes("created a development root CA")));
    assert.equal(await readFile(join(dir.path, ".meshauth", "bundle.pem"), "utf8"), before);
  });
});
