// `meshauth agent`'s configuration and command line: YAML or JSON, environment overrides,
// misspelt keys refused by path, bad workload entries reported by file and field and skipped
// (the others kept), usage errors with exit code 2 and the nearest flag, --help and --check.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadAgentConfig } from "../../agent/mod.ts";
import { ConfigError } from "../../internal/mod.ts";
import { cli } from "../ca-server/helpers.ts";
import { tempDir } from "./helpers.ts";

let dir: { path: string; remove(): Promise<void> };
before(async () => {
  dir = await tempDir("meshauth-agent-config-");
});
after(() => dir?.remove());

async function write(name: string, text: string): Promise<string> {
  const path = join(dir.path, name);
  await writeFile(path, text);
  return path;
}

const problemsOf = async (promise: Promise<unknown>): Promise<string[]> => {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

describe("loadAgentConfig", () => {
  test("a YAML file with workloads: defaults applied, relative paths against the file's directory", async () => {
    const path = await write(
      "agent.yaml",
      `trustDomain: prod.example
ca: { url: "https://ca.prod.example:8443", trustBundleFile: ca-bundle.pem }
node: { name: node-a, joinTokenFile: node.token }
stateDir: state
workloadDefaults: { layout: spiffe-helper, keyFileMode: "0640", gid: 2000 }
workloads:
  - name: web
    spiffeId: spiffe://prod.example/ns/shop/sa/web
    directory: run/web
  - name: db
    spiffeId: spiffe://prod.example/ns/shop/sa/db
    directory: /run/db
    layout: istio
    keyFileMode: "0600"
    ttlSeconds: 3600
    combinedFile: tls.pem
`,
    );
    const config = await loadAgentConfig({ path, env: {} });
    assert.equal(config.ca.trustBundleFile, join(dir.path, "ca-bundle.pem"));
    assert.equal(config.node.joinTokenFile, join(dir.path, "node.token"));
    assert.equal(config.stateDir, join(dir.path, "state"));
    assert.equal(config.workloads.length, 2);
    const [web, db] = config.workloads;
    assert.equal(web.directory, join(dir.path, "run/web"));
    assert.equal(web.layout, "spiffe-helper");
    assert.equal(web.keyFileMode, 0o640);
    assert.equal(web.owner.gid, 2000);
    assert.equal(web.keyAlgorithm, "ECDSA-P256");
    assert.deepEqual(web.origin, { source: "static", file: path, field: "workloads[0]" });
    assert.equal(db.layout, "istio");
    assert.equal(db.keyFileMode, 0o600);
    assert.equal(db.ttlSeconds, 3600);
    assert.equal(db.combinedFile, "tls.pem");
    assert.deepEqual(config.workloadProblems, []);
  });

  test("JSON works the same, and the environment overrides the file", async () => {
    const path = await write(
      "agent.json",
      JSON.stringify({ node: { name: "from-file" }, listen: { port: 9000 } }),
    );
    const config = await loadAgentConfig({
      path,
      env: {
        MESHAUTH_NODE_NAME: "node-b",
        MESHAUTH_CA_URL: "https://localhost:9443",
        MESHAUTH_AGENT_LISTEN_PORT: "0",
        MESHAUTH_AGENT_STATE_DIR: "relative/state",
      },
      cwd: "/somewhere",
    });
    assert.equal(config.node.name, "node-b");
    assert.equal(config.ca.url, "https://localhost:9443");
    assert.equal(config.listen.port, 0);
    // A path from the environment means what it means in the shell.
    assert.equal(config.stateDir, "/somewhere/relative/state");
  });

  test("misspelt keys are refused by their path, at every depth, all at once", async () => {
    const path = await write(
      "misspelt.yaml",
      `node: { name: n, joinTokn: x }
ca: { URL: https://x }
refesh: { maxSeconds: 1 }
workloadDefaults: { layuot: istio }
`,
    );
    const problems = await problemsOf(loadAgentConfig({ path, env: {} }));
    assert.ok(problems.some((p) => p.startsWith("node.joinTokn: unknown field")), problems.join("\n"));
    assert.ok(problems.some((p) => p.startsWith("ca.URL: unknown field")));
    assert.ok(problems.some((p) => p.startsWith("refesh: unknown field")));
    assert.ok(problems.some((p) => p.startsWith("workloadDefaults.layuot: unknown field")));
  });

  test("a bad value from the environment is named by its variable", async () => {
    const problems = await problemsOf(
      loadAgentConfig({ env: { MESHAUTH_NODE_NAME: "n", MESHAUTH_AGENT_LISTEN_PORT: "99999" } }),
    );
    assert.ok(
      problems.some((p) => p.startsWith("listen.port (from MESHAUTH_AGENT_LISTEN_PORT):")),
      problems.join(),
    );
  });

  test("a missing node name and a CA URL with a path are refused", async () => {
    const path = await write("bad.yaml", `ca: { url: "https://ca.example/v1" }\n`);
    const problems = await problemsOf(loadAgentConfig({ path, env: {} }));
    assert.ok(problems.includes("node.name: required"), problems.join());
    assert.ok(problems.some((p) => p.startsWith("ca.url: the CA's origin")));
  });

  test("the kubernetes section: defaults, relative paths, and the projected token as the node's credential", async () => {
    const path = await write(
      "k8s.yaml",
      `node: { name: node-a, serviceAccountTokenFile: token }
kubernetes:
  api: {}
  pods: { enabled: true }
  csi: { enabled: true, socket: plugin/csi.sock, medium: memory }
`,
    );
    const config = await loadAgentConfig({ path, env: {} });
    assert.equal(config.node.serviceAccountTokenFile, join(dir.path, "token"));
    assert.deepEqual(config.kubernetes, {
      api: { kubeconfig: undefined, context: undefined, requestTimeoutSeconds: 10 },
      pods: { enabled: true, directory: "/var/run/meshauth/pods" },
      csi: {
        enabled: true,
        driverName: "meshauth.io",
        socket: join(dir.path, "plugin/csi.sock"),
        kubeletDir: "/var/lib/kubelet",
        dataDir: "/csi/volumes",
        medium: "memory",
        publishTimeoutSeconds: 60,
        maxVolumes: 1000,
      },
    });
    const env = await loadAgentConfig({
      path,
      env: { MESHAUTH_SERVICE_ACCOUNT_TOKEN_FILE: "/var/run/secrets/meshauth/token" },
    });
    assert.equal(env.node.serviceAccountTokenFile, "/var/run/secrets/meshauth/token");
  });

  test("two node credentials, a misspelt kubernetes key and a bad medium are refused by path", async () => {
    const path = await write(
      "k8s-bad.yaml",
      `node: { name: node-a, joinTokenFile: a, serviceAccountTokenFile: b }
kubernetes:
  pods: { enabeld: true }
  csi: { medium: ramdisk, driverName: "-bad-" }
`,
    );
    const problems = await problemsOf(loadAgentConfig({ path, env: {} }));
    assert.ok(
      problems.some((p) =>
        /^node\.joinTokenFile: give one of .*not node\.joinTokenFile and node\.serviceAccountTokenFile/.test(
          p,
        )
      ),
      problems.join("\n"),
    );
    assert.ok(problems.some((p) => /^kubernetes\.pods\.enabeld: /.test(p)), problems.join("\n"));
    assert.ok(problems.some((p) => /^kubernetes\.csi\.medium: /.test(p)), problems.join("\n"));
    assert.ok(problems.some((p) => /^kubernetes\.csi\.driverName: /.test(p)), problems.join("\n"));
  });

  test("the proxy: section is read with the rest: its audit log in the state directory, its problems by path", async () => {
    const path = await write(
      "proxy.yaml",
      `node: { name: node-a }
stateDir: state
listen: { statusPage: true }
proxy:
  outbound:
    - { name: photo-backend, workload: web, listen: 127.0.0.1:15001, upstream: 10.0.0.2:15443, allowedIds: [spiffe://meshauth.local/b] }
`,
    );
    const config = await loadAgentConfig({ path });
    assert.equal(config.proxy?.auditLog, join(dir.path, "state", "proxy-audit.jsonl"));
    assert.deepEqual(config.proxy?.outbound.map((o) => [o.name, o.workload, o.upstream.port]), [[
      "photo-backend",
      "web",
      15443,
    ]]);
    assert.equal(config.listen.statusPage, true);
    assert.equal(
      (await loadAgentConfig({ path: await write("none.yaml", "node: { name: a }\n") })).proxy,
      undefined,
    );

    const bad = await write(
      "bad-proxy.yaml",
      `node: { name: node-a }
listen: { host: 0.0.0.0, statusPage: true }
proxy:
  inbound:
    - { name: db, workload: db, listen: 15443, forward: 127.0.0.1:0, polices: [p.yaml] }
`,
    );
    const problems = await problemsOf(loadAgentConfig({ path: bad }));
    assert.ok(
      problems.some((p) => p.startsWith("proxy.inbound[0].polices: unknown field")),
      problems.join("\n"),
    );
    assert.ok(problems.some((p) => p.startsWith("proxy.inbound[0].forward: port 0 is not a destination")));
    assert.ok(
      problems.some((p) => /^listen\.statusPage: .* loopback listen\.host only, not 0\.0\.0\.0$/.test(p)),
    );
  });

  test("bad workload entries are reported with file and field and skipped; the others stay", async () => {
    const path = await write(
      "entries.yaml",
      `node: { name: n }
workloads:
  - { name: good, spiffeId: spiffe://meshauth.local/good, directory: /run/good }
  - { name: foreign, spiffeId: spiffe://elsewhere.example/x, directory: /run/x }
  - { name: modes, spiffeId: spiffe://meshauth.local/m, directory: /run/m, keyFileMode: 0644 }
  - { name: "../evil", spiffeId: spiffe://meshauth.local/e, directory: /run/e }
  - { name: typo, spiffeId: spiffe://meshauth.local/t, direktory: /run/t }
  - { name: open, spiffeId: spiffe://meshauth.local/o, directory: /run/o, keyFileMode: "0644" }
`,
    );
    const config = await loadAgentConfig({ path, env: {} });
    assert.deepEqual(config.workloads.map((w) => w.name), ["good"]);
    const byField = new Map(config.workloadProblems.map((p) => [p.field, p]));
    assert.ok(config.workloadProblems.every((p) => p.file === path));
    assert.match(byField.get("workloads[1].spiffeId")!.message, /not in this agent's trust domain/);
    assert.match(byField.get("workloads[2].keyFileMode")!.message, /in quotes.*YAML reads an unquoted 0600/);
    assert.match(byField.get("workloads[3].name")!.message, /not a workload name/);
    assert.match(byField.get("workloads[4].direktory")!.message, /unknown field/);
    assert.match(byField.get("workloads[4].directory")!.message, /required/);
    assert.match(byField.get("workloads[5].keyFileMode")!.message, /others read the private key/);
  });
});

describe("loadAgentConfig: paths and URLs that mean one thing", () => {
  test("without a file's say, the state directory, the CA's bundle and the delivery root are absolute", async () => {
    const config = await loadAgentConfig({ env: { MESHAUTH_NODE_NAME: "n" }, cwd: "/" });
    assert.equal(config.stateDir, "/var/lib/meshauth/agent");
    assert.equal(config.ca.trustBundleFile, "/etc/meshauth/bundle.pem");
    assert.deepEqual(config.delivery.roots, ["/var/run/meshauth"]);
    // The same from any working directory: a service manager starts the agent in /.
    const elsewhere = await loadAgentConfig({ env: { MESHAUTH_NODE_NAME: "n" }, cwd: "/tmp" });
    assert.equal(elsewhere.stateDir, config.stateDir);
  });

  test("delivery.roots: relative to the file, or to the shell from the environment", async () => {
    const path = await write("roots.yaml", "node: { name: n }\ndelivery: { roots: [pods, /run/meshauth] }\n");
    const config = await loadAgentConfig({ path, env: {} });
    assert.deepEqual(config.delivery.roots, [join(dir.path, "pods"), "/run/meshauth"]);
    const fromEnv = await loadAgentConfig({
      path,
      env: { MESHAUTH_AGENT_DELIVERY_ROOTS: "a,/b" },
      cwd: "/somewhere",
    });
    assert.deepEqual(fromEnv.delivery.roots, ["/somewhere/a", "/b"]);
    const empty = await write("no-roots.yaml", "node: { name: n }\ndelivery: { roots: [] }\n");
    assert.ok(
      (await problemsOf(loadAgentConfig({ path: empty, env: {} }))).some((p) =>
        p.startsWith("delivery.roots:")
      ),
    );
  });

  test("ca.url: the client's one rule, named by the key (plain HTTP only to loopback)", async () => {
    const problems = async (url: string) =>
      await problemsOf(loadAgentConfig({ env: { MESHAUTH_NODE_NAME: "n", MESHAUTH_CA_URL: url } }));
    assert.match(
      (await problems("http://ca.example:8080"))[0],
      /^ca\.url \(from MESHAUTH_CA_URL\): plain HTTP is allowed only to a loopback CA/,
    );
    assert.match(
      (await problems("ftp://127.0.0.1"))[0],
      /^ca\.url \(from MESHAUTH_CA_URL\): expected an https:\/\/ URL/,
    );
    // A password in the URL would be logged and printed with it; the message never repeats it.
    const withPassword = (await problems("https://agent:s3cret@ca.example:8443"))[0];
    assert.match(withPassword, /no user name or password in the CA's URL/);
    assert.ok(!withPassword.includes("s3cret") && !withPassword.includes("agent:"), withPassword);
    assert.deepEqual(await problems("http://127.0.0.1:8080"), []);
    assert.deepEqual(await problems("https://ca.example:8443"), []);
  });
});

describe("meshauth agent (command line)", () => {
  test("--help describes the command, the options and the environment, with exit code 0", async () => {
    const r = await cli(["agent", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /usage: meshauth agent --config <file>/);
    assert.match(r.stdout, /MESHAUTH_JOIN_TOKEN/);
    const top = await cli(["--help"]);
    assert.match(top.stdout, /agent {4}the node agent/);
  });

  test("an unknown flag is a usage error (exit 2) naming the nearest flag", async () => {
    const r = await cli(["agent", "--confg", "x.yaml"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option --confg; did you mean "--config"\?/);
  });

  test("no configuration at all is a usage error", async () => {
    const saved = process.env.MESHAUTH_NODE_NAME;
    delete process.env.MESHAUTH_NODE_NAME;
    try {
      const r = await cli(["agent"]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--config <file> is required/);
    } finally {
      if (saved !== undefined) process.env.MESHAUTH_NODE_NAME = saved;
    }
  });

  test("--check prints the workloads and the skipped entries, and exits 1 when one is skipped", async () => {
    const path = await write(
      "check.yaml",
      `node: { name: node-a }
workloads:
  - { name: web, spiffeId: spiffe://meshauth.local/web, directory: /run/web }
  - { name: db, spiffeId: not-an-id, directory: /run/db }
`,
    );
    const r = await cli(["agent", "--config", path, "--check"]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^configuration is not valid: 1 workload entry is skipped/);
    const withProxy = await write(
      "check-proxy.yaml",
      `node: { name: node-a }
stateDir: state
listen: { port: 9444, statusPage: true }
proxy:
  inbound:
    - { name: web, workload: web, listen: 15443, forward: unix:/run/web.sock }
`,
    );
    const described = await cli(["agent", "--config", withProxy, "--check"]);
    assert.equal(described.code, 0, described.stderr);
    assert.match(
      described.stdout,
      /inbound web: 0\.0\.0\.0:15443 \(mutual TLS as web\) -> unix:\/run\/web\.sock/,
    );
    assert.match(described.stdout, /status page: http:\/\/127\.0\.0\.1:9444\//);
    assert.match(r.stdout, /workload web: spiffe:\/\/meshauth.local\/web -> \/run\/web \(istio\)/);
    assert.match(
      r.stdout,
      new RegExp(`skipped ${path.replaceAll("/", "\\/")} workloads\\[1\\]\\.spiffeId: `),
    );
  });

  test("--check reads the proxy's policy files as the agent would at start: a bad one is exit 1, named", async () => {
    await write(
      "typo-policy.yaml",
      `policies:
  - name: web-reads
    action: ALLOW
    rules:
      - from: [{ source: { principal: ["spiffe://meshauth.local/web"] } }]
`,
    );
    const path = await write(
      "check-policy.yaml",
      `node: { name: node-a }
stateDir: state
proxy:
  inbound:
    - { name: db, workload: db, listen: 15444, forward: 127.0.0.1:5432, policies: [typo-policy.yaml] }
`,
    );
    const r = await cli(["agent", "--config", path, "--check"]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^configuration is not valid: 1 listener's policies cannot be used/);
    assert.match(r.stdout, /inbound db: ERR_PROXY_POLICY: .*typo-policy\.yaml.*unknown field "principal"/);
  });

  test("--check reads the drop-in files too: their workloads, their skipped entries, and exit 1 for one", async () => {
    const dropIns = join(dir.path, "check.d");
    await mkdir(dropIns, { mode: 0o755 });
    await writeFile(
      join(dropIns, "api.yaml"),
      "spiffeId: spiffe://meshauth.local/api\ndirectory: ../run/api\n",
    );
    const path = await write("check-dropins.yaml", "node: { name: node-a }\nworkloadsDir: check.d\n");
    const valid = await cli(["agent", "--config", path, "--check"]);
    assert.equal(valid.code, 0, valid.stdout);
    assert.match(valid.stdout, /^configuration is valid: node node-a/);
    // A drop-in's relative directory is relative to the drop-in directory.
    assert.match(
      valid.stdout,
      new RegExp(
        `workload api: spiffe://meshauth\\.local/api -> ${join(dir.path, "run", "api")} \\(istio\\)`,
      ),
    );
    await writeFile(join(dropIns, "bad.yaml"), "spiffeId: not-an-id\ndirectory: /run/bad\n");
    const invalid = await cli(["agent", "--config", path, "--check"]);
    assert.equal(invalid.code, 1, invalid.stdout);
    assert.match(invalid.stdout, /^configuration is not valid: 1 workload entry is skipped/);
    assert.match(invalid.stdout, /workload api: /);
    assert.match(invalid.stdout, new RegExp(`skipped ${join(dropIns, "bad.yaml")} spiffeId: `));
  });

  test("an invalid configuration exits 1 with every problem by path", async () => {
    const path = await write("invalid.yaml", "node: { name: 'a b' }\nlisten: { port: -1 }\n");
    const r = await cli(["agent", "--config", path]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /node\.name: a node name may hold/);
    assert.match(r.stderr, /listen\.port: expected a whole number from 0 to 65535/);
  });
});
