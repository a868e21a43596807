// `npm run ca` (cli/dev-ca.ts): a development CA with no configuration whose printed
// openssl + curl lines obtain a certificate that `openssl verify` accepts against /v1/bundle.pem,
// and whose /v1/crl `openssl crl` reads.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type CaProcess, ROOT, run, SERVER_COMMAND, startServer, tempDir } from "./helpers.ts";

async function waitFor(logs: string[], pattern: RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!logs.some((l) => pattern.test(l))) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} in the output:\n${logs.join("\n")}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("npm run ca", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;
  const env = () => ({ MESHAUTH_DATA_DIR: join(dir.path, ".meshauth"), MESHAUTH_LISTEN_PORT: "0" });

  before(async () => {
    dir = await tempDir();
    ca = await startServer(["cli/dev-ca.ts"], env());
    await waitFor(ca.logs, /Stop with Ctrl-C/);
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  it("creates a development root on first run and listens with TLS on 127.0.0.1", () => {
    assert.ok(ca.logs.some((l) => l.includes("created a development root CA")));
    assert.match(ca.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const listening = JSON.parse(ca.logs.find((l) => l.includes('"msg":"listening"'))!);
    assert.equal(listening.host, "127.0.0.1");
    assert.equal(listening.tls, true);
  });

  it("prints commands that save a key and a certificate openssl verifies against the bundle", async () => {
    const printed = ca.logs.join("\n");
    const start = printed.indexOf("# 1.");
    const commands = printed.slice(start, printed.indexOf("Stop with Ctrl-C")).trim();
    const work = join(dir.path, "work");
    await run("mkdir", ["-p", work]);
    const r = await run("sh", ["-c", commands], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /demo\.crt: OK/);
    const answer = JSON.parse(await readFile(join(work, "demo.json"), "utf8"));
    assert.equal(answer.spiffeId, "spiffe://meshauth.local/demo");
    const chain = await readFile(join(work, "demo.crt"), "utf8");
    assert.equal(chain, answer.certificateChain.join(""));
    // The key file matches the certificate.
    const keyPub = await run("openssl", ["pkey", "-in", join(work, "demo.key"), "-pubout"]);
    const certPub = await run("openssl", ["x509", "-in", join(work, "demo.crt"), "-noout", "-pubkey"]);
    assert.equal(keyPub.stdout, certPub.stdout);

    const bundle = await run("curl", [
      "-sS",
      "--cacert",
      join(dir.path, ".meshauth", "bundle.pem"),
      `${ca.url}/v1/bundle.pem`,
    ]);
    assert.equal(bundle.code, 0, bundle.stderr);
    assert.equal(bundle.stdout, await readFile(join(dir.path, ".meshauth", "bundle.pem"), "utf8"));
    const text = await run("openssl", ["x509", "-in", join(work, "demo.crt"), "-noout", "-text"]);
    assert.match(text.stdout, /URI:spiffe:\/\/meshauth\.local\/demo/);
  });

  it("the files its commands save in a checkout are ignored by git", async () => {
    const printed = ca.logs.join("\n");
    const commands = printed.slice(printed.indexOf("# 1."), printed.indexOf("Stop with Ctrl-C"));
    const saved = [...new Set(commands.match(/\bdemo\.[a-z]+\b/g))];
    assert.ok(saved.length >= 4, saved.join(" "));
    for (const file of saved) {
      const ignored = await run("git", ["check-ignore", "--no-index", "-q", file], { cwd: ROOT });
      assert.equal(ignored.code, 0, `${file} is not in .gitignore`);
    }
  });

  it("a second start on a port in use is one line naming the port and the setting, and writes nothing", async () => {
    const statePath = join(dir.path, ".meshauth", "store", "state.json");
    const before = await readFile(statePath, "utf8");
    const second = await run(SERVER_COMMAND[0], [...SERVER_COMMAND.slice(1), "cli/dev-ca.ts"], {
      env: {
        ...process.env,
        MESHAUTH_DATA_DIR: join(dir.path, ".meshauth"),
        MESHAUTH_LISTEN_PORT: String(ca.port),
      },
    });
    assert.equal(second.code, 1);
    assert.equal(second.stdout, "", "nothing comes before the error");
    const lines = second.stderr.trim().split("\n");
    assert.equal(lines.length, 1, second.stderr);
    assert.match(
      lines[0],
      new RegExp(`127\\.0\\.0\\.1:${ca.port}.*in use.*listen\\.port.*MESHAUTH_LISTEN_PORT`),
    );
    assert.equal(await readFile(statePath, "utf8"), before, "no join token was created");
  });

  it("a first start on a port in use makes no root: the data directory stays absent", async () => {
    const dataDir = join(dir.path, "never");
    const first = await run(SERVER_COMMAND[0], [...SERVER_COMMAND.slice(1), "cli/dev-ca.ts"], {
      env: { ...process.env, MESHAUTH_DATA_DIR: dataDir, MESHAUTH_LISTEN_PORT: String(ca.port) },
    });
    assert.equal(first.code, 1);
    assert.equal(first.stdout, "");
    assert.match(first.stderr, /^meshauth: ERR_LISTEN: cannot listen on [^\n]*in use[^\n]*\n$/);
    await assert.rejects(readFile(join(dataDir, "bundle.pem")), { code: "ENOENT" });
    await assert.rejects(readdir(dataDir), { code: "ENOENT" });
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
    ca = await startServer(["cli/dev-ca.ts"], env());
    await waitFor(ca.logs, /Stop with Ctrl-C/);
    assert.ok(!ca.logs.some((l) => l.includes("created a development root CA")));
    assert.equal(await readFile(join(dir.path, ".meshauth", "bundle.pem"), "utf8"), before);
  });
});

describe("npm run ca under a supervisor", () => {
  it("Ctrl-C pressed twice (SIGINT to the process group, again while it stops) stops the CA cleanly", async () => {
    const dir = await tempDir();
    let group: number | undefined;
    try {
      const npm = spawn("npm", ["run", "ca", "--silent"], {
        cwd: ROOT,
        env: { ...process.env, MESHAUTH_DATA_DIR: join(dir.path, ".meshauth"), MESHAUTH_LISTEN_PORT: "0" },
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group, as a terminal's foreground job is: Ctrl-C signals all of it.
        detached: true,
      });
      group = npm.pid!;
      const exited = new Promise<number | null>((resolve) => npm.once("exit", (code) => resolve(code)));
      // The CA writes to the same pipe: it closes once npm and the CA have both exited.
      const closed = new Promise<void>((resolve) => npm.stdout!.once("close", () => resolve()));
      let output = "";
      npm.stdout!.on("data", (d) => output += d);
      npm.stderr!.on("data", (d) => output += d);
      const deadline = Date.now() + 60_000;
      while (!output.includes("Stop with Ctrl-C") && Date.now() < deadline && npm.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.match(output, /Stop with Ctrl-C/);
      process.kill(-group, "SIGINT");
      while (!output.includes('"msg":"stopping"') && npm.exitCode === null && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      try {
        process.kill(-group, "SIGINT");
      } catch {
        // already gone: the second press came too late to matter
      }
      assert.equal(await exited, 0, output);
      await closed;
      assert.match(output, /"msg":"stopping","signal":"SIGINT"/);
      // Its last line, once it has closed.
      assert.match(output, /"msg":"stopped","signal":"SIGINT"\}\n$/);
    } finally {
      try {
        if (group) process.kill(-group, "SIGKILL");
      } catch {
        // The group is gone, as it should be.
      }
      await dir.remove();
    }
  });

  it("stops the CA when npm itself gets SIGTERM", async () => {
    const dir = await tempDir();
    let group: number | undefined;
    try {
      const npm = spawn("npm", ["run", "ca", "--silent"], {
        cwd: ROOT,
        env: { ...process.env, MESHAUTH_DATA_DIR: join(dir.path, ".meshauth"), MESHAUTH_LISTEN_PORT: "0" },
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group, so that a CA left behind can be killed with the group below.
        detached: true,
      });
      group = npm.pid;
      // The CA writes to the same pipe: it closes only when npm and the CA have both exited.
      const closed = new Promise<void>((resolve) => npm.stdout!.once("close", () => resolve()));
      let output = "";
      npm.stdout!.on("data", (d) => output += d);
      npm.stderr!.on("data", (d) => output += d);
      const deadline = Date.now() + 60_000;
      while (!output.includes("Stop with Ctrl-C") && Date.now() < deadline && npm.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.match(output, /Stop with Ctrl-C/);
      npm.kill("SIGTERM");
      const timedOut = await Promise.race([
        closed.then(() => false),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 10_000)),
      ]);
      assert.equal(timedOut, false, `the CA outlived npm:\n${output}`);
      assert.match(output, /"msg":"stopping","signal":"SIGTERM"/);
      assert.match(output, /"msg":"stopped","signal":"SIGTERM"\}\n$/);
    } finally {
      try {
        if (group) process.kill(-group, "SIGKILL");
      } catch {
        // The group is gone, as it should be.
      }
      await dir.remove();
    }
  });
});
