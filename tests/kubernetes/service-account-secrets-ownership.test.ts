// What the service-account Secrets controller owns, and what it leaves to others: a Secret of
// the same name that a namespace user made is never overwritten and costs no issuance (let
// alone one a second), and a renewal keeps what others added to the CA's own Secret.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CaMetrics,
  ControllerIssuer,
  renderMetrics,
  ServiceAccountSecretsController,
  silentLogger,
} from "../../ca-server/mod.ts";
import { eventually, startCluster, testAuthorities, type TestCluster, TRUST_DOMAIN } from "./helpers.ts";

interface Secret {
  type: string;
  metadata: {
    uid: string;
    resourceVersion: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  data: Record<string, string>;
}

let cluster: TestCluster;
let ca: Awaited<ReturnType<typeof testAuthorities>>;
let controller: ServiceAccountSecretsController;
const issuedFor = new Map<string, number>();
const warnedAbout: string[] = [];
const secrets = "/api/v1/namespaces/photo-ns/secrets";
const base64 = (text: string) => Buffer.from(text).toString("base64");

describe("service-account Secrets and others' objects", () => {
  before(async () => {
    cluster = await startCluster({ bookmarkIntervalMs: 300 });
    ca = await testAuthorities();
    // A user's own Opaque Secret that happens to carry the name, made before the account.
    await cluster.admin.create(secrets, {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: { name: "meshauth.lonely" },
      data: { mine: base64("user data") },
    });
    await cluster.admin.create("/api/v1/namespaces/photo-ns/serviceaccounts", {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "lonely" },
    });
    const issuer = new ControllerIssuer({
      authorities: ca.authorities,
      store: ca.store,
      logger: silentLogger,
    });
    const issue = issuer.issueWithNewKey.bind(issuer);
    issuer.issueWithNewKey = (id, ...rest) => {
      const account = String(id).split("/sa/")[1];
      issuedFor.set(account, (issuedFor.get(account) ?? 0) + 1);
      return issue(id, ...rest);
    };
    controller = new ServiceAccountSecretsController({
      api: await cluster.clientFor("meshauth-system", "meshauth-ca"),
      issuer,
      authorities: ca.authorities,
      trustDomain: TRUST_DOMAIN,
      settings: { enabled: true, namespaces: ["photo-ns"], ttlSeconds: 3600, keyAlgorithm: "ECDSA-P256" },
      logger: silentLogger,
      foreignSecretRecheckMs: 200,
      foreignSecretMaxRecheckMs: 400,
      onForeignSecret: (namespace, name) => warnedAbout.push(`${namespace}/${name}`),
    });
    await controller.start();
    await controller.settled();
  });
  after(async () => {
    controller?.stop();
    await ca?.close();
    await cluster?.stop();
  });

  test("a Secret of the same name that is not the CA's costs no issuance, is left alone, and is warned about once", async () => {
    // Several rechecks happen meanwhile (every 200 to 400 ms).
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(issuedFor.get("lonely") ?? 0, 0);
    assert.deepEqual(warnedAbout, ["photo-ns/meshauth.lonely"]);
    assert.equal(controller.stats.foreignSecrets, 1);
    const theirs = await cluster.admin.get<Secret>(`${secrets}/meshauth.lonely`);
    assert.equal(theirs.type, "Opaque");
    assert.deepEqual(Object.keys(theirs.data), ["mine"]);
    const gets = cluster.server.requestsBy("system:serviceaccount:meshauth-system:meshauth-ca")
      .filter((r) => r.verb === "get" && r.name === "meshauth.lonely");
    assert.ok(gets.length >= 3, `looked again ${gets.length} times`);
  });

  test("once the user's Secret goes, the account gets its own", async () => {
    await cluster.admin.delete(`${secrets}/meshauth.lonely`);
    const ours = await eventually("the CA's Secret", async () => {
      const s = await cluster.admin.get<Secret>(`${secrets}/meshauth.lonely`).catch(() => undefined);
      return s?.type === "meshauth.io/svid" ? s : undefined;
    });
    assert.equal(
      ours.metadata.annotations?.["meshauth.io/spiffe-id"],
      `spiffe://${TRUST_DOMAIN}/ns/photo-ns/sa/lonely`,
    );
    assert.equal(issuedFor.get("lonely"), 1);
  });

  test("a renewal keeps the labels, annotations and data keys others added", async () => {
    const path = `${secrets}/meshauth.photo-backend`;
    const secret = await eventually(
      "the Secret",
      () => cluster.admin.get<Secret>(path).catch(() => undefined),
    );
    const serial = secret.metadata.annotations!["meshauth.io/serial-number"];
    secret.metadata.labels = { ...secret.metadata.labels, "argocd.argoproj.io/instance": "photo" };
    secret.metadata.annotations = {
      ...secret.metadata.annotations,
      "reloader.stakater.com/match": "true",
      // due now
      "meshauth.io/renew-at": new Date(Date.now() - 1000).toISOString(),
    };
    secret.data.extra = base64("x");
    await cluster.admin.replace(path, secret);
    const renewed = await eventually("the renewal", async () => {
      const now = await cluster.admin.get<Secret>(path);
      return now.metadata.annotations?.["meshauth.io/serial-number"] !== serial ? now : undefined;
    });
    assert.equal(renewed.metadata.labels?.["argocd.argoproj.io/instance"], "photo");
    assert.equal(renewed.metadata.labels?.["app.kubernetes.io/managed-by"], "meshauth-ca");
    assert.equal(renewed.metadata.annotations?.["reloader.stakater.com/match"], "true");
    assert.deepEqual(Object.keys(renewed.data).sort(), [
      "cert-chain.pem",
      "extra",
      "key.pem",
      "root-cert.pem",
    ]);
    assert.notEqual(renewed.data["cert-chain.pem"], secret.data["cert-chain.pem"]);
  });
});

test("the CA's metrics count Kubernetes objects found in its way", () => {
  const metrics = new CaMetrics();
  metrics.kubernetesConflict("Secret");
  metrics.kubernetesConflict("Secret");
  const text = renderMetrics([metrics.snapshot()], { caCertificates: [] });
  assert.match(text, /^meshauth_ca_kubernetes_conflicts_total\{kind="Secret"\} 2$/m);
});
