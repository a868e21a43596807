/**
 * The authorization policy model, in the shape of Istio's AuthorizationPolicy: policies with
 * an action (ALLOW or DENY) and rules of sources (`from`), operations (`to`) and conditions
 * (`when`). Values match exactly, by prefix (`abc*`), by suffix (`*abc`), or by presence (`*`).
 * @module
 */

import { InvalidArgument } from "../errors.ts";

/** Who is calling: the peer's verified identity and where it comes from. */
export interface PolicySource {
  /** SPIFFE IDs (patterns allowed) of the peer. */
  principals?: string[];
  notPrincipals?: string[];
  /** Kubernetes namespaces, from `/ns/<namespace>/sa/<sa>` identities. */
  namespaces?: string[];
  notNamespaces?: string[];
  /** Trust domains of the peer. */
  trustDomains?: string[];
  notTrustDomains?: string[];
  /** End-user JWT principals (`<iss>/<sub>`), for the end-user authentication to come. */
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
}

/** What is being done. */
export interface PolicyOperation {
  hosts?: string[];
  notHosts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
  ports?: (number | string)[];
  notPorts?: (number | string)[];
}

/** A condition on a request attribute (`request.headers[x-env]`, `source.ip`, ...). */
export interface PolicyCondition {
  key: string;
  values?: string[];
  notValues?: string[];
}

/** A rule matches when one of its sources, one of its operations, and all of its conditions match. */
export interface PolicyRule {
  from?: { source: PolicySource }[];
  to?: { operation: PolicyOperation }[];
  when?: PolicyCondition[];
}

/** One policy. An ALLOW policy without rules allows nothing; a DENY policy without rules denies nothing. */
export interface AuthorizationPolicy {
  name: string;
  action: "ALLOW" | "DENY";
  rules?: PolicyRule[];
}

const SOURCE_FIELDS = [
  "principals",
  "notPrincipals",
  "namespaces",
  "notNamespaces",
  "trustDomains",
  "notTrustDomains",
  "requestPrincipals",
  "notRequestPrincipals",
] as const;
const OPERATION_FIELDS = [
  "hosts",
  "notHosts",
  "methods",
  "notMethods",
  "paths",
  "notPaths",
  "ports",
  "notPorts",
] as const;

/**
 * Checks a policy document (for example parsed from JSON or YAML) and returns it typed.
 * Unknown fields are refused: a misspelt `notPrincipal` must not silently widen a policy.
 */
export function parsePolicy(input: unknown): AuthorizationPolicy {
  const where = (path: string) => `policy${path}`;
  const policy = object(input, where(""));
  allowOnly(policy, ["name", "action", "rules"], where(""));
  if (typeof policy.name !== "string" || policy.name === "") {
    throw new InvalidArgument(where(".name"), "must be a non-empty string");
  }
  const name = policy.name;
  if (policy.action !== "ALLOW" && policy.action !== "DENY") {
    throw new InvalidArgument(`policy ${name} action`, "must be ALLOW or DENY");
  }
  const rules = policy.rules === undefined ? [] : array(policy.rules, `policy ${name} rules`);
  return {
    name,
    action: policy.action,
    rules: rules.map((r, i) => {
      const at = `policy ${name} rules[${i}]`;
      const rule = object(r, at);
      allowOnly(rule, ["from", "to", "when"], at);
      const out: PolicyRule = {};
      if (rule.from !== undefined) {
        out.from = array(rule.from, `${at}.from`).map((f, j) => {
          const entry = object(f, `${at}.from[${j}]`);
          allowOnly(entry, ["source"], `${at}.from[${j}]`);
          const source = object(entry.source, `${at}.from[${j}].source`);
          allowOnly(source, SOURCE_FIELDS, `${at}.from[${j}].source`);
          for (const k of SOURCE_FIELDS) {
            if (source[k] !== undefined) strings(source[k], `${at}.from[${j}].source.${k}`);
          }
          return { source: source as PolicySource };
        });
      }
      if (rule.to !== undefined) {
        out.to = array(rule.to, `${at}.to`).map((t, j) => {
          const entry = object(t, `${at}.to[${j}]`);
          allowOnly(entry, ["operation"], `${at}.to[${j}]`);
          const operation = object(entry.operation, `${at}.to[${j}].operation`);
          allowOnly(operation, OPERATION_FIELDS, `${at}.to[${j}].operation`);
          for (const k of OPERATION_FIELDS) {
            if (operation[k] === undefined) continue;
            if (k === "ports" || k === "notPorts") {
              for (const p of array(operation[k], `${at}.to[${j}].operation.${k}`)) {
                if (typeof p !== "number" && typeof p !== "string") {
                  throw new InvalidArgument(`${at}.to[${j}].operation.${k}`, "ports are numbers or strings");
                }
              }
            } else strings(operation[k], `${at}.to[${j}].operation.${k}`);
          }
          return { operation: operation as PolicyOperation };
        });
      }
      if (rule.when !== undefined) {
        out.when = array(rule.when, `${at}.when`).map((w, j) => {
          const condition = object(w, `${at}.when[${j}]`);
          allowOnly(condition, ["key", "values", "notValues"], `${at}.when[${j}]`);
          if (typeof condition.key !== "string" || condition.key === "") {
            throw new InvalidArgument(`${at}.when[${j}].key`, "must be a non-empty string");
          }
          if (condition.values !== undefined) strings(condition.values, `${at}.when[${j}].values`);
          if (condition.notValues !== undefined) strings(condition.notValues, `${at}.when[${j}].notValues`);
          return condition as unknown as PolicyCondition;
        });
      }
      return out;
    }),
  };
}

function object(value: unknown, at: string): Record<string, unknown> {
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument(at, "must be an object");
  }
  return value as Record<string, unknown>;
}

function array(value: unknown, at: string): unknown[] {
  if (!Array.isArray(value)) throw new InvalidArgument(at, "must be an array");
  return value;
}

function strings(value: unknown, at: string): string[] {
  const list = array(value, at);
  if (list.some((v) => typeof v !== "string")) throw new InvalidArgument(at, "must be an array of strings");
  return list as string[];
}

function allowOnly(value: Record<string, unknown>, fields: readonly string[], at: string): void {
  for (const key of Object.keys(value)) {
    if (!fields.includes(key)) throw new InvalidArgument(at, `unknown field ${JSON.stringify(key)}`);
  }
}
