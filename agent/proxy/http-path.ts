/**
 * Request-target normalization for HTTP-mode policies (RFC 3986 6.2.2, as Envoy's
 * `normalize_path` and `merge_slashes` do it for Istio): percent-encoded unreserved characters
 * are decoded, other escapes upper-cased, repeated slashes merged and `.`/`..` segments removed.
 * The normalized path is both what policies match and what the local service receives, so a
 * policy and the service can never read one request differently (`/public/../admin` is
 * `/admin` to both). Encoded slashes and backslashes, which services decode differently, are
 * refused outright, and so are NUL (`%00`, as Istio does) and `;` in any form: Tomcat, Jetty and
 * Spring cut path parameters (`;jsessionid=...`) out of each segment before resolving dot
 * segments, so `/public/..;/admin` is `/admin` to them while it would match `/public*` here.
 *
 * @module
 */

/** A normalized request target, or why it was refused. */
export type NormalizedTarget = { path: string; query: string } | { problem: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const MAX_TARGET = 8192;

/** Normalizes an origin-form request target (`/path?query`). */
export function normalizeTarget(target: string): NormalizedTarget {
  if (target.length > MAX_TARGET) {
    return { problem: `the request target is longer than ${MAX_TARGET} characters` };
  }
  if (!target.startsWith("/")) return { problem: "the request target must be a path (origin form)" };
  const cut = target.indexOf("?");
  const rawPath = cut < 0 ? target : target.slice(0, cut);
  const query = cut < 0 ? "" : target.slice(cut);
  if (rawPath.includes("#") || query.includes("#")) {
    return { problem: "the request target must not hold a fragment" };
  }
  if (rawPath.includes("\\")) return { problem: "the path must not hold a backslash" };
  if (rawPath.includes(";")) {
    return { problem: "the path must not hold path parameters (;), which services resolve differently" };
  }
  let decoded = "";
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath[i];
    if (c !== "%") {
      decoded += c;
      continue;
    }
    const hex = rawPath.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { problem: "the path holds a malformed percent-encoding" };
    const char = String.fromCharCode(parseInt(hex, 16));
    if (char === "/" || char === "\\") {
      return { problem: "the path must not hold an encoded slash or backslash (%2F, %5C)" };
    }
    if (char === ";" || char === "\0") return { problem: "the path must not hold %3B or %00" };
    decoded += UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
    i += 2;
  }
  return { path: removeDotSegments(decoded.replace(/\/{2,}/g, "/")), query };
}

/** RFC 3986 5.2.4, on a path that starts with `/`. */
function removeDotSegments(path: string): string {
  const output: string[] = [];
  const segments = path.split("/").slice(1);
  segments.forEach((segment, i) => {
    const isLast = i === segments.length - 1;
    if (segment === ".") {
      if (isLast) output.push("");
    } else if (segment === "..") {
      output.pop();
      if (isLast) output.push("");
    } else output.push(segment);
  });
  return `/${output.join("/")}`;
}
