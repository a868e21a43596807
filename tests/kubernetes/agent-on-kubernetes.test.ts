// The node agent on Kubernetes, against the Kubernetes API test server as a stock cluster
// (no beta APIs, only the RBAC of examples/kubernetes/ and its demo) and a real CA process:
// it trusts the CA through the ConfigMap the CA publishes (as the DaemonSet mounts it),
// bootstraps with its projected token (whose audience the CA checks) and renews over mutual TLS; its pod source delivers and removes the
// certificates of the annotated pods of its node and ignores other nodes' pods; and its CSI
// node plugin, driven over its Unix socket by a gRPC client built from csi.proto as the
// kubelet calls it, publishes a pod's volume with rotating files, unpublishes it leaving
// nothing, and refuses pods of other nodes or claiming another service account.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  type AgentConfig,
  loadAgentConfig,
  NodeBootstrapFailed,
  type RunningAgent,
  startAgentDaemon,
} from "../../agent/mod.ts";
import { type CaProcess, cli, startCa, tempDir } from "../ca-server/helpers.ts";
import { keyMatches, readOneGeneration, recordingLogger, serialOf } from "../agent/helpers.ts";
import { eventually, startCluster, type TestCluster, TRUST_DOMAIN } from "./helpers.ts";
import type { KubeObject } from "../support/kube-api/resources.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const AGENT_USER = "system:serviceaccount:meshauth-system:meshauth-agent";
const id = (ns: string, sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;
const isRoot = process.getuid?.() === 0;

let cluster: TestCluster;
let ca: CaProcess;
let dir: { path: string; remove: () => Promise<void> };
let agentPod: KubeObject;
let running: RunningAgent | undefined;
let config: AgentConfig;
let csi: CsiClient;

interface CsiClient {
  identity: grpc.Client;
  node: grpc.Client;
  call<T = Record<string, unknown>>(client: grpc.Client, method: string, request: unknown): Promise<T>;
  close(): void;
}

/** A kubelet's view of the plugin: clients of csi.v1.Identity and csi.v1.Node from csi.proto. */
function csiClient(socket: string): CsiClient {
  const definition = protoLoader.loadSync(join(ROOT, "agent/sources/csi/csi.proto"), {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const csiV1 = (grpc.loadPackageDefinition(definition).csi as grpc.GrpcObject).v1 as grpc.GrpcObject;
  const make = (service: string) =>
    new (csiV1[service] as grpc.ServiceClientConstructor)(
      `unix://${socket}`,
      grpc.credentials.createInsecure(),
    );
  const identity = make("Identity");
  const node = make("Node");
  return {
    identity,
    node,
    call: (client, method, request) =>
      new Promise((resolve, reject) =>
        (client as unknown as Record<
          string,
          (r: unknown, o: unknown, cb: (e: Error | null, v: unknown) => void) => void
        >)
          [method](
            request,
            { deadline: Date.now() + 30_000 },
            (err, value) => err ? reject(err) : resolve(value as never),
          )
      ),
    close() {
      identity.close();
      node.close();
    },
  };
}

async function pod(
  namespace: string,
  name: string,
  serviceAccount: string,
  node: string,
  extra: { annotations?: Record<string, string>; fsGroup?: number; runAsGroup?: number } = {},
): Promise<KubeObject> {
  return await cluster.admin.create<KubeObject>(`/api/v1/namespaces/${namespace}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, annotations: extra.annotations },
    spec: {
      nodeName: node,
      serviceAccountName: serviceAccount,
      securityContext: extra.fsGroup === undefined && extra.runAsGroup === undefined
        ? undefined
        : { fsGroup: extra.fsGroup, runAsGroup: extra.runAsGroup },
      containers: [{ name: "app", image: "app" }],
    },
    status: { phase: "Running" },
  });
}

/** The agent's projected token, as the kubelet writes it: bound to its pod and node. */
async function agentToken(audiences: string[]): Promise<string> {
  return await cluster.server.tokenFor({
    namespace: "meshauth-system",
    serviceAccount: "meshauth-agent",
    audiences,
    expirationSeconds: 3600,
    pod: { name: agentPod.metadata.name!, uid: agentPod.metadata.uid! },
    node: { name: "node-a", uid: cluster.nodes["node-a"] },
  });
}

/** What the CA logged as issued: spiffeId and method, in order. */
function issued(): Array<{ spiffeId: string; method: string }> {
  return ca.logs.flatMap((line) => {
    try {
      const entry = JSON.parse(line);
      return entry.msg === "issued" ? [{ spiffeId: entry.spiffeId, method: entry.method }] : [];
    } catch {
      return [];
    }
  });
}

/** The volume context the kubelet passes with podInfoOnMount for an inline volume of `p`. */
function volumeContext(p: KubeObject, serviceAccount?: string): Record<string, string> {
  return {
    "csi.storage.k8s.io/pod.name": p.metadata.name!,
    "csi.storage.k8s.io/pod.namespace": p.metadata.namespace!,
    "csi.storage.k8s.io/pod.uid": p.metadata.uid!,
    "csi.storage.k8s.io/serviceAccount.name": serviceAccount ??
      (p.spec as { serviceAccountName: string }).serviceAccountName,
    "csi.storage.k8s.io/ephemeral": "true",
  };
}

function targetPathOf(p: KubeObject): string {
  return join(dir.path, "kubelet/pods", p.metadata.uid!, "volumes/kubernetes.io~csi/identity/mount");
}

function publishRequest(p: KubeObject, overrides: Record<string, unknown> = {}) {
  return {
    volumeId: `csi-${p.metadata.uid!.replaceAll("-", "")}`,
    targetPath: targetPathOf(p),
    volumeCapability: { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } },
    readonly: true,
    volumeContext: volumeContext(p),
    ...overrides,
  };
}

describe("the agent on Kubernetes", { timeout: 180_000 }, () => {
  const logger = recordingLogger();

  before(async () => {
    cluster = await startCluster({
      stock: true,
      unservedResources: ["podcertificaterequests", "clustertrustbundles"],
    });
    dir = await tempDir("meshauth-k8s-agent-");
    agentPod = await cluster.pod("meshauth-system", "meshauth-agent-a", "meshauth-agent", "node-a");
    const caConfig = join(dir.path, "ca.json");
    writeFileSync(
      caConfig,
      JSON.stringify({
        trustDomain: TRUST_DOMAIN,
        dataDir: join(dir.path, "ca"),
        listen: { host: "127.0.0.1", port: 0 },
        rateLimit: false,
        kubernetes: {
          audiences: ["meshauth"],
          api: { kubeconfig: await cluster.kubeconfigFor("meshauth-system", "meshauth-ca") },
          trustBundleConfigMap: { enabled: true },
        },
      }),
    );
    assert.equal((await cli(["ca", "init", "--config", caConfig])).code, 0);
    ca = await startCa(caConfig);
    // The agent's roots, as the kubelet projects them from the CA's ConfigMap.
    const trust = await eventually(
      "the CA's trust bundle ConfigMap",
      () =>
        cluster.admin.get<{ data: Record<string, string> }>(
          "/api/v1/namespaces/meshauth-system/configmaps/meshauth-trust-bundle",
        ).catch(() => undefined),
    );
    mkdirSync(join(dir.path, "trust"));
    writeFileSync(join(dir.path, "trust/bundle.pem"), trust.data["bundle.pem"]);
    // The agent's configuration as a DaemonSet would have it, with this test's paths.
    writeFileSync(
      join(dir.path, "agent.yaml"),
      [
        `trustDomain: ${TRUST_DOMAIN}`,
        "ca:",
        `  url: ${ca.url}`,
        "  trustBundleFile: trust/bundle.pem",
        "node:",
        "  name: node-a",
        "  serviceAccountTokenFile: token",
        "stateDir: state",
        "listen: {host: 127.0.0.1, port: 0}",
        "log: {level: debug}",
        // Certificates live 12 s here, so that rotation shows within a test.
        "workloadDefaults: {ttlSeconds: 12}",
        // A pod just created may reach the CA's pod cache a moment after the agent's.
        "renewal: {retryInitialSeconds: 1, retryMaxSeconds: 2}",
        "kubernetes:",
        `  api: {kubeconfig: ${await cluster.kubeconfigFor("meshauth-system", "meshauth-agent")}}`,
        "  pods: {enabled: true, directory: pods}",
        "  csi:",
        "    enabled: true",
        "    socket: plugin/csi.sock",
        "    kubeletDir: kubelet",
        "    dataDir: plugin/volumes",
        "    publishTimeoutSeconds: 20",
        "",
      ].join("\n"),
    );
    config = await loadAgentConfig({ path: join(dir.path, "agent.yaml") });
  });

  after(async () => {
    csi?.close();
    await running?.close();
    await ca?.stop();
    await cluster?.stop();
    await dir?.remove();
  });

  test("a projected token for another audience is refused: the agent does not start, and says why", async () => {
    writeFileSync(
      join(dir.path, "token"),
      await agentToken(["https://kubernetes.default.svc.cluster.local"]),
    );
    await assert.rejects(
      startAgentDaemon(config, { logger }),
      (err: Error) =>
        err instanceof NodeBootstrapFailed && /ERR_TOKEN_INVALID/.test(err.message) &&
        /meant for/.test(err.message),
    );
  });

  test("with its projected token (re-read from its file) the agent is its node, then renews over mutual TLS", async () => {
    writeFileSync(join(dir.path, "token"), await agentToken(["meshauth"]));
    // A node SVID of 8 s: renewed within the test, with the SVID itself.
    running = await startAgentDaemon({ ...config, node: { ...config.node, ttlSeconds: 8 } }, { logger });
    const node = `spiffe://${TRUST_DOMAIN}/node/node-a`;
    assert.equal(running.agent.nodeSvid()?.spiffeId.toString(), node);
    await eventually(
      "the node SVID renewed",
      () => issued().filter((i) => i.spiffeId === node).length >= 2 || undefined,
    );
    const nodeIssues = issued().filter((i) => i.spiffeId === node);
    assert.equal(nodeIssues[0].method, "kubernetes");
    assert.equal(nodeIssues[1].method, "mtls");
    csi = csiClient(join(dir.path, "plugin/csi.sock"));
  });

  test("the pod source delivers to annotated pods of its node, ignores others, and removes files when a pod goes", async () => {
    const inject = { "meshauth.io/inject": "true" };
    const gid = process.getgid!();
    const frontend = await pod("photo-ns", "photo-frontend-0", "photo-frontend", "node-a", {
      annotations: inject,
      fsGroup: gid,
    });
    const backend = await pod("photo-ns", "photo-backend-0", "photo-backend", "node-a", {
      annotations: { ...inject, "meshauth.io/layout": "spiffe-helper" },
    });
    const elsewhere = await pod("datastore-ns", "datastore-0", "datastore", "node-b", {
      annotations: inject,
    });
    const optedOut = await pod("photo-ns", "photo-frontend-1", "photo-frontend", "node-a");
    const podsDir = join(dir.path, "pods");
    const frontendDir = join(podsDir, frontend.metadata.uid!);
    await eventually("the frontend's files", () => existsSync(join(frontendDir, "key.pem")) || undefined);
    await eventually(
      "the backend's files",
      () => existsSync(join(podsDir, backend.metadata.uid!, "svid_key.pem")) || undefined,
    );
    const files = await readOneGeneration(frontendDir);
    assert.ok(keyMatches(files.keyPem, files.chainPem));
    assert.equal(
      new X509Certificate(files.chainPem).subjectAltName,
      `URI:${id("photo-ns", "photo-frontend")}`,
    );
    // Owned by the pod's fsGroup, group-readable, so a non-root container can read its key.
    const key = await stat(join(frontendDir, "key.pem"));
    assert.equal(key.gid, gid);
    assert.equal(key.mode & 0o777, 0o640);
    assert.deepEqual((await readdir(podsDir)).sort(), [backend.metadata.uid, frontend.metadata.uid].sort());
    assert.ok(!existsSync(join(podsDir, elsewhere.metadata.uid!)));
    assert.ok(!existsSync(join(podsDir, optedOut.metadata.uid!)));

    await cluster.admin.delete(`/api/v1/namespaces/photo-ns/pods/photo-frontend-0`);
    await eventually("the frontend's files removed", () => !existsSync(frontendDir) || undefined);
    assert.ok(existsSync(join(podsDir, backend.metadata.uid!, "svid.pem")));
    // A pod that finishes gives its identity back too.
    const path = "/api/v1/namespaces/photo-ns/pods/photo-backend-0";
    const current = await cluster.admin.get<KubeObject>(path);
    await cluster.admin.replace(`${path}/status`, { ...current, status: { phase: "Succeeded" } });
    await eventually(
      "the backend's files removed",
      () => !existsSync(join(podsDir, backend.metadata.uid!)) || undefined,
    );
    await cluster.admin.delete(path);
    await cluster.admin.delete(`/api/v1/namespaces/datastore-ns/pods/datastore-0`);
    await cluster.admin.delete(`/api/v1/namespaces/photo-ns/pods/photo-frontend-1`);
  });

  test("the CSI plugin answers the kubelet's identity and node calls", async () => {
    const info = await csi.call<{ name: string; vendorVersion: string }>(csi.identity, "GetPluginInfo", {});
    assert.equal(info.name, "meshauth.io");
    assert.match(info.vendorVersion, /^\d+\.\d+\.\d+/);
    const probe = await csi.call<{ ready: { value: boolean } }>(csi.identity, "Probe", {});
    assert.equal(probe.ready.value, true);
    assert.deepEqual(await csi.call(csi.identity, "GetPluginCapabilities", {}), { capabilities: [] });
    assert.deepEqual(await csi.call(csi.node, "NodeGetCapabilities", {}), { capabilities: [] });
    const node = await csi.call<{ nodeId: string }>(csi.node, "NodeGetInfo", {});
    assert.equal(node.nodeId, "node-a");
  });

  test("NodePublishVolume delivers a pod's files, rotates them, and NodeUnpublishVolume leaves nothing", async () => {
    const p = await pod("photo-ns", "photo-frontend-2", "photo-frontend", "node-a");
    const request = publishRequest(p);
    await csi.call(csi.node, "NodePublishVolume", request);
    // The answer comes once the files are there: the kubelet starts the containers next.
    const first = await readOneGeneration(request.targetPath);
    assert.ok(keyMatches(first.keyPem, first.chainPem));
    assert.equal(
      new X509Certificate(first.chainPem).subjectAltName,
      `URI:${id("photo-ns", "photo-frontend")}`,
    );
    const dataPath = join(dir.path, "plugin/volumes", request.volumeId);
    if (isRoot) {
      // A tmpfs of its own, bound read-only where the kubelet mounts it into the pod.
      const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" "));
      const target = mounts.find((f) => f[4] === request.targetPath);
      assert.ok(target, "the target path is a mount point");
      assert.match(target[5], /(^|,)ro(,|$)/);
      assert.equal(target[target.indexOf("-") + 1], "tmpfs");
      await assert.rejects(writeFile(join(request.targetPath, "x"), "x"), { code: "EROFS" });
    }
    // A retried publish (the kubelet's, after a timeout) is answered OK and changes nothing.
    await csi.call(csi.node, "NodePublishVolume", request);
    assert.equal((await readOneGeneration(request.targetPath)).generation, first.generation);
    await eventually("a rotated certificate", async () => {
      const now = await readOneGeneration(request.targetPath);
      return serialOf(now.chainPem) !== serialOf(first.chainPem) && keyMatches(now.keyPem, now.chainPem) ||
        undefined;
    }, 20_000);

    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: request.volumeId,
      targetPath: request.targetPath,
    });
    assert.ok(!existsSync(request.targetPath), "the target path is gone");
    assert.ok(!existsSync(dataPath), "the volume's memory is gone");
    assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(request.volumeId), "no mount is left");
    assert.deepEqual(await readdir(join(dir.path, "state/csi-volumes")), []);
    assert.ok(!running!.agent.workloads().some((w) => w.name === `csi.${request.volumeId}`));
    // Unpublishing again is fine (idempotent), as the kubelet may retry.
    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: request.volumeId,
      targetPath: request.targetPath,
    });
    await cluster.admin.delete(`/api/v1/namespaces/photo-ns/pods/photo-frontend-2`);
  });

  test("a publish for a pod on another node, or claiming another service account, is refused", async () => {
    const elsewhere = await pod("photo-ns", "photo-backend-1", "photo-backend", "node-b");
    await assert.rejects(
      csi.call(csi.node, "NodePublishVolume", publishRequest(elsewhere)),
      (err: grpc.ServiceError) =>
        err.code === grpc.status.PERMISSION_DENIED &&
        /runs on node node-b, not on this node node-a/.test(err.details),
    );
    const here = await pod("photo-ns", "photo-backend-2", "photo-backend", "node-a");
    await assert.rejects(
      csi.call(
        csi.node,
        "NodePublishVolume",
        publishRequest(here, { volumeContext: volumeContext(here, "photo-frontend") }),
      ),
      (err: grpc.ServiceError) =>
        err.code === grpc.status.PERMISSION_DENIED &&
        /runs as service account photo-backend, not photo-frontend/.test(err.details),
    );
    // A UID that is not the pod's (a pod of the same name deleted and made again), with the
    // target path of that UID, as the kubelet of the old pod would send it.
    const staleUid = "0f0f0f0f-0000-4000-8000-000000000000";
    await assert.rejects(
      csi.call(
        csi.node,
        "NodePublishVolume",
        publishRequest(here, {
          targetPath: targetPathOf({ ...here, metadata: { ...here.metadata, uid: staleUid } }),
          volumeContext: { ...volumeContext(here), "csi.storage.k8s.io/pod.uid": staleUid },
        }),
      ),
      (err: grpc.ServiceError) =>
        err.code === grpc.status.PERMISSION_DENIED &&
        new RegExp(`has UID ${here.metadata.uid}, not ${staleUid}`).test(err.details),
    );
    // A target path that is not this pod's volume path.
    await assert.rejects(
      csi.call(
        csi.node,
        "NodePublishVolume",
        publishRequest(here, { targetPath: join(dir.path, "elsewhere") }),
      ),
      (err: grpc.ServiceError) =>
        err.code === grpc.status.INVALID_ARGUMENT && /is not a volume path of pod/.test(err.details),
    );
    await assert.rejects(
      csi.call(
        csi.node,
        "NodePublishVolume",
        publishRequest(here, {
          volumeContext: { ...volumeContext(here), "csi.storage.k8s.io/ephemeral": "false" },
        }),
      ),
      (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && /ephemeral/.test(err.details),
    );
    for (const p of [elsewhere, here]) {
      assert.ok(!existsSync(targetPathOf(p)), "nothing made for a refused publish");
    }
    assert.deepEqual(await readdir(join(dir.path, "state/csi-volumes")), []);
  });

  test("volume_mount_group must be a group ID; group 0 (from it or from fsGroup) is a group like any other", async () => {
    const p = await pod("photo-ns", "photo-backend-3", "photo-backend", "node-a", { runAsGroup: 4242 });
    const withGroup = (volumeMountGroup: string) =>
      publishRequest(p, {
        volumeCapability: { mount: { volumeMountGroup }, accessMode: { mode: "SINGLE_NODE_WRITER" } },
      });
    for (const bad of ["-1", "1.5", "2147483648", "99999999999", "1e3", "0x10", " 7", "abc"]) {
      await assert.rejects(
        csi.call(csi.node, "NodePublishVolume", withGroup(bad)),
        (err: grpc.ServiceError) =>
          err.code === grpc.status.INVALID_ARGUMENT &&
          /volume_mount_group: .* is not a group ID/.test(err.details),
        bad,
      );
    }
    assert.ok(!existsSync(targetPathOf(p)), "nothing made for a refused publish");
    // Group 0 is not "absent": the files belong to it, not to the pod's runAsGroup.
    const request = withGroup("0");
    await csi.call(csi.node, "NodePublishVolume", request);
    if (isRoot) assert.equal((await stat(join(request.targetPath, "key.pem"))).gid, 0);
    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: request.volumeId,
      targetPath: request.targetPath,
    });
    await cluster.admin.delete("/api/v1/namespaces/photo-ns/pods/photo-backend-3");
    const q = await pod("photo-ns", "photo-backend-4", "photo-backend", "node-a", {
      fsGroup: 0,
      runAsGroup: 4242,
    });
    const fromFsGroup = publishRequest(q);
    await csi.call(csi.node, "NodePublishVolume", fromFsGroup);
    if (isRoot) assert.equal((await stat(join(fromFsGroup.targetPath, "key.pem"))).gid, 0);
    // The kubelet's retry of an unpublish at another path of a volume published elsewhere: OK
    // (CSI: idempotent), and the volume stays where it is.
    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: fromFsGroup.volumeId,
      targetPath: targetPathOf({
        ...q,
        metadata: { ...q.metadata, uid: "0f0f0f0f-0000-4000-8000-00000000000a" },
      }),
    });
    assert.ok(existsSync(join(fromFsGroup.targetPath, "key.pem")), "still published");
    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: fromFsGroup.volumeId,
      targetPath: fromFsGroup.targetPath,
    });
    assert.ok(!existsSync(fromFsGroup.targetPath));
    await cluster.admin.delete("/api/v1/namespaces/photo-ns/pods/photo-backend-4");
  });

  test("an agent that restarts keeps serving the volumes it published, and unpublishes them after", async () => {
    const p = await pod("photo-ns", "photo-backend-3", "photo-backend", "node-a");
    const request = publishRequest(p);
    await csi.call(csi.node, "NodePublishVolume", request);
    const before = await readOneGeneration(request.targetPath);
    // The kubelet's connection goes with the plugin it talked to, and a new one is made to the
    // restarted plugin. (Deno's node:http2 aborts the whole process on the GOAWAY a closing
    // server sends to a client session that is still open: nghttp2's find_stream_on_goaway_func
    // assertion.)
    csi.close();
    await running!.close();
    running = await startAgentDaemon(config, { logger });
    csi = csiClient(join(dir.path, "plugin/csi.sock"));
    const workload = running.agent.workloads().find((w) => w.name === `csi.${request.volumeId}`);
    assert.ok(workload?.isReady, "the volume is served again, from the state directory");
    await eventually("a rotation after the restart", async () => {
      const now = await readOneGeneration(request.targetPath);
      return serialOf(now.chainPem) !== serialOf(before.chainPem) || undefined;
    }, 20_000);
    await csi.call(csi.node, "NodeUnpublishVolume", {
      volumeId: request.volumeId,
      targetPath: request.targetPath,
    });
    assert.ok(!existsSync(request.targetPath));
    assert.deepEqual(await readdir(join(dir.path, "state/csi-volumes")), []);
  });

  test("the agent did all this with only agent-rbac.yaml's grants, and the API server refused it nothing", () => {
    const made = cluster.server.requestsBy(AGENT_USER);
    assert.ok(made.length > 0);
    assert.deepEqual(made.filter((r) => r.status !== 200), []);
    assert.deepEqual(
      [...new Set(made.map((r) => `${r.verb} ${r.group}/${r.resource}`))].sort(),
      ["get /pods", "list /pods", "watch /pods"],
    );
    const byCa = cluster.server.requestsBy("system:serviceaccount:meshauth-system:meshauth-ca");
    assert.deepEqual(byCa.filter((r) => r.status !== 200), []);
  });
});
