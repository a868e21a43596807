/**
 * The one policy evaluator: deny before allow, and deny by default.
 *
 * @example
 * ```ts
 * import { PolicyEngine, SpiffeId } from "meshauth";
 * const engine = new PolicyEngine([
 *   { name: "no-admin", action: "DENY", rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }] },
 *   {
 *     name: "frontend-reads",
 *     action: "ALLOW",
 *     rules: [{
 *       from: [{ source: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] } }],
 *       to: [{ operation: { methods: ["GET"], paths: ["/photos/*"] } }],
 *     }],
 *   },
 * ]);
 * engine.evaluate({ peerId: SpiffeId.parse("spiffe://cluster.local/ns/web/sa/frontend"), method: "GET", path: "/photos/1" });
 * // { allowed: true, reason: "allowed", policy: "frontend-reads", ruleIndex: 0 }
 * ```
 * @module
 */

import { InvalidArgument, optionsOf, PolicyDenied } from "../errors.ts";
import type { SpiffeId } from "../spiffeid.ts";
import {
  type AuthorizationPolicy,
  parsePolicy,
  type PolicyCondition,
  type PolicyOperation,
  type PolicyRule,
  type PolicySource,
} from "./model.ts";

/**
 * The facts a decision is made on. A fact left out (or empty) is absent: it matches no positive
 * pattern (`principals: ["*"]` does not match a caller without identity) and is none of the values
 * of any negative list (`notPrincipals: ["*"]` matches it).
 */
export interface PolicyRequest {
  /** The peer's verified SPIFFE ID (from mutual TLS). */
  peerId?: SpiffeId;
  /** The end user's principal (`<iss>/<sub>`), once end-user JWTs are verified. */
  requestPrincipal?: string;
  /** The host (authority) without port; compared case-insensitively. */
  host?: string;
  /** The HTTP method as sent (`GET`); compared case-sensitively. */
  method?: string;
  /**
   * The request path, already normalized and without query string or fragment. Istio has Envoy
   * normalize it before matching (RFC 3986 section 6: `.` and `..` segments removed, and `//`
   * merged if so configured); do the same, or `/public/../admin` escapes a `DENY` on `/admin*`.
   */
  path?: string;
  /** The destination port. Compared as a decimal string, so `"8080"` and `8080` match but `"08080"` does not. */
  port?: number | string;
  /** Attributes `when` conditions refer to, e.g. `{ "request.headers[x-env]": "prod", "source.ip": "10.0.0.1" }`. */
  attributes?: Record<string, string | readonly string[] | undefined>;
}

/** What was decided and why; the audit record of a request. */
export interface PolicyDecision {
  /** Whether the request may proceed. */
  allowed: boolean;
  /** `denied` or `allowed` by a policy, no ALLOW policy matched, or the engine's default applied. */
  reason: "denied" | "allowed" | "no-allow-policy-matched" | "default";
  /** The policy that decided, when one did. */
  policy?: string;
  /** Which rule of `policy` matched (0-based), when one did. */
  ruleIndex?: number;
}

/** Options of {@link PolicyEngine}. */
export interface PolicyEngineOptions {
  /** The decision when no ALLOW policy exists at all. Default `"DENY"` (deny by default). */
  defaultAction?: "ALLOW" | "DENY";
}

/** Evaluates requests against a set of policies. */
export class PolicyEngine {
  readonly #deny: AuthorizationPolicy[];
  readonly #allow: AuthorizationPolicy[];
  readonly #defaultAction: "ALLOW" | "DENY";

  /** Policies are checked with {@link parsePolicy} so a malformed one fails here, not per request. */
  constructor(policies: readonly unknown[], options: PolicyEngineOptions = {}) {
    if (!Array.isArray(policies)) throw new InvalidArgument("policies", "expected a list of policies");
    optionsOf(options);
    const parsed = policies.map(parsePolicy);
    this.#deny = parsed.filter((p) => p.action === "DENY");
    this.#allow = parsed.filter((p) => p.action === "ALLOW");
    this.#defaultAction = options.defaultAction ?? "DENY";
  }

  /** Decides: any matching DENY denies; then any matching ALLOW allows; otherwise deny. */
  evaluate(request: PolicyRequest): PolicyDecision {
    for (const policy of this.#deny) {
      const ruleIndex = matchingRule(policy, request);
      if (ruleIndex !== undefined) {
        return { allowed: false, reason: "denied", policy: policy.name, ruleIndex };
      }
    }
    if (this.#allow.length === 0) return { allowed: this.#defaultAction === "ALLOW", reason: "default" };
    for (const policy of this.#allow) {
      const ruleIndex = matchingRule(policy, request);
      if (ruleIndex !== undefined) {
        return { allowed: true, reason: "allowed", policy: policy.name, ruleIndex };
      }
    }
    return { allowed: false, reason: "no-allow-policy-matched" };
  }

  /** Like {@link evaluate}, but throws {@link PolicyDenied} when the request is not allowed. */
  check(request: PolicyRequest): PolicyDecision {
    const decision = this.evaluate(request);
    if (!decision.allowed) throw new PolicyDenied(decision.reason, decision.policy);
    return decision;
  }
}

function matchingRule(policy: AuthorizationPolicy, request: PolicyRequest): number | undefined {
  const rules = policy.rules ?? [];
  for (let i = 0; i < rules.length; i++) if (ruleMatches(rules[i], request)) return i;
  return undefined;
}

function ruleMatches(rule: PolicyRule, request: PolicyRequest): boolean {
  if (rule.from && !rule.from.some((f) => sourceMatches(f.source, request))) return false;
  if (rule.to && !rule.to.some((t) => operationMatches(t.operation, request))) return false;
  return (rule.when ?? []).every((c) => conditionMatches(c, request));
}

function sourceMatches(source: PolicySource, request: PolicyRequest): boolean {
  const id = request.peerId;
  return field(source.principals, source.notPrincipals, fact(id?.toString())) &&
    field(source.namespaces, source.notNamespaces, fact(id?.serviceAccount()?.namespace)) &&
    field(source.trustDomains, source.notTrustDomains, fact(id?.trustDomain.name)) &&
    field(source.requestPrincipals, source.notRequestPrincipals, fact(request.requestPrincipal));
}

function operationMatches(operation: PolicyOperation, request: PolicyRequest): boolean {
  const lower = (list?: readonly string[]) => list?.map((h) => h.toLowerCase());
  const decimal = (list?: readonly (number | string)[]) => list?.map(String);
  return field(lower(operation.hosts), lower(operation.notHosts), fact(request.host?.toLowerCase())) &&
    field(operation.methods, operation.notMethods, fact(request.method)) &&
    field(operation.paths, operation.notPaths, fact(request.path)) &&
    field(decimal(operation.ports), decimal(operation.notPorts), fact(request.port?.toString()));
}

function conditionMatches(condition: PolicyCondition, request: PolicyRequest): boolean {
  const attributes = request.attributes;
  // Own properties only: a key such as `constructor` must not find Object.prototype's.
  const raw = attributes && Object.hasOwn(attributes, condition.key) ? attributes[condition.key] : undefined;
  const values = Array.isArray(raw) ? raw.filter((v) => typeof v === "string" && v !== "") : fact(raw);
  return field(condition.values, condition.notValues, values);
}

/** The values of a fact: none when it is absent, so that absence never rides on a pattern. */
function fact(value: unknown): string[] {
  return typeof value === "string" && value !== "" ? [value] : [];
}

/** A positive list must match one of the values; a negative list must match none of them. */
function field(
  positive: readonly string[] | undefined,
  negative: readonly string[] | undefined,
  values: readonly string[],
): boolean {
  if (positive && !values.some((v) => positive.some((p) => patternMatches(p, v)))) return false;
  if (negative && values.some((v) => negative.some((p) => patternMatches(p, v)))) return false;
  return true;
}

/** Istio's string match: `*` (present), `abc*` (prefix), `*abc` (suffix), or exact. */
export function patternMatches(pattern: string, value: string): boolean {
  if (pattern === "*") return value !== "";
  if (pattern.endsWith("*")) return value.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith("*")) return value.endsWith(pattern.slice(1));
  return value === pattern;
}
