// RBAC as the API server's authorizer evaluates it, over the Role, ClusterRole, RoleBinding and
// ClusterRoleBinding objects in the test server's store (put there by applying the manifests of
// examples/kubernetes/). Deny by default; system:masters may do anything.

import type { KubeObject } from "./resources.ts";

export interface UserInfo {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

export interface AuthorizationRequest {
  verb: string;
  group: string;
  /** `pods`, or `pods/status` for a subresource. */
  resource: string;
  namespace?: string;
  name?: string;
}

interface PolicyRule {
  verbs?: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

interface Subject {
  kind: string;
  name: string;
  namespace?: string;
}

function subjectMatches(subject: Subject, user: UserInfo, bindingNamespace?: string): boolean {
  if (subject.kind === "User") return subject.name === user.username;
  if (subject.kind === "Group") return user.groups.includes(subject.name);
  if (subject.kind === "ServiceAccount") {
    const namespace = subject.namespace ?? bindingNamespace;
    return user.username === `system:serviceaccount:${namespace}:${subject.name}`;
  }
  return false;
}

function ruleAllows(rule: PolicyRule, request: AuthorizationRequest): boolean {
  const has = (list: string[] | undefined, value: string) =>
    (list ?? []).some((v) => v === "*" || v === value);
  if (!has(rule.verbs, request.verb)) return false;
  if (!has(rule.apiGroups, request.group)) return false;
  if (!has(rule.resources, request.resource)) return false;
  if (rule.resourceNames && rule.resourceNames.length > 0) {
    return request.name !== undefined && rule.resourceNames.includes(request.name);
  }
  return true;
}

/** What the authorizer reads: the store's RBAC objects. */
export interface RbacSource {
  roles(namespace: string): KubeObject[];
  clusterRoles(): KubeObject[];
  roleBindings(namespace: string): KubeObject[];
  clusterRoleBindings(): KubeObject[];
}

/** Rules built into every cluster that the manifests rely on (the bootstrap roles' parts). */
const BUILTIN_FOR_AUTHENTICATED: PolicyRule[] = [
  // ClusterTrustBundles are readable by any authenticated user (KEP-3257).
  { verbs: ["get", "list", "watch"], apiGroups: ["certificates.k8s.io"], resources: ["clustertrustbundles"] },
];

export function authorize(source: RbacSource, user: UserInfo, request: AuthorizationRequest): boolean {
  if (user.groups.includes("system:masters")) return true;
  if (
    user.groups.includes("system:authenticated") &&
    BUILTIN_FOR_AUTHENTICATED.some((r) => ruleAllows(r, request))
  ) {
    return true;
  }
  const rulesOf = (ref: { kind?: string; name?: string }, namespace?: string): PolicyRule[] => {
    const roles = ref.kind === "Role" && namespace ? source.roles(namespace) : source.clusterRoles();
    const role = roles.find((r) => r.metadata.name === ref.name);
    return (role?.rules as PolicyRule[] | undefined) ?? [];
  };
  for (const binding of source.clusterRoleBindings()) {
    const subjects = (binding.subjects as Subject[] | undefined) ?? [];
    if (!subjects.some((s) => subjectMatches(s, user))) continue;
    if (rulesOf(binding.roleRef as { kind?: string; name?: string }).some((r) => ruleAllows(r, request))) {
      return true;
    }
  }
  if (request.namespace) {
    for (const binding of source.roleBindings(request.namespace)) {
      const subjects = (binding.subjects as Subject[] | undefined) ?? [];
      if (!subjects.some((s) => subjectMatches(s, user, request.namespace))) continue;
      const ref = binding.roleRef as { kind?: string; name?: string };
      if (rulesOf(ref, request.namespace).some((r) => ruleAllows(r, request))) return true;
    }
  }
  return false;
}
