// Test helpers for the mTLS proxy: a CA that issues real SVIDs (the core's CertificateAuthority),
// a credential source the tests change at will, local services (echo, HTTP) on 127.0.0.1, and
// clients that speak through the proxy over real sockets.
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import {
  createServer as createHttpServer,
  request as httpRequest,
  type Server as HttpServer,
} from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BundleSet,
  CertificateAuthority,
  createCsr,
  type Crl,
  exportPrivateKeyPem,
  generateKeyPair,
  parseCrl,
  type Revocation,
  SpiffeId,
  TrustBundle,
} from "../../mod.ts";
import { FieldReader, jsonLogger, silentLogger } from "../../internal/mod.ts";
import {
  type CredentialSource,
  MeshProxy,
  type ProxyConfig,
  type SocketAddress,
  type SvidCredential,
} from "../../agent/mod.ts";
import { readProxyConfig } from "../../agent/proxy/config.ts";

export const TRUST_DOMAIN = "mesh.test";

/** The seed's three tiers. */
export const IDS = {
  frontend: `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-frontend`,
  backend: `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/photo-backend`,
  datastore: `spiffe://${TRUST_DOMAIN}/ns/datastore-ns/sa/datastore`,
  impostor: `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/impostor`,
};

/** An issued SVID with what the tests need to revoke it. */
export interface TestSvid extends SvidCredential {
  serialNumber: string;
  id: string;
}

/** A CA (an intermediate under a root, as in production) that issues SVIDs and CRLs. */
export class TestCa {
  readonly revoked: Revocation[] = [];
  private constructor(
    readonly root: CertificateAuthority,
    readonly ca: CertificateAuthority,
    readonly clock: { offsetMs: number },
  ) {}

  /** A root and an intermediate, made three hours ago so the tests can issue SVIDs that have expired. */
  static async create(trustDomain = TRUST_DOMAIN): Promise<TestCa> {
    const clock = { offsetMs: -3 * 3600_000 };
    const root = await CertificateAuthority.createRoot({
      trustDomain,
      now: () => new Date(Date.now() + clock.offsetMs),
    });
    const ca = await root.createIntermediate({ ttlSeconds: 86400 });
    clock.offsetMs = 0;
    return new TestCa(root, ca, clock);
  }

  /** An SVID that expired an hour ago. */
  async issueExpired(id: string): Promise<TestSvid> {
    this.clock.offsetMs = -2 * 3600_000;
    try {
      return await this.issue(id, 3600);
    } finally {
      this.clock.offsetMs = 0;
    }
  }

  bundle(): TrustBundle {
    return this.root.bundle();
  }

  /** An SVID for `id`; `ipAddresses` adds IP SANs (for clients such as curl that check the address). */
  async issue(id: string, ttlSeconds = 3600, ipAddresses?: string[]): Promise<TestSvid> {
    const keys = await generateKeyPair();
    const spiffeId = SpiffeId.parse(id);
    const issued = await this.ca.issue(await createCsr({ keys, id: spiffeId, ipAddresses }), {
      id: spiffeId,
      ttlSeconds,
      ipAddresses,
    });
    return {
      id,
      serialNumber: issued.serialNumber,
      certificateChainPem: issued.chainPem,
      privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
    };
  }

  /** The CA's CRL listing everything revoked so far. */
  async crl(): Promise<Crl> {
    return parseCrl(await this.ca.createCrl({ revoked: this.revoked, nextUpdateSeconds: 3600 }));
  }

  revoke(svid: TestSvid): void {
    this.revoked.push({ serialNumber: svid.serialNumber, revokedAt: new Date(), reason: "keyCompromise" });
  }
}

/** A credential source the test drives: set what it holds, and it tells the proxy. */
export class TestSource extends EventEmitter implements CredentialSource {
  constructor(
    public credential: SvidCredential | undefined,
    public bundle: TrustBundle | BundleSet,
    public crlList: Crl[] = [],
  ) {
    super();
    // One source feeds several proxies in a test file.
    this.setMaxListeners(100);
  }

  current(): SvidCredential | undefined {
    return this.credential;
  }

  trustBundle(): TrustBundle | BundleSet {
    return this.bundle;
  }

  crls(): readonly Crl[] {
    return this.crlList;
  }

  update(change: { credential?: SvidCredential; bundle?: TrustBundle | BundleSet; crls?: Crl[] }): void {
    if ("credential" in change) this.credential = change.credential;
    if (change.bundle) this.bundle = change.bundle;
    if (change.crls) this.crlList = change.crls;
    this.emit("change");
  }
}

/** A temporary directory, removed by the returned function. */
export async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), "meshauth-proxy-"));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Validates a raw `proxy:` section as the agent would; throws on any problem. */
export function proxyConfig(raw: Record<string, unknown>, dir: string): ProxyConfig {
  const fields = new FieldReader(dir);
  const config = readProxyConfig(fields, raw);
  if (fields.problems.length) throw new Error(`bad proxy config:\n${fields.problems.join("\n")}`);
  return config;
}

/** Starts a proxy and answers it with its listeners' ports. */
export async function startProxy(
  raw: Record<string, unknown>,
  dir: string,
  sources: Record<string, CredentialSource>,
): Promise<{ proxy: MeshProxy; port: (name: string) => number; address: (name: string) => SocketAddress }> {
  const proxy = new MeshProxy({
    config: proxyConfig({ auditLog: join(dir, "audit.jsonl"), ...raw }, dir),
    sources,
    // MESHAUTH_TEST_PROXY_LOG=1 shows the proxy's log lines while debugging a test.
    logger: process.env.MESHAUTH_TEST_PROXY_LOG ? jsonLogger({ level: "debug" }) : silentLogger,
  });
  await proxy.start();
  const address = (name: string) => {
    const a = proxy.addresses()[name];
    if (!a) throw new Error(`no listener ${name}`);
    return a;
  };
  return {
    proxy,
    address,
    port: (name) => {
      const a = address(name);
      if ("path" in a) throw new Error(`${name} is a Unix socket`);
      return a.port;
    },
  };
}

/** A TCP echo server on 127.0.0.1 (or a Unix socket at `path`) that also answers `who?` with its name. */
export async function echoServer(
  path?: string,
): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) =>
    path ? server.listen(path, resolve) : server.listen(0, "127.0.0.1", resolve)
  );
  const address = server.address();
  return {
    server,
    port: typeof address === "object" && address ? address.port : 0,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** An HTTP server on 127.0.0.1 that answers each request with its method, path and headers as JSON. */
export async function httpEcho(
  name: string,
): Promise<{ server: HttpServer; port: number; close: () => Promise<void> }> {
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.stringify({
        name,
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return {
    server,
    port: typeof address === "object" && address ? address.port : 0,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A plain TCP client: sends `message`, answers what came back before the server closed or
 * `waitMs` passed; by default it stops as soon as as many bytes as it sent came back.
 */
export function exchange(
  target: { port: number } | { path: string },
  message: string,
  waitMs = 3000,
  options: { untilClosed?: boolean } = {},
): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = "path" in target ? connect(target.path) : connect(target.port, "127.0.0.1");
    let reply = "";
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ reply, closed });
    };
    const timer = setTimeout(() => done(false), waitMs);
    socket.on("connect", () => socket.write(message));
    socket.on("data", (d) => {
      reply += d;
      if (!options.untilClosed && reply.length >= message.length) done(false);
    });
    socket.on("close", () => done(true));
    socket.on("error", () => done(true));
  });
}

/** An HTTP request through a plain port: status, parsed JSON body (or text). */
export function httpGet(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  method = "GET",
): Promise<{ status: number; body: any; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, method, headers, agent: false }, (res) => {
      let text = "";
      res.on("data", (d) => text += d);
      res.on("end", () => {
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body, text });
      });
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("timed out")));
    req.end();
  });
}

/** Reads the audit log's records. */
export async function auditRecords(dir: string): Promise<any[]> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(join(dir, "audit.jsonl"), "utf8").catch(() => "");
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Waits until `check` holds (polling), at most `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A long-lived client connection to an echo service: send and read back, and learn when it closes. */
export interface OpenStream {
  send(message: string): Promise<string>;
  /** Resolves with the time (performance.now()) the connection closed. */
  closed: Promise<number>;
  isClosed(): boolean;
  destroy(): void;
}

/** Opens a connection to `port` (an outbound listener in front of an echo service). */
export function openStream(target: { port: number } | { path: string }): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    const socket = "path" in target ? connect(target.path) : connect(target.port, "127.0.0.1");
    let buffered = "";
    let waiter: { length: number; resolve: (s: string) => void; reject: (e: Error) => void } | undefined;
    let isClosed = false;
    const closed = new Promise<number>((done) => {
      socket.on("close", () => {
        isClosed = true;
        waiter?.reject(new Error("closed before the reply"));
        done(performance.now());
      });
    });
    socket.on("error", () => {});
    socket.on("data", (d) => {
      buffered += d;
      if (waiter && buffered.length >= waiter.length) {
        const reply = buffered.slice(0, waiter.length);
        buffered = buffered.slice(waiter.length);
        const w = waiter;
        waiter = undefined;
        w.resolve(reply);
      }
    });
    socket.once("connect", () =>
      resolve({
        send: (message) =>
          new Promise((res, rej) => {
            if (isClosed) return rej(new Error("closed"));
            waiter = { length: message.length, resolve: res, reject: rej };
            socket.write(message);
          }),
        closed,
        isClosed: () => isClosed,
        destroy: () => socket.destroy(),
      }));
    socket.once("error", reject);
  });
}

/** `promise`, or a failure naming `what` after `timeoutMs`: a test that fails must not hang. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Whether this runtime's node:tls resumes mutual-TLS sessions, the client presenting a
 * certificate (Node does; Deno's does not, though it resumes server-only TLS). Found by trying.
 */
export async function runtimeResumesSessions(): Promise<boolean> {
  const { connect: tlsConnect, createServer: createTlsServer } = await import("node:tls");
  const ca = await TestCa.create();
  const svid = await ca.issue(IDS.backend);
  const client = await ca.issue(IDS.frontend);
  const server = createTlsServer({
    cert: svid.certificateChainPem,
    key: svid.privateKeyPem,
    requestCert: true,
    rejectUnauthorized: false,
  }, (s) => s.end("x"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  let session: Buffer | undefined;
  let reused = false;
  try {
    for (let i = 0; i < 2; i++) {
      await new Promise<void>((resolve) => {
        const socket = tlsConnect({
          host: "127.0.0.1",
          port,
          rejectUnauthorized: false,
          session,
          cert: client.certificateChainPem,
          key: client.privateKeyPem,
        });
        socket.on("session", (s: Buffer) => session = s);
        socket.on("secureConnect", () => reused ||= socket.isSessionReused());
        socket.on("data", () => {});
        socket.on("close", () => resolve());
        socket.on("error", () => resolve());
        setTimeout(() => socket.destroy(), 2000);
      });
    }
  } finally {
    server.close();
  }
  return reused;
}
