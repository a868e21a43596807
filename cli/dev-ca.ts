/**
 * `npm run ca`: a development CA with no configuration. On first run it makes a root for the
 * trust domain `meshauth.local` in `./.meshauth/`; every run it serves TLS on
 * https://localhost:8443 (127.0.0.1 only), creates a single-use join token for the demo
 * identity and prints how to obtain a certificate with curl. `MESHAUTH_*` variables override
 * the defaults (see `meshauth ca serve --help`); `npm run ca -- --config ca.yaml` starts from a
 * configuration file (to place workloads on nodes for `meshauth agent`, say).
 *
 * @module
 */

import cluster from "node:cluster";
import { createJoinToken } from "../ca-server/auth/join-token.ts";
import { loadConfig } from "../ca-server/config.ts";
import { jsonLogger } from "../internal/mod.ts";
import { parseFlags, reportCliError } from "./args.ts";
import { runCaServer } from "../ca-server/workers.ts";
import { checkListenAddress } from "../ca-server/http-listener.ts";
import { initRoot, openKeyManager, openStore, trustBundlePath } from "../ca-server/from-config.ts";

/** The shell commands that get a certificate for `spiffeId` with `token` from `url`, into files. */
export function demoInstructions(url: string, bundlePath: string, spiffeId: string, token: string): string {
  return [
    `# 1. a key (demo.key) and a CSR naming ${spiffeId}:`,
    `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout demo.key -out demo.csr \\`,
    `  -subj "/O=demo" -addext "subjectAltName=URI:${spiffeId}"`,
    `# 2. the certificate, with the single-use join token (valid 1 hour); the CA answers JSON:`,
    `curl -sS --fail-with-body --cacert ${bundlePath} -o demo.json \\`,
    `  -H "Authorization: Bearer ${token}" -H "Content-Type: application/json" \\`,
    `  --data "{\\"csr\\": \\"$(awk '{printf "%s\\\\n", $0}' demo.csr)\\"}" ${url}/v1/certificates`,
    `# 3. its certificate chain into demo.crt, beside demo.key, and a check against the trust bundle:`,
    `node -e 'const fs = require("fs"); fs.writeFileSync("demo.crt", JSON.parse(fs.readFileSync("demo.json", "utf8")).certificateChain.join(""))'`,
    `openssl verify -CAfile ${bundlePath} -untrusted demo.crt demo.crt`,
  ].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseFlags(process.argv.slice(2), {
    config: { type: "string" },
    help: { type: "boolean" },
  });
  if (values.help) {
    console.log(`usage: npm run ca [-- --config <file>]

A development CA: a root for meshauth.local in ./.meshauth on first run, TLS on https://127.0.0.1:8443.
  --config <file>   a CA configuration (docs/ca-server.md), e.g. with nodes: for meshauth agent`);
    return;
  }
  const config = await loadConfig({ path: values.config, env: process.env });
  const logger = jsonLogger({ level: config.log.level });
  if (cluster.isWorker) return await runCaServer(config, logger);

  // A port in use is said before a first run makes its root: a start that fails writes nothing.
  await checkListenAddress(config.listen.host, config.listen.port);
  const keyManager = openKeyManager(config);
  if ((await keyManager.list()).length === 0) {
    const record = await initRoot(config, keyManager);
    logger.info("created a development root CA", {
      trustDomain: config.trustDomain,
      authority: record.id,
      keys: config.keys.dir,
    });
  }
  // The join token is made once the CA listens: a start that fails (a port in use) writes nothing.
  await runCaServer(config, logger, async (url) => {
    const store = await openStore(config);
    const spiffeId = `spiffe://${config.trustDomain}/demo`;
    let token: string;
    try {
      ({ token } = await createJoinToken(store, { role: "workload", spiffeId, ttlSeconds: 3600 }));
    } finally {
      await store.close();
    }
    const bundlePath = trustBundlePath(config);
    console.log(`\nmeshauth development CA for ${config.trustDomain} at ${url} (state in ${config.dataDir})`);
    console.log(`root key and certificate: ${config.keys.dir}`);
    console.log(`trust bundle: ${bundlePath}  (also ${url}/v1/bundle.pem)\n`);
    console.log(demoInstructions(url, bundlePath, spiffeId, token));
    console.log("\nStop with Ctrl-C.\n");
  });
}

main().catch((err) => {
  process.exit(reportCliError(err));
});
