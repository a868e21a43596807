// The node agent against a real CA server on 127.0.0.1 (TLS, the file store), with real files
// in temporary directories: workloads issued under one node identity, a workload not placed on
// the node refused, short-lived certificates rotated while readers read, the CA stopped and
// started again, revocation, root rotation, removal, a restart from the state directory, and a
// full file system.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdir, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { SpiffeId, TrustBundle, verifySvid } from "../../mod.ts";
import {
  type AgentEvent,
  CaClient,
  DirectorySource,
  NodeAgent,
  StaticSource,
  WorkloadNotDelivered,
  type WorkloadSink,
  type WorkloadSource,
  type WorkloadSpec,
} from "../../agent/mod.ts";
import { cli } from "../ca-server/helpers.ts";
import {
  keyMatches,
  readOneGeneration,
  recordingLogger,
  startTestCa,
  tempDir,
  type TestCa,
  TRUST_DOMAIN,
  waitFor,
} from "./helpers.ts";

const idOf = (name: string) => SpiffeId.parse(`spiffe://${TRUST_DOMAIN}/${name}`);

function workload(name: string, directory: string, extra: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return {
    name,
    spiffeId: idOf(name),
    directory,
    owner: {},
    keyFileMode: 0o600,
    keyAlgorithm: "ECDSA-P256",
    layout: "istio",
    origin: { source: "static" },
    ...extra,
  };
}

interface RunningTestAgent {
  agent: NodeAgent;
  logs: ReturnType<typeof recordingLogger>;
  events: AgentEvent[];
  stop(): Promise<void>;
}

async function startAgent(
  ca: TestCa,
  options: { stateDir: string; sources: WorkloadSource[]; token?: string; node?: string },
): Promise<RunningTestAgent> {
  const logs = recordingLogger();
  const token = options.token ?? await ca.nodeToken(options.node ?? "node-a");
  const agent = new NodeAgent({
    trustDomain: TRUST_DOMAIN,
    nodeName: options.node ?? "node-a",
    bootstrapToken: () => token,
    client: new CaClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 }),
    trustBundlePem: ca.bundlePem,
    stateDir: options.stateDir,
    sources: options.sources,
    // Each test's temporary directory holds its state directory and its workloads' directories.
    deliveryRoots: [dirname(options.stateDir)],
    backoff: { initialMs: 200, maxMs: 1000 },
    minRefreshSeconds: 1,
    maxRefreshSeconds: 1,
    logger: logs,
    keepAlive: false,
  });
  const events: AgentEvent[] = [];
  agent.subscribe((e) => events.push(e));
  await agent.start();
  return { agent, logs, events, stop: () => agent.stop() };
}

const counter = (agent: NodeAgent, line: string) => {
  const found = agent.metrics.render().split("\n").find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
};

describe("a node with several workloads", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let running: RunningTestAgent;
  const names = ["web", "db", "cache"];

  before(async () => {
    ca = await startTestCa({ "node-a": names.map((n) => idOf(n).toString()) });
    dir = await tempDir();
    running = await startAgent(ca, {
      stateDir: join(dir.path, "state"),
      sources: [
        new StaticSource([
          ...names.map((n) => workload(n, join(dir.path, "pods", n))),
          workload("intruder", join(dir.path, "pods", "intruder")),
        ]),
      ],
    });
    await waitFor("the three placed workloads", () => names.every((n) => running.agent.svid(n)));
    await waitFor("the files", () => running.events.filter((e) => e.type === "delivered").length >= 3);
  });
  after(async () => {
    await running?.stop();
    await ca?.remove();
    await dir?.remove();
  });

  test("each gets its own key, made on the node, and a certificate the CA issued to the node for it", async () => {
    const node = running.agent.nodeId.toString();
    const serials = new Set<string>();
    for (const name of names) {
      const files = await readOneGeneration(join(dir.path, "pods", name));
      assert.ok(keyMatches(files.keyPem, files.chainPem), `${name}: key and certificate match`);
      const verified = await verifySvid(files.chainPem, TrustBundle.fromPem(TRUST_DOMAIN, files.bundlePem));
      assert.equal(verified.id.toString(), idOf(name).toString());
      assert.equal((await stat(join(dir.path, "pods", name, "key.pem"))).mode & 0o777, 0o600);
      const [record] = await ca.server.store.listCertificates({ spiffeId: idOf(name).toString(), limit: 10 });
      assert.equal(record.requester, node, "the CA issued it to the node");
      assert.equal(record.method, "mtls", "the node authenticated with its own SVID");
      serials.add(verified.chain[0].serialNumber);
    }
    assert.equal(serials.size, 3);
    const nodeCerts = await ca.server.store.listCertificates({ spiffeId: node, limit: 10 });
    assert.equal(nodeCerts.length, 1);
    assert.equal(nodeCerts[0].method, "join-token");
  });

  test("a workload not placed on the node is refused by the CA and reported, the others unaffected", async () => {
    await waitFor("the refusal", () => running.logs.entries.some((e) => e.workload === "intruder"));
    const refusal = running.logs.entries.find((e) => e.workload === "intruder")!;
    assert.equal(refusal.level, "error");
    assert.equal(refusal.msg, "the CA refused the workload's certificate");
    assert.equal(refusal.cause, "ERR_IDENTITY_MISMATCH");
    assert.match(String(refusal.error), /spiffe:\/\/agent\.test\/intruder/);
    assert.ok(
      counter(
        running.agent,
        'meshauth_agent_renewal_failures_total{kind="workload",cause="ERR_IDENTITY_MISMATCH"}',
      ) >= 1,
    );
    await assert.rejects(stat(join(dir.path, "pods", "intruder", "key.pem")), { code: "ENOENT" });
    assert.deepEqual(running.agent.readiness(), { isReady: false, waitingFor: ["intruder"] });
  });

  test("every SVID and the bundle are reachable in memory, as an in-process proxy needs them", () => {
    for (const name of names) {
      const svid = running.agent.svid(name)!;
      assert.ok(keyMatches(svid.privateKeyPem, svid.certificateChainPem));
      assert.equal(svid.spiffeId.toString(), idOf(name).toString());
    }
    assert.equal(running.agent.trustBundlePem(), ca.bundlePem);
    assert.equal(running.agent.svids().size, 3);
  });

  test("metrics report certificates held and seconds to expiry per workload", () => {
    const text = running.agent.metrics.render();
    assert.match(text, /^meshauth_agent_certificates 3$/m);
    assert.match(text, /^meshauth_agent_workloads 4$/m);
    assert.match(
      text,
      /^meshauth_agent_certificate_expiry_seconds\{workload="web",spiffe_id="spiffe:\/\/agent\.test\/web"\} \d+$/m,
    );
    assert.match(text, /^meshauth_agent_renewals_total\{kind="workload",reason="initial"\} 3$/m);
    assert.match(
      text,
      /^meshauth_agent_ca_request_duration_seconds_count\{endpoint="certificates",outcome="201"\} 4$/m,
    );
  });
});

describe("rotation with short lifetimes", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let running: RunningTestAgent;
  const names = ["fast-a", "fast-b", "fast-c"];

  before(async () => {
    ca = await startTestCa({ "node-a": names.map((n) => idOf(n).toString()) });
    dir = await tempDir();
    running = await startAgent(ca, {
      stateDir: join(dir.path, "state"),
      sources: [
        new StaticSource(
          names.map((n) =>
            workload(n, join(dir.path, n), {
              // Renewed 4 to 5 s after issuance.
              ttlSeconds: 10,
              combinedFile: "tls.pem",
              layout: n === "fast-c" ? "spiffe-helper" : "istio",
            })
          ),
        ),
      ],
    });
    await waitFor("first delivery", () => running.agent.readiness().isReady);
  });
  after(async () => {
    await running?.stop();
    await ca?.remove();
    await dir?.remove();
  });

  test("readers that resolve ..data once, or read the combined file, never see a key that does not match", async () => {
    const mismatches: string[] = [];
    const serials = new Map<string, Set<string>>(names.map((n) => [n, new Set()]));
    let reads = 0;
    const deadline = Date.now() + 8000;
    const reader = async (name: string) => {
      const directory = join(dir.path, name);
      const layout = name === "fast-c"
        ? { chain: "svid.pem", key: "svid_key.pem", bundle: "svid_bundle.pem" }
        : undefined;
      while (Date.now() < deadline) {
        const files = await readOneGeneration(directory, layout);
        if (!keyMatches(files.keyPem, files.chainPem)) mismatches.push(`${name} ${files.generation}`);
        serials.get(name)!.add(new X509Certificate(files.chainPem).serialNumber);
        // One read of the combined file: the chain, then the key.
        const combined = await readFile(join(directory, "tls.pem"), "utf8");
        const cut = combined.indexOf("-----BEGIN PRIVATE KEY-----");
        if (!keyMatches(combined.slice(cut), combined.slice(0, cut))) mismatches.push(`${name} tls.pem`);
        reads++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    await Promise.all(names.flatMap((n) => [reader(n), reader(n)]));
    assert.deepEqual(mismatches, []);
    for (const [name, seen] of serials) {
      assert.ok(seen.size >= 2, `${name} rotated while being read (${seen.size} certificates seen)`);
    }
    assert.ok(reads > 100, `the readers read (${reads} reads)`);
    // Old generations are removed: one remains beside ..data.
    for (const name of names) {
      const hidden = (await readdir(join(dir.path, name))).filter((n) => n.startsWith("..2"));
      assert.ok(hidden.length <= 2, `${name}: ${hidden.join(", ")}`);
    }
  });
});

describe("a workload the CA places on the node a moment after the agent sees it", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let agent: NodeAgent | undefined;

  before(async () => {
    ca = await startTestCa({ "node-a": [] });
    dir = await tempDir();
  });
  after(async () => {
    await agent?.stop();
    await ca?.remove();
    await dir?.remove();
  });

  test("is retried at the normal backoff, not the slowest, and delivered() says why it waits", async () => {
    let sink: WorkloadSink | undefined;
    const late = workload("late", join(dir.path, "late"));
    const source: WorkloadSource = {
      name: "pods",
      start(s) {
        sink = s;
        return Promise.resolve(s.replace("pods", [late]));
      },
      stop: () => Promise.resolve(),
    };
    const token = await ca.nodeToken("node-a");
    agent = new NodeAgent({
      trustDomain: TRUST_DOMAIN,
      nodeName: "node-a",
      bootstrapToken: () => token,
      client: new CaClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 }),
      trustBundlePem: ca.bundlePem,
      stateDir: join(dir.path, "state"),
      sources: [source],
      deliveryRoots: [dir.path],
      // The slowest pace for a refusal would be 30 s.
      backoff: { initialMs: 200, maxMs: 60_000 },
      keepAlive: false,
    });
    await agent.start();
    // Refused (the CA does not place it yet): delivered() gives the CA's reason.
    await assert.rejects(
      sink!.delivered("late", AbortSignal.timeout(1500)),
      (err: Error) =>
        err instanceof WorkloadNotDelivered && /ERR_IDENTITY_MISMATCH/.test(err.message) &&
        /workload late/.test(err.message),
    );
    await assert.rejects(sink!.delivered("unknown"), WorkloadNotDelivered);
    // The CA learns where the workload runs (its pod cache catches up; here, its table).
    await ca.stop();
    const raw = JSON.parse(await readFile(ca.configPath, "utf8"));
    raw.nodes["node-a"].workloads = [idOf("late").toString()];
    await writeFile(ca.configPath, JSON.stringify(raw));
    await ca.start();
    const started = Date.now();
    await sink!.delivered("late", AbortSignal.timeout(15_000));
    assert.ok(Date.now() - started < 15_000);
    const files = await readOneGeneration(join(dir.path, "late"));
    assert.ok(keyMatches(files.keyPem, files.chainPem));
  });
});

describe("the CA stopped and started again", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let running: RunningTestAgent;

  before(async () => {
    ca = await startTestCa({ "node-a": [idOf("short").toString()] });
    dir = await tempDir();
    // 20 s: renewal 8 to 10 s after issuance, the 20% warning at 16 s.
    running = await startAgent(ca, {
      stateDir: join(dir.path, "state"),
      sources: [new StaticSource([workload("short", join(dir.path, "short"), { ttlSeconds: 20 })])],
    });
    await waitFor("first delivery", () => running.agent.readiness().isReady);
  });
  after(async () => {
    await running?.stop();
    await ca?.remove();
    await dir?.remove();
  });

  test("failed renewals keep the current files, warn near expiry, and the new certificate lands once the CA is back", async () => {
    const directory = join(dir.path, "short");
    const failures = () =>
      running.logs.entries.filter((e) => e.msg === "obtaining the workload's certificate failed").length;
    await ca.stop();
    // The workload's operations run one at a time: once a renewal has failed, whatever was in
    // flight when the CA stopped has landed (files included) or failed.
    await waitFor("a failed renewal", () => failures() >= 1);
    const kept = await readOneGeneration(directory);
    const generations = new Set<string>();
    await waitFor(
      "two failed renewals",
      () =>
        running.logs.entries.filter((e) => e.msg === "obtaining the workload's certificate failed").length >=
          2,
    );
    const failure = running.logs.entries.find((e) =>
      e.msg === "obtaining the workload's certificate failed"
    )!;
    assert.equal(failure.cause, "connect");
    assert.equal(typeof failure.certificateSecondsLeft, "number");
    assert.ok((failure.certificateSecondsLeft as number) > 0);
    await waitFor("the expiry warning", async () => {
      generations.add((await readOneGeneration(directory)).generation);
      return running.logs.entries.some((e) => e.msg === "certificate expires soon and is not yet renewed");
    }, 15_000);
    assert.match(running.agent.metrics.render(), /^meshauth_agent_certificates_expiring 1$/m);
    assert.match(running.agent.metrics.render(), /^meshauth_agent_expiry_warnings_total 1$/m);
    // All along, the files were the ones from before the outage, whole and still valid.
    assert.deepEqual([...generations], [kept.generation]);
    const still = await readOneGeneration(directory);
    assert.equal(still.chainPem, kept.chainPem);
    assert.ok(keyMatches(still.keyPem, still.chainPem));
    assert.ok(new Date(new X509Certificate(still.chainPem).validTo) > new Date());

    await ca.start();
    await waitFor(
      "the new certificate",
      async () => (await readOneGeneration(directory)).chainPem !== kept.chainPem,
    );
    const renewed = await readOneGeneration(directory);
    assert.ok(keyMatches(renewed.keyPem, renewed.chainPem));
    // The agent counts the new certificate as held once it is written (a moment after the files land).
    await waitFor(
      "no certificate counted as expiring",
      () => /^meshauth_agent_certificates_expiring 0$/m.test(running.agent.metrics.render()),
    );
    assert.ok(
      counter(running.agent, 'meshauth_agent_renewal_failures_total{kind="workload",cause="connect"}') >= 2,
    );
  });
});

describe("revocation and root rotation", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let running: RunningTestAgent;
  const names = ["alpha", "beta"];

  before(async () => {
    ca = await startTestCa({ "node-a": names.map((n) => idOf(n).toString()) });
    dir = await tempDir();
    running = await startAgent(ca, {
      stateDir: join(dir.path, "state"),
      sources: [new StaticSource(names.map((n) => workload(n, join(dir.path, n), { ttlSeconds: 120 })))],
    });
    await waitFor("first delivery", () => running.agent.readiness().isReady);
  });
  after(async () => {
    await running?.stop();
    await ca?.remove();
    await dir?.remove();
  });

  test("a revoked workload certificate is re-issued at once", async () => {
    const directory = join(dir.path, "alpha");
    const before = await readOneGeneration(directory);
    const serial = running.agent.svid("alpha")!.serialNumber;
    const r = await cli([
      "ca",
      "revoke",
      "--config",
      ca.configPath,
      "--serial",
      serial,
      "--reason",
      "keyCompromise",
    ]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      "the re-issue",
      async () => (await readOneGeneration(directory)).chainPem !== before.chainPem,
    );
    const after = await readOneGeneration(directory);
    assert.ok(keyMatches(after.keyPem, after.chainPem));
    assert.notEqual(running.agent.svid("alpha")!.serialNumber, serial);
    assert.ok(
      running.logs.entries.some((e) =>
        e.msg === "certificate revoked; re-issuing" && e.serialNumber === serial
      ),
    );
    assert.equal(
      counter(running.agent, 'meshauth_agent_renewals_total{kind="workload",reason="revoked"}'),
      1,
    );
    // beta was not revoked and keeps its certificate.
    assert.equal(
      counter(running.agent, 'meshauth_agent_renewals_total{kind="workload",reason="initial"}'),
      2,
    );
    assert.ok(running.events.some((e) => e.type === "crl" && e.revokedSerials.has(serial)));
  });

  test("a root rotation reaches every workload directory without a restart", async () => {
    const r = await cli(["ca", "rotate", "--config", ca.configPath, "--overlap-seconds", "2"]);
    assert.equal(r.code, 0, r.stderr);
    // The server picks up new authorities every 30 s; this does now what its timer would do.
    await ca.server.authorities.reload();
    const bundlePem = ca.server.authorities.bundlePem();
    assert.equal(TrustBundle.fromPem(TRUST_DOMAIN, bundlePem).x509Authorities().length, 2);
    for (const name of names) {
      await waitFor(
        `${name}'s bundle`,
        async () => (await readOneGeneration(join(dir.path, name))).bundlePem === bundlePem,
      );
      const files = await readOneGeneration(join(dir.path, name));
      assert.ok(keyMatches(files.keyPem, files.chainPem), "the key and certificate stay paired");
    }
    assert.ok(
      running.events.some((e) => e.type === "bundle" && e.trustBundle.x509Authorities().length === 2),
    );
    assert.equal(running.agent.trustBundlePem(), bundlePem);

    // Once the new root signs, new certificates chain to it and verify against the delivered bundle.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const oldSerial = running.agent.svid("beta")!.serialNumber;
    const revoked = await cli([
      "ca",
      "revoke",
      "--config",
      ca.configPath,
      "--serial",
      oldSerial,
      "--reason",
      "superseded",
    ]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await waitFor("beta's new certificate", () => running.agent.svid("beta")!.serialNumber !== oldSerial);
    await waitFor(
      "its delivery",
      async () =>
        (await readOneGeneration(join(dir.path, "beta"))).chainPem ===
          running.agent.svid("beta")!.certificateChainPem,
    );
    const files = await readOneGeneration(join(dir.path, "beta"));
    const leaf = new X509Certificate(files.chainPem);
    assert.ok(!leaf.checkIssued(new X509Certificate(ca.bundlePem)), "not signed by the old root");
    await verifySvid(files.chainPem, TrustBundle.fromPem(TRUST_DOMAIN, files.bundlePem));
  });
});

describe("workloads that come and go", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    ca = await startTestCa({ "node-a": ["one", "two", "three"].map((n) => idOf(n).toString()) });
    dir = await tempDir();
  });
  after(async () => {
    await ca?.remove();
    await dir?.remove();
  });

  test("a drop-in file added delivers; removed, its files are deleted", async () => {
    const drop = join(dir.path, "workloads.d");
    await mkdir(drop);
    const running = await startAgent(ca, {
      stateDir: join(dir.path, "state-dropin"),
      sources: [new DirectorySource({ directory: drop, trustDomain: TRUST_DOMAIN, debounceMs: 20 })],
    });
    try {
      const target = join(dir.path, "dropin-one");
      await writeFile(join(drop, "one.yaml"), `spiffeId: ${idOf("one")}\ndirectory: ${target}\n`);
      await waitFor("the files", async () => (await readlink(join(target, "..data")).catch(() => "")) !== "");
      assert.ok((await readdir(join(dir.path, "state-dropin", "workloads"))).includes("one.json"));
      await rm(join(drop, "one.yaml"));
      await waitFor("the removal", async () => !(await stat(target).catch(() => undefined)));
      // The files go first, then the stored record, then the event is told.
      await waitFor(
        "the removed event",
        () => running.events.some((e) => e.type === "removed" && e.workload === "one"),
      );
      assert.ok(!(await readdir(join(dir.path, "state-dropin", "workloads"))).includes("one.json"));
    } finally {
      await running.stop();
    }
  });

  test("conflicting entries are reported with file and field; the first one is served", async () => {
    const drop = join(dir.path, "conflicts.d");
    await mkdir(drop);
    const shared = join(dir.path, "conflict", "shared");
    await writeFile(join(drop, "two.yaml"), `spiffeId: ${idOf("two")}\ndirectory: ${shared}\n`);
    await writeFile(
      join(drop, "one.yaml"),
      `spiffeId: ${idOf("one")}\ndirectory: ${join(dir.path, "conflict", "x")}\n`,
    );
    const running = await startAgent(ca, {
      stateDir: join(dir.path, "state-conflict"),
      sources: [
        new StaticSource([workload("one", shared)]),
        new DirectorySource({ directory: drop, trustDomain: TRUST_DOMAIN }),
      ],
    });
    try {
      await waitFor("the static workload", () => running.agent.readiness().isReady);
      const problems = running.events.flatMap((e) => (e.type === "problem" ? [e.problem] : []));
      const byFile = new Map(problems.map((p) => [p.file, p]));
      assert.equal(byFile.get(join(drop, "one.yaml"))?.field, "name");
      assert.match(
        byFile.get(join(drop, "one.yaml"))!.message,
        /the workload name one is already defined by static/,
      );
      assert.equal(byFile.get(join(drop, "two.yaml"))?.field, "directory");
      assert.match(byFile.get(join(drop, "two.yaml"))!.message, /already used by workload one/);
      assert.deepEqual(running.agent.workloads().map((w) => w.name), ["one"]);
      assert.ok(
        running.logs.entries.some((e) => e.msg === "workload entry skipped" && e.field === "directory"),
      );
    } finally {
      await running.stop();
    }
  });

  test("a restart serves the stored certificates at once, before the CA answers, and re-issues none", async () => {
    const stateDir = join(dir.path, "state-restart");
    const specs = ["one", "two"].map((n) => workload(n, join(dir.path, "restart", n)));
    const first = await startAgent(ca, { stateDir, sources: [new StaticSource(specs)] });
    await waitFor("first delivery", () => first.agent.readiness().isReady);
    const serials = ["one", "two"].map((n) => first.agent.svid(n)!.serialNumber);
    const generations = await Promise.all(specs.map((s) => readlink(join(s.directory, "..data"))));
    await first.stop();
    await ca.stop();
    try {
      const second = await startAgent(ca, {
        stateDir,
        sources: [new StaticSource(specs)],
        token: "unused.token",
      });
      try {
        // Ready as soon as it started, with the CA down.
        assert.deepEqual(second.agent.readiness(), { isReady: true, waitingFor: [] });
        assert.deepEqual(["one", "two"].map((n) => second.agent.svid(n)!.serialNumber), serials);
        // The files already held them: nothing was rewritten.
        assert.deepEqual(
          await Promise.all(specs.map((s) => readlink(join(s.directory, "..data")))),
          generations,
        );
        assert.equal(
          counter(second.agent, 'meshauth_agent_renewals_total{kind="workload",reason="initial"}'),
          0,
        );
        assert.equal(
          second.logs.entries.filter((e) => e.msg === "certificate restored from the state directory").length,
          2,
        );
      } finally {
        await second.stop();
      }
    } finally {
      await ca.start();
    }
  });

  test("a restart with the CA down keeps the CRLs held before (stored 0600), and reports their age", async () => {
    const stateDir = join(dir.path, "state-crls");
    const specs = [workload("one", join(dir.path, "crls", "one"))];
    const first = await startAgent(ca, { stateDir, sources: [new StaticSource(specs)] });
    await waitFor("the CRL", () => first.agent.crls().size > 0);
    const held = [...first.agent.crls()].map(([id, crl]) => [id, Buffer.from(crl.der).toString("hex")]);
    await first.stop();
    assert.equal((await stat(join(stateDir, "crls.json"))).mode & 0o777, 0o600);
    await ca.stop();
    try {
      const second = await startAgent(ca, {
        stateDir,
        sources: [new StaticSource(specs)],
        token: "unused.token",
      });
      try {
        // Held from the start, before (and without) any answer of the CA.
        assert.deepEqual(
          [...second.agent.crls()].map(([id, crl]) => [id, Buffer.from(crl.der).toString("hex")]),
          held,
        );
        const [authority] = held[0];
        const metrics = second.agent.metrics.render();
        assert.match(
          metrics,
          new RegExp(`^meshauth_agent_crl_next_update_seconds\\{authority="${authority}"\\} \\d+$`, "m"),
        );
        assert.match(
          metrics,
          new RegExp(`^meshauth_agent_crl_age_seconds\\{authority="${authority}"\\} \\d+$`, "m"),
        );
      } finally {
        await second.stop();
      }
    } finally {
      await ca.start();
    }
  });

  test("a workload removed while the agent was stopped has its files deleted at the next start", async () => {
    const stateDir = join(dir.path, "state-orphan");
    const keep = workload("one", join(dir.path, "orphan", "one"));
    const gone = workload("three", join(dir.path, "orphan", "three"));
    const first = await startAgent(ca, { stateDir, sources: [new StaticSource([keep, gone])] });
    await waitFor("first delivery", () => first.agent.readiness().isReady);
    await first.stop();
    const second = await startAgent(ca, {
      stateDir,
      sources: [new StaticSource([keep])],
      token: "unused.token",
    });
    try {
      await assert.rejects(stat(gone.directory), { code: "ENOENT" });
      assert.ok(await stat(join(keep.directory, "key.pem")));
    } finally {
      await second.stop();
    }
  });
});

describe("a file system that refuses the write", () => {
  const asRoot = process.getuid?.() === 0;
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let mount: string;

  before(async () => {
    ca = await startTestCa({ "node-a": [idOf("disk").toString()] });
    dir = await tempDir();
    mount = join(dir.path, "small");
    await mkdir(mount);
    // As root: a real full file system (a 64 KiB tmpfs); otherwise a directory it may not write.
    if (asRoot) {
      const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", mount]);
      assert.equal(r.status, 0, `mounting a tmpfs failed: ${r.stderr}`);
    }
  });
  after(async () => {
    if (asRoot) spawnSync("umount", [mount]);
    await ca?.remove();
    await dir?.remove();
  });

  test("fails that workload's write, keeps its previous files, and retries until it lands", async () => {
    const directory = join(mount, "disk");
    const running = await startAgent(ca, {
      stateDir: join(dir.path, "state"),
      sources: [new StaticSource([workload("disk", directory, { ttlSeconds: 35 })])],
    });
    try {
      await waitFor("first delivery", () => running.agent.readiness().isReady);
      const before = await readOneGeneration(directory);
      const filler = join(mount, "filler");
      if (asRoot) await writeFile(filler, new Uint8Array(62 * 1024)).catch(() => {});
      else await import("node:fs/promises").then((fs) => fs.chmod(directory, 0o555));
      await waitFor(
        "a failed write",
        () =>
          running.logs.entries.some((e) =>
            e.msg === "delivering the workload's files failed; previous files kept"
          ),
      );
      const failure = running.logs.entries.find((e) =>
        e.msg === "delivering the workload's files failed; previous files kept"
      )!;
      assert.match(String(failure.cause), asRoot ? /ENOSPC/ : /EACCES/);
      const during = await readOneGeneration(directory);
      assert.equal(during.generation, before.generation);
      assert.ok(keyMatches(during.keyPem, during.chainPem));
      assert.ok(running.agent.readiness().isReady, "the previous certificate still serves");
      if (asRoot) await rm(filler);
      else await import("node:fs/promises").then((fs) => fs.chmod(directory, 0o755));
      await waitFor(
        "the retried write",
        async () => (await readOneGeneration(directory)).generation !== before.generation,
      );
      const after = await readOneGeneration(directory);
      assert.ok(keyMatches(after.keyPem, after.chainPem));
      assert.ok(after.chainPem === running.agent.svid("disk")!.certificateChainPem);
    } finally {
      await running.stop();
    }
  });
});
