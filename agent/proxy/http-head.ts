/**
 * One reading of an HTTP request's header fields, shared by the policy and the local service.
 *
 * node:http's `req.headers` keeps only the first copy of some fields (Host, Authorization,
 * User-Agent, ...) while `req.rawHeaders` has every copy; a proxy that decides on the one and
 * forwards the other lets the policy and the service read two different requests (`host: a`
 * for the policy, `host: a` and `host: b` for the service). So the fields are read once, from
 * the raw head:
 *
 * - a field that may appear once (RFC 9110's singletons, the ones node:http keeps once) and
 *   comes twice refuses the request;
 * - the copies of a list field are joined into one line (RFC 9110 5.3: `, `, and `; ` for
 *   Cookie, RFC 6265 5.4), as Istio does;
 * - hop-by-hop fields (RFC 9110 7.6.1), those the Connection field names, and a client's own
 *   X-Forwarded-Client-Cert are removed; a Connection field that names Host or Content-Length
 *   (fields meant for every recipient, which route and frame the request) refuses it.
 *
 * What is left is exactly what policies read and what the service receives, one line per field.
 *
 * @module
 */

/** Fields a request carries at most once (node:http keeps only the first copy of each). */
const SINGLETONS = new Set([
  "age",
  "authorization",
  "content-length",
  "content-type",
  "etag",
  "expires",
  "from",
  "host",
  "if-modified-since",
  "if-unmodified-since",
  "last-modified",
  "location",
  "max-forwards",
  "proxy-authorization",
  "referer",
  "retry-after",
  "server",
  "user-agent",
]);

/** Fields that describe one hop, never forwarded (RFC 9110 7.6.1), and the client's XFCC. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "x-forwarded-client-cert",
]);

/** Fields a Connection option must not name: they route and frame the request for every hop. */
const END_TO_END = new Set(["host", "content-length"]);

/** A request's fields as the proxy reads them. */
export interface RequestFields {
  /** End-to-end fields by lower-case name, each once: what policies read and the service receives. */
  headers: Map<string, string>;
  /** The Upgrade field, when the request asks for another protocol (hop-by-hop: not in `headers`). */
  upgrade?: string;
  /** The request has a body (a Content-Length above 0, or a Transfer-Encoding). */
  hasBody: boolean;
}

/** Reads `rawHeaders` (node:http's name, value, name, value, ...); answers why not when it refuses them. */
export function readRequestFields(rawHeaders: readonly string[]): RequestFields | { problem: string } {
  const copies = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    const values = copies.get(name);
    if (values) values.push(rawHeaders[i + 1]);
    else copies.set(name, [rawHeaders[i + 1]]);
  }
  for (const [name, values] of copies) {
    if (values.length > 1 && SINGLETONS.has(name)) {
      return { problem: `the request has ${values.length} ${name} header fields; one is allowed` };
    }
  }
  const nominated = new Set<string>();
  for (const value of copies.get("connection") ?? []) {
    for (const token of value.split(",")) {
      const option = token.trim().toLowerCase();
      if (END_TO_END.has(option)) {
        return {
          problem: `the Connection header field must not name ${option}, which is meant for every hop`,
        };
      }
      if (option) nominated.add(option);
    }
  }
  const headers = new Map<string, string>();
  for (const [name, values] of copies) {
    if (HOP_BY_HOP.has(name) || nominated.has(name)) continue;
    headers.set(name, values.join(name === "cookie" ? "; " : ", "));
  }
  const upgrade = copies.get("upgrade")?.join(", ");
  const length = headers.get("content-length");
  return {
    headers,
    ...(upgrade !== undefined ? { upgrade } : {}),
    hasBody: copies.has("transfer-encoding") || (length !== undefined && length.trim() !== "0"),
  };
}

/** The host a policy's `hosts` matches: the Host field without its port. */
export function hostOf(host: string | undefined): string | undefined {
  if (!host) return undefined;
  return host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d+$/, "");
}
