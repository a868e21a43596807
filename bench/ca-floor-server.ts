// bench/ca-floor-server.ts: the least work any CA server on this runtime must do per
// certificate, as an HTTP server for bench/ca to load like the real ones. Each request's JSON
// body is parsed, then node:crypto imports a P-256 public key, verifies a signature and makes
// one, and a fixed JSON answer of the real one's size goes back. It parses no CSR, builds no
// certificate, authenticates no one and records nothing, so no CA on this runtime and machine
// can be faster: it bounds what a target can ask of one.
//
//   node bench/ca-floor-server.ts --port 18100 --workers 2      (also: bun bench/ca-floor-server.ts)
//
// On Node it serves with node:http; on Bun with Bun.serve. Several workers share the port
// through node:cluster, as `meshauth ca serve` does.
import cluster from "node:cluster";
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from "node:crypto";
import { createServer } from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "18100" },
    workers: { type: "string", default: "1" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log("usage: node bench/ca-floor-server.ts [--port 18100] [--workers 1]");
  process.exit(0);
}
const PORT = Number(values.port);
const WORKERS = Number(values.workers);
const MAX_BODY = 64 * 1024;

if (WORKERS > 1 && cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  process.once("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill("SIGTERM");
    process.exit(0);
  });
} else {
  // Distinct keys, imported fresh per request as a CA must import each CSR's key.
  const caKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  const keys = Array.from({ length: 16 }, () => generateKeyPairSync("ec", { namedCurve: "P-256" }));
  const pems = keys.map((k) => k.publicKey.export({ type: "spki", format: "pem" }) as string);
  const signed = randomBytes(300);
  const signatures = keys.map((k) => sign("sha256", signed, k.privateKey));
  const tbs = randomBytes(450);
  const answer = JSON.stringify({
    spiffeId: "spiffe://bench.example/ns/bench/sa/client",
    serialNumber: "ab".repeat(16),
    expiresAt: new Date().toISOString(),
    certificateChain: ["x".repeat(940), "y".repeat(700)],
    trustBundle: "y".repeat(700),
  });
  let n = 0;
  const work = (body: string): boolean => {
    let parsed: { csr?: unknown };
    try {
      parsed = JSON.parse(body);
    } catch {
      return false;
    }
    if (typeof parsed?.csr !== "string") return false;
    const i = n++ % keys.length;
    if (!verify("sha256", signed, createPublicKey(pems[i]), signatures[i])) return false;
    sign("sha256", tbs, caKey);
    return true;
  };
  const bun = (globalThis as { Bun?: { serve(options: unknown): { stop(force: boolean): void } } }).Bun;
  if (bun) {
    const server = bun.serve({
      port: PORT,
      hostname: "127.0.0.1",
      reusePort: true,
      maxRequestBodySize: MAX_BODY,
      async fetch(request: Request) {
        const ok = work(await request.text());
        return new Response(ok ? answer : "{}", {
          status: ok ? 201 : 400,
          headers: { "content-type": "application/json" },
        });
      },
    });
    process.once("SIGTERM", () => {
      server.stop(true);
      process.exit(0);
    });
  } else {
    const server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      request.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) request.destroy();
        else chunks.push(chunk);
      });
      request.on("end", () => {
        const ok = work(Buffer.concat(chunks).toString("utf8"));
        response.writeHead(ok ? 201 : 400, { "content-type": "application/json" }).end(ok ? answer : "{}");
      });
    });
    server.requestTimeout = 15_000;
    server.listen(PORT, "127.0.0.1");
    process.once("SIGTERM", () => server.close(() => process.exit(0)));
  }
}
