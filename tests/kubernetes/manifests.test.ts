// The manifests of examples/kubernetes/ (the system), demo/ (the photo app) and optional/ are
// valid Kubernetes objects (the kubernetes-models schemas, plus strict field names as
// `kubectl apply --validate=strict` checks them, from client-node's models), secure by default
// where they can be, and what they configure works: the system and the demo need no feature
// gate, the CA's and the agent's configurations load and agree with the volumes they name, the
// photo app's sidecars are wired as their proxy.yaml says (the CSI volume, the ConfigMap, the ports
// the Services and probes name, the app on loopback behind a NetworkPolicy) and their policy files
// load in the proxy and allow frontend -> backend -> datastore and deny frontend -> datastore, and
// the Dockerfile builds the CLI they run.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, test } from "node:test";
import * as clientModels from "@kubernetes/client-node";
import * as models from "kubernetes-models";
import { parseAllDocuments } from "yaml";
import { SpiffeId } from "../../mod.ts";
import { loadConfig } from "../../ca-server/mod.ts";
import { loadAgentConfig, loadSidecarConfig } from "../../agent/mod.ts";
import { ListenerPolicy } from "../../agent/proxy/policy-files.ts";
import { tempDir } from "../ca-server/helpers.ts";
import { exampleManifests } from "./helpers.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const DIR = join(ROOT, "examples/kubernetes");

interface Manifest {
  file: string;
  object: {
    apiVersion: string;
    kind: string;
    metadata: { name: string; namespace?: string };
    [key: string]: unknown;
  };
}

/** `file` is relative to examples/kubernetes/: `ca.yaml`, `demo/photo-app.yaml`, `optional/...`. */
function manifests(options: { stock?: boolean } = {}): Manifest[] {
  const out: Manifest[] = [];
  for (const path of exampleManifests(options)) {
    const file = relative(DIR, path);
    for (const doc of parseAllDocuments(readFileSync(path, "utf8"))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      const object = doc.toJS();
      if (object) out.push({ file, object });
    }
  }
  return out;
}

/** The kubernetes-models class of an object. */
function modelOf(
  apiVersion: string,
  kind: string,
): (new (data: unknown) => { validate(): void }) | undefined {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const namespace = group === ""
    ? (models as Record<string, unknown>).v1
    : ((models as Record<string, Record<string, unknown>>)[
      group.replace(/\.([a-z])/g, (_, c: string) => c.toUpperCase()).replace(/^([a-z])/, (c) => c)
    ] as Record<string, unknown> | undefined)?.[version];
  return (namespace as Record<string, new (data: unknown) => { validate(): void }> | undefined)?.[kind];
}

type AttributeMap = Array<{ name: string; baseName: string; type: string }>;

/** Field names not in the API (client-node's models list every field of every type). */
function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, array[1], `${path}[${i}]`)) : [];
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    return Object.entries(value as object).flatMap(([k, v]) => unknownFields(v, map[1], `${path}.${k}`));
  }
  const model =
    (clientModels as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap }>)[type];
  const attributes = model?.getAttributeTypeMap?.();
  if (!attributes || typeof value !== "object") return [];
  const out: string[] = [];
  for (const [key, v] of Object.entries(value as object)) {
    const attribute = attributes.find((a) => a.baseName === key);
    if (!attribute) out.push(`${path}.${key}`);
    else out.push(...unknownFields(v, attribute.type, `${path}.${key}`));
  }
  return out;
}

function workloads(all: Manifest[]) {
  return all.filter((m) => m.object.kind === "Deployment" || m.object.kind === "DaemonSet").map((m) => {
    const spec = (m.object.spec as { template: { spec: Record<string, unknown> } }).template.spec;
    return { ...m, pod: spec };
  });
}

describe("examples/kubernetes manifests", () => {
  const all = manifests();

  test("every document validates against the Kubernetes schemas, with no unknown field", () => {
    assert.ok(all.length >= 30, `only ${all.length} manifests`);
    for (const { file, object } of all) {
      const Model = modelOf(object.apiVersion, object.kind);
      assert.ok(Model, `${file}: no schema for ${object.apiVersion} ${object.kind}`);
      assert.doesNotThrow(
        () => new Model(object).validate(),
        `${file}: ${object.kind} ${object.metadata.name}`,
      );
      const version = object.apiVersion.split("/").at(-1)!;
      const type = `${version[0].toUpperCase()}${version.slice(1)}${object.kind}`;
      assert.deepEqual(unknownFields(object, type, object.kind), [], `${file}: unknown fields`);
    }
  });

  test("the strict check would catch a misspelt field", () => {
    const typo = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "x" },
      spec: { containers: [{ name: "c", imagee: "x" }] },
    };
    assert.deepEqual(unknownFields(typo, "V1Pod", "Pod"), ["Pod.spec.containers[0].imagee"]);
  });

  test("the CA has its own namespace, two replicas on PostgreSQL, and a Service", () => {
    const ca = all.find((m) => m.object.kind === "Deployment" && m.object.metadata.name === "meshauth-ca")!;
    assert.equal(ca.object.metadata.namespace, "meshauth-system");
    assert.equal((ca.object.spec as { replicas: number }).replicas, 2);
    const inCaNamespace = all.filter((m) =>
      m.object.metadata.namespace === "meshauth-system" && m.object.kind === "Deployment"
    );
    assert.deepEqual(inCaNamespace.map((m) => m.object.metadata.name), ["meshauth-ca"]);
    assert.ok(all.some((m) => m.object.kind === "Service" && m.object.metadata.name === "meshauth-ca"));
    assert.match(JSON.stringify(ca.object), /MESHAUTH_STORE_URL/);
  });

  test("every container has probes, resource requests and a locked-down securityContext", () => {
    // The two exceptions, each for a reason the manifests state: the CSI node plugin needs
    // Bidirectional mount propagation (privileged only), the registrar writes into the
    // kubelet's root-owned directory.
    const rootAllowed = new Set(["meshauth-agent/agent", "meshauth-agent/node-driver-registrar"]);
    for (const w of workloads(all)) {
      const podSecurity = (w.pod.securityContext ?? {}) as {
        runAsNonRoot?: boolean;
        runAsUser?: number;
        seccompProfile?: unknown;
      };
      assert.ok(podSecurity.seccompProfile, `${w.object.metadata.name}: a seccomp profile`);
      const containers = w.pod.containers as Array<Record<string, any>>;
      const init = (w.pod.initContainers ?? []) as Array<Record<string, any>>;
      for (const c of [...containers, ...init]) {
        const where = `${w.object.metadata.name}/${c.name}`;
        assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${where}: resource requests`);
        assert.ok(c.resources?.limits?.memory, `${where}: a memory limit`);
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${where}: read-only root file system`);
        if (!init.includes(c)) assert.ok(c.livenessProbe || c.readinessProbe, `${where}: probes`);
        if (rootAllowed.has(where)) continue;
        const user = c.securityContext?.runAsUser ?? podSecurity.runAsUser;
        assert.ok(podSecurity.runAsNonRoot === true && user !== 0, `${where}: non-root`);
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ["ALL"], `${where}: capabilities dropped`);
      }
    }
  });

  test("the agent DaemonSet carries node-driver-registrar, and the CSIDriver is meshauth.io for inline volumes", () => {
    const agent = workloads(all).find((w) => w.object.kind === "DaemonSet")!;
    const names = (agent.pod.containers as Array<{ name: string }>).map((c) => c.name);
    assert.deepEqual(names, ["agent", "node-driver-registrar"]);
    const driver = all.find((m) => m.object.kind === "CSIDriver")!.object as any;
    assert.equal(driver.metadata.name, "meshauth.io");
    assert.equal(driver.spec.podInfoOnMount, true);
    assert.deepEqual(driver.spec.volumeLifecycleModes, ["Ephemeral"]);
    const csiVolumes = workloads(all).flatMap((w) => (w.pod.volumes as any[]).filter((v) => v.csi));
    assert.ok(csiVolumes.length >= 2 && csiVolumes.every((v) => v.csi.driver === "meshauth.io"));
  });

  test("the CA's configuration in its ConfigMap loads, with the Kubernetes keys it documents", async () => {
    const config = all.find((m) => m.object.metadata.name === "meshauth-ca-config")!.object as unknown as {
      data: Record<string, string>;
    };
    const dir = await tempDir("meshauth-manifest-");
    try {
      const path = join(dir.path, "ca.yaml");
      writeFileSync(path, config.data["ca.yaml"]);
      const loaded = await loadConfig({
        path,
        env: { MESHAUTH_STORE_URL: "postgres://meshauth@db/meshauth" },
      });
      assert.equal(loaded.store.kind, "postgres");
      assert.deepEqual(loaded.kubernetes?.api, {
        kubeconfig: undefined,
        context: undefined,
        requestTimeoutSeconds: 10,
      });
      // Off by default, each for its reason (docs/kubernetes.md): Secrets put keys in etcd, and
      // Pod Certificates need a beta API that stock clusters do not serve.
      assert.equal(loaded.kubernetes?.serviceAccountSecrets.enabled, false);
      assert.equal(loaded.kubernetes?.podCertificates.enabled, false);
      assert.deepEqual(loaded.kubernetes?.trustBundleConfigMap, {
        enabled: true,
        namespace: "meshauth-system",
        name: "meshauth-trust-bundle",
        key: "bundle.pem",
      });
      assert.deepEqual(loaded.kubernetes?.nodeAuthorization.agentServiceAccounts, [
        "meshauth-system/meshauth-agent",
      ]);
    } finally {
      await dir.remove();
    }
  });

  test("the agent's configuration in its ConfigMap loads, and every path it names is one the DaemonSet mounts", async () => {
    const configMap = all.find((m) => m.object.metadata.name === "meshauth-agent-config")!
      .object as unknown as {
        data: Record<string, string>;
      };
    const agent = workloads(all).find((w) => w.object.kind === "DaemonSet")!;
    const containers = agent.pod.containers as any[];
    const [container, registrar] = containers;
    const volumes = agent.pod.volumes as any[];
    const mountOf = (path: string) => {
      const mounts = (container.volumeMounts as any[]).filter((m) =>
        path === m.mountPath || path.startsWith(`${m.mountPath}/`)
      );
      const mount = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
      assert.ok(mount, `${path} is in a volume the agent mounts`);
      return { mount, volume: volumes.find((v) => v.name === mount.name) };
    };
    const dir = await tempDir("meshauth-manifest-");
    try {
      const path = join(dir.path, "agent.yaml");
      writeFileSync(path, configMap.data["agent.yaml"]);
      // The DaemonSet gives the node's name from the downward API.
      assert.deepEqual(
        container.env.find((e: any) => e.name === "MESHAUTH_NODE_NAME")?.valueFrom,
        { fieldRef: { fieldPath: "spec.nodeName" } },
      );
      const config = await loadAgentConfig({ path, env: { MESHAUTH_NODE_NAME: "node-a" } });
      const k8s = config.kubernetes!;
      assert.ok(k8s.pods.enabled && k8s.csi.enabled);
      // The agent runs no proxy on Kubernetes: each demo pod's sidecar does (docs/kubernetes.md).
      assert.equal(config.proxy, undefined);
      assert.match(
        readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8"),
        /### What the photo app's policies enforce\n\nEach request between the demo's pods/,
      );
      // The projected token: its audience is one the CA accepts.
      const token = mountOf(config.node.serviceAccountTokenFile!);
      const projected = token.volume.projected.sources[0].serviceAccountToken;
      assert.equal(`${token.mount.mountPath}/${projected.path}`, config.node.serviceAccountTokenFile);
      const caConfig = all.find((m) => m.object.metadata.name === "meshauth-ca-config")!.object as any;
      assert.match(caConfig.data["ca.yaml"], new RegExp(`audiences: \\[${projected.audience}\\]`));
      // The roots: the ConfigMap the CA publishes, under the key it writes, at the file named.
      const trust = mountOf(config.ca.trustBundleFile);
      assert.equal(trust.volume.configMap.name, "meshauth-trust-bundle");
      assert.deepEqual(trust.volume.configMap.items, [{
        key: "bundle.pem",
        path: config.ca.trustBundleFile.slice(trust.mount.mountPath.length + 1),
      }]);
      assert.match(caConfig.data["ca.yaml"], /trustBundleConfigMap: \{enabled: true\}/);
      // The CSI socket: where the registrar calls it and where the kubelet is told to.
      const socket = mountOf(k8s.csi.socket);
      assert.equal(socket.mount.mountPropagation, "Bidirectional");
      assert.ok(registrar.args.includes(`--csi-address=${k8s.csi.socket}`));
      const hostSocket = `${socket.volume.hostPath.path}${
        k8s.csi.socket.slice(socket.mount.mountPath.length)
      }`;
      assert.ok(registrar.args.includes(`--kubelet-registration-path=${hostSocket}`));
      assert.equal(hostSocket, `/var/lib/kubelet/plugins/${k8s.csi.driverName}/csi.sock`);
      const registration = (registrar.volumeMounts as any[]).find((m) => m.mountPath === "/registration");
      assert.equal(
        volumes.find((v) => v.name === registration.name).hostPath.path,
        "/var/lib/kubelet/plugins_registry",
      );
      // The volumes' tmpfs and the pods' target paths propagate to the host.
      assert.equal(mountOf(k8s.csi.dataDir).mount.mountPropagation, "Bidirectional");
      const podsDir = mountOf(`${k8s.csi.kubeletDir}/pods/uid/volumes`);
      assert.equal(podsDir.mount.mountPropagation, "Bidirectional");
      assert.equal(podsDir.volume.hostPath.path, `${k8s.csi.kubeletDir}/pods`);
      assert.equal(mountOf(k8s.pods.directory).volume.hostPath.path, k8s.pods.directory);
      assert.equal(mountOf(config.stateDir).volume.hostPath.path, config.stateDir);
      // The CSIDriver is the driver the plugin serves.
      const driver = all.find((m) => m.object.kind === "CSIDriver")!.object;
      assert.equal(driver.metadata.name, k8s.csi.driverName);
    } finally {
      await dir.remove();
    }
  });

  test("the photo app's policy files load in the proxy and allow frontend -> backend -> datastore, never frontend -> datastore", async () => {
    const dir = await tempDir("meshauth-manifest-policy-");
    try {
      // Each sidecar ConfigMap's policy file, as a volume would hold it, read by the proxy's own
      // loader as its inbound listener reads it.
      const policy = async (name: string) => {
        const data = (all.find((m) => m.object.metadata.name === name)!.object as any).data;
        assert.deepEqual(Object.keys(data).sort(), ["policy.yaml", "proxy.yaml"]);
        const file = join(dir.path, `${name}.yaml`);
        writeFileSync(file, data["policy.yaml"]);
        const [inbound] = parseAllDocuments(data["proxy.yaml"])[0].toJS().inbound;
        return await ListenerPolicy.load({
          listener: name,
          files: [file],
          protocol: inbound.protocol,
          defaultAction: "DENY",
        });
      };
      const backend = await policy("photo-backend-proxy");
      const datastore = await policy("datastore-proxy");
      const id = (ns: string, sa: string) => SpiffeId.fromServiceAccount("cluster.local", ns, sa);
      const frontend = id("photo-ns", "photo-frontend");
      const allowed = (p: ListenerPolicy, request: Parameters<ListenerPolicy["evaluate"]>[0]) =>
        p.evaluate(request).decision.allowed;
      assert.equal(allowed(backend, { peerId: frontend, method: "GET", path: "/photos/1" }), true);
      assert.equal(allowed(backend, { peerId: frontend, method: "DELETE", path: "/photos/1" }), false);
      assert.equal(
        allowed(backend, { peerId: id("datastore-ns", "datastore"), method: "GET", path: "/photos" }),
        false,
      );
      assert.equal(allowed(datastore, { peerId: id("photo-ns", "photo-backend") }), true);
      const denied = datastore.evaluate({ peerId: frontend }).decision;
      assert.equal(denied.allowed, false);
      assert.equal(denied.policy, "never-the-frontend");
    } finally {
      await dir.remove();
    }
    // The service accounts the policies name are those the demo's Deployments run as.
    const accounts = workloads(all).filter((w) => w.file === "demo/photo-app.yaml")
      .map((w) => `${w.object.metadata.namespace}/${w.pod.serviceAccountName}`);
    assert.deepEqual(accounts.sort(), [
      "datastore-ns/datastore",
      "photo-ns/photo-backend",
      "photo-ns/photo-frontend",
    ]);
  });

  test("each photo-app pod runs meshauth proxy as a native sidecar, wired as its proxy.yaml says", async () => {
    const demo = all.filter((m) => m.file === "demo/photo-app.yaml");
    const pods = workloads(demo);
    assert.deepEqual(pods.map((w) => w.object.metadata.name).sort(), [
      "datastore",
      "photo-backend",
      "photo-frontend",
    ]);
    const idOf = (w: (typeof pods)[number]) =>
      SpiffeId.fromServiceAccount(
        "cluster.local",
        w.object.metadata.namespace!,
        w.pod.serviceAccountName as string,
      )
        .toString();
    const dir = await tempDir("meshauth-manifest-sidecar-");
    try {
      for (const w of pods) {
        const name = w.object.metadata.name;
        const [sidecar, ...otherInit] = w.pod.initContainers as any[];
        const [app, ...otherContainers] = w.pod.containers as any[];
        assert.deepEqual([otherInit, otherContainers], [[], []], `${name}: one sidecar, one app`);
        // A native sidecar: an init container that keeps running (Kubernetes 1.29 and later).
        assert.equal(sidecar.restartPolicy, "Always", `${name}: a native sidecar`);
        // It runs as the pod's runAsUser, which the agent gives the files to (the key is 0600).
        assert.equal(sidecar.securityContext.runAsUser, undefined, `${name}: the pod's user`);
        assert.deepEqual(sidecar.args.slice(0, 2), ["proxy", "--config"]);
        const volumes = w.pod.volumes as any[];
        const mountOf = (c: any, path: string) => {
          const mount = (c.volumeMounts as any[] ?? []).find((m) => path.startsWith(`${m.mountPath}/`));
          return mount && { mount, volume: volumes.find((v) => v.name === mount.name) };
        };
        const configFile = sidecar.args[2];
        const configVolume = mountOf(sidecar, configFile);
        assert.equal(configVolume.volume.configMap.name, `${name}-proxy`);
        const configMap = demo.find((m) =>
          m.object.kind === "ConfigMap" && m.object.metadata.name === `${name}-proxy`
        )!.object as any;
        assert.equal(configMap.metadata.namespace, w.object.metadata.namespace);
        // The ConfigMap's files where the volume puts them: the configuration loads as the sidecar loads it.
        const local = (path: string) =>
          join(dir.path, name, path.slice(configVolume.mount.mountPath.length + 1));
        mkdirSync(join(dir.path, name), { recursive: true });
        for (const [key, text] of Object.entries(configMap.data as Record<string, string>)) {
          writeFileSync(
            join(dir.path, name, key),
            text.replaceAll(configVolume.mount.mountPath, join(dir.path, name)),
          );
        }
        const config = await loadSidecarConfig({ path: local(configFile) });
        for (const inbound of config.proxy.inbound) {
          await ListenerPolicy.load({
            listener: inbound.name,
            files: inbound.policies,
            protocol: inbound.protocol,
            defaultAction: inbound.defaultAction,
          });
        }
        // The SVID: the CSI volume, read-only, mounted in the sidecar only.
        const credentials = mountOf(sidecar, `${config.credentials.dir}/x`);
        assert.equal(credentials.mount.mountPath, config.credentials.dir);
        assert.equal(credentials.mount.readOnly, true);
        assert.equal(credentials.volume.csi.driver, "meshauth.io");
        assert.equal(mountOf(app, `${config.credentials.dir}/x`), undefined, `${name}: the app holds no key`);
        // The audit log is on a writable volume (the root file system is read-only).
        assert.ok(mountOf(sidecar, config.proxy.auditLog).volume.emptyDir, `${name}: the audit log's volume`);
        // Inbound: mutual TLS on 8443, forwarded to the app's port on loopback, in HTTP mode.
        const [inbound] = config.proxy.inbound;
        assert.equal(config.proxy.inbound.length, 1);
        assert.deepEqual(inbound.listen, { host: "0.0.0.0", port: 8443 });
        assert.equal(inbound.protocol, "http");
        assert.equal(inbound.workload, name);
        const appPort = (app.ports as any[]).find((p) => p.name === "http").containerPort;
        assert.deepEqual(inbound.forward, { host: "127.0.0.1", port: appPort });
        const mtls = (sidecar.ports as any[]).find((p) => p.name === "mtls");
        assert.equal(mtls.containerPort, 8443);
        // The probes: the ops port the configuration names.
        const ops = (sidecar.ports as any[]).find((p) => p.name === sidecar.readinessProbe.httpGet.port);
        assert.equal(ops.containerPort, config.listen.port);
        assert.equal(sidecar.readinessProbe.httpGet.path, "/readyz");
        // The app starts once the sidecar is ready (a sidecar's startupProbe holds the containers
        // after it), so its first call through 127.0.0.1:15001 finds the listener there.
        assert.deepEqual(sidecar.startupProbe.httpGet, sidecar.readinessProbe.httpGet);
        assert.equal(sidecar.livenessProbe.httpGet.path, "/healthz");
        assert.ok(
          config.ca?.url.startsWith("https://meshauth-ca.meshauth-system.svc:"),
          `${name}: the CA's CRLs`,
        );
        // The Service points at the sidecar, never at the app.
        const service = demo.find((m) => m.object.kind === "Service" && m.object.metadata.name === name)!
          .object as any;
        // By number: a named targetPort is not looked up in a native sidecar's ports before
        // Kubernetes 1.32 (kubernetes/kubernetes#127958), so the Service would have no endpoints.
        assert.deepEqual(service.spec.ports.map((p: any) => p.targetPort), [mtls.containerPort]);
        // The app listens on every interface: a NetworkPolicy lets other pods reach 8443 only.
        const policies = demo.filter((m) =>
          m.object.kind === "NetworkPolicy" &&
          m.object.metadata.namespace === w.object.metadata.namespace &&
          (m.object as any).spec.podSelector.matchLabels["app.kubernetes.io/name"] === name
        ).map((m) => (m.object as any).spec);
        assert.equal(policies.length, 1, `${name}: a NetworkPolicy`);
        assert.deepEqual(policies[0].policyTypes, ["Ingress"]);
        assert.deepEqual(policies[0].ingress, [{ ports: [{ port: 8443, protocol: "TCP" }] }]);
        // The ops port (with /metrics) listens on the pod's address for the kubelet's probes: that
        // policy alone keeps other pods off it, which docs/kubernetes.md says among what is not enforced.
        assert.equal(config.listen.host, "0.0.0.0");
        const notEnforced =
          readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8").split("What is **not** enforced:")[1]
            .split("\n## ")[0];
        assert.match(
          notEnforced,
          new RegExp(`ops\\s+port,\\s+${config.listen.port}\\s+\\([\\s\\S]*/metrics`),
        );
        assert.match(notEnforced, /ops\s+port[\s\S]*NetworkPolicies\s+keep\s+other\s+pods\s+off\s+it/);
        // Outbound: on loopback, to a Service of the demo on 8443, served by the Deployment behind it.
        for (const outbound of config.proxy.outbound) {
          assert.equal(outbound.workload, name);
          assert.ok("host" in outbound.listen && outbound.listen.host === "127.0.0.1");
          const [serviceName, namespace] = outbound.upstream.host.split(".");
          assert.equal(outbound.upstream.host, `${serviceName}.${namespace}.svc`);
          const target = pods.find((p) =>
            p.object.metadata.name === serviceName && p.object.metadata.namespace === namespace
          )!;
          assert.ok(target, `${name} calls ${outbound.upstream.host}, a Service of the demo`);
          assert.equal(outbound.upstream.port, 8443);
          assert.deepEqual(outbound.allowedIds, [idOf(target)]);
          assert.equal(outbound.listen.port, { "photo-backend": 15001, datastore: 15002 }[serviceName]);
        }
      }
    } finally {
      await dir.remove();
    }
  });

  test("the system and the demo need no feature gate; Pod Certificates and Secrets are in optional/", () => {
    for (const { file, object } of manifests({ stock: true })) {
      // PodCertificateRequest and ClusterTrustBundle (and their projections) are beta APIs,
      // off by default before Kubernetes 1.37.
      assert.doesNotMatch(
        JSON.stringify(object),
        /certificates\.k8s\.io|"podCertificate"|"clusterTrustBundle"/,
        `${file}: ${object.kind} ${object.metadata.name}`,
      );
    }
    const optional = all.filter((m) => m.file.startsWith("optional/")).map((m) => JSON.stringify(m.object));
    assert.ok(optional.some((text) => text.includes("podcertificaterequests")));
    assert.ok(optional.some((text) => text.includes("podCertificate")));
    assert.ok(optional.some((text) => text.includes('"secrets"')));
    // It says what it needs: the feature gates and API version, and the Kubernetes versions.
    const podCertificates = readFileSync(join(DIR, "optional/pod-certificates.yaml"), "utf8");
    for (
      const needed of [
        "PodCertificateRequest=true",
        "ClusterTrustBundle=true",
        "ClusterTrustBundleProjection=true",
        "--runtime-config=certificates.k8s.io/v1beta1=true",
        "1.35",
        "1.37",
      ]
    ) assert.ok(podCertificates.includes(needed), `optional/pod-certificates.yaml names ${needed}`);
  });

  test("kubectl apply -f examples/kubernetes/ deploys the system alone: the demo is in demo/", () => {
    for (const { file, object } of all.filter((m) => !m.file.includes("/"))) {
      const { namespace, name } = object.metadata;
      const isSystem = object.kind === "Namespace" ? name === "meshauth-system" : namespace === undefined ||
        namespace === "meshauth-system";
      assert.ok(isSystem, `${file}: ${object.kind} ${namespace}/${name} is not the system's`);
    }
    const demo = all.filter((m) => m.file.startsWith("demo/"));
    assert.deepEqual(
      [...new Set(demo.map((m) => m.object.metadata.namespace ?? m.object.metadata.name))].sort(),
      ["datastore-ns", "photo-ns"],
    );
  });

  test("the CA is ready on /readyz (its store and keys), alive on /healthz", () => {
    const ca = workloads(all).find((w) => w.object.metadata.name === "meshauth-ca")!;
    const [container] = ca.pod.containers as any[];
    assert.equal(container.readinessProbe.httpGet.path, "/readyz");
    assert.equal(container.livenessProbe.httpGet.path, "/healthz");
  });

  test("the Dockerfile builds the CLI the manifests run, as the user they expect", () => {
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    for (const [, source] of dockerfile.matchAll(/^COPY (?!--from)(\S+)/gm)) {
      assert.ok(existsSync(join(ROOT, source)), `Dockerfile copies ${source}, which does not exist`);
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.match(
      dockerfile,
      new RegExp(`ENTRYPOINT \\["node", "/opt/meshauth/${pkg.bin.meshauth.replace("./", "")}"\\]`),
    );
    assert.match(dockerfile, /USER 10001:10001/);
    const ca = workloads(all).find((w) => w.object.metadata.name === "meshauth-ca")!;
    assert.equal((ca.pod.securityContext as { runAsUser: number }).runAsUser, 10001);
    assert.deepEqual((ca.pod.containers as any[])[0].args.slice(0, 2), ["ca", "serve"]);
  });
});
