// Test helpers for the node agent: a real CA server on 127.0.0.1 (in this process, so a test
// can stop it, start it again on the same port, and reload its authorities at once), node join
// tokens, and checks that a workload's delivered key matches its certificate.
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CaConfig,
  createJoinToken,
  initRoot,
  loadConfig,
  openKeyManager,
  type RunningCaServer,
  silentLogger,
  startCaServer,
} from "../../ca-server/mod.ts";
import { type Logger, type LogLevel } from "../../internal/mod.ts";

export const TRUST_DOMAIN = "agent.test";

/** A temporary directory, removed by `remove`. */
export async function tempDir(
  prefix = "meshauth-agent-",
): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** A CA in this process with its data in `dir`, and what a test does with it. */
export interface TestCa {
  dir: string;
  configPath: string;
  config: CaConfig;
  server: RunningCaServer;
  url: string;
  port: number;
  /** The trust bundle file a client starts from. */
  bundlePath: string;
  bundlePem: string;
  /** A node join token (single-use unless asked). */
  nodeToken(node: string, options?: { isSingleUse?: boolean }): Promise<string>;
  /** Stops the server (the data stays). */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops it and removes its data. */
  remove(): Promise<void>;
}

/** Starts a CA whose `nodes:` table is `nodes`, on a free port of 127.0.0.1. */
export async function startTestCa(
  nodes: Record<string, string[]>,
  extra: Record<string, unknown> = {},
): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), "meshauth-agent-ca-"));
  const configPath = join(dir, "ca.json");
  const raw = {
    trustDomain: TRUST_DOMAIN,
    dataDir: join(dir, "data"),
    listen: { host: "127.0.0.1", port: 0 },
    nodes: Object.fromEntries(Object.entries(nodes).map(([n, workloads]) => [n, { workloads }])),
    // A node renews all of its workloads under its one identity: the default per-identity
    // limit (5/s) would make these tests wait on it.
    rateLimit: false,
    ...extra,
  };
  await writeFile(configPath, JSON.stringify(raw, null, 2));
  let config = await loadConfig({ path: configPath });
  await initRoot(config, openKeyManager(config));
  let server = await startCaServer(config, { logger: silentLogger });
  const bundlePath = join(dir, "bundle.pem");
  const bundlePem = server.authorities.bundlePem();
  await writeFile(bundlePath, bundlePem);
  const ca: TestCa = {
    dir,
    configPath,
    config,
    server,
    url: server.url,
    port: server.port,
    bundlePath,
    bundlePem,
    async nodeToken(node, options = {}) {
      return (await createJoinToken(ca.server.store, {
        role: "node",
        node,
        ttlSeconds: 600,
        isSingleUse: options.isSingleUse ?? true,
      })).token;
    },
    async stop() {
      await ca.server.close();
    },
    async start() {
      config = await loadConfig({ path: configPath, overrides: { "listen.port": ca.port } });
      server = await startCaServer(config, { logger: silentLogger });
      ca.server = server;
      ca.config = config;
    },
    async remove() {
      await ca.server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return ca;
}

/** A logger that keeps every entry, for assertions (and prints them when MESHAUTH_TEST_LOG is set). */
export function recordingLogger(): Logger & { entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const at = (level: LogLevel) => (msg: string, fields: Record<string, unknown> = {}) => {
    const entry = { level, msg, ...fields };
    entries.push(entry);
    if (process.env.MESHAUTH_TEST_LOG) console.log(JSON.stringify(entry));
  };
  return { entries, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** Waits until `condition` holds (polling), failing with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The SPKI (DER) of a private key PEM and of a certificate PEM's first certificate. */
export function spkiOfKey(privateKeyPem: string): Buffer {
  return createPublicKey(createPrivateKey(privateKeyPem)).export({ type: "spki", format: "der" });
}

export function spkiOfCertificate(certificatePem: string): Buffer {
  return new X509Certificate(certificatePem).publicKey.export({ type: "spki", format: "der" });
}

/** True when the key and the first certificate of `chainPem` belong together. */
export function keyMatches(privateKeyPem: string, chainPem: string): boolean {
  return spkiOfKey(privateKeyPem).equals(spkiOfCertificate(chainPem));
}

/**
 * Reads a workload directory as a Kubernetes client does: resolve `..data` once, then read the
 * key and the chain of that one generation.
 */
export async function readOneGeneration(
  directory: string,
  names = { chain: "cert-chain.pem", key: "key.pem", bundle: "root-cert.pem" },
): Promise<{ generation: string; chainPem: string; keyPem: string; bundlePem: string }> {
  const generation = await readlink(join(directory, "..data"));
  const [chainPem, keyPem, bundlePem] = await Promise.all([
    readFile(join(directory, generation, names.chain), "utf8"),
    readFile(join(directory, generation, names.key), "utf8"),
    readFile(join(directory, generation, names.bundle), "utf8"),
  ]);
  return { generation, chainPem, keyPem, bundlePem };
}

/** The serial number (lowercase hex) of the first certificate of a PEM chain. */
export function serialOf(chainPem: string): string {
  return new X509Certificate(chainPem).serialNumber.toLowerCase().replace(/^0+(?=.)/, "");
}
