// A real CA server for the proxy's revocation tests and bench: SVIDs issued by join token and
// CSR, and a credential source that follows the CA's CRL the way the agent does (on a timer),
// so that `POST /v1/revocations` reaches the proxy through the CA's own CRL.
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:https";
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

/** A CA server on 127.0.0.1 (TLS, port 0) in a temporary directory. */
export class TestCaServer {
  private constructor(
    readonly server: RunningCaServer,
    readonly trustDomain: string,
    readonly bundlePem: string,
    readonly dir: string,
  ) {}

  static async start(trustDomain: string): Promise<TestCaServer> {
    const dir = await mkdtemp(join(tmpdir(), "meshauth-proxy-ca-"));
    const config = await loadConfig({
      overrides: {
        trustDomain,
        dataDir: join(dir, "ca"),
        "listen.host": "127.0.0.1",
        "listen.port": 0,
        rateLimit: false,
      },
    });
    await initRoot(config, openKeyManager(config));
    const server = await startCaServer(config, { logger: silentLogger });
    return new TestCaServer(server, trustDomain, server.authorities.bundle().toPem(), dir);
  }

  async stop(): Promise<void> {
    await this.server.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** GET or POST over TLS, trusting the CA's bundle. */
  call(
    method: string,
    path: string,
    body?: unknown,
    token?: string,
  ): Promise<{ status: number; body: Uint8Array }> {
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, this.server.url), {
        method,
        ca: this.bundlePem,
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

  /** An administrator's bearer token. */
  async adminToken(): Promise<string> {
    return (await createJoinToken(this.server.store, { role: "admin", ttlSeconds: 600 })).token;
  }

  /** `POST /v1/revocations` for one serial number. */
  async revoke(serialNumber: string, adminToken: string): Promise<void> {
    const answer = await this.call(
      "POST",
      "/v1/revocations",
      { serialNumber, reason: "keyCompromise" },
      adminToken,
    );
    if (answer.status !== 200) throw new Error(`revocation refused: ${Buffer.from(answer.body).toString()}`);
  }

  /** A workload's SVID from this CA, by join token and CSR, as a source that follows the CRL. */
  async issue(id: string): Promise<CaFollowingSource> {
    const token =
      (await createJoinToken(this.server.store, { role: "workload", spiffeId: id, ttlSeconds: 600 }))
        .token;
    const keys = await generateKeyPair();
    const client = new CaClient({ url: this.server.url, caCertificatesPem: this.bundlePem });
    const issued = await client.requestCertificate(await createCsr({ keys, id: SpiffeId.parse(id) }), {
      kind: "token",
      token,
    });
    const source = new CaFollowingSource(
      this,
      {
        certificateChainPem: issued.certificateChainPem,
        privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
        serialNumber: issued.serialNumber,
      },
      TrustBundle.fromPem(this.trustDomain, issued.trustBundlePem),
    );
    await source.poll();
    return source;
  }
}

/** A workload's SVID, and the CA's CRL as the agent follows it (fetched every `pollMs`). */
export class CaFollowingSource extends EventEmitter implements CredentialSource {
  #crls: Crl[] = [];
  #der = "";
  #timer?: ReturnType<typeof setInterval>;
  /** When (performance.now()) the last new CRL was handed on. */
  changedAt = 0;

  constructor(
    readonly ca: TestCaServer,
    readonly svid: SvidCredential & { serialNumber: string },
    readonly bundle: TrustBundle,
  ) {
    super();
    this.setMaxListeners(100);
  }

  follow(pollMs: number): void {
    this.#timer = setInterval(() => void this.poll(), pollMs);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async poll(): Promise<void> {
    const answer = await this.ca.call("GET", "/v1/crl").catch(() => undefined);
    if (answer?.status !== 200) return;
    const der = Buffer.from(answer.body).toString("base64");
    if (der === this.#der) return;
    this.#der = der;
    this.#crls = [parseCrl(answer.body)];
    this.changedAt = performance.now();
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
