// Root and intermediate rotation under load: a CA that signs with an intermediate under an
// offline root, two node agents renewing their workloads' short-lived certificates all the
// while, and requests through the agents' mTLS proxies (client -> node A's outbound ->
// mutual TLS -> node B's inbound -> echo), each on a connection of its own. The intermediate
// is rotated (`meshauth ca init --chain ... --overlap-seconds`), then the root (`meshauth ca
// rotate --overlap-seconds`), each through prepare (the new authority added), publish (its
// root in every agent's bundle), activate (it signs; every workload moves to it) and retire
// (the old one leaves the bundle once all it issued has expired). Zero failed requests,
// renewals or deliveries; the test prints the overlap each step used. Lifetimes are scaled
// down (a longest certificate of 8 s, 60 s with MESHAUTH_FAULTS=long, instead of days) so a
// rotation takes seconds.
import assert from "node:assert/strict";
import { createPublicKey, X509Certificate } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CertificateAuthority, type TrustBundle } from "../../mod.ts";
import {
  createJoinToken,
  loadConfig,
  openKeyManager,
  type RunningCaServer,
  silentLogger,
  startCaServer,
} from "../../ca-server/mod.ts";
import type { NodeAgent } from "../../agent/mod.ts";
import { cli, tempDir } from "../ca-server/helpers.ts";
import { IS_LONG, sleep, timeoutMs } from "./support.ts";
import { requestLoop, startTwoNodeMesh } from "./mesh.ts";

const TD = "rotate.test";
/** The longest certificate the CA issues: an old authority retires this long after its successor signs. */
const MAX_TTL_SECONDS = IS_LONG ? 60 : 8;
const OVERLAP_SECONDS = IS_LONG ? 15 : 4;
const WORKLOAD_TTL_SECONDS = IS_LONG ? 30 : 8;

/** True when `chainPem`'s first certificate was signed by the key of `authorityPem`'s first certificate. */
function issuedBy(chainPem: string, authorityPem: string): boolean {
  const leaf = new X509Certificate(chainPem);
  return leaf.verify(
    createPublicKey(new X509Certificate(authorityPem).publicKey.export({ format: "pem", type: "spki" })),
  );
}

const fingerprints = (bundle: TrustBundle) =>
  new Set(bundle.x509Authorities().map((c) => new X509Certificate(c.der).fingerprint256));
const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

async function waitUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
  return Date.now() - started;
}

describe("root and intermediate rotation under load", { timeout: timeoutMs(150_000, 600_000) }, () => {
  it("prepare, publish, activate, retire: zero failed requests through the proxies, renewals and deliveries", async (t) => {
    const dir = await tempDir("meshauth-rotation-");
    let server: RunningCaServer | undefined;
    let mesh: Awaited<ReturnType<typeof startTwoNodeMesh>> | undefined;
    try {
      const configPath = join(dir.path, "ca.json");
      await writeFile(
        configPath,
        JSON.stringify({
          trustDomain: TD,
          dataDir: join(dir.path, "data"),
          listen: { host: "127.0.0.1", port: 0 },
          nodes: {
            "node-a": {
              workloads: ["frontend", "a-batch-0", "a-batch-1", "a-batch-2"].map((n) =>
                `spiffe://${TD}/mesh/${n}`
              ),
            },
            "node-b": {
              workloads: ["backend", "b-batch-0", "b-batch-1", "b-batch-2"].map((n) =>
                `spiffe://${TD}/mesh/${n}`
              ),
            },
          },
          log: { level: "warn" },
        }),
      );
      // The CA signs with an intermediate under an offline root.
      const offlineRoot = await CertificateAuthority.createRoot({ trustDomain: TD, ttlSeconds: 86400 });
      const writeIntermediate = async (name: string) => {
        const intermediate = await offlineRoot.createIntermediate({ ttlSeconds: 86400 });
        const pem = await intermediate.exportPem();
        await writeFile(join(dir.path, `${name}.pem`), pem.certificateChainPem);
        await writeFile(join(dir.path, `${name}.key`), pem.privateKeyPem, { mode: 0o600 });
        await writeFile(join(dir.path, "offline-root.pem"), pem.trustBundlePem);
        return pem.certificateChainPem;
      };
      const firstIntermediate = await writeIntermediate("intermediate-1");
      const init = await cli([
        "ca",
        "init",
        "--config",
        configPath,
        "--chain",
        join(dir.path, "intermediate-1.pem"),
        "--key",
        join(dir.path, "intermediate-1.key"),
        "--bundle",
        join(dir.path, "offline-root.pem"),
      ]);
      assert.equal(init.code, 0, init.stderr);
      const config = await loadConfig({ path: configPath });
      // Scaled down below what a configuration file may say (60 s at least), so that an old
      // authority retires within the test.
      config.issuance = { defaultTtlSeconds: MAX_TTL_SECONDS, maxTtlSeconds: MAX_TTL_SECONDS };
      server = await startCaServer(config, { logger: silentLogger });
      const ca = server;
      const bundlePem = ca.authorities.bundlePem();
      mesh = await startTwoNodeMesh(
        {
          url: ca.url,
          bundlePem,
          trustDomain: TD,
          nodeToken: async (node) =>
            (await createJoinToken(ca.store, { role: "node", node, ttlSeconds: 600 })).token,
        },
        dir.path,
        { ttlSeconds: WORKLOAD_TTL_SECONDS, nodeTtlSeconds: MAX_TTL_SECONDS, extraWorkloads: 3 },
      );
      const agents: NodeAgent[] = [mesh.agents.a, mesh.agents.b];
      const failuresOf = () =>
        agents.map((a) => a.metrics.render()).join("\n").split("\n")
          .filter((l) => /^meshauth_agent_(renewal|delivery)_failures_total\{/.test(l) && !/ 0$/.test(l));
      let stopping = false;
      const load = requestLoop(mesh.outboundPort, 4, () => stopping);
      const lines: string[] = [];
      try {
        await sleep(2000);
        /** Every SVID the agents hold (node's and workloads') was signed by `authorityPem`. */
        const allIssuedBy = (authorityPem: string) =>
          agents.every((a) =>
            issuedBy(a.nodeSvid()!.certificateChainPem, authorityPem) &&
            [...a.svids().values()].every((s) => issuedBy(s.certificateChainPem, authorityPem))
          );
        const everyBundle = (has: (fps: Set<string>) => boolean) =>
          agents.every((a) => has(fingerprints(a.trustBundle())));

        const rotate = async (kind: "intermediate" | "root", oldAuthorityPem: string, oldRootPem: string) => {
          const before = new Set((await openKeyManager(config).list()).map((r) => r.id));
          const preparedAt = Date.now();
          const args = kind === "intermediate"
            ? [
              "ca",
              "init",
              "--config",
              configPath,
              "--chain",
              join(dir.path, "intermediate-2.pem"),
              "--key",
              join(dir.path, "intermediate-2.key"),
              "--bundle",
              join(dir.path, "offline-root.pem"),
              "--overlap-seconds",
              String(OVERLAP_SECONDS),
            ]
            : ["ca", "rotate", "--config", configPath, "--overlap-seconds", String(OVERLAP_SECONDS)];
          const added = await cli(args);
          assert.equal(added.code, 0, added.stderr);
          // Running servers pick up a new authority within 30 s; this one is told at once.
          await ca.authorities.reload();
          const record = (await openKeyManager(config).list()).find((r) => !before.has(r.id))!;
          const newAuthorityPem = record.certificateChainPem;
          const newRootPem = kind === "intermediate" ? oldRootPem : newAuthorityPem;
          const publishedMs = await waitUntil(
            "the new root in every agent's bundle",
            () => everyBundle((fps) => fps.has(fingerprintOf(newRootPem))),
            OVERLAP_SECONDS * 1000,
          );
          const activeAt = record.activeFrom.getTime();
          assert.ok(Date.now() < activeAt, `published within the overlap (${publishedMs} ms)`);
          await sleep(activeAt - Date.now());
          const movedMs = await waitUntil(
            "every SVID from the new authority",
            () => allIssuedBy(newAuthorityPem),
            MAX_TTL_SECONDS * 1000,
          );
          const retireAt = activeAt + MAX_TTL_SECONDS * 1000;
          let retiredMs = 0;
          if (kind === "root") {
            await sleep(Math.max(0, retireAt - Date.now()));
            retiredMs = await waitUntil(
              "the old root out of every agent's bundle",
              () => everyBundle((fps) => !fps.has(fingerprintOf(oldRootPem))),
              10_000,
            );
          } else {
            // A timer may fire a millisecond before Date.now() reaches its time: wait until it has.
            while (Date.now() < retireAt) await sleep(retireAt - Date.now() + 1);
            assert.ok(
              !ca.authorities.published().some((a) => a.record.certificateChainPem === oldAuthorityPem),
              "the old intermediate is retired",
            );
          }
          lines.push(
            `${kind} rotation: prepare -> activate overlap ${OVERLAP_SECONDS} s, of which publishing the ` +
              `${
                kind === "root" ? "new root to both agents" : "new intermediate (same root, bundle unchanged)"
              } ` +
              `took ${
                (publishedMs / 1000).toFixed(1)
              } s; activate -> every SVID (2 nodes, 8 workloads) from ` +
              `the new ${kind} ${
                (movedMs / 1000).toFixed(1)
              } s; activate -> retire ${MAX_TTL_SECONDS} s (the ` +
              `longest certificate)${
                kind === "root"
                  ? `, the old root out of both bundles ${(retiredMs / 1000).toFixed(1)} s after that`
                  : ""
              }; ${((Date.now() - preparedAt) / 1000).toFixed(1)} s in all`,
          );
          return newAuthorityPem;
        };

        // The bundle holds the offline root alone.
        const rootPem = bundlePem;
        await writeIntermediate("intermediate-2");
        const secondIntermediate = await rotate("intermediate", firstIntermediate, rootPem);
        await rotate("root", secondIntermediate, rootPem);
        await sleep(1000);
      } finally {
        stopping = true;
      }
      const tally = await load;
      for (const line of lines) {
        t.diagnostic(line);
        if (IS_LONG) console.log(line);
      }
      t.diagnostic(`${tally.ok} requests through the proxies, ${tally.failed} failed`);
      assert.deepEqual(tally.failures, [], "failed requests through the proxies");
      assert.ok(tally.ok > 100, `only ${tally.ok} requests`);
      assert.deepEqual(failuresOf(), [], "failed renewals or deliveries");
    } finally {
      await mesh?.stop();
      await server?.close();
      await dir.remove();
    }
  });
});
