// `meshauth proxy` with `ca.url` serves how fresh the CRLs it follows are, as the agent does:
// meshauth_proxy_crl_next_update_seconds{authority} (the gauge an operator alerts on below 0)
// beside meshauth_proxy_crl_updates_total{authority}, on its ops port's /metrics.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { credentialFiles, loadSidecarConfig, writeGeneration } from "../../agent/mod.ts";
import { startProxySidecar } from "../../agent/proxy/sidecar.ts";
import { tempDir } from "../ca-server/helpers.ts";
import { TestCaServer } from "./proxy-ca-support.ts";
import { waitFor } from "./helpers.ts";

test("a sidecar following the CA's CRLs reports seconds until each one's nextUpdate, by authority", {
  timeout: 120_000,
}, async () => {
  const dir = await tempDir("meshauth-sidecar-crl-");
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
    const path = join(dir.path, "proxy.yaml");
    await writeFile(
      path,
      `credentials: { dir: pod }\nca: { url: "${ca.server.url}" }\nlisten: { port: 0 }\nauditLog: audit.jsonl\n` +
        "inbound:\n  - { name: app, workload: app, listen: 127.0.0.1:0, forward: 127.0.0.1:9 }\n",
    );
    const running = await startProxySidecar(await loadSidecarConfig({ path }));
    try {
      let metrics = "";
      const nextUpdate = /^meshauth_proxy_crl_next_update_seconds\{authority="([^"]+)"\} (\d+)$/m;
      await waitFor("the CRL's nextUpdate on /metrics", async () => {
        metrics = await (await fetch(`${running.ops.url}/metrics`, { signal: AbortSignal.timeout(10_000) }))
          .text();
        return nextUpdate.test(metrics);
      }, 60_000);
      const [, authority, seconds] = nextUpdate.exec(metrics)!;
      assert.ok(Number(seconds) > 0, metrics);
      assert.match(
        metrics,
        new RegExp(`^meshauth_proxy_crl_updates_total\\{authority="${authority}"\\} [1-9]`, "m"),
      );
    } finally {
      await running.close();
    }
  } finally {
    await ca.stop();
    await dir.remove();
  }
});
