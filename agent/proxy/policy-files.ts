/**
 * An inbound listener's authorization policies, read from files and evaluated by the core's
 * one evaluator, `PolicyEngine`. A file holds `policies:`, a list of Istio-shaped policies
 * (`name`, `action`, `rules`), each optionally `dryRun: true`: a dry-run policy is evaluated
 * and its verdict logged and counted, but not enforced.
 *
 * A policy that cannot mean what it says is refused when it is loaded, with the reason: on a
 * plain TCP listener, a rule on methods, paths, hosts, request principals or request headers
 * could never match (there is no request to read them from), and a condition on an attribute
 * the proxy does not provide would silently never hold.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import {
  type AuthorizationPolicy,
  MeshAuthError,
  parsePolicy,
  type PolicyDecision,
  PolicyEngine,
  type PolicyRequest,
} from "../../mod.ts";
import { parseDocument } from "../../internal/mod.ts";

/** A policy file that cannot be used; `file` names it and the message says why. */
export class PolicyFileError extends MeshAuthError {
  /** Stable code of this class: `ERR_PROXY_POLICY`. */
  static override code: string = "ERR_PROXY_POLICY";
  /** `file` is the policy file's path; `reason` what is wrong in it (unreadable, not YAML, a bad rule). */
  constructor(readonly file: string, reason: string, options?: ErrorOptions) {
    super(`${file}: ${reason}`, options);
    this.name = "PolicyFileError";
  }
}

/** The request attributes `when` conditions may name, besides `request.headers[<name>]` in HTTP mode. */
export const CONDITION_KEYS = [
  "source.ip",
  "source.principal",
  "source.namespace",
  "destination.port",
  "connection.sni",
] as const;

const HTTP_OPERATION_FIELDS = ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"] as const;
const HTTP_SOURCE_FIELDS = ["requestPrincipals", "notRequestPrincipals"] as const;
const HEADER_CONDITION = /^request\.headers\[([A-Za-z0-9!#$%&'*+.^_`|~-]+)\]$/;
const MAX_FILE_BYTES = 1024 * 1024;

/** What the listener decided, and what it would have decided with the dry-run policies enforced. */
export interface Verdict {
  /** The enforced decision. */
  decision: PolicyDecision;
  /** With the dry-run policies added: present when the listener has any. */
  dryRun?: PolicyDecision;
}

/** How a listener's policies are read. */
export interface ListenerPolicyOptions {
  /** The listener, for messages. */
  listener: string;
  files: readonly string[];
  protocol: "tcp" | "http";
  defaultAction: "ALLOW" | "DENY";
}

interface LoadedPolicies {
  texts: string[];
  enforced: PolicyEngine;
  shadow?: PolicyEngine;
  names: string[];
  /** `request.headers[Name]` condition keys, and the lower-case header each reads. */
  headerKeys: Map<string, string>;
}

/** One listener's policies. {@link ListenerPolicy.load} reads them; {@link reload} picks up changes. */
export class ListenerPolicy {
  #loaded: LoadedPolicies;

  private constructor(readonly options: ListenerPolicyOptions, loaded: LoadedPolicies) {
    this.#loaded = loaded;
  }

  /** Reads and checks every file; throws {@link PolicyFileError} on the first that cannot be used. */
  static async load(options: ListenerPolicyOptions): Promise<ListenerPolicy> {
    return new ListenerPolicy(options, await read(options));
  }

  /** The names of the policies in force (dry-run ones included). */
  get policyNames(): readonly string[] {
    return this.#loaded.names;
  }

  /**
   * Reads the files again. Answers false when nothing changed, true when the new policies are
   * in force; throws {@link PolicyFileError} (the policies in force stay) when a file is bad.
   */
  async reload(): Promise<boolean> {
    const texts = await Promise.all(this.options.files.map((f) => readPolicyText(f)));
    if (texts.every((t, i) => t === this.#loaded.texts[i])) return false;
    this.#loaded = await read(this.options, texts);
    return true;
  }

  /** The header conditions' keys (as written) and the lower-case header names they read. */
  get headerKeys(): ReadonlyMap<string, string> {
    return this.#loaded.headerKeys;
  }

  /** Decides `request`. */
  evaluate(request: PolicyRequest): Verdict {
    const decision = this.#loaded.enforced.evaluate(request);
    const shadow = this.#loaded.shadow;
    return shadow ? { decision, dryRun: shadow.evaluate(request) } : { decision };
  }
}

async function readPolicyText(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new PolicyFileError(file, `cannot read the file: ${(err as Error).message}`, { cause: err });
  }
  if (text.length > MAX_FILE_BYTES) throw new PolicyFileError(file, `larger than ${MAX_FILE_BYTES} bytes`);
  return text;
}

async function read(options: ListenerPolicyOptions, given?: string[]): Promise<LoadedPolicies> {
  const texts = given ?? await Promise.all(options.files.map((f) => readPolicyText(f)));
  const enforced: AuthorizationPolicy[] = [];
  const all: AuthorizationPolicy[] = [];
  const names = new Map<string, string>();
  const headerKeys = new Map<string, string>();
  options.files.forEach((file, i) => {
    for (const { policy, isDryRun } of parseFile(file, texts[i])) {
      const other = names.get(policy.name);
      if (other !== undefined) {
        throw new PolicyFileError(
          file,
          other === file
            ? `policy ${
              JSON.stringify(policy.name)
            } is defined twice in this file; each policy needs a name of its own`
            : `policy ${JSON.stringify(policy.name)} is also defined in ${other}`,
        );
      }
      names.set(policy.name, file);
      checkFields(policy, file, options, headerKeys);
      all.push(policy);
      if (!isDryRun) enforced.push(policy);
    }
  });
  const engineOptions = { defaultAction: options.defaultAction };
  return {
    texts,
    names: [...names.keys()],
    headerKeys,
    enforced: new PolicyEngine(enforced, engineOptions),
    shadow: all.length > enforced.length ? new PolicyEngine(all, engineOptions) : undefined,
  };
}

function parseFile(file: string, text: string): { policy: AuthorizationPolicy; isDryRun: boolean }[] {
  let document: unknown;
  try {
    document = parseDocument(file, text);
  } catch (err) {
    throw new PolicyFileError(file, (err as Error).message, { cause: err });
  }
  if (!document || typeof document !== "object" || Array.isArray(document)) {
    throw new PolicyFileError(file, "expected a mapping with a policies list");
  }
  const unknown = Object.keys(document).filter((k) => k !== "policies");
  if (unknown.length) {
    throw new PolicyFileError(file, `unknown field ${JSON.stringify(unknown[0])} (known: policies)`);
  }
  const list = (document as { policies?: unknown }).policies;
  if (!Array.isArray(list)) throw new PolicyFileError(file, "policies: expected a list of policies");
  return list.map((entry, i) => {
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) {
      throw new PolicyFileError(file, `policies[${i}]: expected a policy mapping`);
    }
    const { dryRun, ...rest } = entry as Record<string, unknown>;
    if (dryRun !== undefined && typeof dryRun !== "boolean") {
      throw new PolicyFileError(file, `policies[${i}].dryRun: expected true or false`);
    }
    try {
      return { policy: parsePolicy(rest), isDryRun: dryRun === true };
    } catch (err) {
      throw new PolicyFileError(file, `policies[${i}]: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** Refuses fields this listener cannot evaluate, saying why. */
function checkFields(
  policy: AuthorizationPolicy,
  file: string,
  options: ListenerPolicyOptions,
  headerKeys: Map<string, string>,
): void {
  const isTcp = options.protocol === "tcp";
  const refuse = (at: string, why: string): never => {
    throw new PolicyFileError(file, `policy ${JSON.stringify(policy.name)} ${at}: ${why}`);
  };
  const httpOnly = (at: string, field: string) =>
    refuse(
      at,
      `${field} is an HTTP field, and listener ${JSON.stringify(options.listener)} forwards plain TCP ` +
        `(protocol: tcp), where no request carries it, so this rule could never match as written; ` +
        `set protocol: http on the listener or remove ${field}`,
    );
  (policy.rules ?? []).forEach((rule, r) => {
    rule.from?.forEach((f, j) => {
      for (const field of HTTP_SOURCE_FIELDS) {
        if (isTcp && f.source[field]) httpOnly(`rules[${r}].from[${j}].source.${field}`, field);
      }
    });
    rule.to?.forEach((t, j) => {
      for (const field of HTTP_OPERATION_FIELDS) {
        if (isTcp && t.operation[field]) httpOnly(`rules[${r}].to[${j}].operation.${field}`, field);
      }
    });
    rule.when?.forEach((condition, j) => {
      const at = `rules[${r}].when[${j}].key`;
      const header = HEADER_CONDITION.exec(condition.key);
      if (header) {
        if (isTcp) httpOnly(at, condition.key);
        headerKeys.set(condition.key, header[1].toLowerCase());
        return;
      }
      if (!(CONDITION_KEYS as readonly string[]).includes(condition.key)) {
        refuse(
          at,
          `unknown attribute ${JSON.stringify(condition.key)} (known: ${CONDITION_KEYS.join(", ")}, ` +
            `request.headers[<name>] in HTTP mode); a condition on it would never hold`,
        );
      }
    });
  });
}
