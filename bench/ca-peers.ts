// bench/ca-peers.ts: the servers bench/ca.ts loads besides meshauth, and how to start any of
// them: CloudFlare's cfssl (`cfssl serve`, Debian's golang-cfssl) and Smallstep's step-ca with a
// JWK provisioner. Each start answers a Target: where to send which requests, how to read the
// certificate out of an answer, and whose CPU to count.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createPrivateKey, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CertificateAuthority } from "../mod.ts";

export const ROOT = new URL("..", import.meta.url).pathname;

/** A server under test. */
export interface Target {
  name: string;
  origin: string;
  path: string;
  /** The next request body; bodies are prepared before a timed slice, never during one. */
  nextBody: () => string;
  /** Called before each timed slice, outside it: makes sure `count` bodies are ready. */
  prepare?: (count: number) => void;
  headers: Record<string, string>;
  expectStatus: number;
  /** The issued certificate (PEM) in an answer's body; undefined for a server that issues none. */
  certificateOf?: (body: string) => string | undefined;
  /** PEM of the root to trust for an https origin. */
  caPem?: string;
  pid: number;
}

/** A running server under test. */
export interface Started {
  target: Target;
  server: ChildProcess;
}

/** A port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer().once("error", reject).listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.setTimeout(1000);
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => (socket.destroy(), resolve(false)));
  });
}

/** Starts a server and waits (at most 30 s) until `port` accepts connections. */
export function startProcess(
  cmd: string,
  args: string[],
  port: number,
  env: Record<string, string> = {},
): Promise<ChildProcess> {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (d: Buffer) => {
    if (output.length < 65_536) output += d;
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} did not start within 30s:\n${output}`));
    }, 30_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code}:\n${output}`));
    });
    void (async () => {
      for (let i = 0; i < 150 && child.exitCode === null; i++) {
        if (await isListening(port)) {
          clearTimeout(timer);
          return resolve(child);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
  });
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** cfssl 1.x from PATH (`apt-get install golang-cfssl`), signing with its default profile. */
export async function startCfssl(dir: string, csrs: string[]): Promise<Started | undefined> {
  let version: string;
  try {
    version = execFileSync("cfssl", ["version"]).toString().match(/Version: (\S+)/)?.[1] ?? "?";
  } catch {
    return undefined;
  }
  const port = await freePort();
  await mkdir(dir, { recursive: true });
  const caCsr = join(dir, "ca-csr.json");
  await writeFile(caCsr, JSON.stringify({ CN: "cfssl bench CA", key: { algo: "ecdsa", size: 256 } }));
  const initca = JSON.parse(
    execFileSync("cfssl", ["gencert", "-initca", caCsr], { cwd: dir, stdio: ["ignore", "pipe", "ignore"] })
      .toString(),
  );
  await writeFile(join(dir, "ca.pem"), initca.cert);
  await writeFile(join(dir, "ca-key.pem"), initca.key, { mode: 0o600 });
  await writeFile(
    join(dir, "cfssl.json"),
    JSON.stringify({
      signing: { default: { expiry: "24h", usages: ["digital signature", "server auth", "client auth"] } },
    }),
  );
  const server = await startProcess("cfssl", [
    "serve",
    ...["-address", "127.0.0.1", "-port", String(port)],
    ...["-ca", join(dir, "ca.pem"), "-ca-key", join(dir, "ca-key.pem")],
    ...["-config", join(dir, "cfssl.json"), "-loglevel", "2"],
  ], port);
  const bodies = csrs.map((csr) => JSON.stringify({ certificate_request: csr }));
  let n = 0;
  return {
    server,
    target: {
      name: `cfssl ${version}`,
      origin: `http://127.0.0.1:${port}`,
      path: "/api/v1/cfssl/sign",
      nextBody: () => bodies[n++ % bodies.length],
      headers: { "content-type": "application/json" },
      expectStatus: 200,
      certificateOf: (body) => JSON.parse(body).result?.certificate,
      pid: server.pid!,
    },
  };
}

/**
 * Where step-ca is: `--step-ca` / `STEP_CA`, `step-ca` on PATH, or built once (offline, from
 * Debian's Go source packages) by `../shared/peers/build-step-ca.sh` into the temporary
 * directory when that script is beside the checkout.
 */
export function findStepCa(explicit: string | undefined): string | undefined {
  if (explicit) return explicit;
  try {
    return execFileSync("sh", ["-c", "command -v step-ca"]).toString().trim() || undefined;
  } catch {
    // not on PATH
  }
  const built = join(tmpdir(), "meshauth-bench-step-ca", "step-ca");
  if (existsSync(built)) return built;
  const script = join(ROOT, "..", "shared", "peers", "build-step-ca.sh");
  if (!existsSync(script)) return undefined;
  console.log(`building step-ca with ${script} (once, about a minute)...`);
  try {
    execFileSync("bash", [script, built], { stdio: ["ignore", "ignore", "inherit"] });
    return built;
  } catch {
    return undefined;
  }
}

const base64url = (bytes: Uint8Array | string) => Buffer.from(bytes).toString("base64url");

/**
 * step-ca (`binary`) with a JWK provisioner, keeping nothing (`db: null`), over TLS (it serves
 * nothing else; the client keeps its connections, so a handshake is paid once per connection).
 * Each request carries a one-time token (an ES256 JWT with a fresh `jti`) minted before the
 * timed slice it is sent in, so the client's signing never competes with a server.
 */
export async function startStepCa(
  binary: string,
  dir: string,
  csrs: string[],
  spiffeId: string,
): Promise<Started> {
  const port = await freePort();
  await mkdir(join(dir, "step"), { recursive: true });
  const root = await CertificateAuthority.createRoot({ trustDomain: "step-bench.example" });
  const intermediate = await root.createIntermediate({ ttlSeconds: 30 * 86400 });
  const exported = await intermediate.exportPem();
  const rootPem = root.certificatePem;
  await writeFile(join(dir, "root.pem"), rootPem);
  await writeFile(join(dir, "intermediate.pem"), intermediate.certificatePem);
  await writeFile(join(dir, "intermediate.key"), exported.privateKeyPem, { mode: 0o600 });
  const provisioner = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = provisioner.publicKey.export({ format: "jwk" }) as {
    crv: string;
    kty: string;
    x: string;
    y: string;
  };
  // RFC 7638: the thumbprint over the required members, in lexicographic order.
  const thumbprint = base64url(
    new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        new TextEncoder().encode(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })),
      ),
    ),
  );
  await writeFile(
    join(dir, "ca.json"),
    JSON.stringify({
      root: join(dir, "root.pem"),
      crt: join(dir, "intermediate.pem"),
      key: join(dir, "intermediate.key"),
      address: `127.0.0.1:${port}`,
      dnsNames: ["127.0.0.1", "localhost"],
      db: null,
      logger: { format: "text" },
      authority: {
        claims: { minTLSCertDuration: "5m", maxTLSCertDuration: "24h", defaultTLSCertDuration: "1h" },
        provisioners: [{
          type: "JWK",
          name: "bench",
          key: { ...jwk, use: "sig", alg: "ES256", kid: thumbprint },
        }],
      },
      tls: { minVersion: 1.2, maxVersion: 1.3 },
    }),
  );
  const server = await startProcess(binary, [join(dir, "ca.json")], port, { STEPPATH: join(dir, "step") });
  const audience = `https://127.0.0.1:${port}/1.0/sign`;
  const header = base64url(JSON.stringify({ alg: "ES256", kid: thumbprint, typ: "JWT" }));
  const signingKey = createPrivateKey(provisioner.privateKey.export({ format: "pem", type: "pkcs8" }));
  const mint = (csr: string) => {
    const now = Math.floor(Date.now() / 1000);
    const claims = base64url(JSON.stringify({
      iss: "bench",
      aud: audience,
      sub: spiffeId,
      sans: [spiffeId],
      iat: now,
      nbf: now - 30,
      exp: now + 600,
      jti: randomBytes(16).toString("hex"),
    }));
    const signature = sign("sha256", Buffer.from(`${header}.${claims}`), {
      key: signingKey,
      dsaEncoding: "ieee-p1363",
    });
    return JSON.stringify({ csr, ott: `${header}.${claims}.${base64url(signature)}` });
  };
  let ready: string[] = [];
  let n = 0;
  return {
    server,
    target: {
      name: "step-ca 0.19 (JWK, TLS)",
      origin: `https://127.0.0.1:${port}`,
      path: "/1.0/sign",
      prepare: (count) => {
        // A token left over from a slice may have gone stale; mint them all afresh.
        ready = Array.from({ length: count }, () => mint(csrs[n++ % csrs.length]));
      },
      nextBody: () => ready.pop() ?? mint(csrs[n++ % csrs.length]),
      headers: { "content-type": "application/json" },
      expectStatus: 201,
      certificateOf: (body) => JSON.parse(body).crt,
      caPem: rootPem,
      pid: server.pid!,
    },
  };
}
