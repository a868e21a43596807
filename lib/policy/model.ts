/**
 * The authorization policy model, in the shape of Istio's AuthorizationPolicy: policies with
 * an action (ALLOW or DENY) and rules of sources (`from`), operations (`to`) and conditions
 * (`when`). Values match exactly, by prefix (`abc*`), by suffix (`*abc`), or by presence (`*`).
 *
 * {@link parsePolicy} refuses, as Istio's validation does, what would silently widen a policy or
 * make it never match: empty `from`, `to` and `when` lists, empty sources and operations, empty
 * pattern lists, empty patterns, `*` inside a pattern, a condition without values, lower-case
 * methods and ports outside 1-65535.
 * @module
 */

import { InvalidArgument } from "../errors.ts";

/** Who is calling: the peer's verified identity and where it comes from. */
export interface PolicySource {
  /** SPIFFE IDs (patterns allowed) of the peer. */
  principals?: readonly string[];
  /** SPIFFE IDs (patterns allowed) the peer must not have. */
  notPrincipals?: readonly string[];
  /** Kubernetes namespaces, from `/ns/<namespace>/sa/<sa>` identities. */
  namespaces?: readonly string[];
  /** Namespaces the peer must not be in. */
  notNamespaces?: readonly string[];
  /** Trust domains of the peer. */
  trustDomains?: readonly string[];
  /** Trust domains the peer must not be from. */
  notTrustDomains?: readonly string[];
  /** End-user JWT principals (`<iss>/<sub>`), for the end-user authentication to come. */
  requestPrincipals?: readonly string[];
  /** End-user principals that must not be calling. */
  notRequestPrincipals?: readonly string[];
}

/** What is being done. */
export interface PolicyOperation {
  /** Host names, compared case-insensitively. */
  hosts?: readonly string[];
  /** Host names the request must not be for. */
  notHosts?: readonly string[];
  /** Upper-case method names (`GET`), compared case-sensitively as HTTP does. */
  methods?: readonly string[];
  /** Methods the request must not use. */
  notMethods?: readonly string[];
  /** Normalized paths without query string, as in {@link PolicyRequest.path}. */
  paths?: readonly string[];
  /** Paths the request must not be for. */
  notPaths?: readonly string[];
  /** Port numbers 1-65535, as numbers or decimal strings (`8080` or `"8080"`); no patterns. */
  ports?: readonly (number | string)[];
  /** Ports the request must not be on. */
  notPorts?: readonly (number | string)[];
}

/** A condition on a request attribute (`request.headers[x-env]`, `source.ip`, ...); needs `values` or `notValues`. */
export interface PolicyCondition {
  /** The attribute: `source.ip`, `request.headers[<name>]`, `destination.port`... */
  key: string;
  /** The condition holds when the attribute is one of these. */
  values?: readonly string[];
  /** The condition holds when the attribute is none of these. */
  notValues?: readonly string[];
}

/** A rule matches when one of its sources, one of its operations, and all of its conditions match. */
export interface PolicyRule {
  /** Who may match; absent matches every source. */
  from?: readonly { source: PolicySource }[];
  /** What may match; absent matches every operation. */
  to?: readonly { operation: PolicyOperation }[];
  /** Conditions that must all hold; absent means none. */
  when?: readonly PolicyCondition[];
}

/** One policy. An ALLOW policy without rules allows nothing; a DENY policy without rules denies nothing. */
export interface AuthorizationPolicy {
  /** Names the policy in decisions and audit records. */
  name: string;
  /** Whether a match allows the request or denies it. */
  action: "ALLOW" | "DENY";
  /** The policy matches when any rule does. */
  rules?: readonly PolicyRule[];
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

/** RFC 9110 5.6.2 token characters, without lower case (methods are case-sensitive) and `*` (the wildcard). */
const METHOD = /^[A-Z0-9!#$%&'+.^_`|~-]+$/;
const PORT = /^[1-9][0-9]{0,4}$/;

/**
 * Checks a policy document (for example parsed from JSON or YAML) and returns a deep copy of
 * it, typed and frozen, so that changing the document afterwards changes no decision.
 * Unknown fields are refused: a misspelt `notPrincipal` must not silently widen a policy.
 *
 * @example
 * ```ts
 * import { parsePolicy } from "meshauth";
 * const policy = parsePolicy(JSON.parse('{"name":"no-admin","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin*"]}}]}]}'));
 * Object.isFrozen(policy); // true
 * ```
 */
export function parsePolicy(input: unknown): AuthorizationPolicy {
  const policy = object(input, "policy");
  allowOnly(policy, ["name", "action", "rules"], "policy");
  if (typeof policy.name !== "string" || policy.name === "") {
    throw new InvalidArgument("policy.name", "must be a non-empty string");
  }
  const name = policy.name;
  if (policy.action !== "ALLOW" && policy.action !== "DENY") {
    throw new InvalidArgument(`policy ${name} action`, "must be ALLOW or DENY");
  }
  const rules = policy.rules === undefined ? [] : array(policy.rules, `policy ${name} rules`);
  return Object.freeze({
    name,
    action: policy.action,
    rules: Object.freeze(rules.map((r, i) => parseRule(r, `policy ${name} rules[${i}]`))),
  });
}

function parseRule(input: unknown, at: string): PolicyRule {
  const rule = object(input, at);
  allowOnly(rule, ["from", "to", "when"], at);
  const out: PolicyRule = {};
  if (rule.from !== undefined) {
    out.from = nonEmpty(rule.from, `${at}.from`).map((f, j) => {
      const entry = object(f, `${at}.from[${j}]`);
      allowOnly(entry, ["source"], `${at}.from[${j}]`);
      return Object.freeze({ source: parseSource(entry.source, `${at}.from[${j}].source`) });
    });
  }
  if (rule.to !== undefined) {
    out.to = nonEmpty(rule.to, `${at}.to`).map((t, j) => {
      const entry = object(t, `${at}.to[${j}]`);
      allowOnly(entry, ["operation"], `${at}.to[${j}]`);
      return Object.freeze({ operation: parseOperation(entry.operation, `${at}.to[${j}].operation`) });
    });
  }
  if (rule.when !== undefined) {
    out.when = nonEmpty(rule.when, `${at}.when`).map((w, j) => parseCondition(w, `${at}.when[${j}]`));
  }
  for (const list of [out.from, out.to, out.when]) if (list) Object.freeze(list);
  return Object.freeze(out);
}

function parseSource(input: unknown, at: string): PolicySource {
  const source = object(input, at);
  allowOnly(source, SOURCE_FIELDS, at);
  const out: Record<string, readonly string[]> = {};
  for (const k of SOURCE_FIELDS) {
    if (source[k] !== undefined) out[k] = patterns(source[k], `${at}.${k}`);
  }
  // Istio: an empty source would match every caller, the unauthenticated one included.
  if (Object.keys(out).length === 0) throw new InvalidArgument(at, "must set at least one field");
  return Object.freeze(out) as PolicySource;
}

function parseOperation(input: unknown, at: string): PolicyOperation {
  const operation = object(input, at);
  allowOnly(operation, OPERATION_FIELDS, at);
  const out: Record<string, readonly (string | number)[]> = {};
  for (const k of OPERATION_FIELDS) {
    const value = operation[k];
    if (value === undefined) continue;
    if (k === "ports" || k === "notPorts") out[k] = ports(value, `${at}.${k}`);
    else if (k === "methods" || k === "notMethods") out[k] = methods(value, `${at}.${k}`);
    else if (k === "paths" || k === "notPaths") out[k] = paths(value, `${at}.${k}`);
    else out[k] = patterns(value, `${at}.${k}`);
  }
  if (Object.keys(out).length === 0) throw new InvalidArgument(at, "must set at least one field");
  return Object.freeze(out) as PolicyOperation;
}

function parseCondition(input: unknown, at: string): PolicyCondition {
  const condition = object(input, at);
  allowOnly(condition, ["key", "values", "notValues"], at);
  if (typeof condition.key !== "string" || condition.key === "") {
    throw new InvalidArgument(`${at}.key`, "must be a non-empty string");
  }
  const out: PolicyCondition = { key: condition.key };
  if (condition.values !== undefined) out.values = patterns(condition.values, `${at}.values`);
  if (condition.notValues !== undefined) out.notValues = patterns(condition.notValues, `${at}.notValues`);
  // A condition with only a key would hold for every request.
  if (!out.values && !out.notValues) throw new InvalidArgument(at, "must set values or notValues");
  return Object.freeze(out);
}

/** A non-empty list of non-empty patterns, each exact, `*`, `prefix*` or `*suffix` (Istio's rule). */
function patterns(value: unknown, at: string): readonly string[] {
  const list = nonEmpty(value, at);
  list.forEach((p, i) => {
    if (typeof p !== "string") throw new InvalidArgument(at, "must be an array of strings");
    if (p === "") throw new InvalidArgument(`${at}[${i}]`, "must not be empty");
    const inner = p === "*" ? "" : p.startsWith("*") ? p.slice(1) : p.endsWith("*") ? p.slice(0, -1) : p;
    if (inner.includes("*")) {
      throw new InvalidArgument(`${at}[${i}]`, "* is allowed only alone, as a prefix or as a suffix");
    }
  });
  return Object.freeze([...list] as string[]);
}

function methods(value: unknown, at: string): readonly string[] {
  const list = patterns(value, at);
  list.forEach((m, i) => {
    const name = m === "*" ? "GET" : m.replace(/^\*|\*$/, "");
    if (!METHOD.test(name)) throw new InvalidArgument(`${at}[${i}]`, "must be an upper-case method name");
  });
  return list;
}

function paths(value: unknown, at: string): readonly string[] {
  const list = patterns(value, at);
  list.forEach((p, i) => {
    // Requests are matched on the path alone, so a pattern with a query or fragment never matches.
    if (p.includes("?") || p.includes("#")) {
      throw new InvalidArgument(`${at}[${i}]`, "must be a path without query or fragment");
    }
  });
  return list;
}

function ports(value: unknown, at: string): readonly (number | string)[] {
  const list = nonEmpty(value, at);
  list.forEach((p, i) => {
    const decimal = typeof p === "number" ? String(p) : p;
    if (typeof decimal !== "string" || !PORT.test(decimal) || Number(decimal) > 65535) {
      throw new InvalidArgument(`${at}[${i}]`, "must be a port number from 1 to 65535");
    }
  });
  return Object.freeze([...list] as (number | string)[]);
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

/** Istio refuses empty lists: an empty `from` or `to` would read as "any", an empty pattern list as "none". */
function nonEmpty(value: unknown, at: string): unknown[] {
  const list = array(value, at);
  if (list.length === 0) throw new InvalidArgument(at, "must not be empty");
  return list;
}

function allowOnly(value: Record<string, unknown>, fields: readonly string[], at: string): void {
  for (const key of Object.keys(value)) {
    if (!fields.includes(key)) throw new InvalidArgument(at, `unknown field ${JSON.stringify(key)}`);
  }
}
