// The agent process of the soak (bench/soak.ts): a node agent holding three workloads'
// SVIDs (photo-frontend, photo-backend, datastore) and fronting them with its mTLS proxy, as
// `meshauth agent` will once its configuration starts the proxy. Listeners:
//   frontend-to-backend  (outbound, workload photo-frontend) -> backend-in
//   backend-in           (inbound, photo-backend's service: the soak's relay)
//   backend-to-datastore (outbound, workload photo-backend)   -> datastore-in
//   datastore-in         (inbound, datastore's service: the soak's echo)
// Its listeners' ports are written to --ports-file once it is ready.
//
//   node --import tsx bench/soak-agent.ts --ca-url URL --bundle FILE --token TOKEN --dir DIR
//        --ttl-seconds 60 --backend-service PORT --datastore-service PORT --ports-file FILE
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { SpiffeId } from "../mod.ts";
import {
  CaClient,
  type CredentialSource,
  MeshProxy,
  NodeAgent,
  StaticSource,
  type WorkloadSpec,
} from "../agent/mod.ts";
import { readProxyConfig } from "../agent/proxy/config.ts";
import { FieldReader, jsonLogger } from "../internal/mod.ts";
import { AgentCredentialSource } from "../tests/faults/mesh.ts";

const { values } = parseArgs({
  options: {
    "ca-url": { type: "string" },
    bundle: { type: "string" },
    token: { type: "string" },
    dir: { type: "string" },
    "trust-domain": { type: "string", default: "soak.test" },
    "ttl-seconds": { type: "string", default: "60" },
    "backend-service": { type: "string" },
    "datastore-service": { type: "string" },
    "ports-file": { type: "string" },
  },
});
const dir = values.dir!;
const td = values["trust-domain"]!;
const ids = {
  "photo-frontend": `spiffe://${td}/ns/photo-ns/sa/photo-frontend`,
  "photo-backend": `spiffe://${td}/ns/photo-ns/sa/photo-backend`,
  datastore: `spiffe://${td}/ns/datastore-ns/sa/datastore`,
};
const logger = jsonLogger({ level: "warn" });
const bundlePem = readFileSync(values.bundle!, "utf8");
const specs: WorkloadSpec[] = Object.entries(ids).map(([name, id]) => ({
  name,
  spiffeId: SpiffeId.parse(id),
  directory: join(dir, "pods", name),
  owner: {},
  keyFileMode: 0o600,
  keyAlgorithm: "ECDSA-P256",
  layout: "istio",
  ttlSeconds: Number(values["ttl-seconds"]),
  origin: { source: "static" },
}));
const agent = new NodeAgent({
  trustDomain: td,
  nodeName: "soak-node",
  bootstrapToken: () => values.token,
  client: new CaClient({ url: values["ca-url"]!, caCertificatesPem: bundlePem }),
  trustBundlePem: bundlePem,
  stateDir: join(dir, "state"),
  deliveryRoots: [join(dir, "pods")],
  sources: [new StaticSource(specs)],
  logger,
});
await agent.start();
await new Promise<void>((resolve) => {
  if (agent.readiness().isReady) return resolve();
  const unsubscribe = agent.subscribe((event) => {
    if (event.type === "ready") {
      unsubscribe();
      resolve();
    }
  });
});

await writeFile(
  join(dir, "backend-policy.yaml"),
  `policies:\n  - name: frontend-calls-backend\n    action: ALLOW\n    rules:\n      - from: [{ source: { principals: ["${
    ids["photo-frontend"]
  }"] } }]\n`,
);
await writeFile(
  join(dir, "datastore-policy.yaml"),
  `policies:\n  - name: backend-reads-datastore\n    action: ALLOW\n    rules:\n      - from: [{ source: { principals: ["${
    ids["photo-backend"]
  }"] } }]\n`,
);
const sources: Record<string, CredentialSource> = Object.fromEntries(
  Object.keys(ids).map((name) => [name, new AgentCredentialSource(agent, name)]),
);
const start = async (raw: Record<string, unknown>) => {
  const fields = new FieldReader(dir);
  const config = readProxyConfig(fields, { auditLog: join(dir, "proxy-audit.jsonl"), ...raw });
  if (fields.problems.length) throw new Error(fields.problems.join("\n"));
  const proxy = new MeshProxy({ config, sources, logger });
  await proxy.start();
  return proxy;
};
const inbound = await start({
  inbound: [
    {
      name: "backend-in",
      workload: "photo-backend",
      listen: "127.0.0.1:0",
      forward: `127.0.0.1:${values["backend-service"]}`,
      policies: ["backend-policy.yaml"],
    },
    {
      name: "datastore-in",
      workload: "datastore",
      listen: "127.0.0.1:0",
      forward: `127.0.0.1:${values["datastore-service"]}`,
      policies: ["datastore-policy.yaml"],
    },
  ],
});
const port = (proxy: MeshProxy, name: string) => (proxy.addresses()[name] as { port: number }).port;
const outbound = await start({
  outbound: [
    {
      name: "frontend-to-backend",
      service: "photo-backend",
      workload: "photo-frontend",
      listen: "127.0.0.1:0",
      upstream: `127.0.0.1:${port(inbound, "backend-in")}`,
      allowedIds: [ids["photo-backend"]],
    },
    {
      name: "backend-to-datastore",
      service: "datastore",
      workload: "photo-backend",
      listen: "127.0.0.1:0",
      upstream: `127.0.0.1:${port(inbound, "datastore-in")}`,
      allowedIds: [ids.datastore],
    },
  ],
});
await writeFile(
  values["ports-file"]!,
  JSON.stringify({
    "frontend-to-backend": port(outbound, "frontend-to-backend"),
    "backend-to-datastore": port(outbound, "backend-to-datastore"),
  }),
);
const stop = async () => {
  await outbound.stop();
  await inbound.stop();
  await agent.stop();
  process.exit(0);
};
process.once("SIGTERM", () => void stop());
process.once("SIGINT", () => void stop());
