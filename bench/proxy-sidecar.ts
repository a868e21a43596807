// bench/proxy-sidecar.ts: one meshauth proxy process for bench/proxy.ts, standing in for an
// agent that runs only its proxy: `node --import tsx bench/proxy-sidecar.ts <config.json>`.
// The JSON holds the proxy: section and, per workload, the PEM files of its SVID, key and trust
// bundle (read once: nothing rotates during a bench). Prints one `{"msg":"ready",...}` line
// with the listeners' addresses once it listens.
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { TrustBundle } from "../mod.ts";
import { FieldReader } from "../internal/mod.ts";
import { type CredentialSource, MeshProxy, type SvidCredential } from "../agent/mod.ts";
import { readProxyConfig } from "../agent/proxy/config.ts";

interface SidecarConfig {
  trustDomain: string;
  proxy: Record<string, unknown>;
  workloads: Record<string, { cert: string; key: string; bundle: string }>;
}

/** A workload's credentials from files, read once. */
class FileSource extends EventEmitter implements CredentialSource {
  readonly #credential: SvidCredential;
  readonly #bundle: TrustBundle;
  constructor(trustDomain: string, files: { cert: string; key: string; bundle: string }) {
    super();
    this.#credential = {
      certificateChainPem: readFileSync(files.cert, "utf8"),
      privateKeyPem: readFileSync(files.key, "utf8"),
    };
    this.#bundle = TrustBundle.fromPem(trustDomain, readFileSync(files.bundle, "utf8"));
  }
  current() {
    return this.#credential;
  }
  trustBundle() {
    return this.#bundle;
  }
  crls() {
    return [];
  }
}

const config = JSON.parse(readFileSync(process.argv[2], "utf8")) as SidecarConfig;
const fields = new FieldReader(process.cwd());
const proxyConfig = readProxyConfig(fields, config.proxy);
if (fields.problems.length) {
  console.error(fields.problems.join("\n"));
  process.exit(2);
}
const sources = Object.fromEntries(
  Object.entries(config.workloads).map(([name, files]) => [name, new FileSource(config.trustDomain, files)]),
);
const proxy = new MeshProxy({ config: proxyConfig, sources });
await proxy.start();
console.log(JSON.stringify({ msg: "ready", addresses: proxy.addresses(), pid: process.pid }));
const stop = () => void proxy.stop().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
