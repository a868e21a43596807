// A real CA process on the Kubernetes API test server, with only the RBAC of its manifests:
// projected service-account tokens reviewed by the API server (a workload's gives it its own
// identity; an agent's makes it its node, which may obtain only the identities of the pods
// scheduled there), and the KEP-4317 Pod Certificates signer in both API versions, whose
// certificates OpenSSL verifies against the ClusterTrustBundle it publishes.
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseCertificates, uriSans } from "../../mod.ts";
import {
  clusterTrustBundleName,
  ClusterTrustBundlePublisher,
  silentLogger,
  TrustBundleConfigMapPublisher,
} from "../../ca-server/mod.ts";
import { type CaProcess, cli, csrFor, curl, startCa, tempDir } from "../ca-server/helpers.ts";
import {
  eventually,
  openssl,
  startCluster,
  testAuthorities,
  type TestCluster,
  TRUST_DOMAIN,
} from "./helpers.ts";
import type { KubeObject } from "../support/kube-api/resources.ts";

const SIGNER = "meshauth.io/pod-identity";
const CA_USER = "system:serviceaccount:meshauth-system:meshauth-ca";
const id = (ns: string, sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

let cluster: TestCluster;
let ca: CaProcess;
let dir: { path: string; remove: () => Promise<void> };
let bundlePath: string;
const pods: Record<string, KubeObject> = {};

async function requestCertificate(spiffeId: string, auth: string[]): Promise<{ status: number; json: any }> {
  const { csr } = await csrFor(spiffeId);
  const r = await curl([
    "--cacert",
    bundlePath,
    ...auth,
    "-H",
    "content-type: application/json",
    "--data-binary",
    JSON.stringify({ csr }),
    `${ca.url}/v1/certificates`,
  ]);
  return { status: r.status, json: r.body ? JSON.parse(r.body) : undefined };
}

const bearer = (token: string) => ["-H", `authorization: Bearer ${token}`];

async function podToken(
  pod: KubeObject,
  audiences = ["meshauth"],
  extra: { issuedSecondsAgo?: number } = {},
) {
  const node = (pod.spec as { nodeName: string }).nodeName;
  return await cluster.server.tokenFor({
    namespace: pod.metadata.namespace!,
    serviceAccount: (pod.spec as { serviceAccountName: string }).serviceAccountName,
    audiences,
    expirationSeconds: 3600,
    pod: { name: pod.metadata.name!, uid: pod.metadata.uid! },
    node: { name: node, uid: cluster.nodes[node] },
    ...extra,
  });
}

/** A PodCertificateRequest as a kubelet makes one, for `pod`, with a fresh ECDSA P-256 key. */
async function podCertificateRequest(
  version: "v1" | "v1beta1",
  pod: KubeObject,
  overrides: {
    spec?: Record<string, unknown>;
    badStubSignature?: boolean;
    badProof?: boolean;
    legacyOnly?: boolean;
  } = {},
) {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const keyPath = join(dir.path, `pod-key-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(keyPath, privateKey.export({ format: "pem", type: "pkcs8" }));
  const stub = await openssl([
    "req",
    "-new",
    "-key",
    keyPath,
    "-subj",
    "/",
    "-outform",
    "DER",
    "-out",
    `${keyPath}.csr`,
  ]);
  assert.equal(stub.code, 0, stub.out);
  const der = readFileSync(`${keyPath}.csr`);
  if (overrides.badStubSignature) der[der.length - 3] ^= 0x55;
  const podUID = overrides.badProof ? "someone-else" : pod.metadata.uid!;
  const spec: Record<string, unknown> = {
    signerName: SIGNER,
    podName: pod.metadata.name,
    podUID: pod.metadata.uid,
    serviceAccountName: (pod.spec as { serviceAccountName: string }).serviceAccountName,
    serviceAccountUID: (await cluster.admin.get<KubeObject>(
      `/api/v1/namespaces/${pod.metadata.namespace}/serviceaccounts/${
        (pod.spec as { serviceAccountName: string }).serviceAccountName
      }`,
    )).metadata.uid,
    nodeName: (pod.spec as { nodeName: string }).nodeName,
    nodeUID: cluster.nodes[(pod.spec as { nodeName: string }).nodeName],
    maxExpirationSeconds: 3600,
    ...(overrides.legacyOnly ? {} : { stubPKCS10Request: der.toString("base64") }),
    ...(version === "v1beta1"
      ? {
        pkixPublicKey: Buffer.from(publicKey.export({ format: "der", type: "spki" })).toString("base64"),
        proofOfPossession: Buffer.from(
          sign(
            "sha256",
            Buffer.from(podUID),
            createPrivateKey(privateKey.export({ format: "pem", type: "pkcs8" })),
          ),
        ).toString("base64"),
      }
      : {}),
    ...overrides.spec,
  };
  const object: KubeObject = {
    apiVersion: `certificates.k8s.io/${version}`,
    kind: "PodCertificateRequest",
    metadata: { name: `pcr-${Math.random().toString(36).slice(2, 10)}`, namespace: pod.metadata.namespace },
    spec,
  };
  // A request the API server's admission would refuse (bad signatures) is written past it.
  const created = overrides.badStubSignature || overrides.badProof
    ? cluster.server.seed(object)
    : await cluster.admin.create<KubeObject>(
      `/apis/certificates.k8s.io/${version}/namespaces/${pod.metadata.namespace}/podcertificaterequests`,
      object,
    );
  const path =
    `/apis/certificates.k8s.io/${version}/namespaces/${pod.metadata.namespace}/podcertificaterequests/${created.metadata.name}`;
  const answered = await eventually(`an answer to ${created.metadata.name}`, async () => {
    const now = await cluster.admin.get<
      KubeObject & { status?: { conditions?: Array<Record<string, string>> } }
    >(path);
    return now.status?.conditions?.length ? now : undefined;
  });
  return answered as KubeObject & {
    status: {
      conditions: Array<{ type: string; status: string; reason: string; message: string }>;
      certificateChain?: string;
      notBefore?: string;
      notAfter?: string;
      beginRefreshAt?: string;
    };
  };
}

async function trustBundle(): Promise<string> {
  const ctb = await cluster.admin.get<{ spec: { trustBundle: string; signerName: string } }>(
    `/apis/certificates.k8s.io/v1beta1/clustertrustbundles/${clusterTrustBundleName(SIGNER)}`,
  );
  assert.equal(ctb.spec.signerName, SIGNER);
  return ctb.spec.trustBundle;
}

describe("the CA on Kubernetes", () => {
  before(async () => {
    cluster = await startCluster();
    dir = await tempDir("meshauth-k8s-e2e-");
    pods.frontend = await cluster.pod("photo-ns", "photo-frontend-0", "photo-frontend", "node-a");
    pods.backend = await cluster.pod("photo-ns", "photo-backend-0", "photo-backend", "node-b");
    pods.agentA = await cluster.pod("meshauth-system", "meshauth-agent-a", "meshauth-agent", "node-a");
    const config = join(dir.path, "ca.json");
    writeFileSync(
      config,
      JSON.stringify({
        trustDomain: TRUST_DOMAIN,
        dataDir: join(dir.path, "data"),
        listen: { host: "127.0.0.1", port: 0 },
        rateLimit: false,
        kubernetes: {
          audiences: ["meshauth"],
          api: { kubeconfig: await cluster.kubeconfigFor("meshauth-system", "meshauth-ca") },
          podCertificates: { enabled: true, signerName: SIGNER },
          leaderElection: { leaseDurationSeconds: 6, renewDeadlineSeconds: 4, retryPeriodSeconds: 1 },
        },
      }),
    );
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    ca = await startCa(config);
    bundlePath = join(dir.path, "data", "bundle.pem");
  });
  after(async () => {
    await ca?.stop();
    await cluster?.stop();
    await dir?.remove();
  });

  test("a CSR with a valid projected token for ns/photo-ns/sa/photo-frontend gets that identity", async () => {
    const r = await requestCertificate(
      id("photo-ns", "photo-frontend"),
      bearer(await podToken(pods.frontend)),
    );
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.equal(r.json.spiffeId, id("photo-ns", "photo-frontend"));
  });

  test("a token for another audience, an expired token, and another identity are refused with their codes", async () => {
    const wrongAudience = await requestCertificate(
      id("photo-ns", "photo-frontend"),
      bearer(await podToken(pods.frontend, ["vault"])),
    );
    assert.equal(wrongAudience.status, 401);
    assert.equal(wrongAudience.json.code, "ERR_TOKEN_INVALID");
    assert.match(wrongAudience.json.detail, /meant for \["vault"\]/);
    const expired = await requestCertificate(
      id("photo-ns", "photo-frontend"),
      bearer(await podToken(pods.frontend, ["meshauth"], { issuedSecondsAgo: 7200 })),
    );
    assert.equal(expired.status, 401);
    assert.equal(expired.json.code, "ERR_TOKEN_EXPIRED");
    const other = await requestCertificate(
      id("photo-ns", "photo-backend"),
      bearer(await podToken(pods.frontend)),
    );
    assert.equal(other.status, 403);
    assert.equal(other.json.code, "ERR_IDENTITY_MISMATCH");
  });

  test("an agent's token makes it its node: the node's SVID and its pods' identities, never a pod's on another node", async () => {
    const token = bearer(await podToken(pods.agentA));
    const node = await requestCertificate(`spiffe://${TRUST_DOMAIN}/node/node-a`, token);
    assert.equal(node.status, 201, JSON.stringify(node.json));
    const onItsNode = await requestCertificate(id("photo-ns", "photo-frontend"), token);
    assert.equal(onItsNode.status, 201, JSON.stringify(onItsNode.json));
    const elsewhere = await requestCertificate(id("photo-ns", "photo-backend"), token);
    assert.equal(elsewhere.status, 403);
    assert.equal(elsewhere.json.code, "ERR_IDENTITY_MISMATCH");
    const otherNode = await requestCertificate(`spiffe://${TRUST_DOMAIN}/node/node-b`, token);
    assert.equal(otherNode.status, 403);
  });

  test("a pod scheduled a moment ago, before the CA's watch brings it, is granted at the first request", async () => {
    const token = bearer(await podToken(pods.agentA));
    // The CA's watches stop delivering: its cache will not see the new pod.
    cluster.server.stallWatches();
    try {
      await cluster.pod("photo-ns", "photo-backend-1", "photo-backend", "node-a");
      const granted = await requestCertificate(id("photo-ns", "photo-backend"), token);
      assert.equal(granted.status, 201, JSON.stringify(granted.json));
      // Identities on no pod of the node: refused, and the API server is asked a burst of three
      // times at most, then once a second, however often the agent asks.
      const listsBefore = cluster.server.requestsBy(CA_USER).filter((r) => r.verb === "list").length;
      const started = Date.now();
      for (let i = 0; i < 8; i++) {
        const refused = await requestCertificate(id("datastore-ns", "datastore"), token);
        assert.equal(refused.status, 403);
        assert.equal(refused.json.code, "ERR_IDENTITY_MISMATCH");
      }
      const lists = cluster.server.requestsBy(CA_USER).filter((r) => r.verb === "list").length - listsBefore;
      assert.ok(lists <= 3 + Math.ceil((Date.now() - started) / 1000), `${lists} lists of pods`);
    } finally {
      await cluster.admin.delete("/api/v1/namespaces/photo-ns/pods/photo-backend-1");
      cluster.server.dropWatches();
    }
  });

  test("with its node SVID (mTLS) the agent gets what is on its node, and loses it when the pod goes", async () => {
    const { csr, keyPem } = await csrFor(`spiffe://${TRUST_DOMAIN}/node/node-a`);
    const issued = await curl([
      "--cacert",
      bundlePath,
      ...bearer(await podToken(pods.agentA)),
      "-H",
      "content-type: application/json",
      "--data-binary",
      JSON.stringify({ csr }),
      `${ca.url}/v1/certificates`,
    ]);
    assert.equal(issued.status, 201, issued.body);
    writeFileSync(join(dir.path, "node.key"), keyPem, { mode: 0o600 });
    writeFileSync(join(dir.path, "node.crt"), JSON.parse(issued.body).certificateChain.join(""));
    const mtls = ["--cert", join(dir.path, "node.crt"), "--key", join(dir.path, "node.key")];
    const frontend = await requestCertificate(id("photo-ns", "photo-frontend"), mtls);
    assert.equal(frontend.status, 201, JSON.stringify(frontend.json));
    await cluster.admin.delete("/api/v1/namespaces/photo-ns/pods/photo-frontend-0");
    await eventually("the frontend's identity to leave node-a", async () => {
      const r = await requestCertificate(id("photo-ns", "photo-frontend"), mtls);
      return r.status === 403 && r.json.code === "ERR_IDENTITY_MISMATCH" ? true : undefined;
    });
    pods.frontend = await cluster.pod("photo-ns", "photo-frontend-1", "photo-frontend", "node-a");
  });

  test("a v1 PodCertificateRequest gets an X509-SVID that OpenSSL verifies against the ClusterTrustBundle", async () => {
    const answered = await podCertificateRequest("v1", pods.frontend);
    const issued = answered.status.conditions.find((c) => c.type === "Issued");
    assert.equal(issued?.status, "True", JSON.stringify(answered.status));
    const chain = answered.status.certificateChain!;
    const leaf = parseCertificates(chain)[0];
    assert.deepEqual(uriSans(leaf), [id("photo-ns", "photo-frontend")]);
    assert.equal(new Date(answered.status.notAfter!).getTime(), leaf.notAfter.getTime());
    assert.equal(new Date(answered.status.notBefore!).getTime(), leaf.notBefore.getTime());
    assert.ok(
      (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 1000 <= 3600,
      "no longer than maxExpirationSeconds",
    );
    const refresh = new Date(answered.status.beginRefreshAt!).getTime();
    assert.ok(refresh > leaf.notBefore.getTime() && refresh < leaf.notAfter.getTime());
    writeFileSync(join(dir.path, "ctb.pem"), await trustBundle());
    const verified = await openssl(
      ["verify", "-CAfile", join(dir.path, "ctb.pem"), "-purpose", "sslclient"],
      chain,
    );
    assert.equal(verified.code, 0, verified.out);
  });

  test("v1 requests for a pod on another node, with another service account, or a bad stub CSR are denied with why", async () => {
    const otherNode = await podCertificateRequest("v1", pods.frontend, {
      spec: { nodeName: "node-b", nodeUID: cluster.nodes["node-b"] },
    });
    assert.deepEqual(pick(otherNode), { type: "Denied", reason: "NodeMismatch" });
    const otherAccount = await podCertificateRequest("v1", pods.frontend, {
      spec: { serviceAccountName: "photo-backend" },
    });
    assert.deepEqual(pick(otherAccount), { type: "Denied", reason: "ServiceAccountMismatch" });
    const badStub = await podCertificateRequest("v1", pods.frontend, { badStubSignature: true });
    assert.deepEqual(pick(badStub), { type: "Denied", reason: "InvalidStubPKCS10Request" });
    for (const denied of [otherNode, otherAccount, badStub]) {
      assert.equal(denied.status.certificateChain, undefined);
      assert.ok(denied.status.conditions[0].message.length > 10);
    }
  });

  test("the same for v1beta1: issued with pkixPublicKey and its proof, denied for a bad proof or another node", async () => {
    const legacy = await podCertificateRequest("v1beta1", pods.frontend, { legacyOnly: true });
    assert.deepEqual(pick(legacy), { type: "Issued", reason: "Issued" }, legacy.status.conditions[0].message);
    writeFileSync(join(dir.path, "ctb.pem"), await trustBundle());
    const verified = await openssl(
      ["verify", "-CAfile", join(dir.path, "ctb.pem")],
      legacy.status.certificateChain!,
    );
    assert.equal(verified.code, 0, verified.out);
    const withStub = await podCertificateRequest("v1beta1", pods.frontend);
    assert.deepEqual(pick(withStub), { type: "Issued", reason: "Issued" });
    const badProof = await podCertificateRequest("v1beta1", pods.frontend, {
      legacyOnly: true,
      badProof: true,
    });
    assert.deepEqual(pick(badProof), { type: "Denied", reason: "InvalidProofOfPossession" });
    const otherNode = await podCertificateRequest("v1beta1", pods.frontend, {
      legacyOnly: true,
      spec: { nodeName: "node-b", nodeUID: cluster.nodes["node-b"] },
    });
    assert.deepEqual(pick(otherNode), { type: "Denied", reason: "NodeMismatch" });
  });

  test("the CA did all this with only ca-rbac.yaml's grants, and the API server refused it nothing", () => {
    const made = cluster.server.requestsBy(CA_USER);
    assert.deepEqual(made.filter((r) => r.status !== 200), []);
    const used = new Set(made.map((r) => `${r.verb} ${r.group}/${r.resource}`));
    for (
      const grant of [
        "list /pods",
        "watch /pods",
        "get /pods",
        "get /nodes",
        "get /serviceaccounts",
        "create authentication.k8s.io/tokenreviews",
        "list certificates.k8s.io/podcertificaterequests",
        "watch certificates.k8s.io/podcertificaterequests",
        "update certificates.k8s.io/podcertificaterequests/status",
        "sign certificates.k8s.io/signers",
        "attest certificates.k8s.io/signers",
        "create certificates.k8s.io/clustertrustbundles",
        "get certificates.k8s.io/clustertrustbundles",
        "create coordination.k8s.io/leases",
        "get coordination.k8s.io/leases",
        "update coordination.k8s.io/leases",
      ]
    ) {
      assert.ok(used.has(grant), `${grant}: granted and used`);
    }
  });
});

function pick(answered: { status: { conditions: Array<{ type: string; reason: string }> } }) {
  const [c] = answered.status.conditions;
  return { type: c.type, reason: c.reason };
}

describe("the ClusterTrustBundle through a root rotation", () => {
  test("holds the new root as soon as it is published (both roots during the overlap), and comes back if deleted", async () => {
    const cluster = await startCluster();
    const authorities = await testAuthorities();
    try {
      const publisher = new ClusterTrustBundlePublisher({
        api: await cluster.clientFor("meshauth-system", "meshauth-ca"),
        authorities: authorities.authorities,
        signerName: SIGNER,
        apiVersion: "v1beta1",
        logger: silentLogger,
        checkMs: 100,
        verifyMs: 500,
      });
      await publisher.start();
      const path = `/apis/certificates.k8s.io/v1beta1/clustertrustbundles/${clusterTrustBundleName(SIGNER)}`;
      const roots = async () =>
        parseCertificates((await cluster.admin.get<{ spec: { trustBundle: string } }>(path)).spec.trustBundle)
          .map((c) => c.serialNumber);
      const [oldRoot] = await roots();
      // A new root, published now and signing in a minute (the overlap).
      const { CertificateAuthority } = await import("../../mod.ts");
      const next =
        await (await CertificateAuthority.createRoot({ trustDomain: TRUST_DOMAIN, ttlSeconds: 86400 }))
          .exportPem();
      await authorities.keyManager.add({ ...next, activeFrom: new Date(Date.now() + 60_000) });
      await authorities.authorities.reload();
      const during = await eventually("both roots", async () => {
        const now = await roots();
        return now.length === 2 ? now : undefined;
      });
      assert.ok(during.includes(oldRoot));
      // Someone deletes it: the running publisher notices at its next look at the cluster's
      // copy and makes it again, with nobody calling it.
      await cluster.admin.delete(path);
      const back = await eventually("the bundle to come back", () => roots().catch(() => undefined), 5000);
      assert.equal(back.length, 2);
      publisher.stop();
    } finally {
      await authorities.close();
      await cluster.stop();
    }
  });
});

describe("the trust bundle's ConfigMap, which the agents mount", () => {
  test("is published with the CA's RBAC, holds both roots during a rotation, keeps others' keys, and comes back if deleted", async () => {
    const cluster = await startCluster({
      stock: true,
      unservedResources: ["podcertificaterequests", "clustertrustbundles"],
    });
    const authorities = await testAuthorities();
    try {
      const publisher = new TrustBundleConfigMapPublisher({
        api: await cluster.clientFor("meshauth-system", "meshauth-ca"),
        authorities: authorities.authorities,
        namespace: "meshauth-system",
        name: "meshauth-trust-bundle",
        key: "bundle.pem",
        logger: silentLogger,
        checkMs: 100,
        verifyMs: 500,
      });
      await publisher.start();
      const path = "/api/v1/namespaces/meshauth-system/configmaps/meshauth-trust-bundle";
      const read = () => cluster.admin.get<KubeObject & { data: Record<string, string> }>(path);
      const roots = async () =>
        parseCertificates((await read()).data["bundle.pem"]).map((c) => c.serialNumber);
      assert.equal((await read()).data["bundle.pem"], authorities.authorities.bundlePem());
      const [oldRoot] = await roots();
      // Someone adds a key of their own: the publisher's updates keep it.
      await cluster.admin.replace(path, {
        ...(await read()),
        data: { ...(await read()).data, "note.txt": "ours" },
      });
      const { CertificateAuthority } = await import("../../mod.ts");
      const next =
        await (await CertificateAuthority.createRoot({ trustDomain: TRUST_DOMAIN, ttlSeconds: 86400 }))
          .exportPem();
      await authorities.keyManager.add({ ...next, activeFrom: new Date(Date.now() + 60_000) });
      await authorities.authorities.reload();
      const during = await eventually("both roots", async () => {
        const now = await roots();
        return now.length === 2 ? now : undefined;
      });
      assert.ok(during.includes(oldRoot));
      assert.equal((await read()).data["note.txt"], "ours");
      await cluster.admin.delete(path);
      const back = await eventually("the ConfigMap to come back", () => roots().catch(() => undefined), 5000);
      assert.equal(back.length, 2);
      publisher.stop();
      const byCa = cluster.server.requestsBy(CA_USER);
      assert.deepEqual(byCa.filter((r) => r.status !== 200 && r.status !== 404), []);
    } finally {
      await authorities.close();
      await cluster.stop();
    }
  });
});
