// kill -9 anywhere, for the agent: `meshauth agent` with short-lived workload certificates
// (renewed every few seconds) is killed with SIGKILL at random moments (its start-up, a
// restore, a renewal, a write, a CRL refresh) and started again, while the CA revokes its
// workloads' certificates now and then. After every kill, every workload directory holds a
// key and certificate that belong together, chain to the CA's roots and were issued by it;
// every restart comes up from its state directory without a join token (the node's is single
// use and spent); and at the end no directory holds a revoked certificate.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseCertificates, TrustBundle, verifySvid } from "../../mod.ts";
import { keyMatches, readOneGeneration, startTestCa, TRUST_DOMAIN, waitFor } from "../agent/helpers.ts";
import { tempDir } from "../ca-server/helpers.ts";
import {
  IS_LONG,
  killLoop,
  killPoints,
  randomInt,
  readyTimes,
  sleep,
  startProcess,
  timeoutMs,
} from "./support.ts";

const WORKLOADS = ["web", "db", "cache", "queue", "search", "auth"];
const idOf = (name: string) => `spiffe://${TRUST_DOMAIN}/kill/${name}`;
/** The leaf's serial number as the CA's store keeps it. */
const serialOf = (chainPem: string) => parseCertificates(chainPem)[0].serialNumber;
/** The file names of workload `i`'s layout. */
const filesOf = (i: number) =>
  i % 2
    ? { chain: "svid.pem", key: "svid_key.pem", bundle: "svid_bundle.pem" }
    : { chain: "cert-chain.pem", key: "key.pem", bundle: "root-cert.pem" };

describe("kill -9 anywhere: the agent", { timeout: timeoutMs(90_000, 3 * 3600_000) }, () => {
  it("leaves every workload directory with a matching key and certificate, and loses no revocation", async (t) => {
    const points = killPoints(4);
    const ca = await startTestCa({ "node-k": WORKLOADS.map(idOf) });
    const dir = await tempDir("meshauth-kill-agent-");
    try {
      await writeFile(join(dir.path, "node.token"), `${await ca.nodeToken("node-k")}\n`);
      const configPath = join(dir.path, "agent.yaml");
      await writeFile(
        configPath,
        `trustDomain: ${TRUST_DOMAIN}
ca: { url: "${ca.url}", trustBundleFile: ${ca.bundlePath}, timeoutSeconds: 3 }
node: { name: node-k, joinTokenFile: node.token }
stateDir: state
delivery: { roots: [pods] }
workloadDefaults: { ttlSeconds: 35 }
workloads:
${
          WORKLOADS.map((name, i) =>
            `  - { name: ${name}, spiffeId: "${idOf(name)}", directory: pods/${name}${
              i % 2 ? ", layout: spiffe-helper, combinedFile: tls.pem" : ""
            } }`
          ).join("\n")
        }
renewal: { retryInitialSeconds: 1, retryMaxSeconds: 2 }
refresh: { minSeconds: 1, maxSeconds: 1 }
listen: { port: 0 }
`,
      );
      const start = () =>
        startProcess(["cli/main.ts", "agent", "--config", configPath], {
          env: { MESHAUTH_JOIN_TOKEN: "" },
          isReadyLine: (e) => e.msg === "ready",
        });
      // The bootstrap spends the single-use node token; from then on every start must come up
      // from the state directory alone.
      const first = start();
      await first.ready;
      const bundle = TrustBundle.fromPem(TRUST_DOMAIN, ca.bundlePem);
      const directoryOf = (name: string) => join(dir.path, "pods", name);
      const revoked = new Set<string>();
      const problems: string[] = [];
      let checks = 0;

      const checkDirectories = async (when: string) => {
        for (const [i, name] of WORKLOADS.entries()) {
          const files = await readOneGeneration(directoryOf(name), filesOf(i));
          if (!keyMatches(files.keyPem, files.chainPem)) {
            problems.push(`${when}: ${name} holds a key and chain that differ`);
          }
          const verified = await verifySvid(files.chainPem, bundle).catch((err) => err as Error);
          if (verified instanceof Error) problems.push(`${when}: ${name}: ${verified.message}`);
          if (!(await ca.server.store.findCertificate(serialOf(files.chainPem)))) {
            problems.push(`${when}: ${name} holds a certificate the CA never issued`);
          }
          if (i % 2) {
            const combined = await readFile(join(directoryOf(name), "tls.pem"), "utf8");
            const cut = combined.indexOf("-----BEGIN PRIVATE KEY-----");
            if (!keyMatches(combined.slice(cut), combined.slice(0, cut))) {
              problems.push(`${when}: ${name}: tls.pem`);
            }
          }
        }
        checks++;
      };

      // The CA revokes a workload's current certificate every second or two.
      let stopping = false;
      const revoker = (async () => {
        while (!stopping) {
          await sleep(randomInt(800, 2000));
          const i = randomInt(0, WORKLOADS.length);
          const files = await readOneGeneration(directoryOf(WORKLOADS[i]), filesOf(i)).catch(() => undefined);
          if (!files) continue;
          const serial = serialOf(files.chainPem);
          await ca.server.store.revoke({ serialNumber: serial, reason: "superseded" }, new Date());
          revoked.add(serial);
        }
      })();

      const { report, last } = await killLoop({
        label: "kill -9 the agent",
        points,
        maxLifeMs: 2500,
        start,
        first,
        onKilled: (i) => checkDirectories(`after kill ${i + 1}`),
      }).finally(() => stopping = true);
      try {
        await revoker;
        // Settled: the last agent has fetched the CRL and replaced whatever was revoked.
        await waitFor("no directory holding a revoked certificate", async () => {
          for (const [i, name] of WORKLOADS.entries()) {
            const files = await readOneGeneration(directoryOf(name), filesOf(i));
            if (revoked.has(serialOf(files.chainPem))) return false;
          }
          return true;
        }, 20_000);
        await checkDirectories("at the end");
        const restored = last.logs.filter((e) => e.msg === "node identity restored").length;
        assert.equal(restored, 1, "the last start restored the node identity from its state directory");
      } finally {
        await last.stop();
      }
      assert.deepEqual(report.crashes, [], "the agent exited on its own (a start it could not make?)");
      assert.deepEqual(problems, []);
      const figures =
        `${report.kills} kills (${report.killedStarting} during start-up; ${
          readyTimes(report)
        }), ${checks} checks of ` +
        `${WORKLOADS.length} directories, ${revoked.size} certificates revoked meanwhile`;
      t.diagnostic(figures);
      if (IS_LONG) console.log(`kill -9 the agent: ${figures}`);
      assert.equal(report.kills, points);
    } finally {
      await ca.remove();
      await dir.remove();
    }
  });
});
