/**
 * Where `npm start` puts everything, and the configuration it writes: the CA's `ca.yaml` in the
 * CA's own data directory, the agent's `agent.yaml` with its `proxy:` section, and the policy
 * files. They are ordinary files of the documented formats, left in `.meshauth/mesh/` to read.
 *
 * The seed's application: photo-frontend and photo-backend, run by the photo team's service
 * accounts in photo-ns, and datastore, run by the datastore team's in datastore-ns. Policies
 * allow frontend -> backend and backend -> datastore, and deny the frontend at the datastore.
 *
 * @module
 */

import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join, relative } from "node:path";

export const TRUST_DOMAIN = "cluster.local";
export const NODE = "node-1";

/** The three workloads: name, namespace and service account. */
export const WORKLOADS = [
  { name: "photo-frontend", namespace: "photo-ns" },
  { name: "photo-backend", namespace: "photo-ns" },
  { name: "datastore", namespace: "datastore-ns" },
] as const;

export type WorkloadName = (typeof WORKLOADS)[number]["name"];

export function spiffeIdOf(name: WorkloadName): string {
  const workload = WORKLOADS.find((w) => w.name === name)!;
  return `spiffe://${TRUST_DOMAIN}/ns/${workload.namespace}/sa/${workload.name}`;
}

/** Every port the mesh uses, by role. */
export interface MeshPorts {
  /** The agent's status port: the status page, /metrics, /readyz. */
  status: number;
  ca: number;
  /** Inbound (mutual TLS) listeners, one per workload. */
  inbound: Record<WorkloadName, number>;
  /** Plain-text outbound listeners: the local port a workload calls another service on. */
  frontendToBackend: number;
  frontendToDatastore: number;
  backendToDatastore: number;
  /** photo-frontend's route to photo-backend that leads to the impostor. */
  spoofedBackend: number;
  impostor: number;
}

/** The default base port; `MESHAUTH_MESH_PORT` moves the block, 0 takes free ports. */
export const DEFAULT_BASE_PORT = 15000;

/** The ports from a base: fixed offsets from `base`, or free ports when `base` is 0. */
export async function meshPorts(base: number): Promise<MeshPorts> {
  const at = base === 0 ? await freePorts(10) : [0, 1, 10, 11, 12, 21, 22, 23, 29, 30].map((o) => base + o);
  return {
    status: at[0],
    ca: at[1],
    inbound: { "photo-frontend": at[2], "photo-backend": at[3], datastore: at[4] },
    frontendToBackend: at[5],
    frontendToDatastore: at[6],
    backendToDatastore: at[7],
    spoofedBackend: at[8],
    impostor: at[9],
  };
}

/**
 * Free ports on 127.0.0.1, each held until all are found so none repeats. The outbound
 * listeners name the inbound ones' ports in the configuration, so they must be known first.
 */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve(server));
      })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** Paths of one mesh. */
export interface MeshLayout {
  root: string;
  caDir: string;
  caConfig: string;
  nodeDir: string;
  agentConfig: string;
  joinTokenFile: string;
  auditLog: string;
  agentLog: string;
  caLog: string;
  policiesDir: string;
  workloadsDir: string;
  /** A private directory (0700) for the services' Unix sockets. */
  socketsDir: string;
  ports: MeshPorts;
  workloadDir(name: WorkloadName): string;
  socketOf(name: WorkloadName): string;
  /** A path as the reader would type it from where npm start ran. */
  shown(path: string): string;
}

export function meshLayout(root: string, socketsDir: string, ports: MeshPorts): MeshLayout {
  const caDir = join(root, "ca");
  const nodeDir = join(root, NODE);
  return {
    root,
    caDir,
    caConfig: join(caDir, "ca.yaml"),
    nodeDir,
    agentConfig: join(nodeDir, "agent.yaml"),
    joinTokenFile: join(nodeDir, "join.token"),
    auditLog: join(nodeDir, "proxy-audit.jsonl"),
    agentLog: join(nodeDir, "agent.log"),
    caLog: join(caDir, "ca.log"),
    policiesDir: join(root, "policies"),
    workloadsDir: join(root, "workloads"),
    socketsDir,
    ports,
    workloadDir: (name) => join(root, "workloads", name),
    socketOf: (name) => join(socketsDir, `${name}.sock`),
    shown: (path) => {
      const rel = relative(process.cwd(), path);
      return rel.startsWith("..") ? path : rel;
    },
  };
}

/** The CA's configuration: its own data directory, the node and what it may hold. */
export function caYaml(layout: MeshLayout): string {
  return `# The mesh's CA, as npm start runs it (meshauth ca serve --config ${layout.shown(layout.caConfig)}).
# Its data directory is its own (keys, store, bundle.pem): on Kubernetes it stands alone in the
# meshauth-system namespace, where only cluster administrators reach it.
trustDomain: ${TRUST_DOMAIN}
dataDir: .
listen: { host: 127.0.0.1, port: ${layout.ports.ca} }
nodes:
  ${NODE}:
    workloads:
${WORKLOADS.map((w) => `      - ${spiffeIdOf(w.name)}`).join("\n")}
# Short-lived certificates, so the status page's bars move and renewals happen while you watch;
# an old root leaves the bundle an hour after its successor signs.
issuance: { defaultTtlSeconds: 300, maxTtlSeconds: 3600 }
# One agent polls its bundle and CRLs every second here (see agent.yaml): more than the default
# per-address rate (5 a second) allows once issuances come on top.
rateLimit: { requestsPerSecond: 50, burst: 200 }
log: { level: info }
`;
}

/** The agent's configuration, with the proxy in front of the three services. */
export function agentYaml(layout: MeshLayout): string {
  const p = layout.ports;
  const rel = (path: string) => relative(layout.nodeDir, path);
  const policy = (name: WorkloadName) => rel(join(layout.policiesDir, `${name}.yaml`));
  return `# ${NODE}'s agent, as npm start runs it (meshauth agent --config ${layout.shown(layout.agentConfig)}
# would run the same). Relative paths are relative to this file.
trustDomain: ${TRUST_DOMAIN}
ca:
  url: https://127.0.0.1:${p.ca}
  trustBundleFile: ${rel(join(layout.caDir, "bundle.pem"))}
node:
  name: ${NODE}
  joinTokenFile: join.token
stateDir: state
# Workload directories must lie inside a delivery root (the default is /var/run/meshauth).
delivery:
  roots: [${rel(layout.workloadsDir)}]
# The bundle and the CRLs are fetched every second (the default follows the CA's caching hint,
# 5 s to 5 min), so a revocation or a new root is seen within a second.
refresh: { minSeconds: 1, maxSeconds: 1 }
listen: { host: 127.0.0.1, port: ${p.status}, statusPage: true }
workloads:
${
    WORKLOADS.map((w) =>
      `  - { name: ${w.name}, spiffeId: "${spiffeIdOf(w.name)}", directory: ${
        rel(layout.workloadDir(w.name))
      } }`
    ).join("\n")
  }
proxy:
  auditLog: proxy-audit.jsonl
  inbound:
${
    WORKLOADS.map((w) =>
      `    - name: ${w.name}
      workload: ${w.name}
      listen: 127.0.0.1:${p.inbound[w.name]}
      forward: unix:${layout.socketOf(w.name)}
      protocol: http
      policies: [${policy(w.name)}]`
    ).join("\n")
  }
  outbound:
    - name: frontend-to-backend
      service: photo-backend
      workload: photo-frontend
      listen: 127.0.0.1:${p.frontendToBackend}
      upstream: 127.0.0.1:${p.inbound["photo-backend"]}
      allowedIds: ["${spiffeIdOf("photo-backend")}"]
    - name: frontend-to-datastore
      service: datastore
      workload: photo-frontend
      listen: 127.0.0.1:${p.frontendToDatastore}
      upstream: 127.0.0.1:${p.inbound.datastore}
      allowedIds: ["${spiffeIdOf("datastore")}"]
    - name: backend-to-datastore
      service: datastore
      workload: photo-backend
      listen: 127.0.0.1:${p.backendToDatastore}
      upstream: 127.0.0.1:${p.inbound.datastore}
      allowedIds: ["${spiffeIdOf("datastore")}"]
    # The story's impostor: a route for photo-backend that leads somewhere else (a spoofed
    # address), where a server answers with the datastore's valid SVID. Secure naming refuses it.
    - name: frontend-to-backend-spoofed
      service: photo-backend
      workload: photo-frontend
      listen: 127.0.0.1:${p.spoofedBackend}
      upstream: 127.0.0.1:${p.impostor}
      allowedIds: ["${spiffeIdOf("photo-backend")}"]
`;
}

/** The policies at each inbound listener. */
export function policyFiles(): Record<WorkloadName, string> {
  return {
    "photo-frontend": `# photo-frontend's inbound proxy: any workload of the mesh may open the frontend.
policies:
  - name: mesh-workloads-open-the-frontend
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["spiffe://${TRUST_DOMAIN}/*"] } }]
`,
    "photo-backend": `# photo-backend's inbound proxy: the frontend reads and adds photos, nothing else.
policies:
  - name: frontend-reads-photos
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${spiffeIdOf("photo-frontend")}"] } }]
        to: [{ operation: { methods: [GET, POST], paths: ["/photos", "/photos/*"] } }]
`,
    datastore: `# The datastore's inbound proxy: only photo-backend; photo-frontend is refused outright.
policies:
  - name: backend-uses-datastore
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${spiffeIdOf("photo-backend")}"] } }]
  - name: never-the-frontend
    action: DENY
    rules:
      - from: [{ source: { principals: ["${spiffeIdOf("photo-frontend")}"] } }]
`,
  };
}

/** Writes the configuration files (the directories first: the CA's and the node's 0700, the rest 0755). */
export async function writeMeshFiles(layout: MeshLayout): Promise<void> {
  await mkdir(layout.caDir, { recursive: true, mode: 0o700 });
  await mkdir(layout.nodeDir, { recursive: true, mode: 0o700 });
  // Explicit modes: under a umask of 002 the defaults would be group-writable, and the agent
  // refuses a delivery root that its group or others can write to.
  await mkdir(layout.policiesDir, { recursive: true, mode: 0o755 });
  await mkdir(layout.workloadsDir, { recursive: true, mode: 0o755 });
  await writeFile(layout.caConfig, caYaml(layout));
  await writeFile(layout.agentConfig, agentYaml(layout));
  for (const [name, text] of Object.entries(policyFiles())) {
    await writeFile(join(layout.policiesDir, `${name}.yaml`), text);
  }
}
