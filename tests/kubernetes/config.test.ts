// The `kubernetes:` keys of the CA configuration: defaults, every problem by path, and the
// core additions the Pod Certificates signer stands on (a key-only request, issuance to a key).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { generateKeyPairSync } from "node:crypto";
import {
  CertificateAuthority,
  createCsr,
  exportSpki,
  generateKeyPair,
  InvalidCsr,
  SpiffeId,
  uriSans,
} from "../../mod.ts";
import { parseKeyRequest } from "../../internal/mod.ts";
import {
  ConfigError,
  loadConfig,
  RequestDenied,
  requestedKey,
  verifyProofOfPossession,
} from "../../ca-server/mod.ts";
import { tempDir } from "../ca-server/helpers.ts";
import { openssl } from "./helpers.ts";

async function load(kubernetes: unknown) {
  const dir = await tempDir("meshauth-k8s-config-");
  try {
    const path = join(dir.path, "ca.json");
    writeFileSync(path, JSON.stringify({ kubernetes }));
    return await loadConfig({ path, env: {} });
  } finally {
    await dir.remove();
  }
}

describe("kubernetes configuration", () => {
  test("api alone turns on node authorization and token review, with documented defaults", async () => {
    const config = await load({ audiences: ["meshauth"], api: {} });
    const k = config.kubernetes!;
    assert.deepEqual(k.api, { kubeconfig: undefined, context: undefined, requestTimeoutSeconds: 10 });
    assert.deepEqual(k.nodeAuthorization, {
      enabled: true,
      agentServiceAccounts: ["meshauth-system/meshauth-agent"],
      maxPods: 200_000,
    });
    assert.equal(k.serviceAccountSecrets.enabled, false);
    assert.equal(k.podCertificates.enabled, false);
    assert.equal(k.podCertificates.signerName, "meshauth.io/pod-identity");
    assert.deepEqual(k.podCertificates.apiVersions, ["v1beta1", "v1"]);
    assert.equal(k.podCertificates.clusterTrustBundle, "v1beta1");
    assert.deepEqual(k.leaderElection, {
      namespace: "meshauth-system",
      name: "meshauth-ca",
      leaseDurationSeconds: 15,
      renewDeadlineSeconds: 10,
      retryPeriodSeconds: 2,
    });
  });

  test("the configuration docs/kubernetes.md shows loads as it is, with the defaults it states", async () => {
    const doc = readFileSync(new URL("../../docs/kubernetes.md", import.meta.url), "utf8");
    const block = /## Configuration[\s\S]*?```yaml\n([\s\S]*?)```/.exec(doc)![1];
    const dir = await tempDir("meshauth-k8s-doc-");
    try {
      const path = join(dir.path, "ca.yaml");
      writeFileSync(path, block);
      const k = (await loadConfig({ path, env: {} })).kubernetes!;
      const defaults = (await load({ audiences: ["meshauth"], api: {} })).kubernetes!;
      assert.deepEqual(k.nodeAuthorization, defaults.nodeAuthorization);
      assert.deepEqual(k.podCertificates, defaults.podCertificates);
      assert.deepEqual(k.leaderElection, defaults.leaderElection);
      assert.deepEqual(k.trustBundleConfigMap, defaults.trustBundleConfigMap);
      assert.deepEqual({ ...k.serviceAccountSecrets, namespaces: [] }, defaults.serviceAccountSecrets);
      assert.equal(k.api?.kubeconfig, "/etc/meshauth/kubeconfig");
    } finally {
      await dir.remove();
    }
  });

  test("every mistake is reported by its path, all at once", async () => {
    await assert.rejects(
      load({
        audiences: ["meshauth"],
        api: { kubeconfig: "k", contxt: "x" },
        jwksFile: "jwks.json",
        nodeAuthorization: { agentServiceAccounts: ["no-slash"] },
        serviceAccountSecrets: { enabled: true, namespaces: ["Bad_NS"], ttlSeconds: 10 },
        podCertificates: { enabled: true, signerName: "kubernetes.io/mine", apiVersions: ["v2"] },
        trustBundleConfigMap: { enabled: true, namespace: "Meshauth", name: "a/b", key: "../x" },
        leaderElection: { leaseDurationSeconds: 5, renewDeadlineSeconds: 10 },
      }),
      (err: ConfigError) => {
        const text = err.problems.join("\n");
        for (
          const expected of [
            "kubernetes.api.contxt: unknown field",
            "kubernetes.api: tokens are reviewed through the API server; remove jwksFile",
            "kubernetes.nodeAuthorization.agentServiceAccounts[0]: expected namespace/name",
            "kubernetes.serviceAccountSecrets.namespaces[0]",
            "kubernetes.serviceAccountSecrets.ttlSeconds",
            "kubernetes.podCertificates.signerName: names under kubernetes.io are reserved",
            "kubernetes.podCertificates.apiVersions: expected v1beta1 and/or v1",
            "kubernetes.leaderElection: leaseDurationSeconds > renewDeadlineSeconds > retryPeriodSeconds",
            'kubernetes.trustBundleConfigMap.namespace: "Meshauth" is not a namespace name',
            'kubernetes.trustBundleConfigMap.name: "a/b" is not a ConfigMap name',
            'kubernetes.trustBundleConfigMap.key: "../x" is not a ConfigMap key',
          ]
        ) assert.ok(text.includes(expected), `missing: ${expected}\n${text}`);
        return true;
      },
    );
    await assert.rejects(
      load({ audiences: ["meshauth"], jwksFile: "j.json", issuer: "x", podCertificates: { enabled: true } }),
      /kubernetes.api: serviceAccountSecrets, podCertificates and trustBundleConfigMap need the API server/,
    );
    await assert.rejects(
      load({
        audiences: ["meshauth"],
        jwksFile: "j.json",
        issuer: "x",
        trustBundleConfigMap: { enabled: true },
      }),
      /trustBundleConfigMap need the API server/,
    );
  });
});

describe("issuing to a proven key", () => {
  test("parseKeyRequest reads an OpenSSL stub request with an empty subject, and refuses a bad signature", async () => {
    const dir = await tempDir("meshauth-stub-");
    try {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      writeFileSync(join(dir.path, "k.pem"), privateKey.export({ format: "pem", type: "pkcs8" }));
      const made = await openssl([
        "req",
        "-new",
        "-key",
        join(dir.path, "k.pem"),
        "-subj",
        "/",
        "-outform",
        "PEM",
      ]);
      assert.equal(made.code, 0, made.out);
      const request = await parseKeyRequest(made.out);
      assert.equal(request.keyAlgorithm, "ECDSA-P256");
      const der = request.der.slice();
      der[der.length - 3] ^= 0x55;
      await assert.rejects(parseKeyRequest(der), (err: InvalidCsr) => err.reason === "signature");
    } finally {
      await dir.remove();
    }
  });

  test("issueToPublicKey names the ID alone and refuses IDs outside the trust domain", async () => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: "cluster.local" });
    const keys = await generateKeyPair("ECDSA-P256");
    const spki = await exportSpki(keys.publicKey);
    const id = SpiffeId.fromServiceAccount("cluster.local", "photo-ns", "photo-frontend");
    const issued = await ca.issueToPublicKey(spki, { id, ttlSeconds: 3600 });
    assert.deepEqual(uriSans((await import("../../mod.ts")).parseCertificates(issued.chainPem)[0]), [
      id.toString(),
    ]);
    await assert.rejects(
      ca.issueToPublicKey(spki, { id: "spiffe://other.example/ns/a/sa/b" }),
      /not in this CA's trust domain/,
    );
    await assert.rejects(ca.issueToPublicKey(new Uint8Array([1, 2, 3]), { id }), InvalidCsr);
  });

  test("a v1 request whose stub is a SPIFFE CSR of another key than pkixPublicKey is denied", async () => {
    const a = await generateKeyPair("ECDSA-P256");
    const b = await generateKeyPair("ECDSA-P256");
    const stub = await createCsr({ keys: a, id: "spiffe://cluster.local/x" });
    const der = Buffer.from(stub.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const request = {
      metadata: { name: "r", namespace: "n" },
      spec: {
        signerName: "meshauth.io/pod-identity",
        podName: "p",
        podUID: "u",
        serviceAccountName: "s",
        serviceAccountUID: "su",
        nodeName: "n",
        nodeUID: "nu",
        stubPKCS10Request: der.toString("base64"),
        pkixPublicKey: Buffer.from(await exportSpki(b.publicKey)).toString("base64"),
        proofOfPossession: "",
      },
    };
    await assert.rejects(
      requestedKey(request, "v1beta1"),
      (err: RequestDenied) => err.reason === "InvalidProofOfPossession",
    );
    const v1 = await requestedKey(request, "v1");
    assert.deepEqual(v1.spki, new Uint8Array(await exportSpki(a.publicKey)));
    const noKey = { ...request, spec: { ...request.spec, stubPKCS10Request: undefined } };
    await assert.rejects(requestedKey(noKey, "v1"), (err: RequestDenied) => err.reason === "InvalidRequest");
  });

  test("a request whose key bytes are no key is denied, not retried: garbage, a hybrid EC point", async () => {
    const keys = await generateKeyPair("ECDSA-P256");
    const spki = new Uint8Array(await exportSpki(keys.publicKey));
    const hybrid = spki.slice();
    hybrid[spki.length - 65] = 0x06; // RFC 5480 2.2 refuses the hybrid form
    assert.equal(spki[spki.length - 65], 0x04);
    const base = {
      metadata: { name: "r", namespace: "n" },
      spec: {
        signerName: "meshauth.io/pod-identity",
        podName: "p",
        podUID: "u",
        serviceAccountName: "s",
        serviceAccountUID: "su",
        nodeName: "n",
        nodeUID: "nu",
        proofOfPossession: "",
      },
    };
    const denied = (reason: string, field: string) => (err: unknown) => {
      assert.ok(err instanceof RequestDenied, `a RequestDenied, not ${String(err)}`);
      assert.equal(err.reason, reason);
      assert.match(err.message, new RegExp(`^spec\\.${field}: `));
      return true;
    };
    for (const bytes of [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]), hybrid]) {
      const pkix = { ...base, spec: { ...base.spec, pkixPublicKey: Buffer.from(bytes).toString("base64") } };
      await assert.rejects(requestedKey(pkix, "v1beta1"), denied("InvalidRequest", "pkixPublicKey"));
      const stub = {
        ...base,
        spec: { ...base.spec, stubPKCS10Request: Buffer.from(bytes).toString("base64") },
      };
      await assert.rejects(requestedKey(stub, "v1"), denied("InvalidStubPKCS10Request", "stubPKCS10Request"));
    }
  });

  test("a pkixPublicKey whose EC point is not on its curve is denied, not thrown out of the signer", async () => {
    // The core's reading passes it (0x04 and two coordinates of P-256's size); node:crypto, which
    // checks the proof, cannot import it.
    const spki = new Uint8Array(await exportSpki((await generateKeyPair("ECDSA-P256")).publicKey));
    const offCurve = spki.slice();
    offCurve[offCurve.length - 1] ^= 1;
    const request = {
      metadata: { name: "r", namespace: "n" },
      spec: {
        signerName: "meshauth.io/pod-identity",
        podName: "p",
        podUID: "u",
        serviceAccountName: "s",
        serviceAccountUID: "su",
        nodeName: "n",
        nodeUID: "nu",
        pkixPublicKey: Buffer.from(offCurve).toString("base64"),
        proofOfPossession: "",
      },
    };
    await assert.rejects(requestedKey(request, "v1beta1"), (err: unknown) => {
      assert.ok(err instanceof RequestDenied, `a RequestDenied, not ${String(err)}`);
      assert.equal(err.reason, "InvalidRequest");
      assert.match(err.message, /^spec\.pkixPublicKey: /);
      return true;
    });
    assert.equal(verifyProofOfPossession(offCurve, "ECDSA-P256", "u", new Uint8Array(8)), false);
  });
});
