/**
 * SPIFFE IDs and trust domains, parsed strictly per the SPIFFE-ID specification
 * (go-spiffe's `spiffeid` package): `spiffe://<trust-domain>/<path>`.
 *
 * @example
 * ```ts
 * import { SpiffeId, TrustDomain } from "meshauth";
 * const td = TrustDomain.parse("cluster.local");
 * const id = SpiffeId.fromServiceAccount(td, "default", "photos");
 * id.toString(); // "spiffe://cluster.local/ns/default/sa/photos"
 * id.serviceAccount(); // { namespace: "default", name: "photos" }
 * ```
 * @module
 */

import { InvalidSpiffeId, InvalidTrustDomain } from "./errors.ts";

const UTF8 = new TextEncoder();

const SCHEME = "spiffe://";
/** SPIFFE-ID 2.1: a URI of at most 2048 bytes. */
const MAX_ID_BYTES = 2048;
/** SPIFFE-ID 2.1: trust domain names longer than 255 bytes are not interoperable. */
const MAX_TRUST_DOMAIN_BYTES = 255;
const TD_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

function trustDomainProblem(name: string): string | undefined {
  if (name.length === 0) return "trust domain is empty";
  if (name.length > MAX_TRUST_DOMAIN_BYTES) {
    return `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  }
  if (name.includes(":")) return "trust domain must not carry a port";
  if (name.includes("@")) return "trust domain must not carry userinfo";
  if (!TD_CHARS.test(name)) {
    return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores";
  }
  return undefined;
}

function pathProblem(path: string): string | undefined {
  if (path === "") return undefined;
  if (!path.startsWith("/")) return "path must start with /";
  for (const segment of path.slice(1).split("/")) {
    const problem = segmentProblem(segment);
    if (problem) return problem;
  }
  return undefined;
}

function segmentProblem(segment: string): string | undefined {
  if (segment === "") return "path must not contain empty segments or a trailing slash";
  if (segment === "." || segment === "..") return "path must not contain dot segments";
  if (!SEGMENT_CHARS.test(segment)) {
    return "path segment characters are limited to letters, numbers, dots, dashes, and underscores";
  }
  return undefined;
}

/** A SPIFFE trust domain: the root of a set of identities that share authorities. */
export class TrustDomain {
  private constructor(readonly name: string) {
    Object.freeze(this);
  }

  /** Parses a trust domain name (`example.org`) or a trust domain ID (`spiffe://example.org`). */
  static parse(input: string): TrustDomain {
    if (typeof input !== "string") {
      throw new InvalidTrustDomain(String(input), "expected a trust domain name or a TrustDomain");
    }
    if (input.startsWith(SCHEME)) {
      let id: SpiffeId;
      try {
        id = SpiffeId.parse(input);
      } catch (cause) {
        // One error type per parser: callers of TrustDomain.parse branch on ERR_TRUST_DOMAIN_INVALID.
        if (cause instanceof InvalidSpiffeId) throw new InvalidTrustDomain(input, cause.reason);
        throw cause;
      }
      if (id.path !== "") throw new InvalidTrustDomain(input, "a trust domain ID has no path");
      return id.trustDomain;
    }
    if (input.includes("://")) throw new InvalidTrustDomain(input, "scheme must be spiffe");
    const problem = trustDomainProblem(input);
    if (problem) throw new InvalidTrustDomain(input, problem);
    return new TrustDomain(input);
  }

  /**
   * A trust domain from either form the API takes: a `TrustDomain`, returned as it is, or a
   * name or trust domain ID, parsed. Anything else is refused with ERR_TRUST_DOMAIN_INVALID.
   */
  static from(value: TrustDomain | string): TrustDomain {
    if (value instanceof TrustDomain) return value;
    // One from another copy of meshauth: its name is parsed again, so it is still validated.
    const foreign = value as { name?: unknown } | null;
    if (typeof foreign === "object" && foreign !== null && typeof foreign.name === "string") {
      return TrustDomain.parse(foreign.name);
    }
    return TrustDomain.parse(value);
  }

  /** The trust domain name. */
  toString(): string {
    return this.name;
  }

  /** The trust domain's own SPIFFE ID, `spiffe://<name>`. */
  id(): SpiffeId {
    return SpiffeId.parse(`${SCHEME}${this.name}`);
  }

  /** True when `other` is the same trust domain. */
  equals(other: TrustDomain): boolean {
    // By name, not by class: a trust domain from another copy of meshauth is the same one.
    return typeof other?.name === "string" && other.name === this.name;
  }

  /** The name, so trust domains serialize as plain strings. */
  toJSON(): string {
    return this.name;
  }
}

/** Recent parses, by input string. */
const parsed = new Map<string, SpiffeId>();
const PARSED_LIMIT = 1024;

/** A validated SPIFFE ID. Instances are immutable; compare with {@link SpiffeId.equals}. */
export class SpiffeId {
  private constructor(readonly trustDomain: TrustDomain, readonly path: string) {
    Object.freeze(this);
  }

  /**
   * An ID from either form the API takes: a `SpiffeId`, returned as it is, or a string,
   * parsed. A SpiffeId from another copy of meshauth (two versions installed, or the edge
   * bundle next to the package) is parsed again from its text, so it is still validated.
   * Anything else is refused with ERR_SPIFFE_ID_INVALID.
   */
  static from(value: SpiffeId | string): SpiffeId {
    if (value instanceof SpiffeId) return value;
    const foreign = value as { trustDomain?: unknown; path?: unknown } | null;
    if (
      typeof foreign === "object" && foreign !== null && typeof foreign.path === "string" &&
      foreign.trustDomain
    ) {
      return SpiffeId.parse(String(foreign));
    }
    return SpiffeId.parse(value);
  }

  /** Parses `spiffe://<trust-domain>[/<path>]`, refusing anything the spec forbids. */
  static parse(input: string): SpiffeId {
    // A CA parses the same few IDs on every request (the CSR's, the caller's); instances are
    // frozen, so one can serve every parse of its string.
    const known = typeof input === "string" ? parsed.get(input) : undefined;
    if (known) return known;
    const id = SpiffeId.#parseUncached(input);
    if (parsed.size >= PARSED_LIMIT) parsed.clear();
    parsed.set(input, id);
    return id;
  }

  static #parseUncached(input: string): SpiffeId {
    if (typeof input !== "string") throw new InvalidSpiffeId(String(input), "expected a string");
    if (input === "") throw new InvalidSpiffeId(input, "cannot be empty");
    if (UTF8.encode(input).length > MAX_ID_BYTES) {
      throw new InvalidSpiffeId(input, `longer than ${MAX_ID_BYTES} bytes`);
    }
    if (!input.startsWith(SCHEME)) {
      const lower = input.toLowerCase();
      throw new InvalidSpiffeId(
        input,
        lower.startsWith(SCHEME) ? "scheme must be lowercase spiffe" : "scheme is missing or invalid",
      );
    }
    const rest = input.slice(SCHEME.length);
    if (rest.includes("?")) throw new InvalidSpiffeId(input, "query is not allowed");
    if (rest.includes("#")) throw new InvalidSpiffeId(input, "fragment is not allowed");
    if (rest.includes("%")) throw new InvalidSpiffeId(input, "percent-encoding is not allowed");
    const slash = rest.indexOf("/");
    const name = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? "" : rest.slice(slash);
    if (name === "") throw new InvalidSpiffeId(input, "trust domain is missing");
    const tdProblem = trustDomainProblem(name);
    if (tdProblem) throw new InvalidSpiffeId(input, tdProblem);
    const problem = pathProblem(path);
    if (problem) throw new InvalidSpiffeId(input, problem);
    return new SpiffeId(TrustDomain.parse(name), path);
  }

  /** `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`, Istio's identity for a service account. */
  static fromServiceAccount(
    trustDomain: TrustDomain | string,
    namespace: string,
    serviceAccount: string,
  ): SpiffeId {
    const td = TrustDomain.from(trustDomain);
    return SpiffeId.fromSegments(td, "ns", namespace, "sa", serviceAccount);
  }

  /**
   * Builds an ID from path segments, validating each on its own: a segment holding `/`
   * (say a namespace `default/sa/admin`) would otherwise forge a different identity.
   */
  static fromSegments(trustDomainOrName: TrustDomain | string, ...segments: string[]): SpiffeId {
    const trustDomain = TrustDomain.from(trustDomainOrName);
    const path = segments.map((s) => `/${s}`).join("");
    for (const segment of segments) {
      const problem = typeof segment === "string" ? segmentProblem(segment) : "segments must be strings";
      if (problem) throw new InvalidSpiffeId(`${SCHEME}${trustDomain.name}${path}`, problem);
    }
    if (UTF8.encode(`${SCHEME}${trustDomain.name}${path}`).length > MAX_ID_BYTES) {
      throw new InvalidSpiffeId(`${SCHEME}${trustDomain.name}${path}`, `longer than ${MAX_ID_BYTES} bytes`);
    }
    return new SpiffeId(trustDomain, path);
  }

  /** The ID as a URI, `spiffe://<trust-domain><path>`. */
  toString(): string {
    return `${SCHEME}${this.trustDomain.name}${this.path}`;
  }

  /** The URI, so IDs serialize as plain strings. */
  toJSON(): string {
    return this.toString();
  }

  /** True when `other` (an ID or its string form) is the same ID; a string that is not a valid ID is never equal. */
  equals(other: SpiffeId | string): boolean {
    // By value, not by class: an ID from another copy of meshauth names the same workload.
    const o = typeof other === "string" ? tryParse(other) : other;
    return typeof o?.trustDomain?.name === "string" && o.trustDomain.name === this.trustDomain.name &&
      o.path === this.path;
  }

  /** True when this ID belongs to `trustDomain`. */
  memberOf(trustDomain: TrustDomain | string): boolean {
    const td = TrustDomain.from(trustDomain);
    return this.trustDomain.equals(td);
  }

  /** The Kubernetes service account this ID names, if it has the `/ns/<ns>/sa/<sa>` form. */
  serviceAccount(): { namespace: string; name: string } | undefined {
    const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(this.path);
    return m ? { namespace: m[1], name: m[2] } : undefined;
  }
}

function tryParse(s: string): SpiffeId | undefined {
  try {
    return SpiffeId.parse(s);
  } catch {
    return undefined;
  }
}
