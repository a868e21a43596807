// The agent's lifecycle under faults, against a real CA on 127.0.0.1: a restart whose files were
// tampered with (a FIFO in place of a certificate) or whose spec changed while it was down
// (owner, mode, combined file), workloads added and removed while the node identity cannot be
// obtained, a stop in the middle of the node's bootstrap, a revoked certificate while writes
// fail, entries outside the delivery roots, and directories that are one directory by another
// name; and how soon a failed renewal is tried again (the CA's Retry-After is pacing, not a
// failure; a certificate near its end is retried often enough to renew before it).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { constants } from "node:fs";
import {
  chmod,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { SpiffeId } from "../../mod.ts";
import {
  type AgentEvent,
  type BackoffOptions,
  CaClient,
  type CaCredential,
  CaRequestFailed,
  NodeAgent,
  StaticSource,
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

const asRoot = process.getuid?.() === 0;
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
    origin: { source: "test" },
    ...extra,
  };
}

/** A source the test drives: `set` replaces its workloads while the agent runs. */
function drivenSource(initial: WorkloadSpec[]): WorkloadSource & { set(specs: WorkloadSpec[]): void } {
  let sink: WorkloadSink | undefined;
  return {
    name: "driven",
    start(s) {
      sink = s;
      s.replace("driven", initial);
      return Promise.resolve();
    },
    stop: () => Promise.resolve(),
    set(specs) {
      sink!.replace("driven", specs);
    },
  };
}

function newAgent(
  ca: { url: string; bundlePem: string },
  options: {
    root: string;
    stateDir: string;
    sources: WorkloadSource[];
    token?: string;
    roots?: string[];
    backoff?: BackoffOptions;
    client?: CaClient;
  },
) {
  const logs = recordingLogger();
  const events: AgentEvent[] = [];
  const agent = new NodeAgent({
    trustDomain: TRUST_DOMAIN,
    nodeName: "node-a",
    bootstrapToken: () => options.token ?? "unused.token",
    client: options.client ?? new CaClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 }),
    trustBundlePem: ca.bundlePem,
    stateDir: options.stateDir,
    sources: options.sources,
    deliveryRoots: options.roots ?? [options.root],
    backoff: options.backoff ?? { initialMs: 200, maxMs: 1000 },
    minRefreshSeconds: 1,
    maxRefreshSeconds: 1,
    logger: logs,
    keepAlive: false,
  });
  agent.subscribe((e) => events.push(e));
  return { agent, logs, events };
}

/** Settles with "pending" if `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<"pending">((resolve) => timer = setTimeout(() => resolve("pending"), ms)),
  ]);
}

const counter = (agent: NodeAgent, line: string) => {
  const found = agent.metrics.render().split("\n").find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
};

/**
 * A real client to a real CA that answers the node's next workload issuances with the errors in
 * `answers` first (the node's own bootstrap, by token, goes through).
 */
class ScriptedClient extends CaClient {
  answers: CaRequestFailed[] = [];
  override requestCertificate(
    csrPem: string,
    credential: CaCredential,
    options?: { ttlSeconds?: number; signal?: AbortSignal },
  ): ReturnType<CaClient["requestCertificate"]> {
    const answer = credential.kind === "mtls" ? this.answers.shift() : undefined;
    return answer ? Promise.reject(answer) : super.requestCertificate(csrPem, credential, options);
  }
}

const rateLimited = (retryAfterSeconds?: number) =>
  new CaRequestFailed(429, "ERR_RATE_LIMITED", "too many issuances", retryAfterSeconds);
const unavailable = () => new CaRequestFailed(503, "ERR_NOT_READY", "the store is not answering");

describe("retrying a failed issuance", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    ca = await startTestCa({ "node-a": ["paced", "near"].map((n) => idOf(n).toString()) });
    dir = await tempDir();
  });
  after(async () => {
    await ca?.remove();
    await dir?.remove();
  });

  const failures = (logs: ReturnType<typeof recordingLogger>) =>
    logs.entries.filter((e) => e.msg === "obtaining the workload's certificate failed");

  test("429 with Retry-After: 1 is asked again after about 1 s each time: the backoff does not grow", async () => {
    const client = new ScriptedClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 });
    client.answers = [1, 2, 3, 4].map(() => rateLimited(1));
    // The longest draw of the backoff: had each 429 counted as a failure, the waits would have
    // been 1, 2, 4 and 8 s.
    const { agent, logs } = newAgent(ca, {
      root: dir.path,
      stateDir: join(dir.path, "state-paced"),
      sources: [new StaticSource([workload("paced", join(dir.path, "paced"))])],
      token: await ca.nodeToken("node-a"),
      backoff: { initialMs: 1000, maxMs: 60_000, random: () => 0.999 },
      client,
    });
    await agent.start();
    try {
      await waitFor("four 429s", () => failures(logs).length >= 4, 15_000);
      assert.deepEqual(failures(logs).map((e) => e.retryInSeconds), [1, 1, 1, 1]);
      await waitFor("the certificate once the CA takes it", () => agent.readiness().isReady, 5_000);
    } finally {
      await agent.stop();
      await client.close();
    }
  });

  test("a certificate near its end is retried within a tenth of its life left, not on a backoff or Retry-After past it", async () => {
    const client = new ScriptedClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 2000 });
    // Without the bound: 30 s for the 503 (the backoff's longest draw), then 30 s as asked.
    const { agent, logs } = newAgent(ca, {
      root: dir.path,
      stateDir: join(dir.path, "state-near"),
      sources: [new StaticSource([workload("near", join(dir.path, "near"), { ttlSeconds: 10 })])],
      token: await ca.nodeToken("node-a"),
      backoff: { initialMs: 60_000, maxMs: 60_000, random: () => 0.999 },
      client,
    });
    await agent.start();
    try {
      await waitFor("first delivery", () => agent.readiness().isReady);
      const first = agent.workloads()[0];
      client.answers = [unavailable(), rateLimited(30)];
      const notAfter = new Date(agent.svid("near")!.expiresAt).getTime();
      await waitFor(
        "a renewal before the first certificate expires",
        () => agent.workloads()[0].serialNumber !== first.serialNumber,
        Math.max(0, notAfter - Date.now()),
      );
      assert.deepEqual(failures(logs).map((e) => e.retryInSeconds), [1, 1]);
      assert.ok(agent.readiness().isReady);
    } finally {
      await agent.stop();
      await client.close();
    }
  });
});

describe("restarts", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    ca = await startTestCa({ "node-a": ["fifo", "changed"].map((n) => idOf(n).toString()) });
    dir = await tempDir();
  });
  after(async () => {
    await ca?.remove();
    await dir?.remove();
  });

  test("a FIFO in place of a delivered certificate neither blocks the start nor the node identity", async () => {
    const stateDir = join(dir.path, "state-fifo");
    const spec = workload("fifo", join(dir.path, "pods", "fifo"));
    const first = newAgent(ca, {
      root: dir.path,
      stateDir,
      sources: [new StaticSource([spec])],
      token: await ca.nodeToken("node-a"),
    });
    await first.agent.start();
    await waitFor("first delivery", () => first.agent.readiness().isReady);
    const serial = first.agent.svid("fifo")!.serialNumber;
    await first.agent.stop();
    // What only root could do here: the current generation's chain becomes a FIFO.
    const generation = await readlink(join(spec.directory, "..data"));
    const chain = join(spec.directory, generation, "cert-chain.pem");
    await rm(chain);
    assert.equal(spawnSync("mkfifo", [chain]).status, 0);
    const second = newAgent(ca, { root: dir.path, stateDir, sources: [new StaticSource([spec])] });
    const started = second.agent.start();
    try {
      assert.notEqual(await within(started, 10_000), "pending", "start() came back");
      await waitFor("the re-delivery", () => second.agent.readiness().isReady, 10_000);
      assert.ok(second.agent.nodeSvid(), "the node identity was restored");
      const files = await readOneGeneration(spec.directory);
      assert.ok((await lstat(join(spec.directory, files.generation, "cert-chain.pem"))).isFile());
      assert.ok(keyMatches(files.keyPem, files.chainPem));
      assert.equal(second.agent.svid("fifo")!.serialNumber, serial, "the stored certificate was reused");
    } finally {
      // Before the fix a read blocked on the FIFO; a writer that opens and closes it lets it go.
      await open(chain, constants.O_WRONLY | constants.O_NONBLOCK).then((h) => h.close(), () => {});
      await second.agent.stop();
    }
  });

  test("owner, mode and combined file changed while the agent was down: the restart writes them, with the CA down", async () => {
    const stateDir = join(dir.path, "state-changed");
    const directory = join(dir.path, "pods", "changed");
    const before = workload("changed", directory, asRoot ? { owner: { uid: 1001, gid: 1001 } } : {});
    const first = newAgent(ca, {
      root: dir.path,
      stateDir,
      sources: [new StaticSource([before])],
      token: await ca.nodeToken("node-a"),
    });
    await first.agent.start();
    await waitFor("first delivery", () => first.agent.readiness().isReady);
    const serial = first.agent.svid("changed")!.serialNumber;
    await first.agent.stop();
    const changed = workload("changed", directory, {
      keyFileMode: 0o640,
      combinedFile: "tls.pem",
      ...(asRoot ? { owner: { uid: 1002, gid: 1002 } } : {}),
    });
    await ca.stop();
    try {
      const second = newAgent(ca, { root: dir.path, stateDir, sources: [new StaticSource([changed])] });
      await second.agent.start();
      try {
        assert.deepEqual(second.agent.readiness(), { isReady: true, waitingFor: [] });
        assert.equal(second.agent.svid("changed")!.serialNumber, serial, "no new certificate");
        const key = await stat(join(directory, "key.pem"));
        assert.equal(key.mode & 0o777, 0o640);
        if (asRoot) assert.deepEqual([key.uid, key.gid], [1002, 1002]);
        const combined = await readFile(join(directory, "tls.pem"), "utf8");
        const cut = combined.indexOf("-----BEGIN PRIVATE KEY-----");
        assert.ok(keyMatches(combined.slice(cut), combined.slice(0, cut)));
        assert.equal(await readlink(join(directory, "tls.pem")), "..data/tls.pem");
      } finally {
        await second.agent.stop();
      }
    } finally {
      await ca.start();
    }
  });
});

describe("while the node identity cannot be obtained", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    ca = await startTestCa({ "node-a": ["a", "b"].map((n) => idOf(n).toString()) });
    dir = await tempDir();
  });
  after(async () => {
    await ca?.remove();
    await dir?.remove();
  });

  test("workloads come and go at once, and one removed meanwhile is never written", async () => {
    const token = await ca.nodeToken("node-a");
    await ca.stop();
    const a = workload("a", join(dir.path, "pods", "a"));
    const b = workload("b", join(dir.path, "pods", "b"));
    const source = drivenSource([a]);
    const { agent, events } = newAgent(ca, {
      root: dir.path,
      stateDir: join(dir.path, "state"),
      sources: [source],
      token,
      backoff: { initialMs: 100, maxMs: 300 },
    });
    const started = agent.start();
    try {
      await waitFor("a", () => agent.workloads().some((w) => w.name === "a"));
      source.set([]);
      source.set([b]);
      await waitFor(
        "a removed and b added, with the CA down",
        () => agent.workloads().map((w) => w.name).join() === "b" && events.some((e) => e.type === "removed"),
        3000,
      );
      await ca.start();
      await started;
      await waitFor("b's files", () => agent.readiness().isReady);
      // b was issued after a was removed; had a been issued, it would have been by now.
      assert.equal(counter(agent, 'meshauth_agent_renewals_total{kind="workload",reason="initial"}'), 1);
      await assert.rejects(stat(a.directory), { code: "ENOENT" });
      assert.deepEqual(await readdir(join(dir.path, "state", "workloads")), ["b.json"]);
    } finally {
      await agent.stop();
      await started.catch(() => {});
    }
  });

  test("a stop during the node's bootstrap ends the wait between attempts at once", async () => {
    // A port nothing listens on.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise((resolve) => server.close(resolve));
    const { agent, logs } = newAgent({ url: `http://127.0.0.1:${port}`, bundlePem: ca.bundlePem }, {
      root: dir.path,
      stateDir: join(dir.path, "state-bootstrap"),
      sources: [],
      token: "some.token",
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    const started = agent.start();
    await waitFor(
      "a failed attempt",
      () => logs.entries.some((e) => e.msg === "node bootstrap failed; retrying"),
    );
    await agent.stop();
    assert.notEqual(await within(started.catch(() => "rejected"), 2000), "pending", "start() came back");
  });
});

describe("revocation while the newer certificate cannot be written", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };
  let mount: string;

  before(async () => {
    ca = await startTestCa({ "node-a": [idOf("disk").toString()] });
    dir = await tempDir();
    mount = join(dir.path, "small");
    await mkdir(mount);
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

  test("the delivered certificate revoked: not ready, no new certificate minted, the held one delivered once it can be", async () => {
    const directory = join(mount, "disk");
    const { agent, logs } = newAgent(ca, {
      root: mount,
      stateDir: join(dir.path, "state"),
      sources: [new StaticSource([workload("disk", directory, { ttlSeconds: 10 })])],
      token: await ca.nodeToken("node-a"),
    });
    await agent.start();
    try {
      await waitFor("first delivery", () => agent.readiness().isReady);
      const filler = join(mount, "filler");
      if (asRoot) await writeFile(filler, new Uint8Array(62 * 1024)).catch(() => {});
      else await chmod(directory, 0o555);
      // The renewal (4 to 5 s after issuance) is held but cannot be written.
      await waitFor("a held certificate that is not in the files", () => {
        const held = agent.svid("disk")?.serialNumber;
        return !!held && held !== agent.workloads()[0].serialNumber &&
          logs.entries.some((e) => e.msg === "delivering the workload's files failed; previous files kept");
      }, 15_000);
      const delivered = agent.workloads()[0].serialNumber!;
      const r = await cli([
        "ca",
        "revoke",
        "--config",
        ca.configPath,
        "--serial",
        delivered,
        "--reason",
        "keyCompromise",
      ]);
      assert.equal(r.code, 0, r.stderr);
      await waitFor("the revocation seen", () => !agent.readiness().isReady, 10_000);
      assert.deepEqual(agent.readiness().waitingFor, ["disk"]);
      assert.equal(counter(agent, 'meshauth_agent_renewals_total{kind="workload",reason="revoked"}'), 0);
      assert.notEqual(agent.svid("disk")!.serialNumber, delivered, "the newer certificate is still held");
      if (asRoot) await rm(filler);
      else await chmod(directory, 0o755);
      await waitFor("the held certificate delivered", () => agent.readiness().isReady, 15_000);
      assert.notEqual(agent.workloads()[0].serialNumber, delivered);
      assert.equal(counter(agent, 'meshauth_agent_renewals_total{kind="workload",reason="revoked"}'), 0);
      const files = await readOneGeneration(directory);
      assert.ok(keyMatches(files.keyPem, files.chainPem));
    } finally {
      await agent.stop();
    }
  });
});

describe("where workloads may be delivered", () => {
  let ca: TestCa;
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    ca = await startTestCa({
      "node-a": ["inside", "outside", "alias", "clobber"].map((n) => idOf(n).toString()),
    });
    dir = await tempDir();
  });
  after(async () => {
    await ca?.remove();
    await dir?.remove();
  });

  test("outside the delivery roots: reported by field and skipped; a file the agent did not make is never replaced", async () => {
    const root = join(dir.path, "pods");
    const secrets = join(dir.path, "secrets");
    await mkdir(secrets, { recursive: true });
    await writeFile(join(secrets, "key.pem"), "the host's own key");
    const mine = join(root, "clobber");
    await mkdir(mine, { recursive: true });
    await writeFile(join(mine, "key.pem"), "a file that was there before");
    const { agent, events, logs } = newAgent(ca, {
      root,
      stateDir: join(dir.path, "state-roots"),
      sources: [
        new StaticSource([
          workload("inside", join(root, "inside")),
          workload("outside", secrets, {
            origin: { source: "static", file: "agent.yaml", field: "workloads[1]" },
          }),
          workload("clobber", mine),
        ]),
      ],
      token: await ca.nodeToken("node-a"),
    });
    await agent.start();
    try {
      await waitFor(
        "inside delivered",
        () => agent.workloads().find((w) => w.name === "inside")?.isReady === true,
      );
      const problem = events.flatMap((e) => (e.type === "problem" ? [e.problem] : []))[0];
      assert.equal(problem.field, "workloads[1].directory");
      assert.match(problem.message, /is outside the delivery roots/);
      assert.deepEqual(agent.workloads().map((w) => w.name).sort(), ["clobber", "inside"]);
      assert.equal(await readFile(join(secrets, "key.pem"), "utf8"), "the host's own key");
      await waitFor(
        "the refusal",
        () => logs.entries.some((e) => e.workload === "clobber" && e.cause === "ERR_DELIVERY_REFUSED"),
      );
      assert.equal(await readFile(join(mine, "key.pem"), "utf8"), "a file that was there before");
    } finally {
      await agent.stop();
    }
  });

  test("one directory by two names (a symlinked root) is one directory: the second entry conflicts", async () => {
    const root = join(dir.path, "real-root");
    const alias = join(dir.path, "alias-root");
    await mkdir(root);
    await symlink(root, alias);
    const { agent, events } = newAgent(ca, {
      root,
      roots: [root, alias],
      stateDir: join(dir.path, "state-alias"),
      sources: [new StaticSource([workload("inside", join(root, "w")), workload("alias", join(alias, "w"))])],
      token: await ca.nodeToken("node-a"),
    });
    await agent.start();
    try {
      const problem = events.flatMap((e) => (e.type === "problem" ? [e.problem] : []))[0];
      assert.equal(problem?.field, "directory");
      assert.match(problem.message, /already used by workload inside/);
      assert.deepEqual(agent.workloads().map((w) => w.name), ["inside"]);
    } finally {
      await agent.stop();
    }
  });
});
