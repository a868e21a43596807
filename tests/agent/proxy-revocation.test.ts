// Revocation from the CA server to the proxies, end to end: SVIDs issued by a real CA server
// (join tokens, CSRs), each workload's credentials fed to the proxy by a source that follows the
// CA's CRL as the agent does (here every 100 ms), and `POST /v1/revocations` while a connection
// is open. The revoked peer's open connection is closed and its next connection refused, at the
// server's proxy (a revoked client) and at the client's proxy (a revoked server); the times from
// the POST to each are reported.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { request } from "node:https";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createCsr,
  type Crl,
  exportPrivateKeyPem,
  generateKeyPair,
  parseCrl,
  SpiffeId,
  TrustBundle,
} from "../../mod.ts";
import {
  createJoinToken,
  initRoot,
  loadConfig,
  openKeyManager,
  type RunningCaServer,
  silentLogger,
  startCaServer,
} from "../../ca-server/mod.ts";
import { CaClient, type CredentialSource, type SvidCredential } from "../../agent/mod.ts";
import { echoServer, exchange, openStream, startProxy, until, within } from "./proxy-support.ts";

const TRUST_DOMAIN = "revocation.test";
const FRONTEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-frontend`;
const BACKEND = `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-backend`;

let dir: string;
let ca: RunningCaServer;
let bundlePem: string;

/** GET or POST to the CA over TLS, trusting its bundle. */
function caCall(
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, ca.url), {
      method,
      ca: bundlePem,
      headers: {
        ...(body ? { "content-type": "application/json" } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
    }, (res) => {
      const chunks: Uint8Array[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/** A workload's SVID from the CA, and its CRL as the agent follows it (polled every `pollMs`). */
class CaFollowingSource extends EventEmitter implements CredentialSource {
  #crls: Crl[] = [];
  #der = "";
  #timer?: ReturnType<typeof setInterval>;
  constructor(readonly svid: SvidCredential & { serialNumber: string }, readonly bundle: TrustBundle) {
    super();
  }

  static async issue(id: string): Promise<CaFollowingSource> {
    const token =
      (await createJoinToken(ca.store, { role: "workload", spiffeId: id, ttlSeconds: 600 })).token;
    const keys = await generateKeyPair();
    const client = new CaClient({ url: ca.url, caCertificatesPem: bundlePem });
    const issued = await client.requestCertificate(await createCsr({ keys, id: SpiffeId.parse(id) }), {
      kind: "token",
      token,
    });
    const source = new CaFollowingSource(
      {
        certificateChainPem: issued.certificateChainPem,
        privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
        serialNumber: issued.serialNumber,
      },
      TrustBundle.fromPem(TRUST_DOMAIN, issued.trustBundlePem),
    );
    await source.poll();
    return source;
  }

  follow(pollMs: number): void {
    this.#timer = setInterval(() => void this.poll(), pollMs);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async poll(): Promise<void> {
    const answer = await caCall("GET", "/v1/crl").catch(() => undefined);
    if (answer?.status !== 200) return;
    const der = Buffer.from(answer.body).toString("base64");
    if (der === this.#der) return;
    this.#der = der;
    this.#crls = [parseCrl(answer.body)];
    this.emit("change");
  }

  current(): SvidCredential {
    return this.svid;
  }

  trustBundle(): TrustBundle {
    return this.bundle;
  }

  crls(): readonly Crl[] {
    return this.#crls;
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshauth-proxy-revocation-"));
  const config = await loadConfig({
    overrides: {
      trustDomain: TRUST_DOMAIN,
      dataDir: join(dir, "ca"),
      "listen.host": "127.0.0.1",
      "listen.port": 0,
      rateLimit: false,
    },
  });
  await initRoot(config, openKeyManager(config));
  ca = await startCaServer(config, { logger: silentLogger });
  bundlePem = ca.authorities.bundle().toPem();
});

after(async () => {
  await ca?.close();
  await rm(dir, { recursive: true, force: true });
});

test(
  "POST /v1/revocations reaches the proxies: the revoked peer's open connection is closed and its next refused",
  {
    timeout: 60_000,
  },
  async (t) => {
    const echo = await echoServer();
    const sources = {
      client: await CaFollowingSource.issue(FRONTEND),
      server: await CaFollowingSource.issue(BACKEND),
      // A second pair whose server is revoked: the client's proxy must notice.
      client2: await CaFollowingSource.issue(FRONTEND),
      server2: await CaFollowingSource.issue(BACKEND),
    };
    for (const source of Object.values(sources)) source.follow(100);
    const servers = await startProxy(
      {
        inbound: [
          {
            name: "in",
            workload: "server",
            listen: "127.0.0.1:0",
            forward: `127.0.0.1:${echo.port}`,
            defaultAction: "ALLOW",
          },
          {
            name: "in2",
            workload: "server2",
            listen: "127.0.0.1:0",
            forward: `127.0.0.1:${echo.port}`,
            defaultAction: "ALLOW",
          },
        ],
      },
      dir,
      sources,
    );
    const clients = await startProxy(
      {
        outbound: [
          {
            name: "out",
            service: "backend",
            workload: "client",
            listen: 0,
            upstream: `127.0.0.1:${servers.port("in")}`,
            allowedIds: [BACKEND],
          },
          {
            name: "out2",
            service: "backend",
            workload: "client2",
            listen: 0,
            upstream: `127.0.0.1:${servers.port("in2")}`,
            allowedIds: [BACKEND],
          },
        ],
      },
      dir,
      sources,
    );
    try {
      const admin = (await createJoinToken(ca.store, { role: "admin", ttlSeconds: 600 })).token;
      const measure = async (outbound: string, revoked: CaFollowingSource, where: string) => {
        const target = { port: clients.port(outbound) };
        const stream = await openStream(target);
        assert.equal(await stream.send("before"), "before");
        const postedAt = performance.now();
        const answer = await caCall("POST", "/v1/revocations", {
          serialNumber: revoked.svid.serialNumber,
          reason: "keyCompromise",
        }, admin);
        assert.equal(answer.status, 200, Buffer.from(answer.body).toString());
        const closedAt = await within(stream.closed, 10_000, `the open connection at ${where} closed`);
        let refusedAt = 0;
        await until(async () => {
          const { reply } = await exchange(target, "after", 2000);
          refusedAt = performance.now();
          return reply === "";
        }, 10_000);
        t.diagnostic(
          `${where}: open connection closed ${
            (closedAt - postedAt).toFixed(0)
          } ms and next connection refused ` +
            `${(refusedAt - postedAt).toFixed(0)} ms after POST /v1/revocations (CRL followed every 100 ms)`,
        );
      };
      await measure("out", sources.client, "the server's proxy (revoked client)");
      assert.equal(servers.proxy.metrics.closed.value({ listener: "in", reason: "revoked" }), 1);
      await measure("out2", sources.server2, "the client's proxy (revoked server)");
      assert.equal(clients.proxy.metrics.closed.value({ listener: "out2", reason: "revoked" }), 1);
    } finally {
      for (const source of Object.values(sources)) source.stop();
      await clients.proxy.stop();
      await servers.proxy.stop();
      await echo.close();
    }
  },
);
