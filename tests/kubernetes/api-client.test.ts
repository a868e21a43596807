// The JSON client's failures are typed: a refusal, an unreachable or abandoned request, and a
// 2xx answer that is not JSON are KubernetesApiError (a MeshAuthError, ERR_KUBERNETES_API), never
// a bare SyntaxError.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { after, before, describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { MeshAuthError } from "../../mod.ts";
import { KubernetesApi, KubernetesApiError } from "../../ca-server/mod.ts";

let server: Server;
let api: KubernetesApi;

describe("KubernetesApi", () => {
  before(async () => {
    // A proxy in the way that answers 200 with an HTML page, or never answers.
    server = createServer((req, res) => {
      if (req.url?.startsWith("/hang")) return;
      if (req.url?.startsWith("/gone")) {
        res.writeHead(404, { "content-type": "application/json" });
        return res.end(JSON.stringify({ kind: "Status", reason: "NotFound", message: 'pods "x" not found' }));
      }
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>login</html>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      // Plain HTTP on loopback: client-node asks for skipTLSVerify to allow it.
      clusters: [{
        name: "c",
        server: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
        skipTLSVerify: true,
      }],
      users: [{ name: "u", token: "t" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    api = new KubernetesApi(kubeConfig);
  });
  after(async () => {
    api?.close();
    server?.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  test("a 2xx answer that is not JSON is a KubernetesApiError with reason InvalidResponse", async () => {
    const err = await api.get("/api/v1/pods").then(() => undefined, (e) => e);
    assert.ok(err instanceof KubernetesApiError);
    assert.ok(err instanceof MeshAuthError);
    assert.equal(err.code, "ERR_KUBERNETES_API");
    assert.equal(KubernetesApiError.code, "ERR_KUBERNETES_API");
    assert.equal(err.status, 200);
    assert.equal(err.reason, "InvalidResponse");
    assert.match(err.message, /GET \/api\/v1\/pods: 200 InvalidResponse: the answer is not JSON/);
  });

  test("a refusal carries the Status's reason", async () => {
    const err = await api.get("/gone").then(() => undefined, (e) => e);
    assert.ok(err instanceof KubernetesApiError);
    assert.equal(err.isNotFound, true);
    assert.equal(err.reason, "NotFound");
  });

  test("an aborted request ends at once with reason Aborted", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const err = await api.get("/hang", {}, { signal: controller.signal }).then(() => undefined, (e) => e);
    assert.ok(err instanceof KubernetesApiError);
    assert.equal(err.status, 0);
    assert.equal(err.reason, "Aborted");
  });
});
