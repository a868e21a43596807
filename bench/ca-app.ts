// bench/ca-app.ts: the CA's own cost per issuance, without sockets: the Hono app of a CA with a
// file store, join-token authentication and the rate limit on, called in this process with
// `app.request` at a fixed concurrency, as `createCaApp` serves it. It prints the CPU time per
// certificate (this process's: the thread pool's fdatasync included), which other load on the
// machine disturbs far less than a rate, for the durable store and without fsync. What the CA
// adds to its crypto is what this costs beyond the floor server's crypto (bench/ca.ts), which
// it measures last, the same way.
//
//   node --import tsx bench/ca-app.ts [--count 20000 --concurrency 8]     (also: bun bench/ca-app.ts)
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCsr, generateKeyPair } from "../mod.ts";
import { createCaApp, createJoinToken, loadConfig } from "../ca-server/mod.ts";
import {
  buildAuthenticators,
  initRoot,
  loadAuthorities,
  openKeyManager,
  openStore,
} from "../ca-server/from-config.ts";

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "8" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log("usage: node --import tsx bench/ca-app.ts [--count 20000 --concurrency 8]");
  process.exit(0);
}
const COUNT = Number(values.count);
const CONCURRENCY = Number(values.concurrency);
const ID = "spiffe://bench.example/ns/bench/sa/client";

async function measure(fsync: boolean, csrs: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "meshauth-bench-ca-app-"));
  try {
    await writeFile(
      join(dir, "ca.json"),
      JSON.stringify({
        trustDomain: "bench.example",
        dataDir: join(dir, "data"),
        store: { kind: "file", fsync },
        rateLimit: { requestsPerSecond: 100_000, burst: 10_000 },
      }),
    );
    const config = await loadConfig({ path: join(dir, "ca.json"), env: {} });
    const keys = openKeyManager(config);
    await initRoot(config, keys);
    const store = await openStore(config);
    try {
      const authorities = await loadAuthorities(config, keys);
      const { token } = await createJoinToken(store, {
        role: "workload",
        spiffeId: ID,
        ttlSeconds: 3600,
        isSingleUse: false,
      });
      const app = createCaApp({
        authorities,
        store,
        authenticators: await buildAuthenticators(config, store, authorities),
        rateLimit: config.rateLimit,
        clientAddress: () => "127.0.0.1",
      });
      const headers = { "content-type": "application/json", authorization: `Bearer ${token}` };
      const bodies = csrs.map((csr) => JSON.stringify({ csr }));
      let n = 0;
      const run = async (count: number) => {
        let started = 0;
        await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
          while (started++ < count) {
            const response = await app.request("/v1/certificates", {
              method: "POST",
              headers,
              body: bodies[n++ % bodies.length],
            });
            const text = await response.text();
            if (response.status !== 201) throw new Error(`status ${response.status}: ${text}`);
          }
        }));
      };
      await run(Math.min(3000, COUNT));
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      await run(COUNT);
      const cpu = process.cpuUsage(cpuBefore);
      const seconds = (performance.now() - started) / 1000;
      return `fsync ${fsync ? "on " : "off"}: ${
        ((cpu.user + cpu.system) / COUNT).toFixed(1)
      } µs CPU per certificate ` +
        `(${(cpu.system / COUNT).toFixed(1)} in the kernel), ${(COUNT / seconds).toFixed(0)}/s`;
    } finally {
      await store.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The floor server's work per certificate without its HTTP: import a key from PEM, verify, sign. */
function measureCrypto(): string {
  const caKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  const keys = Array.from({ length: 16 }, () => generateKeyPairSync("ec", { namedCurve: "P-256" }));
  const pems = keys.map((k) => k.publicKey.export({ type: "spki", format: "pem" }) as string);
  const signed = randomBytes(300);
  const signatures = keys.map((k) => sign("sha256", signed, k.privateKey));
  const tbs = randomBytes(450);
  const once = (i: number) => {
    if (!verify("sha256", signed, createPublicKey(pems[i % 16]), signatures[i % 16])) {
      throw new Error("verify");
    }
    sign("sha256", tbs, caKey);
  };
  for (let i = 0; i < 2000; i++) once(i);
  const cpuBefore = process.cpuUsage();
  for (let i = 0; i < COUNT; i++) once(i);
  const cpu = process.cpuUsage(cpuBefore);
  return `the floor's crypto alone: ${((cpu.user + cpu.system) / COUNT).toFixed(1)} µs CPU per certificate`;
}

const runtime = "Bun" in globalThis
  ? `Bun ${(globalThis as { Bun?: { version: string } }).Bun!.version}`
  : `Node ${process.versions.node}`;
console.log(`bench/ca-app on ${runtime}: ${COUNT} issuances at concurrency ${CONCURRENCY}, in this process`);
const csrs = await Promise.all(
  Array.from({ length: 256 }, async () => createCsr({ keys: await generateKeyPair(), id: ID })),
);
for (const fsync of [true, false]) console.log(await measure(fsync, csrs));
console.log(measureCrypto());
process.exit(0);
