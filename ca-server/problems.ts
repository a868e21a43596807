/**
 * RFC 9457 problem details: every error the CA server answers is one `application/problem+json`
 * body with a stable `code`. Codes are documented in `docs/ca-server.md` and never reused.
 *
 * @example
 * ```ts
 * import { Problem } from "meshauth/ca-server";
 * throw new Problem("ERR_MISSING_FIELD", "the request body has no \"csr\" field");
 * ```
 * @module
 */

import { MeshAuthError } from "../mod.ts";

/** Every code the server answers, with its HTTP status and title. */
export const PROBLEMS = {
  ERR_MALFORMED_JSON: { status: 400, title: "The request body is not valid JSON" },
  ERR_MISSING_FIELD: { status: 400, title: "A required field is missing" },
  ERR_INVALID_FIELD: { status: 400, title: "A field has the wrong type or value" },
  ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: "The request body must be application/json" },
  ERR_BODY_TOO_LARGE: { status: 413, title: "The request body is larger than the server accepts" },
  ERR_BODY_INCOMPLETE: { status: 400, title: "The connection closed before the whole request body arrived" },
  ERR_CSR_INVALID: {
    status: 400,
    title: "The csr field is not a valid X509-SVID certificate signing request",
  },
  ERR_TTL_EXCEEDS_MAXIMUM: { status: 400, title: "The requested lifetime is above the configured maximum" },
  ERR_IDENTITY_MISMATCH: { status: 403, title: "The CSR names an identity the caller may not obtain" },
  ERR_UNAUTHENTICATED: { status: 401, title: "The request carries no credentials this server accepts" },
  ERR_TOKEN_INVALID: { status: 401, title: "The bearer token is not valid" },
  ERR_TOKEN_EXPIRED: { status: 401, title: "The bearer token has expired" },
  ERR_TOKEN_USED: { status: 401, title: "The single-use join token was already used" },
  ERR_CLIENT_CERT_INVALID: { status: 401, title: "The client certificate is not a valid SVID from this CA" },
  ERR_CLIENT_CERT_REVOKED: { status: 401, title: "The client certificate has been revoked" },
  ERR_FORBIDDEN: { status: 403, title: "The caller is not allowed to do this" },
  ERR_NOT_FOUND: { status: 404, title: "No such resource" },
  ERR_METHOD_NOT_ALLOWED: { status: 405, title: "The resource does not support this method" },
  ERR_RATE_LIMITED: { status: 429, title: "Too many requests for this identity" },
  ERR_NOT_READY: { status: 503, title: "The CA is not ready to serve" },
  ERR_INTERNAL: { status: 500, title: "The server failed to handle the request" },
} as const;

/** A stable problem code. */
export type ProblemCode = keyof typeof PROBLEMS;

/** The JSON body of a problem response (RFC 9457 3.1, plus `code`). */
export interface ProblemBody {
  /** `urn:meshauth:problem:<code>`, one URN per code. */
  type: string;
  /** The code's fixed one-line summary (see {@link PROBLEMS}). */
  title: string;
  /** The HTTP status of the response. */
  status: number;
  /** What was wrong with this request, in one sentence. */
  detail: string;
  /** The stable code clients branch on. */
  code: ProblemCode;
  /** Extension members of the code (`field`, `reason`, `maximumSeconds`...). */
  [extension: string]: unknown;
}

/**
 * An error that becomes a problem response; `extensions` are added to the body. A
 * {@link MeshAuthError} whose `code` is the problem's.
 */
export class Problem extends MeshAuthError {
  /** Stable code of the class itself; an instance carries one of {@link ProblemCode}. */
  static override code: string = "ERR_PROBLEM";
  /** The HTTP status the code answers with. */
  readonly status: number;
  /** `code` says what went wrong, `detail` how, and `extensions` become members of the body. */
  constructor(
    override readonly code: ProblemCode,
    readonly detail: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(detail);
    this.name = "Problem";
    this.status = PROBLEMS[code].status;
  }

  /** The response body. `type` is a URN per code, so clients can branch on it too. */
  body(): ProblemBody {
    return {
      type: `urn:meshauth:problem:${this.code.slice(4).toLowerCase().replaceAll("_", "-")}`,
      title: PROBLEMS[this.code].title,
      status: this.status,
      detail: this.detail,
      code: this.code,
      ...this.extensions,
    };
  }

  /** The whole response. */
  toResponse(headers: Record<string, string> = {}): Response {
    return new Response(JSON.stringify(this.body()), {
      status: this.status,
      headers: { "content-type": "application/problem+json", "cache-control": "no-store", ...headers },
    });
  }
}
