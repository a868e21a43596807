/**
 * The Kubernetes keys of the CA's configuration that reach the API server (`kubernetes.api`,
 * `nodeAuthorization`, `serviceAccountSecrets`, `podCertificates`, `leaderElection`), read with
 * the configuration's one {@link FieldReader}. Every key is listed in docs/kubernetes.md.
 *
 * @module
 */

import { KEY_ALGORITHMS, type KeyAlgorithm } from "../../mod.ts";
import type { FieldReader, RawConfig } from "../../internal/mod.ts";

/** The part of `kubernetes:` that this module reads. */
export interface KubernetesControllersConfig {
  /** The API server through `@kubernetes/client-node`; absent: no API access at all. */
  api?: {
    /** A kubeconfig file; absent: the pod's own service account (in-cluster). */
    kubeconfig?: string;
    context?: string;
    requestTimeoutSeconds: number;
  };
  /** Which identities a node's agent may obtain: those of the pods scheduled on its node. */
  nodeAuthorization: {
    enabled: boolean;
    /** `namespace/name` of the service accounts whose tokens are node agents' tokens. */
    agentServiceAccounts: string[];
    /** The most pods the CA's pod cache holds before it asks the API server per node instead. */
    maxPods: number;
  };
  /** The seed's deployment phase: a `meshauth.io/svid` Secret per service account. */
  serviceAccountSecrets: {
    enabled: boolean;
    namespaces: string[];
    ttlSeconds: number;
    keyAlgorithm: KeyAlgorithm;
  };
  /** The KEP-4317 Pod Certificates signer and its ClusterTrustBundle. */
  podCertificates: {
    enabled: boolean;
    signerName: string;
    /** The `certificates.k8s.io` versions watched (those the API server serves). */
    apiVersions: Array<"v1beta1" | "v1">;
    /** The longest lifetime issued, whatever a request's maxExpirationSeconds allows. */
    maxTtlSeconds: number;
    /** The ClusterTrustBundle's version; `false` publishes none. */
    clusterTrustBundle: "v1beta1" | "v1" | false;
  };
  /** The ConfigMap holding the CA's trust bundle, which node agents mount to trust the CA. */
  trustBundleConfigMap: {
    enabled: boolean;
    namespace: string;
    name: string;
    /** The data key holding the PEM bundle. */
    key: string;
  };
  /** The Lease that elects the one CA process running the controllers. */
  leaderElection: {
    namespace: string;
    name: string;
    leaseDurationSeconds: number;
    renewDeadlineSeconds: number;
    retryPeriodSeconds: number;
  };
}

/** Keys of `kubernetes:` read here, for the caller's unknown-key check. */
export const KUBERNETES_CONTROLLER_KEYS = [
  "api",
  "nodeAuthorization",
  "serviceAccountSecrets",
  "podCertificates",
  "trustBundleConfigMap",
  "leaderElection",
] as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
// KEP-4317: a signer name is `<domain>/<path>`, the domain a DNS subdomain.
const SIGNER_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)\/([A-Za-z0-9._-]{1,253})$/;

/** Reads the controller keys of the `kubernetes` mapping `k`. */
export function readKubernetesControllers(
  fields: FieldReader,
  k: RawConfig,
  limits: { maxTtlSeconds: number },
): KubernetesControllersConfig {
  const p = "kubernetes";
  let api: KubernetesControllersConfig["api"];
  if (k.api !== undefined) {
    const a = fields.obj(`${p}.api`, k.api, ["kubeconfig", "context", "requestTimeoutSeconds"]);
    api = {
      kubeconfig: a.kubeconfig === undefined ? undefined : fields.path(`${p}.api.kubeconfig`, a.kubeconfig),
      context: fields.optionalStr(`${p}.api.context`, a.context),
      requestTimeoutSeconds: fields.int(
        `${p}.api.requestTimeoutSeconds`,
        a.requestTimeoutSeconds,
        10,
        1,
        300,
      ),
    };
  }

  const n = fields.obj(`${p}.nodeAuthorization`, k.nodeAuthorization, [
    "enabled",
    "agentServiceAccounts",
    "maxPods",
  ]);
  const agentServiceAccounts = n.agentServiceAccounts === undefined
    ? ["meshauth-system/meshauth-agent"]
    : fields.strings(`${p}.nodeAuthorization.agentServiceAccounts`, n.agentServiceAccounts);
  for (const [i, sa] of agentServiceAccounts.entries()) {
    const [namespace, name, extra] = sa.split("/");
    if (extra !== undefined || !DNS_LABEL.test(namespace ?? "") || !DNS_SUBDOMAIN.test(name ?? "")) {
      fields.problem(
        `${p}.nodeAuthorization.agentServiceAccounts[${i}]: expected namespace/name, got ${
          JSON.stringify(sa)
        }`,
      );
    }
  }
  const nodeAuthorization = {
    enabled: fields.bool(`${p}.nodeAuthorization.enabled`, n.enabled, true),
    agentServiceAccounts,
    maxPods: fields.int(`${p}.nodeAuthorization.maxPods`, n.maxPods, 200_000, 1, 10_000_000),
  };

  const s = fields.obj(`${p}.serviceAccountSecrets`, k.serviceAccountSecrets, [
    "enabled",
    "namespaces",
    "ttlSeconds",
    "keyAlgorithm",
  ]);
  const namespaces = fields.strings(`${p}.serviceAccountSecrets.namespaces`, s.namespaces);
  for (const [i, namespace] of namespaces.entries()) {
    if (!DNS_LABEL.test(namespace)) {
      fields.problem(
        `${p}.serviceAccountSecrets.namespaces[${i}]: ${JSON.stringify(namespace)} is not a namespace name`,
      );
    }
  }
  const keyAlgorithm = fields.str(
    `${p}.serviceAccountSecrets.keyAlgorithm`,
    s.keyAlgorithm,
    "ECDSA-P256",
  ) as KeyAlgorithm;
  if (!KEY_ALGORITHMS.includes(keyAlgorithm)) {
    fields.problem(
      `${p}.serviceAccountSecrets.keyAlgorithm: expected one of ${KEY_ALGORITHMS.join(", ")}, got ${
        JSON.stringify(keyAlgorithm)
      }`,
    );
  }
  const serviceAccountSecrets = {
    enabled: fields.bool(`${p}.serviceAccountSecrets.enabled`, s.enabled, false),
    namespaces,
    ttlSeconds: fields.int(
      `${p}.serviceAccountSecrets.ttlSeconds`,
      s.ttlSeconds,
      Math.min(86400, limits.maxTtlSeconds),
      60,
      limits.maxTtlSeconds,
    ),
    keyAlgorithm,
  };
  if (serviceAccountSecrets.enabled && namespaces.length === 0) {
    fields.problem(
      `${p}.serviceAccountSecrets.namespaces: list the namespaces whose service accounts get Secrets`,
    );
  }

  const c = fields.obj(`${p}.podCertificates`, k.podCertificates, [
    "enabled",
    "signerName",
    "apiVersions",
    "maxTtlSeconds",
    "clusterTrustBundle",
  ]);
  const signerName = fields.str(`${p}.podCertificates.signerName`, c.signerName, "meshauth.io/pod-identity");
  if (!SIGNER_NAME.test(signerName) || signerName.length > 571) {
    fields.problem(
      `${p}.podCertificates.signerName: expected <domain>/<path>, got ${JSON.stringify(signerName)}`,
    );
  } else if (/^([a-z0-9-]+\.)*kubernetes\.io\//.test(signerName)) {
    fields.problem(`${p}.podCertificates.signerName: names under kubernetes.io are reserved for Kubernetes`);
  }
  const apiVersions = c.apiVersions === undefined
    ? ["v1beta1", "v1"]
    : fields.strings(`${p}.podCertificates.apiVersions`, c.apiVersions);
  for (const version of apiVersions) {
    if (version !== "v1beta1" && version !== "v1") {
      fields.problem(
        `${p}.podCertificates.apiVersions: expected v1beta1 and/or v1, got ${JSON.stringify(version)}`,
      );
    }
  }
  let clusterTrustBundle: KubernetesControllersConfig["podCertificates"]["clusterTrustBundle"] = "v1beta1";
  if (c.clusterTrustBundle === false || c.clusterTrustBundle === "false") clusterTrustBundle = false;
  else {clusterTrustBundle = fields.oneOf<"v1beta1" | "v1">(
      `${p}.podCertificates.clusterTrustBundle`,
      c.clusterTrustBundle,
      ["v1beta1", "v1"],
      "v1beta1",
    );}
  const podCertificates: KubernetesControllersConfig["podCertificates"] = {
    enabled: fields.bool(`${p}.podCertificates.enabled`, c.enabled, false),
    signerName,
    apiVersions: [...new Set(apiVersions)] as Array<"v1beta1" | "v1">,
    // KEP-4317: a signer may issue no shorter than an hour; kube-apiserver caps requests at 91 days.
    maxTtlSeconds: fields.int(
      `${p}.podCertificates.maxTtlSeconds`,
      c.maxTtlSeconds,
      Math.min(86400, limits.maxTtlSeconds),
      3600,
      Math.min(91 * 86400, limits.maxTtlSeconds),
    ),
    clusterTrustBundle,
  };

  const t = fields.obj(`${p}.trustBundleConfigMap`, k.trustBundleConfigMap, [
    "enabled",
    "namespace",
    "name",
    "key",
  ]);
  const trustBundleConfigMap = {
    enabled: fields.bool(`${p}.trustBundleConfigMap.enabled`, t.enabled, false),
    namespace: fields.str(`${p}.trustBundleConfigMap.namespace`, t.namespace, "meshauth-system"),
    name: fields.str(`${p}.trustBundleConfigMap.name`, t.name, "meshauth-trust-bundle"),
    key: fields.str(`${p}.trustBundleConfigMap.key`, t.key, "bundle.pem"),
  };
  if (!DNS_LABEL.test(trustBundleConfigMap.namespace)) {
    fields.problem(
      `${p}.trustBundleConfigMap.namespace: ${
        JSON.stringify(trustBundleConfigMap.namespace)
      } is not a namespace name`,
    );
  }
  if (!DNS_SUBDOMAIN.test(trustBundleConfigMap.name)) {
    fields.problem(
      `${p}.trustBundleConfigMap.name: ${JSON.stringify(trustBundleConfigMap.name)} is not a ConfigMap name`,
    );
  }
  // A ConfigMap key: letters, digits, '-', '_' and '.' (what kubectl accepts, and a file name).
  if (!/^[-._a-zA-Z0-9]{1,253}$/.test(trustBundleConfigMap.key) || /^\.\.?$/.test(trustBundleConfigMap.key)) {
    fields.problem(
      `${p}.trustBundleConfigMap.key: ${JSON.stringify(trustBundleConfigMap.key)} is not a ConfigMap key`,
    );
  }

  const l = fields.obj(`${p}.leaderElection`, k.leaderElection, [
    "namespace",
    "name",
    "leaseDurationSeconds",
    "renewDeadlineSeconds",
    "retryPeriodSeconds",
  ]);
  const leaderElection = {
    namespace: fields.str(`${p}.leaderElection.namespace`, l.namespace, "meshauth-system"),
    name: fields.str(`${p}.leaderElection.name`, l.name, "meshauth-ca"),
    leaseDurationSeconds: fields.int(
      `${p}.leaderElection.leaseDurationSeconds`,
      l.leaseDurationSeconds,
      15,
      2,
      3600,
    ),
    renewDeadlineSeconds: fields.int(
      `${p}.leaderElection.renewDeadlineSeconds`,
      l.renewDeadlineSeconds,
      10,
      1,
      3600,
    ),
    retryPeriodSeconds: fields.int(
      `${p}.leaderElection.retryPeriodSeconds`,
      l.retryPeriodSeconds,
      2,
      1,
      3600,
    ),
  };
  if (
    !(leaderElection.leaseDurationSeconds > leaderElection.renewDeadlineSeconds &&
      leaderElection.renewDeadlineSeconds > leaderElection.retryPeriodSeconds)
  ) {
    fields.problem(
      `${p}.leaderElection: leaseDurationSeconds > renewDeadlineSeconds > retryPeriodSeconds must hold`,
    );
  }

  if (!api && (serviceAccountSecrets.enabled || podCertificates.enabled || trustBundleConfigMap.enabled)) {
    fields.problem(
      `${p}.api: serviceAccountSecrets, podCertificates and trustBundleConfigMap need the API server (set kubernetes.api)`,
    );
  }
  return {
    api,
    nodeAuthorization,
    serviceAccountSecrets,
    podCertificates,
    trustBundleConfigMap,
    leaderElection,
  };
}
