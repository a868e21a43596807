// meshauth proxy's /readyz follows the SVID in service: ready while it is valid, not ready
// (503, saying which SVID expired and when) once the clock passes its notAfter, ready again
// once the agent delivers a valid one. The clock is the sidecar's option, moved by the test.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  CertificateAuthority,
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  type IssuedCertificate,
  SpiffeId,
} from "../../mod.ts";
import { credentialFiles, loadSidecarConfig, writeGeneration } from "../../agent/mod.ts";
import { startProxySidecar } from "../../agent/proxy/sidecar.ts";
import { tempDir } from "../ca-server/helpers.ts";

const ID = SpiffeId.parse("spiffe://test.example/ns/demo/sa/backend");

let dir: { path: string; remove: () => Promise<void> };
let root: CertificateAuthority;

before(async () => {
  dir = await tempDir("meshauth-sidecar-readiness-");
  root = await CertificateAuthority.createRoot({ trustDomain: "test.example" });
});

after(async () => {
  await dir?.remove();
});

/** Issues an SVID of `ttlSeconds` and delivers it into `directory` as the agent does. */
async function deliver(directory: string, ttlSeconds: number): Promise<IssuedCertificate> {
  const keys = await generateKeyPair();
  const svid = await root.issue(await createCsr({ keys, id: ID }), { id: ID, ttlSeconds });
  await writeGeneration(
    directory,
    credentialFiles({
      certificateChainPem: svid.chainPem,
      privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
      trustBundlePem: root.bundle().toPem(),
    }, { layout: "istio", keyFileMode: 0o600 }),
    {},
    { root: dir.path },
  );
  return svid;
}

async function readyz(
  url: string,
): Promise<{ status: number; body: { status: string; waitingFor?: string[] } }> {
  const answer = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(10_000) });
  return { status: answer.status, body: await answer.json() };
}

test("/readyz is 503 once the SVID in service is past its notAfter, and 200 again with a valid one", async () => {
  const credentials = join(dir.path, "pod");
  const first = await deliver(credentials, 600);
  await writeFile(
    join(dir.path, "proxy.yaml"),
    `credentials: { dir: pod }\nlisten: { port: 0 }\nauditLog: audit.jsonl\n` +
      `inbound: [{ name: app, workload: app, listen: 127.0.0.1:0, forward: 127.0.0.1:8080 }]\n`,
  );
  const config = await loadSidecarConfig({ path: join(dir.path, "proxy.yaml") });
  let now = Date.now();
  const running = await startProxySidecar(config, { clock: { now: () => now } });
  try {
    assert.equal((await readyz(running.ops.url)).status, 200);

    now = first.notAfter.getTime();
    const expired = await readyz(running.ops.url);
    assert.equal(expired.status, 503);
    assert.equal(expired.body.waitingFor?.length, 1);
    assert.match(expired.body.waitingFor![0], /serial [0-9a-f]+\) expired at /);
    assert.ok(expired.body.waitingFor![0].includes(first.serialNumber), expired.body.waitingFor![0]);
    assert.ok(
      expired.body.waitingFor![0].includes(first.notAfter.toISOString()),
      expired.body.waitingFor![0],
    );

    // The agent's next delivery, valid past the moment the clock shows.
    const second = await deliver(credentials, 1200);
    await running.source.reload();
    assert.equal(running.source.credentials?.serialNumber, second.serialNumber);
    assert.ok(second.notAfter.getTime() > now);
    assert.deepEqual(await readyz(running.ops.url), { status: 200, body: { status: "ready" } });
  } finally {
    await running.close();
  }
});
