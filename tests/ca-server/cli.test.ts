// The `meshauth ca` command line: help, config errors, tokens, revocation while a server runs,
// an intermediate signed by an offline root (OpenSSL), key export and rotation.
import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type CaProcess,
  cli,
  cliProcess,
  csrFor,
  curl,
  run,
  SERVER_COMMAND,
  startCa,
  tempDir,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

describe("meshauth ca (CLI)", () => {
  let dir: { path: string; remove(): Promise<void> };
  let config: string;
  let ca: CaProcess | undefined;

  before(async () => {
    dir = await tempDir();
    config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      log: { level: "info" },
    });
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  it("explains itself with --help", async () => {
    const top = await cliProcess(["ca", "--help"]);
    assert.equal(top.code, 0);
    for (const command of ["init", "serve", "revoke", "token create", "rotate", "export-key"]) {
      assert.match(top.stdout, new RegExp(`ca ${command}`));
    }
    const serve = await cli(["ca", "serve", "--help"]);
    assert.equal(serve.code, 0);
    assert.match(serve.stdout, /usage: meshauth ca serve/);
    assert.match(serve.stdout, /MESHAUTH_LISTEN_PORT/);
    const token = await cli(["ca", "token", "--help"]);
    assert.equal(token.code, 0, token.stderr);
    assert.match(token.stdout, /usage: meshauth ca token create/);
    const unknown = await cli(["ca", "launch"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "ca launch"/);
    for (const help of [["--help"], ["-h"], ["help"]]) {
      const r = await cli(help);
      assert.equal(r.code, 0, help.join(" "));
      assert.match(r.stdout, /usage: meshauth <group> <command>/);
      assert.match(r.stdout, /ca +the certificate authority/);
    }
    for (const help of [["ca", "--help"], ["ca", "-h"], ["ca", "help"]]) {
      const r = await cli(help);
      assert.equal(r.code, 0, help.join(" "));
      assert.match(r.stdout, /usage: meshauth ca <command>/);
    }
    for (
      const [args, message] of [[[], /no command/], [["ca"], /no command after "ca"/], [
        ["cx"],
        /"cx"/,
      ]] as const
    ) {
      const r = await cli([...args]);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.stderr, message);
    }
    const misspelt = await cli(["ca", "init", "--trust-domian", "x.example"]);
    assert.equal(misspelt.code, 2);
    assert.match(misspelt.stderr, /unknown option --trust-domian; did you mean "--trust-domain"\?/);
    const nearCommand = await cli(["ca", "servee"]);
    assert.equal(nearCommand.code, 2);
    assert.match(nearCommand.stderr, /unknown command "ca servee"; did you mean "serve"\?/);
    const version = await cli(["--version"]);
    assert.equal(version.code, 0);
    const { version: expected } = JSON.parse(
      await readFile(new URL("../../package.json", import.meta.url), "utf8"),
    );
    assert.equal(version.stdout.trim(), `meshauth ${expected}`);
  });

  it("names each problem of a bad config file", async () => {
    const bad = join(dir.path, "bad.yaml");
    await writeFile(bad, "trustDomain: UPPER.example\nlisten:\n  port: 99999\n");
    const r = await cli(["ca", "init", "--config", bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid configuration \(.*bad\.yaml\)/);
    assert.match(r.stderr, /trustDomain: /);
    assert.match(r.stderr, /listen\.port: expected a whole number from 0 to 65535, got 99999/);
  });

  it("refuses an overlap for a CA that has no authority yet: it could not start until the overlap ends", async () => {
    const fresh = await tempDir();
    try {
      const freshConfig = await writeConfig(fresh.path, {});
      const r = await cli([
        "ca",
        "init",
        "--config",
        freshConfig,
        "--chain",
        "x.pem",
        "--key",
        "x.key",
        "--overlap-seconds",
        "60",
      ]); // deno-fmt-ignore
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--overlap-seconds is for a CA that already signs/);
    } finally {
      await fresh.remove();
    }
  });

  it("init says where the root and the trust bundle are, writes the bundle, and refuses another trust domain", async () => {
    const fresh = await tempDir();
    try {
      const freshConfig = await writeConfig(fresh.path, {});
      const first = await cli(["ca", "init", "--config", freshConfig]);
      assert.equal(first.code, 0, first.stderr);
      const bundlePath = join(fresh.path, "data", "bundle.pem");
      assert.match(first.stdout, new RegExp(`trust bundle: ${bundlePath.replaceAll(".", "\\.")}`));
      assert.match(first.stdout, /root certificate and key: .*keys/);
      assert.match(await readFile(bundlePath, "utf8"), /BEGIN CERTIFICATE/);
      const again = await cli(["ca", "init", "--config", freshConfig]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /already holds 1 authority/);
      const other = await cli(["ca", "init", "--config", freshConfig, "--trust-domain", "other.example"]);
      assert.equal(other.code, 1);
      assert.match(
        other.stderr,
        /trust domain mismatch: the configuration names other\.example, but .* holds a CA for/,
      );
      const serve = await run(
        SERVER_COMMAND[0],
        [...SERVER_COMMAND.slice(1), "cli/main.ts", "ca", "serve", "--config", freshConfig],
        { env: { ...process.env, MESHAUTH_TRUST_DOMAIN: "other.example" } },
      );
      assert.equal(serve.code, 1);
      assert.match(
        serve.stderr.trim(),
        /^meshauth: ERR_TRUST_DOMAIN_MISMATCH: trust domain mismatch: the configuration names other\.example[^\n]*$/,
      );
    } finally {
      await fresh.remove();
    }
  });

  it("prints every next command with the --config it was given, quoted for the shell", async () => {
    const fresh = await tempDir();
    try {
      // A configuration that is not the default, at a path a shell must have quoted.
      const freshConfig = join(fresh.path, "my ca.json");
      await writeFile(
        freshConfig,
        JSON.stringify({ trustDomain: TRUST_DOMAIN, dataDir: join(fresh.path, "data") }),
      );
      const quoted = `'${freshConfig}'`;
      const csr = await cli(["ca", "init", "--config", freshConfig, "--csr", join(fresh.path, "i.csr")]);
      assert.equal(csr.code, 0, csr.stderr);
      assert.match(csr.stdout, /meshauth ca init --config .* --chain <signed chain> --key /);
      assert.ok(csr.stdout.includes(`meshauth ca init --config ${quoted} --chain`), csr.stdout);

      const serve = await cliProcess(["ca", "serve", "--config", freshConfig]);
      assert.equal(serve.code, 1);
      assert.equal(serve.stdout, "");
      assert.equal(serve.stderr.trim().split("\n").length, 1, serve.stderr);
      const hint = /run `(meshauth ca init[^`]*)`/.exec(serve.stderr)?.[1];
      assert.equal(hint, `meshauth ca init --config ${quoted}`);
      await assert.rejects(readdir(join(fresh.path, "data", "store")), { code: "ENOENT" });

      const init = await cli(["ca", "init", "--config", freshConfig]);
      assert.equal(init.code, 0, init.stderr);
      assert.match(init.stdout, new RegExp(`^next: meshauth ca serve --config '.*my ca\\.json'$`, "m"));
      const other = await cli(["ca", "init", "--config", freshConfig, "--trust-domain", "other.example"]);
      assert.equal(other.code, 1, "the other trust domain is refused: the keys are of the first");
      const otherDir = await tempDir();
      try {
        const otherConfig = await writeConfig(otherDir.path, {});
        const td = await cli(["ca", "init", "--config", otherConfig, "--trust-domain", "other.example"]);
        assert.equal(td.code, 0, td.stderr);
        assert.match(
          td.stdout,
          new RegExp(
            `^next: MESHAUTH_TRUST_DOMAIN=other\\.example meshauth ca serve --config ${otherConfig}$`,
            "m",
          ),
        );
      } finally {
        await otherDir.remove();
      }
    } finally {
      await fresh.remove();
    }
  });

  it("serve on a port in use, with one server or two workers, is one line and opens no store", async () => {
    const fresh = await tempDir();
    const taken = createServer();
    try {
      await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
      const port = (taken.address() as AddressInfo).port;
      const freshConfig = await writeConfig(fresh.path, { listen: { host: "127.0.0.1", port } });
      assert.equal((await cli(["ca", "init", "--config", freshConfig])).code, 0);
      for (const workers of ["1", "2"]) {
        const serve = await cliProcess(["ca", "serve", "--config", freshConfig], {
          MESHAUTH_WORKERS: workers,
        });
        assert.equal(serve.code, 1, `workers: ${workers}`);
        assert.equal(serve.stdout, "", `workers: ${workers}: nothing before the error`);
        assert.match(
          serve.stderr,
          new RegExp(
            `^meshauth: ERR_LISTEN: cannot listen on 127\\.0\\.0\\.1:${port}: the port is already in use[^\n]*\n$`,
          ),
        );
      }
      await assert.rejects(readdir(join(fresh.path, "data", "store")), { code: "ENOENT" });
    } finally {
      taken.close();
      await fresh.remove();
    }
  });

  it("serve, with one server or two workers, logs stopped as its last line once it has closed at SIGTERM", async () => {
    const fresh = await tempDir();
    try {
      const freshConfig = await writeConfig(fresh.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", freshConfig])).code, 0);
      const entries = (logs: string[]) =>
        logs.flatMap((line) => {
          try {
            return [JSON.parse(line) as Record<string, unknown>];
          } catch {
            return [];
          }
        });
      const sleep = () => new Promise((resolve) => setTimeout(resolve, 50));
      for (const workers of [1, 2]) {
        const server = await startCa(freshConfig, { MESHAUTH_WORKERS: String(workers) });
        // The primary handles signals once every worker listens (at most 5 s).
        for (
          let i = 0;
          i < 100 && entries(server.logs).filter((e) => e.msg === "listening").length < workers;
          i++
        ) {
          await sleep();
        }
        await server.kill("SIGTERM");
        // Each worker, then the primary, once they all exited; the last lines may be read
        // just after the exit is seen (at most 5 s).
        const expected = workers === 1 ? 1 : workers + 1;
        const stopped = () => entries(server.logs).filter((e) => e.msg === "stopped");
        for (let i = 0; i < 100 && stopped().length < expected; i++) await sleep();
        const lines = entries(server.logs);
        assert.equal(stopped().length, expected, `workers: ${workers}\n${server.logs.join("\n")}`);
        assert.deepEqual(
          {
            msg: lines.at(-1)?.msg,
            signal: lines.at(-1)?.signal,
            workersStillStopping: lines.at(-1)?.workersStillStopping,
          },
          { msg: "stopped", signal: "SIGTERM", workersStillStopping: undefined },
          `workers: ${workers}\n${server.logs.join("\n")}`,
        );
        assert.ok(
          lines.findIndex((e) => e.msg === (workers === 1 ? "stopping" : "stopping workers")) <
            lines.findIndex((e) => e.msg === "stopped"),
          `workers: ${workers}: stopping, then stopped`,
        );
      }
    } finally {
      await fresh.remove();
    }
  });

  it("a start failure of every worker (PostgreSQL unreachable) is said once, and the exit code is 1", async () => {
    const fresh = await tempDir();
    try {
      // A port nothing listens on: taken, then released.
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      const freshConfig = await writeConfig(fresh.path, {
        listen: { host: "127.0.0.1", port: 0 },
        workers: 2,
        store: { kind: "postgres", url: `postgres://meshauth:x@127.0.0.1:${port}/meshauth` },
      });
      assert.equal((await cli(["ca", "init", "--config", freshConfig])).code, 0);
      const serve = await cliProcess(["ca", "serve", "--config", freshConfig]);
      assert.equal(serve.code, 1);
      assert.equal(serve.stdout, "");
      assert.match(
        serve.stderr,
        /^meshauth: ERR_STORE: cannot connect to PostgreSQL: [^\n]*ECONNREFUSED[^\n]*\n$/,
      );
    } finally {
      await fresh.remove();
    }
  });

  it("imports an intermediate signed by an offline root with OpenSSL", async () => {
    const csrPath = join(dir.path, "intermediate.csr");
    const made = await cli(["ca", "init", "--config", config, "--csr", csrPath]);
    assert.equal(made.code, 0, made.stderr);
    const root = join(dir.path, "offline-root");
    const gen = await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${root}.key`,
      "-out",
      `${root}.pem`,
      "-days",
      "30",
      "-subj",
      "/O=offline/CN=offline root",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-addext",
      `subjectAltName=URI:spiffe://${TRUST_DOMAIN}`,
    ]); // deno-fmt-ignore
    assert.equal(gen.code, 0, gen.stderr);
    await writeFile(
      join(dir.path, "ext.cnf"),
      `basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n` +
        `subjectAltName=URI:spiffe://${TRUST_DOMAIN}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`,
    );
    // The offline root signs an intermediate CSR, and `ca init --chain` imports the result.
    const signWithRoot = async (csr: string, out: string) => {
      const signed = await run("openssl", [
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        `${root}.pem`,
        "-CAkey",
        `${root}.key`,
        "-CAcreateserial",
        "-days",
        "10",
        "-out",
        out,
        "-extfile",
        join(dir.path, "ext.cnf"),
      ]);
      assert.equal(signed.code, 0, signed.stderr);
    };
    const importArgs = (chain: string, key: string) => [
      "ca",
      "init",
      "--config",
      config,
      "--chain",
      chain,
      "--key",
      key,
      "--bundle",
      `${root}.pem`,
    ];
    await signWithRoot(csrPath, join(dir.path, "intermediate.pem"));
    const imported = await cli(importArgs(join(dir.path, "intermediate.pem"), `${csrPath}.key`));
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported authority [0-9a-f]{32}/);
    const again = await cli(importArgs(join(dir.path, "intermediate.pem"), `${csrPath}.key`));
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already imported/);

    // The next intermediate, imported while the first signs: published now, signing after the overlap.
    const nextCsr = join(dir.path, "next.csr");
    assert.equal((await cli(["ca", "init", "--config", config, "--csr", nextCsr])).code, 0);
    await signWithRoot(nextCsr, join(dir.path, "next.pem"));
    const nextArgs = importArgs(join(dir.path, "next.pem"), `${nextCsr}.key`);
    const banana = await cli([...nextArgs, "--overlap-seconds", "banana"]);
    assert.equal(banana.code, 2);
    assert.match(banana.stderr, /--overlap-seconds must be a positive whole number/);
    const before = Date.now();
    const overlapped = await cli([...nextArgs, "--overlap-seconds", "3600"]);
    assert.equal(overlapped.code, 0, overlapped.stderr);
    const id = /imported authority ([0-9a-f]{32})/.exec(overlapped.stdout)![1];
    assert.match(overlapped.stdout, /published now, signs from /);
    const record = JSON.parse(await readFile(join(dir.path, "data", "keys", `${id}.json`), "utf8"));
    const activeFrom = new Date(record.activeFrom).getTime();
    assert.ok(activeFrom >= before + 3600_000 && activeFrom <= Date.now() + 3600_000, record.activeFrom);
  });

  it("creates a join token that a running server honours, and revokes while it runs", async () => {
    ca = await startCa(config);
    const id = `spiffe://${TRUST_DOMAIN}/cli/app`;
    const created = await cli(["ca", "token", "create", "--config", config, "--spiffe-id", id]);
    assert.equal(created.code, 0, created.stderr);
    const t = created.stdout.trim();
    assert.match(t, /^[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);

    const issued = await curl([
      "-H",
      `Authorization: Bearer ${t}`,
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      "@-",
      `${ca.url}/v1/certificates`,
    ], { input: JSON.stringify({ csr: (await csrFor(id)).csr }) }); // deno-fmt-ignore
    assert.equal(issued.status, 201, issued.body);
    const answer = JSON.parse(issued.body);
    assert.equal(answer.certificateChain.length, 2, "leaf and the imported intermediate");
    const work = join(dir.path, "verify");
    await run("mkdir", ["-p", work]);
    await writeFile(join(work, "leaf.pem"), answer.certificateChain[0]);
    await writeFile(join(work, "chain.pem"), answer.certificateChain[1]);
    await writeFile(join(work, "bundle.pem"), answer.trustBundle);
    const verified = await run("openssl", [
      "verify",
      "-CAfile",
      join(work, "bundle.pem"),
      "-untrusted",
      join(work, "chain.pem"),
      join(work, "leaf.pem"),
    ]); // deno-fmt-ignore
    assert.equal(verified.code, 0, verified.stderr + verified.stdout);

    const revoked = await cli([
      "ca",
      "revoke",
      "--config",
      config,
      "--serial",
      answer.serialNumber,
      "--reason",
      "superseded",
    ]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const crlPath = join(dir.path, "cli-crl.der");
    // The server sees another process's revocation within a fraction of a second.
    let text = "";
    for (
      let attempt = 0;
      attempt < 20 && !text.toUpperCase().includes(answer.serialNumber.toUpperCase());
      attempt++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      await run("curl", ["-sS", "-o", crlPath, `${ca.url}/v1/crl`]);
      text = (await run("openssl", ["crl", "-inform", "DER", "-in", crlPath, "-noout", "-text"])).stdout;
    }
    assert.match(text.toUpperCase(), new RegExp(`SERIAL NUMBER: ${answer.serialNumber.toUpperCase()}`));
    const badReason = await cli([
      "ca",
      "revoke",
      "--config",
      config,
      "--serial",
      answer.serialNumber,
      "--reason",
      "oops",
    ]);
    assert.equal(badReason.code, 2);
    assert.match(badReason.stderr, /--reason must be one of/);
    for (
      const [id, message] of [["notanid", /--spiffe-id: /], ["spiffe://elsewhere.example/x", /trust domain/]]
    ) {
      const typo = await cli([
        "ca",
        "revoke",
        "--config",
        config,
        "--spiffe-id",
        id as string,
        "--reason",
        "superseded",
      ]);
      assert.equal(typo.code, 2, typo.stdout);
      assert.match(typo.stderr, message as RegExp);
    }
  });

  it("checks a token's identity with the SPIFFE ID parser, and warns about a node with no workloads", async () => {
    for (
      const id of [
        `spiffe://${TRUST_DOMAIN}/a/../b`,
        `spiffe://${TRUST_DOMAIN}`,
        "spiffe://elsewhere.example/a",
      ]
    ) {
      const refused = await cli(["ca", "token", "create", "--config", config, "--spiffe-id", id]);
      assert.equal(refused.code, 2, id);
      assert.match(refused.stderr, /--spiffe-id/);
    }
    const node = await cli(["ca", "token", "create", "--config", config, "--node", "node-unlisted"]);
    assert.equal(node.code, 0, node.stderr);
    assert.match(node.stderr, /warning: the configuration lists no workloads for node node-unlisted/);
  });

  it("exports a key only when asked, and adds a rotated root", async () => {
    const keysDir = join(dir.path, "data", "keys");
    const ids = (await readdir(keysDir)).filter((n) => n.endsWith(".json")).map((n) => n.slice(0, -5));
    const exported = await cli(["ca", "export-key", "--config", config, "--authority", ids[0]]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.equal(exported.stdout, await readFile(join(keysDir, `${ids[0]}.key.pem`), "utf8"));
    const bundlePath = join(dir.path, "data", "bundle.pem");
    const rootsBefore = (await readFile(bundlePath, "utf8")).match(/BEGIN CERTIFICATE/g)!.length;
    const rotated = await cli(["ca", "rotate", "--config", config, "--overlap-seconds", "3600"]);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal(rotated.stderr, "");
    assert.match(rotated.stdout, /added root [0-9a-f]{32}; published now/);
    assert.equal((await readdir(keysDir)).filter((n) => n.endsWith(".json")).length, ids.length + 1);
    // The bundle file holds the new root at once, whether a server runs or not.
    const newRoot = JSON.parse(
      await readFile(join(keysDir, `${/added root ([0-9a-f]{32})/.exec(rotated.stdout)![1]}.json`), "utf8"),
    );
    const bundle = await readFile(bundlePath, "utf8");
    assert.equal(bundle.match(/BEGIN CERTIFICATE/g)!.length, rootsBefore + 1);
    assert.ok(bundle.includes(newRoot.certificateChainPem.trim()), "the new root is in bundle.pem");
    assert.match(rotated.stdout, new RegExp(`trust bundle: ${bundlePath.replaceAll(".", "\\.")}`));
    const hurried = await cli(["ca", "rotate", "--config", config, "--overlap-seconds", "5"]);
    assert.equal(hurried.code, 0, hurried.stderr);
    assert.match(hurried.stderr, /warning: servers pick up a new authority within 30 s/);
  });

  it("a running server publishes a root that ca rotate added at once on SIGHUP, not 30 s later", async () => {
    assert.ok(ca, "the server started above runs");
    const roots = async () =>
      (await (await fetch(`${ca!.url}/v1/bundle.pem`)).text()).split("BEGIN CERTIFICATE").length - 1;
    const before = await roots();
    const rotated = await cli(["ca", "rotate", "--config", config, "--overlap-seconds", "3600"]);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.match(rotated.stdout, /at once on SIGHUP/);
    process.kill(ca!.pid, "SIGHUP");
    const deadline = Date.now() + 5000;
    while (await roots() === before) {
      assert.ok(Date.now() < deadline, `the bundle still has ${before} roots 5 s after SIGHUP`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(ca!.logs.some((l) => l.includes('"msg":"reloading authorities"')));
  });
});
