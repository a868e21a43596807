// Two nodes of a mesh in this process, as the rotation test and the soak use them: a node
// agent per node (real CA over TLS, files in temporary directories), each fronting its
// workloads with the mTLS proxy fed from the agent's SVIDs, bundle and CRLs (the adapter the
// proxy's documentation shows), a TCP echo service behind node B's inbound listener, and
// node A's outbound listener standing for it. Requests go client -> outbound (A) -> mutual
// TLS -> inbound (B) -> echo, each on a connection of its own.
import { EventEmitter } from "node:events";
import { writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { SpiffeId } from "../../mod.ts";
import {
  CaClient,
  type CredentialSource,
  MeshProxy,
  NodeAgent,
  StaticSource,
  type SvidCredential,
  type WorkloadSpec,
} from "../../agent/mod.ts";
import { FieldReader, jsonLogger, type Logger, silentLogger } from "../../internal/mod.ts";
import { readProxyConfig } from "../../agent/proxy/config.ts";
import { echoServer } from "../agent/proxy-support.ts";

/** A workload's credentials for the proxy, from the node agent that holds them. */
export class AgentCredentialSource extends EventEmitter implements CredentialSource {
  readonly #unsubscribe: () => void;

  constructor(readonly agent: NodeAgent, readonly workload: string) {
    super();
    this.setMaxListeners(50);
    this.#unsubscribe = agent.subscribe((event) => {
      if (
        event.type === "bundle" || event.type === "crl" ||
        (event.type === "svid" && event.workload === workload)
      ) {
        this.emit("change");
      }
    });
  }

  current(): SvidCredential | undefined {
    return this.agent.svid(this.workload);
  }

  trustBundle() {
    return this.agent.trustBundle();
  }

  crls() {
    return [...this.agent.crls().values()];
  }

  close(): void {
    this.#unsubscribe();
  }
}

/** What the mesh needs of a CA. */
export interface MeshCa {
  url: string;
  bundlePem: string;
  trustDomain: string;
  nodeToken(node: string): Promise<string>;
}

export interface TwoNodeMesh {
  agents: { a: NodeAgent; b: NodeAgent };
  /** Workload name to SPIFFE ID, on both nodes. */
  workloads: { a: string[]; b: string[] };
  /** node A's outbound listener for the backend. */
  outboundPort: number;
  proxies: { a: MeshProxy; b: MeshProxy };
  stop(): Promise<void>;
}

/**
 * Starts node A (workload `frontend` and `extraWorkloads` more) and node B (`backend` and as
 * many more) against `ca`, their proxies and the echo service; resolves once both are ready.
 */
export async function startTwoNodeMesh(ca: MeshCa, dir: string, options: {
  ttlSeconds: number;
  nodeTtlSeconds?: number;
  extraWorkloads?: number;
  logger?: Logger;
}): Promise<TwoNodeMesh> {
  const idOf = (name: string) => SpiffeId.parse(`spiffe://${ca.trustDomain}/mesh/${name}`);
  const names = {
    a: ["frontend", ...Array.from({ length: options.extraWorkloads ?? 0 }, (_, i) => `a-batch-${i}`)],
    b: ["backend", ...Array.from({ length: options.extraWorkloads ?? 0 }, (_, i) => `b-batch-${i}`)],
  };
  const spec = (node: string, name: string): WorkloadSpec => ({
    name,
    spiffeId: idOf(name),
    directory: join(dir, node, "pods", name),
    owner: {},
    keyFileMode: 0o600,
    keyAlgorithm: "ECDSA-P256",
    layout: "istio",
    ttlSeconds: options.ttlSeconds,
    origin: { source: "static" },
  });
  const agentOf = async (node: "a" | "b") => {
    const token = await ca.nodeToken(`node-${node}`);
    return new NodeAgent({
      trustDomain: ca.trustDomain,
      nodeName: `node-${node}`,
      bootstrapToken: () => token,
      client: new CaClient({ url: ca.url, caCertificatesPem: ca.bundlePem, timeoutMs: 5000 }),
      trustBundlePem: ca.bundlePem,
      stateDir: join(dir, node, "state"),
      deliveryRoots: [join(dir, node, "pods")],
      sources: [new StaticSource(names[node].map((name) => spec(node, name)))],
      nodeTtlSeconds: options.nodeTtlSeconds,
      backoff: { initialMs: 200, maxMs: 1000 },
      minRefreshSeconds: 1,
      maxRefreshSeconds: 1,
      // MESHAUTH_TEST_MESH_LOG=1 shows the agents' log lines while debugging.
      logger: options.logger ??
        (process.env.MESHAUTH_TEST_MESH_LOG ? jsonLogger({ level: "debug" }) : silentLogger),
      keepAlive: false,
    });
  };
  const a = await agentOf("a");
  const b = await agentOf("b");
  await Promise.all([a.start(), b.start()]);
  // Every workload holds its SVID before traffic starts: the proxies begin with credentials.
  await Promise.all(
    [a, b].map((agent) =>
      agent.readiness().isReady ? undefined : new Promise<void>((resolve) => {
        const unsubscribe = agent.subscribe((event) => {
          if (event.type === "ready") {
            unsubscribe();
            resolve();
          }
        });
      })
    ),
  );
  const echo = await echoServer();
  const sources = {
    a: new AgentCredentialSource(a, "frontend"),
    b: new AgentCredentialSource(b, "backend"),
  };
  await writeFile(
    join(dir, "backend-policy.yaml"),
    `policies:
  - name: frontend-calls-backend
    action: ALLOW
    rules:
      - from: [{ source: { principals: ["${idOf("frontend")}"] } }]
`,
  );
  const proxyOf = async (raw: Record<string, unknown>, source: Record<string, CredentialSource>) => {
    const fields = new FieldReader(dir);
    const config = readProxyConfig(fields, {
      auditLog: join(dir, `audit-${Object.keys(source)[0]}.jsonl`),
      ...raw,
    });
    if (fields.problems.length) throw new Error(`bad proxy config:\n${fields.problems.join("\n")}`);
    // MESHAUTH_TEST_PROXY_LOG=1 shows the proxies' log lines while debugging.
    const logger = process.env.MESHAUTH_TEST_PROXY_LOG ? jsonLogger({ level: "debug" }) : silentLogger;
    const proxy = new MeshProxy({ config, sources: source, logger: options.logger ?? logger });
    await proxy.start();
    return proxy;
  };
  const proxyB = await proxyOf({
    inbound: [{
      name: "backend-in",
      workload: "backend",
      listen: "127.0.0.1:0",
      forward: `127.0.0.1:${echo.port}`,
      policies: ["backend-policy.yaml"],
    }],
  }, { backend: sources.b });
  const inbound = proxyB.addresses()["backend-in"] as { port: number };
  const proxyA = await proxyOf({
    outbound: [{
      name: "to-backend",
      service: "backend",
      workload: "frontend",
      listen: "127.0.0.1:0",
      upstream: `127.0.0.1:${inbound.port}`,
      allowedIds: [idOf("backend").toString()],
    }],
  }, { frontend: sources.a });
  return {
    agents: { a, b },
    workloads: { a: names.a, b: names.b },
    outboundPort: (proxyA.addresses()["to-backend"] as { port: number }).port,
    proxies: { a: proxyA, b: proxyB },
    async stop() {
      await proxyA.stop();
      await proxyB.stop();
      sources.a.close();
      sources.b.close();
      await Promise.all([a.stop(), b.stop()]);
      await echo.close();
    },
  };
}

/** What a request loop saw. */
export interface RequestTally {
  ok: number;
  failed: number;
  /** The first failures, with when they happened. */
  failures: { at: number; reason: string }[];
}

/**
 * Sends requests through `port` (each on a connection of its own: connect, send, read the
 * echo, close) from `concurrency` clients until `isStopped()`; every reply must be the message.
 */
export async function requestLoop(
  port: number,
  concurrency: number,
  isStopped: () => boolean,
  pauseMs = 20,
): Promise<RequestTally> {
  const tally: RequestTally = { ok: 0, failed: 0, failures: [] };
  const one = (message: string) =>
    new Promise<string | undefined>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      let reply = "";
      const timer = setTimeout(() => finish("no echo within 5 s"), 5000);
      const finish = (failure?: string) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(failure);
      };
      socket.on("connect", () => socket.write(message));
      socket.on("data", (d) => {
        reply += d;
        if (reply.length >= message.length) finish(reply === message ? undefined : `wrong echo ${reply}`);
      });
      socket.on("close", () =>
        finish(reply.length < message.length ? `closed after ${reply.length} bytes` : undefined));
      socket.on("error", (err) =>
        finish(err.message));
    });
  await Promise.all(Array.from({ length: concurrency }, async (_, client) => {
    for (let n = 0; !isStopped(); n++) {
      const failure = await one(`request ${client}.${n}\n`);
      if (failure === undefined) tally.ok++;
      else {
        tally.failed++;
        if (tally.failures.length < 20) tally.failures.push({ at: Date.now(), reason: failure });
      }
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  }));
  return tally;
}
