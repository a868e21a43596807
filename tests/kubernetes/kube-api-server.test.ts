// The Kubernetes API test server speaks the wire protocol the real client expects: the typed
// @kubernetes/client-node APIs and its Watch, from a kubeconfig, against it over HTTPS.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ApiException, CoreV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { KubeApiServer } from "../support/kube-api/server.ts";
import { KubernetesApi, KubernetesApiError } from "../../ca-server/mod.ts";

let server: KubeApiServer;
let admin: KubeConfig;

function clientFor(token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(server.writeKubeconfig(token));
  return kc;
}

interface Event {
  type: string;
  object: { metadata?: { name?: string; resourceVersion?: string }; code?: number; reason?: string };
}

/** Watches until `until` says so (or 10 s pass); answers the events and how it ended. */
function watchUntil(
  kc: KubeConfig,
  path: string,
  query: Record<string, string | number | boolean | undefined>,
  until: (events: Event[]) => boolean,
): Promise<{ events: Event[]; error: (Error & { statusCode?: number }) | null }> {
  return new Promise((resolve, reject) => {
    const events: Event[] = [];
    let controller: AbortController | undefined;
    const timer = setTimeout(() => {
      controller?.abort();
      reject(new Error(`watch of ${path} saw only ${JSON.stringify(events.map((e) => e.type))}`));
    }, 10_000);
    const finish = (error: (Error & { statusCode?: number }) | null) => {
      clearTimeout(timer);
      controller?.abort();
      resolve({ events, error });
    };
    new Watch(kc).watch(path, query, (type, object) => {
      events.push({ type, object });
      if (until(events)) finish(null);
    }, (err) => finish(err)).then((c) => controller = c);
  });
}

describe("Kubernetes API test server", () => {
  before(async () => {
    server = await new KubeApiServer({ bookmarkIntervalMs: 200 }).start();
    admin = clientFor(server.adminToken);
    await server.apply(`
apiVersion: v1
kind: Namespace
metadata: {name: photo-ns}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: photo-ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-secrets, namespace: photo-ns}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads, namespace: photo-ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-secrets}
subjects:
- {kind: ServiceAccount, name: reader, namespace: photo-ns}
`);
  });
  after(() => server.stop());

  test("the typed client creates, reads, patches, replaces and deletes Secrets", async () => {
    const core = admin.makeApiClient(CoreV1Api);
    const created = await core.createNamespacedSecret({
      namespace: "photo-ns",
      body: { metadata: { name: "s1", labels: { app: "x" } }, stringData: undefined, data: { a: "YQ==" } },
    });
    assert.equal(created.metadata?.namespace, "photo-ns");
    assert.match(created.metadata?.uid ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(created.type, "Opaque");
    const read = await core.readNamespacedSecret({ name: "s1", namespace: "photo-ns" });
    assert.equal(read.data?.a, "YQ==");
    const patched = await core.patchNamespacedSecret({
      name: "s1",
      namespace: "photo-ns",
      body: [{ op: "add", path: "/data/b", value: "Yg==" }],
    });
    assert.deepEqual(patched.data, { a: "YQ==", b: "Yg==" });
    // A write at an old resource version is a 409 Conflict with the API server's Status.
    await assert.rejects(
      core.replaceNamespacedSecret({ name: "s1", namespace: "photo-ns", body: { ...read, data: {} } }),
      (err: ApiException<string>) => {
        assert.equal(err.code, 409);
        const status = JSON.parse(err.body);
        assert.equal(status.kind, "Status");
        assert.equal(status.reason, "Conflict");
        return true;
      },
    );
    await core.replaceNamespacedSecret({
      name: "s1",
      namespace: "photo-ns",
      body: { ...patched, data: { c: "Yw==" } },
    });
    await core.deleteNamespacedSecret({ name: "s1", namespace: "photo-ns" });
    await assert.rejects(
      core.readNamespacedSecret({ name: "s1", namespace: "photo-ns" }),
      (err: ApiException<string>) => {
        assert.equal(err.code, 404);
        assert.equal(JSON.parse(err.body).reason, "NotFound");
        return true;
      },
    );
  });

  test("a list pages at one resource version, and a field selector filters pods by node", async () => {
    const core = admin.makeApiClient(CoreV1Api);
    for (let i = 0; i < 5; i++) {
      await core.createNamespacedPod({
        namespace: "photo-ns",
        body: {
          metadata: { name: `p${i}` },
          spec: { nodeName: i % 2 ? "node-b" : "node-a", containers: [{ name: "c", image: "x" }] },
        },
      });
    }
    const first = await core.listNamespacedPod({ namespace: "photo-ns", limit: 2 });
    assert.equal(first.items.length, 2);
    assert.ok(first.metadata?._continue);
    // A change between pages does not show in the rest of the list: it is served at page one's version.
    await core.deleteNamespacedPod({ namespace: "photo-ns", name: "p4" });
    const rest = await core.listNamespacedPod({
      namespace: "photo-ns",
      limit: 10,
      _continue: first.metadata!._continue,
    });
    assert.deepEqual([...first.items, ...rest.items].map((p) => p.metadata?.name), [
      "p0",
      "p1",
      "p2",
      "p3",
      "p4",
    ]);
    assert.equal(rest.metadata?.resourceVersion, first.metadata?.resourceVersion);
    const onA = await core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=node-a" });
    assert.deepEqual(onA.items.map((p) => p.metadata?.name), ["p0", "p2"]);
    await assert.rejects(
      core.listPodForAllNamespaces({ fieldSelector: "spec.color=blue" }),
      (err: ApiException<string>) => {
        assert.equal(err.code, 400);
        return true;
      },
    );
  });

  test("a watch replays from a resource version, streams changes, and sends bookmarks", async () => {
    const core = admin.makeApiClient(CoreV1Api);
    const list = await core.listNamespacedConfigMap({ namespace: "photo-ns" });
    const from = list.metadata!.resourceVersion!;
    await core.createNamespacedConfigMap({
      namespace: "photo-ns",
      body: { metadata: { name: "c1" }, data: { k: "1" } },
    });
    const watching = watchUntil(
      admin,
      "/api/v1/namespaces/photo-ns/configmaps",
      { resourceVersion: from, allowWatchBookmarks: true },
      (events) => events.some((e) => e.type === "BOOKMARK") && events.some((e) => e.type === "DELETED"),
    );
    await new Promise((r) => setTimeout(r, 50));
    await core.patchNamespacedConfigMap({
      namespace: "photo-ns",
      name: "c1",
      body: [{ op: "replace", path: "/data/k", value: "2" }],
    });
    await core.deleteNamespacedConfigMap({ namespace: "photo-ns", name: "c1" });
    const { events } = await watching;
    const changes = events.filter((e) => e.type !== "BOOKMARK");
    assert.deepEqual(changes.map((e) => e.type), ["ADDED", "MODIFIED", "DELETED"]);
    const versions = changes.map((e) => Number(e.object.metadata!.resourceVersion));
    assert.deepEqual(versions, [...versions].sort((a, b) => a - b));
    const bookmark = events.find((e) => e.type === "BOOKMARK")!;
    assert.ok(Number(bookmark.object.metadata!.resourceVersion) >= versions[1]);
  });

  test("a watch from a compacted resource version gets a 410 Expired Status event", async () => {
    const core = admin.makeApiClient(CoreV1Api);
    const old = (await core.listNamespacedConfigMap({ namespace: "photo-ns" })).metadata!.resourceVersion!;
    await core.createNamespacedConfigMap({ namespace: "photo-ns", body: { metadata: { name: "c2" } } });
    server.compact();
    const { events } = await watchUntil(admin, "/api/v1/namespaces/photo-ns/configmaps", {
      resourceVersion: old,
    }, (e) => e.length > 0);
    assert.equal(events[0].type, "ERROR");
    assert.equal(events[0].object.code, 410);
    assert.equal(events[0].object.reason, "Expired");
    assert.match(JSON.stringify(events[0].object), /too old resource version/);
  });

  test("RBAC from applied Roles: a service account may only what its bindings grant, with a 403 Status", async () => {
    const token = await server.tokenFor({ namespace: "photo-ns", serviceAccount: "reader" });
    const api = new KubernetesApi(clientFor(token));
    const list = await api.get<{ items: unknown[] }>("/api/v1/namespaces/photo-ns/secrets");
    assert.ok(Array.isArray(list.items));
    await assert.rejects(
      api.create("/api/v1/namespaces/photo-ns/secrets", { metadata: { name: "nope" } }),
      (err: KubernetesApiError) => {
        assert.equal(err.status, 403);
        assert.equal(err.reason, "Forbidden");
        assert.match(
          err.message,
          /User "system:serviceaccount:photo-ns:reader" cannot create resource "secrets" in API group "" in the namespace "photo-ns"/,
        );
        return true;
      },
    );
    await assert.rejects(
      api.get("/api/v1/namespaces/default/secrets"),
      (err: KubernetesApiError) => err.status === 403,
    );
    await assert.rejects(
      api.get("/api/v1/secrets"),
      (err: KubernetesApiError) => /at the cluster scope/.test(err.message),
    );
    const unknown = new KubernetesApi(clientFor("not-a-token"));
    await assert.rejects(unknown.get("/api/v1/namespaces"), (err: KubernetesApiError) => err.status === 401);
  });
});
