// The resources the test API server serves: their group, versions, kind, scope, subresources
// and supported field selectors, and how a stored object looks in each served version.

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name?: string;
    generateName?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: unknown[];
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface ResourceType {
  group: string;
  versions: string[];
  plural: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
  /** Subresources (`status`, `token`). */
  subresources?: string[];
  /** Field selector labels beyond metadata.name and metadata.namespace. */
  fields?: Record<string, (o: KubeObject) => string | undefined>;
  /** The object as a version shows it (fields that version lacks removed). */
  view?: (o: KubeObject, version: string) => KubeObject;
  /** Create-only reviews (TokenReview): nothing is stored. */
  isReview?: boolean;
  shortNames?: string[];
}

const CRUD = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const at = (o: KubeObject, path: string): string | undefined => {
  let v: unknown = o;
  for (const p of path.split(".")) v = (v as Record<string, unknown> | undefined)?.[p];
  return v === undefined || v === null ? undefined : String(v);
};

export const RESOURCES: ResourceType[] = [
  {
    group: "",
    versions: ["v1"],
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    verbs: CRUD,
    subresources: ["status"],
    fields: { "status.phase": (o) => at(o, "status.phase") },
  },
  {
    group: "",
    versions: ["v1"],
    plural: "nodes",
    kind: "Node",
    namespaced: false,
    verbs: CRUD,
    subresources: ["status"],
    fields: { "spec.unschedulable": (o) => at(o, "spec.unschedulable") ?? "false" },
  },
  {
    group: "",
    versions: ["v1"],
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
    fields: {
      "spec.nodeName": (o) => at(o, "spec.nodeName") ?? "",
      "spec.serviceAccountName": (o) => at(o, "spec.serviceAccountName") ?? "",
      "status.phase": (o) => at(o, "status.phase") ?? "",
    },
  },
  {
    group: "",
    versions: ["v1"],
    plural: "serviceaccounts",
    kind: "ServiceAccount",
    namespaced: true,
    verbs: CRUD,
    subresources: ["token"],
  },
  {
    group: "",
    versions: ["v1"],
    plural: "secrets",
    kind: "Secret",
    namespaced: true,
    verbs: CRUD,
    fields: { type: (o) => at(o, "type") ?? "Opaque" },
  },
  { group: "", versions: ["v1"], plural: "configmaps", kind: "ConfigMap", namespaced: true, verbs: CRUD },
  {
    group: "",
    versions: ["v1"],
    plural: "services",
    kind: "Service",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
  },
  { group: "", versions: ["v1"], plural: "events", kind: "Event", namespaced: true, verbs: CRUD },
  {
    group: "apps",
    versions: ["v1"],
    plural: "deployments",
    kind: "Deployment",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
  },
  {
    group: "apps",
    versions: ["v1"],
    plural: "daemonsets",
    kind: "DaemonSet",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
  },
  {
    group: "coordination.k8s.io",
    versions: ["v1"],
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    verbs: CRUD,
  },
  {
    group: "storage.k8s.io",
    versions: ["v1"],
    plural: "csidrivers",
    kind: "CSIDriver",
    namespaced: false,
    verbs: CRUD,
  },
  {
    group: "policy",
    versions: ["v1"],
    plural: "poddisruptionbudgets",
    kind: "PodDisruptionBudget",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
  },
  {
    group: "networking.k8s.io",
    versions: ["v1"],
    plural: "networkpolicies",
    kind: "NetworkPolicy",
    namespaced: true,
    verbs: CRUD,
  },
  {
    group: "rbac.authorization.k8s.io",
    versions: ["v1"],
    plural: "roles",
    kind: "Role",
    namespaced: true,
    verbs: CRUD,
  },
  {
    group: "rbac.authorization.k8s.io",
    versions: ["v1"],
    plural: "rolebindings",
    kind: "RoleBinding",
    namespaced: true,
    verbs: CRUD,
  },
  {
    group: "rbac.authorization.k8s.io",
    versions: ["v1"],
    plural: "clusterroles",
    kind: "ClusterRole",
    namespaced: false,
    verbs: CRUD,
  },
  {
    group: "rbac.authorization.k8s.io",
    versions: ["v1"],
    plural: "clusterrolebindings",
    kind: "ClusterRoleBinding",
    namespaced: false,
    verbs: CRUD,
  },
  {
    group: "authentication.k8s.io",
    versions: ["v1"],
    plural: "tokenreviews",
    kind: "TokenReview",
    namespaced: false,
    verbs: ["create"],
    isReview: true,
  },
  {
    group: "authorization.k8s.io",
    versions: ["v1"],
    plural: "subjectaccessreviews",
    kind: "SubjectAccessReview",
    namespaced: false,
    verbs: ["create"],
    isReview: true,
  },
  {
    group: "certificates.k8s.io",
    versions: ["v1beta1", "v1"],
    plural: "podcertificaterequests",
    kind: "PodCertificateRequest",
    namespaced: true,
    verbs: CRUD,
    subresources: ["status"],
    fields: {
      "spec.signerName": (o) => at(o, "spec.signerName"),
      "spec.podName": (o) => at(o, "spec.podName"),
      "spec.nodeName": (o) => at(o, "spec.nodeName"),
    },
    // One storage, two views: v1 has no pkixPublicKey and proofOfPossession.
    view: (o, version) => {
      if (version !== "v1") return o;
      const spec = { ...(o.spec as Record<string, unknown>) };
      delete spec.pkixPublicKey;
      delete spec.proofOfPossession;
      return { ...o, spec };
    },
  },
  {
    group: "certificates.k8s.io",
    versions: ["v1beta1", "v1"],
    plural: "clustertrustbundles",
    kind: "ClusterTrustBundle",
    namespaced: false,
    verbs: CRUD,
    fields: { "spec.signerName": (o) => at(o, "spec.signerName") ?? "" },
  },
];

export function findResource(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.group === group && r.plural === plural && r.versions.includes(version));
}

export function resourcesOf(group: string, version: string): ResourceType[] {
  return RESOURCES.filter((r) => r.group === group && r.versions.includes(version));
}

/** The APIResourceList of one group version, as discovery answers it. */
export function apiResourceList(group: string, version: string) {
  const groupVersion = group ? `${group}/${version}` : version;
  const resources = resourcesOf(group, version).flatMap((r) => [
    {
      name: r.plural,
      singularName: r.kind.toLowerCase(),
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: r.verbs,
    },
    ...(r.subresources ?? []).map((s) => ({
      name: `${r.plural}/${s}`,
      singularName: "",
      namespaced: r.namespaced,
      kind: s === "token" ? "TokenRequest" : r.kind,
      verbs: s === "token" ? ["create"] : ["get", "patch", "update"],
    })),
  ]);
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion, resources };
}

export function apiGroupList() {
  const groups = [...new Set(RESOURCES.map((r) => r.group).filter(Boolean))];
  return {
    kind: "APIGroupList",
    apiVersion: "v1",
    groups: groups.map((name) => {
      const versions = [...new Set(RESOURCES.filter((r) => r.group === name).flatMap((r) => r.versions))];
      const preferred = versions.includes("v1") ? "v1" : versions[0];
      return {
        name,
        versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
        preferredVersion: { groupVersion: `${name}/${preferred}`, version: preferred },
      };
    }),
  };
}

/** Parses a field selector against a resource's supported labels. */
export function fieldSelector(
  resource: ResourceType,
  text: string | null,
): ((o: KubeObject) => boolean) | string {
  if (!text) return () => true;
  const terms: Array<{ field: string; op: "=" | "!="; value: string }> = [];
  for (const part of text.split(",")) {
    const m = /^([A-Za-z0-9_.-]+)\s*(==|!=|=)\s*(.*)$/.exec(part.trim());
    if (!m) return `invalid field selector: ${part}`;
    const field = m[1];
    const known = field === "metadata.name" || field === "metadata.namespace" || resource.fields?.[field];
    if (!known) return `field label not supported: ${field}`;
    terms.push({ field, op: m[2] === "!=" ? "!=" : "=", value: m[3] });
  }
  return (o) =>
    terms.every((t) => {
      const value = t.field === "metadata.name"
        ? o.metadata.name
        : t.field === "metadata.namespace"
        ? o.metadata.namespace ?? ""
        : resource.fields![t.field](o);
      return t.op === "=" ? value === t.value : value !== t.value;
    });
}

/** Parses an equality- or set-based label selector. */
export function labelSelector(text: string | null): ((o: KubeObject) => boolean) | string {
  if (!text) return () => true;
  const parts = text.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  const tests: Array<(labels: Record<string, string>) => boolean> = [];
  for (const raw of parts) {
    const part = raw.trim().replace(/^,/, "").trim();
    if (!part) continue;
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(part))) {
      const [, key, op, list] = m;
      const values = list.split(",").map((v) => v.trim());
      tests.push((l) => op === "in" ? values.includes(l[key]) : !values.includes(l[key]));
    } else if ((m = /^([^\s!=]+)\s*(==|!=|=)\s*(\S*)$/.exec(part))) {
      const [, key, op, value] = m;
      tests.push((l) => op === "!=" ? l[key] !== value : l[key] === value);
    } else if ((m = /^!([^\s!=]+)$/.exec(part))) {
      const key = m[1];
      tests.push((l) => !(key in l));
    } else if ((m = /^([^\s!=]+)$/.exec(part))) {
      const key = m[1];
      tests.push((l) => key in l);
    } else {
      return `unable to parse requirement: ${part}`;
    }
  }
  return (o) => tests.every((t) => t(o.metadata.labels ?? {}));
}
