// The seed's deployment phase: service accounts created, updated and deleted lead to
// meshauth.io/svid Secrets created, renewed and deleted, through a dropped watch and a 410 Gone
// with nothing missed, with only the RBAC the CA's manifests grant (the API server enforces it).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseCertificates, uriSans } from "../../mod.ts";
import {
  ControllerIssuer,
  jsonLogger,
  ServiceAccountSecretsController,
  silentLogger,
} from "../../ca-server/mod.ts";
import {
  eventually,
  openssl,
  startCluster,
  testAuthorities,
  type TestCluster,
  TRUST_DOMAIN,
} from "./helpers.ts";

interface Secret {
  type: string;
  metadata: {
    name: string;
    uid: string;
    annotations: Record<string, string>;
    ownerReferences?: Array<{ uid: string }>;
  };
  data: Record<string, string>;
}

let cluster: TestCluster;
let ca: Awaited<ReturnType<typeof testAuthorities>>;
let controller: ServiceAccountSecretsController;

const secretPath = (ns: string, sa: string) => `/api/v1/namespaces/${ns}/secrets/meshauth.${sa}`;
const decode = (b64: string) => Buffer.from(b64, "base64").toString("utf8");

async function secretOf(ns: string, sa: string): Promise<Secret | undefined> {
  try {
    return await cluster.admin.get<Secret>(secretPath(ns, sa));
  } catch {
    return undefined;
  }
}

describe("service-account Secrets", () => {
  before(async () => {
    cluster = await startCluster({ bookmarkIntervalMs: 300 });
    ca = await testAuthorities();
    // The controller runs as the CA's service account: only ca-rbac.yaml's grants apply.
    const api = await cluster.clientFor("meshauth-system", "meshauth-ca");
    controller = new ServiceAccountSecretsController({
      api,
      issuer: new ControllerIssuer({ authorities: ca.authorities, store: ca.store, logger: silentLogger }),
      authorities: ca.authorities,
      trustDomain: TRUST_DOMAIN,
      settings: {
        enabled: true,
        namespaces: ["photo-ns", "datastore-ns"],
        ttlSeconds: 60,
        keyAlgorithm: "ECDSA-P256",
      },
      logger: process.env.DEBUG_K8S ? jsonLogger({ level: "debug" }) : silentLogger,
    });
    await controller.start();
    await controller.settled();
  });
  after(async () => {
    controller?.stop();
    await ca?.close();
    await cluster?.stop();
  });

  test("every service account of the namespaces gets a Secret with its SVID, which OpenSSL verifies", async () => {
    for (
      const [ns, sa] of [["photo-ns", "photo-frontend"], ["photo-ns", "photo-backend"], [
        "datastore-ns",
        "datastore",
      ]]
    ) {
      const secret = await eventually(`the Secret of ${ns}/${sa}`, () => secretOf(ns, sa));
      assert.equal(secret.type, "meshauth.io/svid");
      assert.deepEqual(Object.keys(secret.data).sort(), ["cert-chain.pem", "key.pem", "root-cert.pem"]);
      const id = `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;
      const chain = decode(secret.data["cert-chain.pem"]);
      const leaf = parseCertificates(chain)[0];
      assert.deepEqual(uriSans(leaf), [id]);
      assert.equal(secret.metadata.annotations["meshauth.io/spiffe-id"], id);
      const sa_ = await cluster.admin.get<{ metadata: { uid: string } }>(
        `/api/v1/namespaces/${ns}/serviceaccounts/${sa}`,
      );
      assert.equal(secret.metadata.ownerReferences?.[0].uid, sa_.metadata.uid);
      const dir = ca.dir;
      writeFileSync(join(dir, "root.pem"), decode(secret.data["root-cert.pem"]));
      const verified = await openssl(["verify", "-CAfile", join(dir, "root.pem")], chain);
      assert.equal(verified.code, 0, verified.out);
      // The key is the certificate's.
      const keyPub = await openssl(["pkey", "-pubout"], decode(secret.data["key.pem"]));
      const certPub = await openssl(["x509", "-noout", "-pubkey"], chain);
      assert.equal(keyPub.out, certPub.out);
      // Issued through the CA's store and audit trail, as any issuance.
      assert.ok(await ca.store.findCertificate(leaf.serialNumber));
    }
    // Namespaces not configured get nothing, even with service accounts.
    assert.equal(await secretOf("meshauth-system", "meshauth-agent"), undefined);
  });

  test("a new service account gets a Secret; a deleted one loses it; a recreated one gets a new one", async () => {
    const sas = "/api/v1/namespaces/photo-ns/serviceaccounts";
    await cluster.admin.create(sas, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "uploader" },
    });
    const first = await eventually("the uploader's Secret", () => secretOf("photo-ns", "uploader"));
    // An update of the account that changes nothing of its identity re-issues nothing.
    const patched = await cluster.admin.patch<{ metadata: { resourceVersion: string } }>(`${sas}/uploader`, {
      metadata: { labels: { team: "photo" } },
    });
    const accounts = controller.reflectors[0];
    await eventually(
      "the controller to see the update",
      () => Number(accounts.resourceVersion) >= Number(patched.metadata.resourceVersion) || undefined,
    );
    await controller.settled();
    const unchanged = await secretOf("photo-ns", "uploader");
    assert.equal(
      unchanged?.metadata.annotations["meshauth.io/serial-number"],
      first.metadata.annotations["meshauth.io/serial-number"],
    );
    await cluster.admin.delete(`${sas}/uploader`);
    await eventually(
      "the uploader's Secret to go",
      async () => (await secretOf("photo-ns", "uploader")) ? undefined : true,
    );
    await cluster.admin.create(sas, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "uploader" },
    });
    const second = await eventually(
      "the recreated uploader's Secret",
      () => secretOf("photo-ns", "uploader"),
    );
    assert.notEqual(second.metadata.uid, first.metadata.uid);
    assert.notEqual(second.metadata.ownerReferences?.[0].uid, first.metadata.ownerReferences?.[0].uid);
  });

  test("a Secret is renewed before its certificate expires", async () => {
    await Promise.all([["photo-ns", "photo-backend"], ["datastore-ns", "datastore"]].map(async ([ns, sa]) => {
      const before = await eventually("the Secret", () => secretOf(ns, sa));
      const notAfter = Date.parse(before.metadata.annotations["meshauth.io/not-after"]);
      const serial = before.metadata.annotations["meshauth.io/serial-number"];
      const renewed = await eventually(`a renewal of ${ns}/${sa}`, async () => {
        const now = await secretOf(ns, sa);
        return now && now.metadata.annotations["meshauth.io/serial-number"] !== serial ? now : undefined;
      }, 25_000);
      assert.ok(Date.now() < notAfter, "renewed before the old certificate expired");
      assert.ok(Date.parse(renewed.metadata.annotations["meshauth.io/not-after"]) > notAfter);
    }));
  });

  test("a dropped watch is resumed from its resource version, and nothing is missed", async () => {
    await eventually("the uploader's Secret", () => secretOf("photo-ns", "uploader"));
    const count = (stat: "resumes" | "lists") => controller.reflectors.reduce((n, r) => n + r.stats[stat], 0);
    const resumesBefore = count("resumes");
    const listsBefore = count("lists");
    // These changes never reach the open watches; a watch resumed from "now" rather than from
    // the last resource version would never learn of the deletion.
    cluster.server.stallWatches();
    await cluster.admin.delete("/api/v1/namespaces/photo-ns/serviceaccounts/uploader");
    await cluster.admin.create("/api/v1/namespaces/datastore-ns/serviceaccounts", {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "backup" },
    });
    assert.ok(cluster.server.dropWatches() > 0);
    await eventually("the backup account's Secret", () => secretOf("datastore-ns", "backup"));
    await eventually(
      "the uploader's Secret to go",
      async () => (await secretOf("photo-ns", "uploader")) ? undefined : true,
    );
    assert.ok(count("resumes") > resumesBefore);
    assert.equal(count("lists"), listsBefore, "resumed, not listed again");
  });

  test("after 410 Gone the controller lists again and catches up on what its watch never saw", async () => {
    await eventually(
      "the archiver to be absent",
      async () => (await secretOf("photo-ns", "archiver")) ? undefined : true,
    );
    const relistsBefore = controller.reflectors.reduce((n, r) => n + r.stats.relistsAfterGone, 0);
    // The streams stall: these changes never reach the controller's watches...
    cluster.server.stallWatches();
    await cluster.admin.create("/api/v1/namespaces/photo-ns/serviceaccounts", {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "archiver" },
    });
    await cluster.admin.delete("/api/v1/namespaces/datastore-ns/serviceaccounts/backup");
    // ...and the history they would resume from is compacted away.
    cluster.server.compact();
    cluster.server.dropWatches();
    await eventually("the archiver's Secret", () => secretOf("photo-ns", "archiver"));
    await eventually(
      "the backup Secret to go",
      async () => (await secretOf("datastore-ns", "backup")) ? undefined : true,
    );
    assert.ok(controller.reflectors.reduce((n, r) => n + r.stats.relistsAfterGone, 0) > relistsBefore);
  });

  test("the controller used only what ca-rbac.yaml grants, and nothing was refused", () => {
    const made = cluster.server.requestsBy("system:serviceaccount:meshauth-system:meshauth-ca");
    assert.ok(made.length > 0);
    assert.deepEqual(made.filter((r) => r.status !== 200), []);
    const used = new Set(made.map((r) => `${r.verb} ${r.resource} ${r.namespace}`));
    for (const ns of ["photo-ns", "datastore-ns"]) {
      for (
        const grant of [
          "list serviceaccounts",
          "watch serviceaccounts",
          "list secrets",
          "watch secrets",
          "create secrets",
          "update secrets",
          "delete secrets",
        ]
      ) {
        assert.ok(used.has(`${grant} ${ns}`), `${grant} in ${ns} is granted and used`);
      }
    }
  });
});
