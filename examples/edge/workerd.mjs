#!/usr/bin/env node
// Runs the edge example's Worker (worker.ts) in workerd, as Cloudflare would, on a laptop:
// bundles it with esbuild, writes a workerd config beside the bundle, and serves it on
// 127.0.0.1:$PORT (default 8787) with Node compatibility off. The CA is reached through a
// service binding named `CA`, pointed at the host of MESHAUTH_BUNDLE_URL; for an https CA,
// MESHAUTH_CA_CERTS names the PEM file that verifies it (for `npm run ca`'s CA,
// .meshauth/bundle.pem).
//
//   MESHAUTH_TRUST_DOMAIN=meshauth.local MESHAUTH_BUNDLE_URL=https://127.0.0.1:8443/v1/bundle \
//   MESHAUTH_CA_CERTS=.meshauth/bundle.pem node examples/edge/workerd.mjs
//
// workerd comes from $WORKERD, from the runtimes `npm test` installs, or from the PATH.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const trustDomain = env.MESHAUTH_TRUST_DOMAIN;
const bundleUrl = env.MESHAUTH_BUNDLE_URL;
if (!trustDomain || !bundleUrl) {
  console.error("set MESHAUTH_TRUST_DOMAIN and MESHAUTH_BUNDLE_URL (see examples/edge/README.md)");
  process.exit(2);
}
const port = Number(env.PORT ?? 8787);
const ca = new URL(bundleUrl);
const caAddress = `${ca.hostname.replace(/^\[|\]$/g, "")}:${
  ca.port || (ca.protocol === "https:" ? 443 : 80)
}`;
const trusted = env.MESHAUTH_CA_CERTS ? readFileSync(env.MESHAUTH_CA_CERTS, "utf8") : undefined;

const workDir = mkdtempSync(join(tmpdir(), "meshauth-edge-workerd-"));
await esbuild.build({
  entryPoints: [join(here, "worker.ts")],
  outfile: join(workDir, "worker.js"),
  bundle: true,
  format: "esm",
  platform: "neutral",
  conditions: ["workerd", "worker", "browser"],
  mainFields: ["module", "main"],
  logLevel: "warning",
});
const caService = ca.protocol === "https:"
  ? `https = (tlsOptions = (trustBrowserCas = ${trusted ? "false" : "true"}${
    trusted ? `, trustedCertificates = [${JSON.stringify(trusted)}]` : ""
  }), certificateHost = ${JSON.stringify(ca.hostname.replace(/^\[|\]$/g, ""))})`
  : "http = ()";
writeFileSync(
  join(workDir, "edge.capnp"),
  `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "ca", external = (address = ${JSON.stringify(caAddress)}, ${caService})),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "edge") ],
);
const edge :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "2026-11-01",
  compatibilityFlags = ["no_nodejs_compat", "no_nodejs_compat_v2"],
  bindings = [
    (name = "MESHAUTH_TRUST_DOMAIN", text = ${JSON.stringify(trustDomain)}),
    (name = "MESHAUTH_BUNDLE_URL", text = ${JSON.stringify(bundleUrl)}),
    ${
    env.MESHAUTH_POLICIES
      ? `(name = "MESHAUTH_POLICIES", text = ${JSON.stringify(env.MESHAUTH_POLICIES)}),`
      : ""
  }
    (name = "CA", service = "ca"),
  ],
);
`,
);

const installed = join(here, "../../tests/runtimes/node_modules/.bin/workerd");
const workerd = env.WORKERD ?? (existsSync(installed) ? installed : "workerd");
console.log(`edge app (workerd) on http://127.0.0.1:${port}, CA at ${caAddress}`);
const child = spawn(workerd, ["serve", join(workDir, "edge.capnp")], { stdio: "inherit" });
const stop = () => child.kill("SIGTERM");
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
child.on("error", (err) => {
  console.error(`cannot run workerd (${workerd}): ${err.message}; set WORKERD to its path`);
  process.exitCode = 1;
});
child.on("exit", (code) => {
  rmSync(workDir, { recursive: true, force: true });
  process.exit(code ?? 0);
});
