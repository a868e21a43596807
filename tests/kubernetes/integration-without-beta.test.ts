// The CA's Kubernetes integration on a cluster without the beta APIs (no PodCertificateRequest
// nor ClusterTrustBundle: their feature gates are off by default before 1.37) while its
// configuration asks for Pod Certificates: the controllers that can run do, the leader keeps
// leading (no restart loop), and the ones that cannot start are tried again with backoff.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  type KubernetesIntegration,
  loadConfig,
  type Logger,
  startKubernetesIntegration,
} from "../../ca-server/mod.ts";
import { eventually, startCluster, testAuthorities, type TestCluster } from "./helpers.ts";

let cluster: TestCluster;
let ca: Awaited<ReturnType<typeof testAuthorities>>;
let integration: KubernetesIntegration | undefined;
const failedStarts: string[] = [];
let leadings = 0;

const logger: Logger = {
  debug() {},
  info(msg) {
    if (msg === "leading") leadings++;
  },
  warn() {},
  error(msg, fields) {
    if (msg === "Kubernetes controller failed to start") failedStarts.push(String(fields?.controller));
  },
};

describe("the Kubernetes integration without the beta APIs", () => {
  before(async () => {
    cluster = await startCluster({ unservedResources: ["podcertificaterequests", "clustertrustbundles"] });
    ca = await testAuthorities();
    const path = join(ca.dir, "ca.json");
    writeFileSync(
      path,
      JSON.stringify({
        trustDomain: "cluster.local",
        kubernetes: {
          audiences: ["meshauth"],
          api: { kubeconfig: await cluster.kubeconfigFor("meshauth-system", "meshauth-ca") },
          serviceAccountSecrets: { enabled: true, namespaces: ["photo-ns"] },
          podCertificates: { enabled: true },
          leaderElection: { leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1 },
        },
      }),
    );
    integration = await startKubernetesIntegration(await loadConfig({ path, env: {} }), {
      authorities: ca.authorities,
      store: ca.store,
      logger,
      controllerRetryMs: 1000,
    });
  });
  after(async () => {
    await integration?.close();
    await ca?.close();
    await cluster?.stop();
  });

  test("service-account Secrets are kept while the Pod Certificates controllers back off, and the leader stays", async () => {
    await eventually(
      "the Secret of photo-ns/photo-frontend",
      () =>
        cluster.admin.get("/api/v1/namespaces/photo-ns/secrets/meshauth.photo-frontend").catch(() =>
          undefined
        ),
    );
    await new Promise((resolve) => setTimeout(resolve, 5000));
    assert.equal(integration!.elector.isLeader, true);
    assert.equal(leadings, 1, "led once, never stepped down");
    assert.ok(integration!.controllers.serviceAccountSecrets);
    assert.equal(integration!.controllers.podCertificates, undefined);
    // Tried at about 0, 1, 3 s (and 7 s): backoff, not a start every retry period.
    const signerStarts = failedStarts.filter((c) => c === "Pod Certificates signer").length;
    assert.ok(signerStarts >= 2 && signerStarts <= 4, `${signerStarts} failed starts of the signer`);
    assert.ok(failedStarts.includes("ClusterTrustBundle publisher"));
  });
});
