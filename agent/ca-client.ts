/**
 * The node agent's client of the CA server's `/v1` API: sends a CSR, authenticated by a
 * bearer token (join token or Kubernetes service-account token) or by the workload's current
 * SVID over mutual TLS, and gets back the certificate chain and the trust bundle. It never
 * sends a private key.
 * @module
 */

import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import { InvalidArgument, MeshAuthError, SpiffeId } from "../mod.ts";

/** How the client authenticates to the CA. */
export type CaCredential =
  | { kind: "token"; token: string | (() => string | Promise<string>) }
  | { kind: "mtls"; certificateChainPem: string; privateKeyPem: string };

/** Options of {@link CaClient}. */
export interface CaClientOptions {
  /** The CA's base URL, e.g. `https://127.0.0.1:8443`. */
  url: string;
  /** PEM roots to trust for the CA's serving certificate (its own trust bundle); required for https. */
  caCertificatesPem?: string;
  /** Per-request timeout. Default 10 s. */
  timeoutMs?: number;
  /** Largest response body accepted. Default 1 MiB. */
  maxResponseBytes?: number;
}

/** A certificate the CA issued, as the API answers it. */
export interface IssuedSvid {
  spiffeId: SpiffeId;
  serialNumber: string;
  expiresAt: Date;
  certificateChainPem: string;
  trustBundlePem: string;
}

/** The CA answered with an error; `code` and `status` come from its problem+json body. */
export class CaRequestFailed extends MeshAuthError {
  static override code = "ERR_CA_REQUEST_FAILED";
  override name = "CaRequestFailed";
  override code = CaRequestFailed.code;
  constructor(readonly status: number, readonly problemCode: string | undefined, detail: string) {
    super(`the CA refused the request (HTTP ${status}${problemCode ? `, ${problemCode}` : ""}): ${detail}`);
  }
}

/** The CA could not be reached, or answered something that is not the API. */
export class CaUnavailable extends MeshAuthError {
  static override code = "ERR_CA_UNAVAILABLE";
  override name = "CaUnavailable";
  override code = CaUnavailable.code;
  constructor(readonly url: string, reason: string, options?: ErrorOptions) {
    super(`the CA at ${url} is unavailable: ${reason}`, options);
  }
}

/** A client of one CA server. */
export class CaClient {
  readonly #url: URL;
  readonly #options: CaClientOptions;

  constructor(options: CaClientOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new InvalidArgument("url", `the CA URL ${JSON.stringify(options.url)} is not a URL`);
    }
    if (url.protocol === "http:") {
      // A bearer token in clear text, and a trust bundle an attacker on the path could replace.
      if (!isLoopback(url.hostname)) {
        throw new InvalidArgument("url", `plain HTTP is allowed only to a loopback CA, not ${url.host}`);
      }
    } else if (url.protocol === "https:") {
      // The CA is trusted through its own bundle, never through the public web PKI.
      if (!options.caCertificatesPem) {
        throw new InvalidArgument(
          "caCertificatesPem",
          "an https CA URL needs the CA's trust bundle to verify it",
        );
      }
    } else {
      throw new InvalidArgument("url", `the CA URL must be https (or http on loopback), got ${url.protocol}`);
    }
    this.#url = url;
    this.#options = options;
  }

  /** Sends a CSR and returns the issued SVID. */
  async requestCertificate(
    csrPem: string,
    credential: CaCredential,
    options: { ttlSeconds?: number } = {},
  ): Promise<IssuedSvid> {
    const body = JSON.stringify({
      csr: csrPem,
      ...(options.ttlSeconds ? { ttlSeconds: options.ttlSeconds } : {}),
    });
    const { status, json } = await this.#call("POST", "/v1/certificates", body, credential);
    if (status !== 201) throw problem(status, json);
    const answer = json as Record<string, unknown>;
    const chain = answer.certificateChain;
    if (
      typeof answer.spiffeId !== "string" || typeof answer.serialNumber !== "string" ||
      typeof answer.expiresAt !== "string" || !Array.isArray(chain) ||
      chain.some((c) => typeof c !== "string") ||
      typeof answer.trustBundle !== "string"
    ) {
      throw new CaUnavailable(this.#url.origin, "the issuance answer is missing fields");
    }
    return {
      spiffeId: SpiffeId.parse(answer.spiffeId),
      serialNumber: answer.serialNumber,
      expiresAt: new Date(answer.expiresAt),
      certificateChainPem: (chain as string[]).map((c) => (c.endsWith("\n") ? c : `${c}\n`)).join(""),
      trustBundlePem: answer.trustBundle,
    };
  }

  /** Fetches the trust bundle as PEM. */
  async trustBundlePem(): Promise<string> {
    const { status, text, json } = await this.#call("GET", "/v1/bundle.pem");
    if (status !== 200) throw problem(status, json);
    return text;
  }

  #call(
    method: string,
    path: string,
    body?: string,
    credential?: CaCredential,
  ): Promise<{ status: number; text: string; json: unknown }> {
    const url = new URL(path, this.#url);
    const isTls = url.protocol === "https:";
    const headers: Record<string, string> = { accept: "application/json, application/problem+json" };
    if (body) headers["content-type"] = "application/json";
    const send = async (
      resolve: (v: { status: number; text: string; json: unknown }) => void,
      reject: (e: unknown) => void,
    ) => {
      if (credential?.kind === "token") {
        const token = typeof credential.token === "function" ? await credential.token() : credential.token;
        if (typeof token !== "string" || !/^[\x21-\x7e]+$/.test(token)) {
          throw new InvalidArgument("token", "a bearer token is one run of visible ASCII characters");
        }
        headers.authorization = `Bearer ${token}`;
      }
      const tlsOptions = isTls
        ? {
          ca: this.#options.caCertificatesPem,
          ...(credential?.kind === "mtls"
            ? { cert: credential.certificateChainPem, key: credential.privateKeyPem }
            : {}),
        }
        : {};
      const req = (isTls ? httpsRequest : httpRequest)(url, {
        method,
        headers,
        timeout: this.#options.timeoutMs ?? 10_000,
        ...tlsOptions,
      }, (res) => {
        const limit = this.#options.maxResponseBytes ?? 1 << 20;
        const chunks: Uint8Array[] = [];
        let size = 0;
        res.on("data", (chunk: Uint8Array) => {
          size += chunk.length;
          if (size > limit) {
            req.destroy(new CaUnavailable(url.origin, `answer larger than ${limit} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () => {
          const text = new TextDecoder().decode(concatChunks(chunks));
          let json: unknown;
          try {
            json = text && /json/.test(res.headers["content-type"] ?? "") ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, text, json });
        });
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new CaUnavailable(url.origin, "request timed out")));
      req.on(
        "error",
        (cause) =>
          reject(
            cause instanceof MeshAuthError
              ? cause
              : new CaUnavailable(url.origin, String(cause.message), { cause }),
          ),
      );
      req.end(body);
    };
    return new Promise((resolve, reject) => {
      send(resolve, reject).catch(reject);
    });
  }
}

function concatChunks(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

function problem(status: number, json: unknown): CaRequestFailed {
  const p = (json ?? {}) as { code?: string; detail?: string; title?: string };
  return new CaRequestFailed(status, p.code, p.detail ?? p.title ?? "no detail");
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}
