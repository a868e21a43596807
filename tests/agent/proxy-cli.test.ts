// `meshauth proxy` on the command line: --help, usage errors (exit 2), --check of a valid and of
// a bad configuration (exit 0 and 1, with what it read), `revocation: strict` without a CA
// and listeners naming two workloads refused at load, an ops port in use (named the ops port),
// and a sidecar whose credential directory is not there yet: running, not ready (503, the
// directory named), JSON lines saying why, ready once the agent's files arrive, and stopped
// without a "no SVID" line.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { ConfigError } from "../../internal/mod.ts";
import { credentialFiles, loadSidecarConfig, writeGeneration } from "../../agent/mod.ts";
import { NODE, ROOT, tempDir } from "../ca-server/helpers.ts";
import { killStartedProcesses, spawnInGroup, within } from "../support/processes.ts";
import { TestCaServer } from "./proxy-ca-support.ts";
import { waitFor } from "./helpers.ts";

const TIMEOUT_MS = 60_000;

function meshauth(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      NODE,
      ["--import", "tsx", "cli/main.ts", ...args],
      { cwd: ROOT, timeout: TIMEOUT_MS },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

describe("meshauth proxy", { timeout: 4 * TIMEOUT_MS }, () => {
  let dir: { path: string; remove: () => Promise<void> };

  before(async () => {
    dir = await tempDir("meshauth-proxy-cli-");
    await writeFile(
      join(dir.path, "policy.yaml"),
      "policies:\n  - name: anyone-reads\n    action: ALLOW\n    rules:\n      - to: [{ operation: { methods: [GET] } }]\n",
    );
    await writeFile(
      join(dir.path, "bad-policy.yaml"),
      "policies:\n  - name: get-only\n    action: ALLOW\n    rules:\n      - to: [{ operation: { methods: [GET] } }]\n",
    );
    const config = (policy: string, credentials = "pod") =>
      `credentials: { dir: ${credentials} }\nlisten: { port: 0 }\nauditLog: audit.jsonl\n` +
      `inbound:\n  - { name: app, workload: app, listen: 127.0.0.1:0, forward: 127.0.0.1:8080, ` +
      `protocol: ${policy === "bad-policy.yaml" ? "tcp" : "http"}, policies: [${policy}] }\n`;
    await writeFile(join(dir.path, "proxy.yaml"), config("policy.yaml"));
    await writeFile(join(dir.path, "bad.yaml"), config("bad-policy.yaml"));
  });

  after(async () => {
    await killStartedProcesses();
    await dir?.remove();
  });

  test("--help says what it runs and which flags it takes; meshauth --help lists it", async () => {
    const help = await meshauth(["proxy", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: meshauth proxy --config <file>/);
    assert.match(help.stdout, /--check/);
    assert.match((await meshauth(["--help"])).stdout, /\n {2}proxy {4}/);
  });

  test("a usage error exits 2: no --config, or a misspelt flag with the nearest one", async () => {
    const none = await meshauth(["proxy"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--config <file> is required/);
    const typo = await meshauth(["proxy", "--chek"]);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /unknown option --chek; did you mean "--check"\?/);
  });

  test("--check prints a valid configuration's listeners and exits 0", async () => {
    const r = await meshauth(["proxy", "--check", "--config", join(dir.path, "proxy.yaml")]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^configuration is valid: credentials .*\/pod \(istio\), no CA/);
    assert.match(r.stdout, /inbound app: 127\.0\.0\.1:0 \(STRICT http, as app\) -> 127\.0\.0\.1:8080/);
    // The directory is not there: still valid (on Kubernetes it exists only in the pod), and said.
    assert.match(
      r.stdout,
      /^credentials now: none usable \(ERR_CREDENTIAL_DIRECTORY_UNUSABLE: .*\(missing\).*\); a start waits for them/m,
    );
  });

  test("--check of a policy that cannot be used exits 1 and says why", async () => {
    const r = await meshauth(["proxy", "--check", "--config", join(dir.path, "bad.yaml")]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^configuration is not valid: 1 listener's policies cannot be used/);
    assert.match(
      r.stdout,
      /\n {2}inbound app: ERR_PROXY_POLICY: \/.*bad-policy\.yaml: .*methods is an HTTP field/,
    );
  });

  test("revocation: strict without a ca: section is refused at load and by --check (exit 1, ERR_CONFIG's message)", async () => {
    const config = join(dir.path, "strict-no-ca.yaml");
    await writeFile(config, `revocation: strict\n` + (await readFile(join(dir.path, "proxy.yaml"), "utf8")));
    const err = await loadSidecarConfig({ path: config }).then(() => undefined, (e) => e);
    assert.ok(err instanceof ConfigError, String(err));
    assert.deepEqual(err.problems, [
      "revocation: strict needs ca.url to fetch CRLs (without a ca: section no CRL is held and every peer would be refused)",
    ]);
    for (const args of [["--check", "--config", config], ["--config", config]]) {
      const r = await meshauth(["proxy", ...args]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(
        r.stderr,
        /invalid configuration .*\n {2}- revocation: strict needs ca\.url to fetch CRLs/,
      );
    }
    // With a CA to fetch them from, strict is taken.
    await writeFile(config, `ca: { url: https://ca.example:8443 }\n` + (await readFile(config, "utf8")));
    assert.equal((await loadSidecarConfig({ path: config })).proxy.revocation, "strict");
  });

  test("listeners that name two workloads are refused at load and by --check (exit 1), naming both; one name passes", async () => {
    const config = join(dir.path, "two-workloads.yaml");
    const outbound = (workload: string) =>
      `outbound:\n  - { name: db, workload: ${workload}, listen: 127.0.0.1:0, upstream: 127.0.0.1:9, ` +
      `allowedIds: [spiffe://example.org/db] }\n`;
    const base = await readFile(join(dir.path, "proxy.yaml"), "utf8");
    await writeFile(config, base + outbound("something-else"));
    const err = await loadSidecarConfig({ path: config }).then(() => undefined, (e) => e);
    assert.ok(err instanceof ConfigError, String(err));
    assert.deepEqual(err.problems, [
      "workload: the listeners name 2 workloads (app by inbound app, something-else by outbound db); a sidecar presents the one SVID in credentials.dir, so every listener must name the same workload",
    ]);
    const r = await meshauth(["proxy", "--check", "--config", config]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /the listeners name 2 workloads \(app by inbound app, something-else by outbound db\)/,
    );
    assert.doesNotMatch(r.stdout, /as something-else/);
    await writeFile(config, base + outbound("app"));
    const loaded = await loadSidecarConfig({ path: config });
    assert.deepEqual([loaded.proxy.inbound[0].workload, loaded.proxy.outbound[0].workload], ["app", "app"]);
  });

  test("a ca.trustBundleFile that cannot be read stops the start (exit 1, ERR_AGENT_SETUP's message), not the CRLs alone", async () => {
    const config = join(dir.path, "no-ca-roots.yaml");
    await writeFile(
      config,
      `ca: { url: https://127.0.0.1:1, trustBundleFile: missing-roots.pem }\n` +
        (await readFile(join(dir.path, "proxy.yaml"), "utf8")),
    );
    const r = await meshauth(["proxy", "--config", config]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /^meshauth: ERR_AGENT_SETUP: cannot read the CA's trust bundle \(ca\.trustBundleFile in proxy\.yaml\) .*missing-roots\.pem: ENOENT[^\n]*\n$/,
    );
  });

  test("a policy that cannot be used stops the start in one line with its code first (exit 1)", async () => {
    const r = await meshauth(["proxy", "--config", join(dir.path, "bad.yaml")]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /^meshauth: ERR_PROXY_POLICY: \/.*\/bad-policy\.yaml: [^\n]*methods is an HTTP field[^\n]*\n$/,
    );
  });

  test("an audit log that cannot be opened stops the start: ERR_AGENT_SETUP naming auditLog, the path and why", async () => {
    const config = join(dir.path, "audit-under-a-file.yaml");
    await writeFile(
      config,
      (await readFile(join(dir.path, "proxy.yaml"), "utf8")).replace(
        "auditLog: audit.jsonl",
        "auditLog: policy.yaml/audit.jsonl",
      ),
    );
    const r = await meshauth(["proxy", "--config", config]);
    assert.equal(r.code, 1, r.stdout);
    const policy = join(dir.path, "policy.yaml");
    assert.equal(
      r.stderr,
      `meshauth: ERR_AGENT_SETUP: cannot open the audit log (auditLog) ${policy}/audit.jsonl: ${policy} is not a directory (EEXIST)\n`,
    );
  });

  test("an ops port in use stops the start: ERR_STATUS_PORT_IN_USE naming the ops port and listen.port in proxy.yaml", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const config = join(dir.path, "ops-port-in-use.yaml");
      await writeFile(
        config,
        (await readFile(join(dir.path, "proxy.yaml"), "utf8")).replace(
          "listen: { port: 0 }",
          `listen: { port: ${port} }`,
        ),
      );
      const r = await meshauth(["proxy", "--config", config]);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(
        r.stderr,
        `meshauth: ERR_STATUS_PORT_IN_USE: the ops port 127.0.0.1:${port} is in use; set listen.port in proxy.yaml\n`,
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  test("without its credential files it runs, not ready, and is ready once the agent delivers them", async () => {
    const child = spawnInGroup(NODE, [
      "--import",
      "tsx",
      "cli/main.ts",
      "proxy",
      "--config",
      join(dir.path, "proxy.yaml"),
    ], { cwd: ROOT });
    const logs: Record<string, unknown>[] = [];
    let buffered = "";
    child.stdout!.on("data", (d) => {
      buffered += d;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) logs.push(JSON.parse(line));
    });
    // Once its output is all read: the last lines are in `logs`.
    const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
    await waitFor(
      "the sidecar's start",
      () => logs.some((l) => l.msg === "proxy sidecar started"),
      TIMEOUT_MS,
    );
    const started = logs.find((l) => l.msg === "proxy sidecar started")!;
    const ops = String(started.ops);
    // No SPIFFE ID is claimed before a delivered SVID says which.
    assert.equal(started.workload, "app");
    assert.equal(started.spiffeId, undefined);
    const refused = logs.find((l) => l.msg === "credential files cannot be used yet");
    assert.equal(refused?.reason, "missing");
    const notReady = await fetch(`${ops}/readyz`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(notReady.status, 503);
    assert.match(await notReady.text(), /credentials in .*\/pod/);
    assert.equal((await fetch(`${ops}/healthz`, { signal: AbortSignal.timeout(10_000) })).status, 200);

    const ca = await TestCaServer.start("test.example");
    try {
      const svid = await ca.issue("spiffe://test.example/app");
      await writeGeneration(
        join(dir.path, "pod"),
        credentialFiles({
          certificateChainPem: svid.svid.certificateChainPem,
          privateKeyPem: svid.svid.privateKeyPem,
          trustBundlePem: svid.bundle.toPem(),
        }, { layout: "istio", keyFileMode: 0o600 }),
        {},
        { root: dir.path },
      );
      await waitFor(
        "the credentials",
        () => logs.some((l) => l.msg === "credential files loaded"),
        TIMEOUT_MS,
      );
      const ready = await fetch(`${ops}/readyz`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(ready.status, 200);
      const metrics = await (await fetch(`${ops}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
      assert.match(metrics, /meshauth_proxy_credential_files_refused_total\{reason="missing"\} [1-9]/);
    } finally {
      await ca.stop();
    }
    child.kill("SIGINT");
    const code = await within(exited, TIMEOUT_MS, "the sidecar to exit");
    assert.ok(logs.some((l) => l.msg === "stopped"));
    // A clean stop is no workload left without an SVID: no line for log alerting to fire on.
    assert.deepEqual(logs.filter((l) => String(l.msg).startsWith("no SVID")), []);
    if (code !== null) assert.equal(code, 0);
  });
});
