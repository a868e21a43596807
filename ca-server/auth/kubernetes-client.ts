/**
 * What the CA needs to talk to a Kubernetes API server from a pod, on Node: a `fetch` that
 * trusts the cluster's CA certificate (for TokenReview and for the issuer's JWKS), and the
 * pod's projected service-account token, read again whenever the kubelet has rotated it.
 *
 * @example
 * ```ts
 * import { fetchTrustingCa, projectedToken } from "meshauth/ca-server";
 * const sa = "/var/run/secrets/kubernetes.io/serviceaccount";
 * const fetchApi = fetchTrustingCa(await readFile(`${sa}/ca.crt`, "utf8"));
 * const reviewerToken = projectedToken(`${sa}/token`);
 * ```
 * @module
 */

import { readFileSync, statSync } from "node:fs";
import { request as httpsRequest } from "node:https";

const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/**
 * A `fetch` over node:https that trusts `caPem` (and nothing else) for the server's
 * certificate. It follows no redirects and reads at most 4 MiB of a response.
 */
export function fetchTrustingCa(caPem: string, timeoutMs = 5000): typeof fetch {
  return ((input: string | URL | Request, init: RequestInit = {}) =>
    new Promise<Response>((resolve, reject) => {
      const url = input instanceof Request ? input.url : String(input);
      const headers = Object.fromEntries(new Headers(init.headers ?? {}));
      const request = httpsRequest(url, {
        method: init.method ?? "GET",
        headers,
        ca: caPem,
        timeout: timeoutMs,
      }, (response) => {
        const chunks: Uint8Array[] = [];
        let size = 0;
        response.on("data", (chunk: Uint8Array) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            request.destroy(new Error(`response from ${url} over ${MAX_RESPONSE_BYTES} bytes`));
          } else chunks.push(chunk);
        });
        response.on("end", () => {
          const body = new Uint8Array(size);
          let offset = 0;
          for (const c of chunks) {
            body.set(c, offset);
            offset += c.length;
          }
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(response.headers)) {
            if (value !== undefined) {
              responseHeaders.set(name, Array.isArray(value) ? value.join(", ") : value);
            }
          }
          resolve(new Response(body, { status: response.statusCode, headers: responseHeaders }));
        });
        response.on("error", reject);
      });
      init.signal?.addEventListener("abort", () => request.destroy(init.signal!.reason as Error), {
        once: true,
      });
      request.on("timeout", () => request.destroy(new Error(`request to ${url} timed out`)));
      request.on("error", reject);
      request.end(typeof init.body === "string" ? init.body : undefined);
    })) as typeof fetch;
}

/**
 * The token in `path`, read again whenever the file was replaced (the kubelet swaps a
 * projected token's directory atomically when it rotates it, which changes the inode), and
 * whenever the caller asks with `{ reread: true }` (the API server refused the token: the file
 * may hold a newer one that the check on the file's inode, size and time did not notice).
 */
export function projectedToken(path: string): (options?: { reread?: boolean }) => string {
  let seen = "";
  let token = "";
  return (options = {}) => {
    const s = statSync(path);
    const stamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
    if (stamp !== seen || options.reread) {
      token = readFileSync(path, "utf8").trim();
      seen = stamp;
    }
    return token;
  };
}
