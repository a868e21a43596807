// Clock skew: `meshauth agent` runs with its clock off (libfaketime) against a CA whose clock
// is right. Within the CA's backdating (20 s behind), nothing is reported and everything
// works. Five minutes behind, and five minutes ahead, the agent still takes, delivers and
// renews its workloads' certificates at their normal pace (it judges their times on the CA's
// clock, measured from the CA's answers), and reports the skew by name: one `clock skew`
// warning, code ERR_CLOCK_SKEW, with the offset and the direction. A workload verifying
// peers on its own clock holds within the backdating, and the renewal margin covers a clock
// minutes fast.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  parseCertificates,
  SpiffeId,
  verifySvid,
} from "../../mod.ts";
import { NODE, openTestStore, run, tempDir, token, TRUST_DOMAIN, writeConfig } from "../ca-server/helpers.ts";
import { readOneGeneration } from "../agent/helpers.ts";
import { isCi } from "../runtimes/runtimes.mjs";
import { type RunningProcess, sleep, startProcess, timeoutMs } from "./support.ts";

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const skip = !existsSync(LIBFAKETIME) && !isCi
  ? "libfaketime is not installed (apt-get install faketime)"
  : false;
const WORKLOADS = ["web", "db", "cache"];
const idOf = (name: string) => `spiffe://${TRUST_DOMAIN}/skew/${name}`;
/** The nodes, each with its agent's clock shift (libfaketime's syntax). */
const AGENT_CLOCKS = [["behind-20s", "-20s"], ["behind-5m", "-5m"], ["ahead-5m", "+5m"]] as const;
/** How long each agent's renewals are watched. */
const WATCH_MS = 8000;

/** Environment that runs a process with its clock moved by the spec in `file` (re-read every second). */
const fakeClock = (file: string) => ({
  LD_PRELOAD: LIBFAKETIME,
  FAKETIME_TIMESTAMP_FILE: file,
  FAKETIME_CACHE_DURATION: "1",
  FAKETIME_DONT_FAKE_MONOTONIC: "1",
});

describe("clock skew", { skip, timeout: timeoutMs(90_000, 180_000) }, () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: RunningProcess;
  let url: string;
  let bundlePath: string;
  let configPath: string;
  const runs = new Map<string, ReturnType<typeof runAgent>>();

  before(async () => {
    dir = await tempDir("meshauth-skew-");
    configPath = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      nodes: Object.fromEntries(
        AGENT_CLOCKS.map(([node]) => [node, { workloads: WORKLOADS.map(idOf) }]),
      ),
      log: { level: "info" },
    });
    // The CA's root is made, and the CA starts, with its clock 15 minutes back, so its serving
    // certificate is as old as a running CA's usually is (a node whose clock is behind must be
    // able to verify it: a certificate made a second ago is not yet valid there); then its
    // clock is set right.
    const caClock = join(dir.path, "ca-clock");
    await writeFile(caClock, "-15m\n");
    const init = await run(NODE, ["--import", "tsx", "cli/main.ts", "ca", "init", "--config", configPath], {
      env: { ...process.env, ...fakeClock(caClock) },
    });
    assert.equal(init.code, 0, init.stderr);
    ca = startProcess(["cli/main.ts", "ca", "serve", "--config", configPath], {
      env: fakeClock(caClock),
      isReadyLine: (e) => e.msg === "listening",
    });
    await ca.ready;
    await writeFile(caClock, "+0\n");
    await sleep(2000);
    url = String(ca.logs.find((e) => e.msg === "listening")!.url);
    bundlePath = join(dir.path, "data", "bundle.pem");
    // The three agents are separate nodes with clocks of their own: they run side by side, and
    // each test below judges its own node's run.
    const store = await openTestStore(dir.path);
    const nodeTokens = [];
    for (const [node] of AGENT_CLOCKS) nodeTokens.push(await token(store, { role: "node", node }));
    await store.close();
    for (const [i, [node, shift]] of AGENT_CLOCKS.entries()) {
      const run = runAgent(node, shift, nodeTokens[i]);
      run.catch(() => {});
      runs.set(node, run);
    }
  });
  after(async () => {
    await Promise.allSettled(runs.values());
    await ca?.stop();
    await dir?.remove();
  });

  /** Runs an agent for node `node` with its clock moved by `shift`; what it logged and delivered. */
  async function runAgent(node: string, shift: string, nodeToken: string) {
    const agentDir = join(dir.path, node);
    const { mkdir } = await import("node:fs/promises");
    await mkdir(agentDir, { recursive: true });
    await writeFile(join(agentDir, "node.token"), `${nodeToken}\n`);
    await writeFile(join(agentDir, "clock"), `${shift}\n`);
    const agentConfig = join(agentDir, "agent.yaml");
    await writeFile(
      agentConfig,
      `trustDomain: ${TRUST_DOMAIN}
ca: { url: "${url}", trustBundleFile: ${bundlePath} }
node: { name: ${node}, joinTokenFile: node.token }
stateDir: state
delivery: { roots: [pods] }
workloadDefaults: { ttlSeconds: 10 }
workloads:
${
        WORKLOADS.map((name) => `  - { name: ${name}, spiffeId: "${idOf(name)}", directory: pods/${name} }`)
          .join("\n")
      }
renewal: { retryInitialSeconds: 1, retryMaxSeconds: 2 }
refresh: { minSeconds: 1, maxSeconds: 2 }
listen: { port: 0 }
`,
    );
    const agent = startProcess(["cli/main.ts", "agent", "--config", agentConfig], {
      env: { ...fakeClock(join(agentDir, "clock")), MESHAUTH_JOIN_TOKEN: "" },
      isReadyLine: (e) => e.msg === "ready",
    });
    try {
      await agent.ready;
      const readyAt = agent.logs.length;
      await sleep(WATCH_MS);
      const delivered = agent.logs.slice(readyAt).filter((e) => e.msg === "delivered");
      const statusUrl = String(agent.logs.find((e) => e.msg === "listening")!.url);
      const readyz = await fetch(`${statusUrl}/readyz`);
      const metrics = await (await fetch(`${statusUrl}/metrics`)).text();
      // Every directory holds a certificate valid now by the right clock (this process's).
      const valid: boolean[] = [];
      for (const name of WORKLOADS) {
        const { chainPem } = await readOneGeneration(join(agentDir, "pods", name));
        const [leaf] = parseCertificates(chainPem);
        valid.push(leaf.notBefore.getTime() <= Date.now() && leaf.notAfter.getTime() > Date.now());
      }
      return {
        skews: agent.logs.filter((e) => e.msg === "clock skew"),
        renewalsPerWorkload: WORKLOADS.map((name) => delivered.filter((e) => e.workload === name).length),
        isReady: readyz.status === 200,
        offsetSeconds: Number(/^meshauth_agent_clock_offset_seconds (\S+)$/m.exec(metrics)?.[1]),
        valid,
        failures: agent.logs.filter((e) => e.msg === "obtaining the workload's certificate failed"),
      };
    } finally {
      await agent.stop();
    }
  }

  // Certificates of 10 s (40 s with the backdating, which renewal does not count as life) renew
  // 4 to 5 s after they arrive: 1 to 3 renewals in 8 s. On its own clock, a node 5 minutes ahead
  // would renew every second (each certificate looks expired on arrival) and one 5 minutes
  // behind not before they expired.
  const assertNormalPace = (renewals: number[]) => {
    for (const n of renewals) {
      assert.ok(n >= 1 && n <= 3, `renewals per workload in ${WATCH_MS} ms: ${renewals}`);
    }
  };

  it("20 s behind (within the backdating): no report, certificates delivered and renewed", async () => {
    const run = await runs.get("behind-20s")!;
    assert.deepEqual(run.skews, []);
    assert.ok(run.isReady);
    assert.deepEqual(run.valid, [true, true, true]);
    assertNormalPace(run.renewalsPerWorkload);
    assert.ok(Math.abs(run.offsetSeconds - 20) <= 2, `offset ${run.offsetSeconds}`);
  });

  for (
    const [node, direction, offset] of [
      ["behind-5m", "behind", 300],
      ["ahead-5m", "ahead", -300],
    ] as const
  ) {
    it(`5 minutes ${direction}: reported by name, and certificates still delivered and renewed on time`, async () => {
      const run = await runs.get(node)!;
      assert.equal(run.skews.length, 1, JSON.stringify(run.skews));
      const [skew] = run.skews;
      assert.equal(skew.level, "warn");
      assert.equal(skew.code, "ERR_CLOCK_SKEW");
      assert.equal(skew.direction, direction);
      assert.ok(Math.abs(Number(skew.offsetSeconds) - offset) <= 2, `offset ${skew.offsetSeconds}`);
      assert.match(String(skew.detail), direction === "behind" ? /not yet valid here/ : /older here/);
      assert.ok(run.isReady, "ready: its certificates are valid on the CA's clock");
      assert.deepEqual(run.valid, [true, true, true]);
      assert.deepEqual(run.failures, []);
      assertNormalPace(run.renewalsPerWorkload);
      assert.ok(
        Math.abs(run.offsetSeconds - offset) <= 2,
        `meshauth_agent_clock_offset_seconds ${run.offsetSeconds}`,
      );
    });
  }

  it("a workload's own clock: the backdating covers 30 s slow; the renewal margin covers minutes fast", async () => {
    const root = await CertificateAuthority.createRoot({ trustDomain: TRUST_DOMAIN });
    const id = SpiffeId.parse(idOf("peer"));
    const issued = await root.issue(await createCsr({ keys: await generateKeyPair(), id }), {
      id,
      ttlSeconds: 3600,
    });
    const bundle = root.bundle();
    const at = (offsetMs: number) => ({ at: new Date(Date.now() + offsetMs) });
    await verifySvid(issued.chainPem, bundle, at(-20_000));
    await assert.rejects(verifySvid(issued.chainPem, bundle, at(-5 * 60_000)), {
      code: "ERR_CERT_NOT_YET_VALID",
    });
    // A peer renews at half its life (30 min, less jitter): a verifier 5 minutes fast still
    // accepts its certificate then, and would for 25 minutes more.
    const halfLife = (issued.notAfter.getTime() - issued.notBefore.getTime()) / 2;
    const atRenewal = issued.notBefore.getTime() + halfLife - Date.now();
    await verifySvid(issued.chainPem, bundle, at(atRenewal + 5 * 60_000));
    await verifySvid(issued.chainPem, bundle, at(atRenewal + 29 * 60_000));
  });
});
