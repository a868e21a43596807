/**
 * The CA's connection to the Kubernetes API server, on `@kubernetes/client-node`: its
 * `KubeConfig` (a kubeconfig file, or the pod's own service account in the cluster, whose
 * projected token it re-reads as the kubelet rotates it) and its `Watch` (the chunked stream
 * of JSON watch events). Requests are plain JSON over one keep-alive agent, so that every
 * field of a resource reaches the controllers as the API server sent it (the typed models of
 * client-node 1.4 predate PodCertificateRequest's v1beta1 and v1 fields and would drop them).
 *
 * @example
 * ```ts
 * import { KubernetesApi } from "meshauth/ca-server";
 * const api = KubernetesApi.fromOptions({ kubeconfig: "/etc/meshauth/kubeconfig" });
 * const pod = await api.get<{ spec: { nodeName?: string } }>("/api/v1/namespaces/photo-ns/pods/web-0");
 * ```
 * @module
 */

import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from "node:https";
import type { KubeConfig, Watch } from "@kubernetes/client-node";
import { MeshAuthError } from "../../mod.ts";

/** `@kubernetes/client-node` is missing: it is an optional peer dependency, for the CA on Kubernetes only. */
export class KubernetesClientMissing extends MeshAuthError {
  /** Stable code of this class: `ERR_KUBERNETES_CLIENT_MISSING`. */
  static override code: string = "ERR_KUBERNETES_CLIENT_MISSING";
  /** `options.cause` is the import's failure. */
  constructor(options?: ErrorOptions) {
    super(
      "kubernetes.api needs the package @kubernetes/client-node 1.4, an optional peer dependency of meshauth: " +
        "npm install @kubernetes/client-node@~1.4.0",
      options,
    );
    this.name = "KubernetesClientMissing";
  }
}

let clientNode: Promise<typeof import("@kubernetes/client-node")> | undefined;

/**
 * Loads `@kubernetes/client-node` on first use. It is heavy (tens of megabytes of generated
 * models) and only the Kubernetes integration needs it, so it is an optional peer dependency
 * that `meshauth/ca-server` never imports up front. Not exported: its type names the package,
 * which a user without it could not resolve in meshauth's declarations.
 */
function loadKubernetesClient(): Promise<typeof import("@kubernetes/client-node")> {
  clientNode ??= import("@kubernetes/client-node").catch((cause) => {
    clientNode = undefined;
    throw new KubernetesClientMissing({ cause });
  });
  return clientNode;
}

/**
 * What {@link KubernetesApi} uses of a `@kubernetes/client-node` `KubeConfig` (which has this
 * shape). Declared here so that meshauth's published types never name the optional peer: a
 * TypeScript user without it must still type-check them with `skipLibCheck` off.
 */
export interface KubeConfigLike {
  /** The cluster of the current context, or null when the kubeconfig names none. */
  getCurrentCluster(): { server: string } | null;
  /** Adds the current user's credentials (token, client certificate) and the cluster's CA to `options`. */
  applyToHTTPSOptions(options: RequestOptions): Promise<void>;
}

/** Where the API server is and who the CA is to it. */
export interface KubernetesApiOptions {
  /** A kubeconfig file; without one, the pod's service account (in-cluster). */
  kubeconfig?: string;
  /** The kubeconfig context to use; its current context by default. */
  context?: string;
  /** Per-request timeout (watches excepted). Default 10 s. */
  requestTimeoutMs?: number;
}

/** A Kubernetes `Status` object, as the API server answers failures. */
export interface KubernetesStatus {
  /** `Status`. */
  kind?: "Status";
  /** `v1`. */
  apiVersion?: string;
  /** Whether the operation succeeded. */
  status?: "Failure" | "Success";
  /** What went wrong, in the API server's words. */
  message?: string;
  /** Machine-readable cause (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`). */
  reason?: string;
  /** The HTTP status code. */
  code?: number;
  /** The object the status is about, and the causes of a validation failure. */
  details?: Record<string, unknown>;
}

/**
 * A request the API server refused (or that never reached it, or was abandoned: `status` 0,
 * reason `Unreachable` or `Aborted`; or whose 2xx answer was not JSON: reason `InvalidResponse`).
 */
export class KubernetesApiError extends MeshAuthError {
  /** Stable code of this class: `ERR_KUBERNETES_API`. */
  static override code: string = "ERR_KUBERNETES_API";
  /** The response's status and Status reason, its message, and the request that got it. */
  constructor(
    readonly status: number,
    /** The Status object's `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, `Forbidden`...). */
    readonly reason: string,
    message: string,
    readonly method: string,
    readonly path: string,
    options?: ErrorOptions,
  ) {
    super(`${method} ${path}: ${status ? `${status} ${reason}: ` : ""}${message}`, options);
    this.name = "KubernetesApiError";
  }

  /** The object does not exist (404). */
  get isNotFound(): boolean {
    return this.status === 404;
  }
  /** A write lost a race: the object changed (409 Conflict) or already exists (409 AlreadyExists). */
  get isConflict(): boolean {
    return this.status === 409;
  }
  /** The resource version or continue token is older than the API server keeps (410 Gone). */
  get isGone(): boolean {
    return this.status === 410;
  }
}

/** One watch event, as the API server streams it. */
export interface WatchEvent<T = unknown> {
  /** What happened to the object; `BOOKMARK` only moves the resource version, `ERROR` carries a Status. */
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  /** The object as it is now (for `DELETED`, as it was last). */
  object: T;
}

/** Object metadata, the part of every resource the controllers read. */
export interface ObjectMeta {
  /** The object's name. */
  name?: string;
  /** The object's namespace; absent for cluster-scoped objects. */
  namespace?: string;
  /** The object's UID, unique over time. */
  uid?: string;
  /** The version an update must name (optimistic concurrency). */
  resourceVersion?: string;
  /** The spec's generation. */
  generation?: number;
  /** The object's labels. */
  labels?: Record<string, string>;
  /** The object's annotations. */
  annotations?: Record<string, string>;
  /** Owners, whose deletion deletes the object. */
  ownerReferences?: Array<Record<string, unknown>>;
  /** When deletion was requested (RFC 3339). */
  deletionTimestamp?: string;
  /** When the object was created (RFC 3339). */
  creationTimestamp?: string;
}

/** A list answer. */
export interface ListResult<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** A JSON client for the Kubernetes API. */
export class KubernetesApi {
  readonly #agent: HttpsAgent | HttpAgent;
  readonly #timeoutMs: number;
  readonly #kubeConfig: KubeConfigLike;
  #watch?: Promise<Watch>;

  /**
   * A client for the cluster `kubeConfig` (a `@kubernetes/client-node` `KubeConfig`) names as
   * current; each request times out after `requestTimeoutMs` (10 s).
   */
  constructor(kubeConfig: KubeConfigLike, options: { requestTimeoutMs?: number } = {}) {
    this.#kubeConfig = kubeConfig;
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig names no current cluster");
    this.server = cluster.server.replace(/\/+$/, "");
    this.#timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#agent = this.server.startsWith("http:")
      ? new HttpAgent({ keepAlive: true, maxSockets: 16 })
      : new HttpsAgent({ keepAlive: true, maxSockets: 16 });
  }

  /** The API server's base URL. */
  readonly server: string;

  /** Loads a kubeconfig file, or the in-cluster service account when none is named. */
  static async fromOptions(options: KubernetesApiOptions = {}): Promise<KubernetesApi> {
    const { KubeConfig } = await loadKubernetesClient();
    const kubeConfig = new KubeConfig();
    if (options.kubeconfig) kubeConfig.loadFromFile(options.kubeconfig);
    else kubeConfig.loadFromCluster();
    if (options.context) kubeConfig.setCurrentContext(options.context);
    return new KubernetesApi(kubeConfig, options);
  }

  /** GET a resource or a collection; `signal` abandons the request. */
  get<T>(
    path: string,
    query: Record<string, string | number | boolean | undefined> = {},
    options: { signal?: AbortSignal } = {},
  ): Promise<T> {
    return this.request<T>("GET", path, { query, signal: options.signal });
  }

  /** POST a new object to a collection (or a review to its endpoint). */
  create<T>(path: string, body: unknown, options: { signal?: AbortSignal } = {}): Promise<T> {
    return this.request<T>("POST", path, { body, signal: options.signal });
  }

  /** PUT an object (its `metadata.resourceVersion` makes the write conditional). */
  replace<T>(path: string, body: unknown, options: { signal?: AbortSignal } = {}): Promise<T> {
    return this.request<T>("PUT", path, { body, signal: options.signal });
  }

  /** PATCH an object with a JSON merge patch (RFC 7386); a `metadata.resourceVersion` in it makes it conditional. */
  patch<T>(path: string, mergePatch: unknown, options: { signal?: AbortSignal } = {}): Promise<T> {
    return this.request<T>("PATCH", path, {
      body: mergePatch,
      contentType: "application/merge-patch+json",
      signal: options.signal,
    });
  }

  /** DELETE an object; `preconditions` make it conditional on a uid or resource version. */
  delete(path: string, preconditions?: { uid?: string; resourceVersion?: string }): Promise<unknown> {
    return this.request("DELETE", path, {
      body: preconditions ? { kind: "DeleteOptions", apiVersion: "v1", preconditions } : undefined,
    });
  }

  /**
   * Starts a watch on a collection; `onEvent` gets each event, `onDone` the end (null when the
   * server closed the stream, an error otherwise, `statusCode` 410 when the resource version
   * is too old). Answers the controller that aborts it.
   */
  async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (event: WatchEvent) => void,
    onDone: (err: (Error & { statusCode?: number }) | null) => void,
  ): Promise<AbortController> {
    this.#watch ??= loadKubernetesClient().then(({ Watch }) => new Watch(this.#kubeConfig as KubeConfig));
    return (await this.#watch).watch(
      path,
      query,
      (type: string, object: unknown) => onEvent({ type: type as WatchEvent["type"], object }),
      onDone,
    );
  }

  /**
   * One request; a non-2xx answer throws {@link KubernetesApiError} with the Status it carried,
   * and so does a 2xx answer that is not JSON (reason `InvalidResponse`). `signal` abandons it
   * (status 0, reason `Aborted`).
   */
  async request<T>(
    method: string,
    path: string,
    options: {
      query?: Record<string, string | number | boolean | undefined>;
      body?: unknown;
      /** The body's media type; `application/json` by default. */
      contentType?: string;
      signal?: AbortSignal;
    } = {},
  ): Promise<T> {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    const requestOptions: RequestOptions & { headers: Record<string, string> } = {
      method,
      headers: { accept: "application/json" },
    };
    // The authenticator runs on every call: a projected token file is read again once a
    // minute, as client-go does, so a rotated token is picked up.
    await this.#kubeConfig.applyToHTTPSOptions(requestOptions);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    if (body !== undefined) {
      requestOptions.headers["content-type"] = options.contentType ?? "application/json";
      // Node sends a DELETE's body unframed unless its length is given.
      requestOptions.headers["content-length"] = String(Buffer.byteLength(body));
    }
    const { signal } = options;
    const { status, text } = await this.#send(url, requestOptions, body, signal).catch((cause: Error) => {
      if (signal?.aborted) {
        throw new KubernetesApiError(0, "Aborted", "abandoned before an answer came", method, path, {
          cause,
        });
      }
      throw new KubernetesApiError(0, "Unreachable", cause.message, method, path, { cause });
    });
    if (status >= 200 && status < 300) {
      if (!text) return {} as T;
      try {
        return JSON.parse(text) as T;
      } catch (cause) {
        // A proxy's HTML page, or a truncated body: a typed failure, never a bare SyntaxError.
        throw new KubernetesApiError(
          status,
          "InvalidResponse",
          `the answer is not JSON: ${JSON.stringify(text.slice(0, 80))}`,
          method,
          path,
          { cause },
        );
      }
    }
    let parsed: KubernetesStatus = {};
    try {
      parsed = JSON.parse(text);
    } catch {
      // not a Status object: keep the status code alone
    }
    throw new KubernetesApiError(
      status,
      parsed.reason ?? "Unknown",
      parsed.message ?? text.slice(0, 200),
      method,
      path,
    );
  }

  #send(
    url: URL,
    options: RequestOptions,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; text: string }> {
    const send = url.protocol === "http:" ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new Error("aborted"));
      const req = send(url, { ...options, agent: this.#agent, timeout: this.#timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`response over ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on(
          "end",
          () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      req.on("error", reject);
      // Rejected and destroyed by hand rather than through the request's `signal` option, which
      // Deno's node:http does not act on (nor does its destroy() always emit an error).
      const onAbort = () => {
        reject(new Error("aborted"));
        req.destroy();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("close", () => signal?.removeEventListener("abort", onAbort));
      req.end(body);
    });
  }

  /** Closes idle connections. */
  close(): void {
    this.#agent.destroy();
  }
}
