// A CA that signs with an intermediate, and a client renewing over mutual TLS on a resumed TLS
// session: OpenSSL keeps only the peer's leaf in a session, so on resumption the server sees
// the client's leaf without the intermediate it sent in the full handshake. The CA completes
// the path from its own intermediates (they chain to its roots, which are the anchors): the
// renewal is accepted on the full handshake and on the resumed one alike.
import assert from "node:assert/strict";
import { Agent, request } from "node:https";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { after, before, describe, it } from "node:test";
import { CertificateAuthority } from "../../mod.ts";
import { loadConfig, type RunningCaServer, silentLogger, startCaServer } from "../../ca-server/mod.ts";
import { cli, csrFor, tempDir, token, TRUST_DOMAIN, writeConfig } from "./helpers.ts";

interface Answer {
  status: number;
  body: string;
  isResumed: boolean;
}

/** POSTs `body` to `url` through `agent` (which caches TLS sessions), with a client certificate. */
function post(url: string, body: unknown, tls: { agent: Agent; ca: string; cert: string; key: string }) {
  return new Promise<Answer>((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = request(url, {
      method: "POST",
      agent: tls.agent,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString(),
          isResumed: (res.socket as TLSSocket).isSessionReused(),
        }));
    });
    req.on("error", reject);
    req.end(payload);
  });
}

describe("mutual TLS on a resumed session, with an intermediate CA", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: RunningCaServer;
  let bundlePem: string;

  before(async () => {
    dir = await tempDir("meshauth-resumed-");
    const offlineRoot = await CertificateAuthority.createRoot({
      trustDomain: TRUST_DOMAIN,
      ttlSeconds: 86400,
    });
    const intermediate = await (await offlineRoot.createIntermediate({ ttlSeconds: 86400 })).exportPem();
    await writeFile(join(dir.path, "intermediate.pem"), intermediate.certificateChainPem);
    await writeFile(join(dir.path, "intermediate.key"), intermediate.privateKeyPem, { mode: 0o600 });
    await writeFile(join(dir.path, "root.pem"), intermediate.trustBundlePem);
    const configPath = await writeConfig(dir.path, { listen: { host: "127.0.0.1", port: 0 } });
    const init = await cli([
      "ca",
      "init",
      "--config",
      configPath,
      "--chain",
      join(dir.path, "intermediate.pem"),
      "--key",
      join(dir.path, "intermediate.key"),
      "--bundle",
      join(dir.path, "root.pem"),
    ]);
    assert.equal(init.code, 0, init.stderr);
    server = await startCaServer(await loadConfig({ path: configPath }), { logger: silentLogger });
    bundlePem = server.authorities.bundlePem();
  });

  after(async () => {
    await server?.close();
    await dir?.remove();
  });

  it("renews on the full handshake and on the resumed one", async () => {
    const spiffeId = `spiffe://${TRUST_DOMAIN}/resumed/w`;
    const joined = await csrFor(spiffeId);
    const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
    try {
      // The first certificate, by join token.
      const issued = await new Promise<{ certificateChain: string[] }>((resolve, reject) => {
        void (async () => {
          const payload = JSON.stringify({ csr: joined.csr });
          const req = request(`${server.url}/v1/certificates`, {
            method: "POST",
            agent: new Agent({ keepAlive: false }),
            ca: bundlePem,
            headers: {
              "content-type": "application/json",
              authorization: `Bearer ${await token(server.store, { role: "workload", spiffeId })}`,
            },
          }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c) => chunks.push(c));
            res.on("end", () => {
              const text = Buffer.concat(chunks).toString();
              if (res.statusCode !== 201) reject(new Error(`${res.statusCode} ${text}`));
              else resolve(JSON.parse(text));
            });
          });
          req.on("error", reject);
          req.end(payload);
        })().catch(reject);
      });
      // The leaf and the intermediate it was signed by.
      assert.equal(issued.certificateChain.length, 2);
      const tls = { agent, ca: bundlePem, cert: issued.certificateChain.join(""), key: joined.keyPem };
      const answers: Answer[] = [];
      for (let i = 0; i < 3; i++) {
        answers.push(await post(`${server.url}/v1/certificates`, { csr: (await csrFor(spiffeId)).csr }, tls));
      }
      // Deno's node:tls (rustls) does not resume a client session through node:https's agent: there
      // every renewal is a full handshake, which the last assertion still holds to.
      if (!(globalThis as { Deno?: unknown }).Deno) {
        assert.deepEqual(
          answers.map((a) => a.isResumed),
          [false, true, true],
          "the later handshakes resume the session",
        );
      }
      assert.deepEqual(answers.map((a) => a.status), [201, 201, 201], answers.map((a) => a.body).join("\n"));
    } finally {
      agent.destroy();
    }
  });
});
