// A Kubernetes API test server: the real wire protocol over HTTPS on 127.0.0.1, for the real
// @kubernetes/client-node to drive from a kubeconfig. It serves discovery; get, list (paged,
// at a resource version), watch (chunked JSON events, replayed from a resource version, with
// BOOKMARKs, and a 410 Expired Status for a compacted version), create, update, merge patch and
// delete with preconditions; status subresources; TokenRequest and TokenReview on
// service-account JWTs it signs; bearer-token authentication; RBAC over the Role and binding
// objects applied to it (the manifests of examples/kubernetes/), refusing with 403 Status
// objects; and the admission checks of PodCertificateRequests (proof of possession, the
// signer's `sign` permission, KEP-4317 status rules) and ClusterTrustBundles (`attest`).
//
// It records every authorized request (who, verb, resource), so tests can ask what a component
// used. Faults: dropWatches() ends every open watch as a dropped connection would; compact()
// forgets history, so resuming watches get 410.

import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { type AuthorizationRequest, authorize, type RbacSource, type UserInfo } from "./rbac.ts";
import {
  apiGroupList,
  apiResourceList,
  fieldSelector,
  findResource,
  type KubeObject,
  labelSelector,
  RESOURCES,
  type ResourceType,
} from "./resources.ts";
import {
  alreadyExists,
  ApiFailure,
  badRequest,
  conflict,
  expired,
  forbidden,
  invalid,
  notFound,
  unauthorized,
} from "./status.ts";
import { ObjectStore, type StoreEvent } from "./store.ts";
import { API_AUDIENCE, ISSUER, TokenIssuer, type TokenRequest } from "./tokens.ts";
import {
  proofOfPossessionHolds,
  requestedSpki,
  validateClusterTrustBundle,
  validatePodCertificateRequestStatus,
} from "./validation.ts";

export interface KubeApiServerOptions {
  /** How often open watches get a BOOKMARK (when they asked for them). Default 1000 ms. */
  bookmarkIntervalMs?: number;
  /** Answer a too-old watch resource version with HTTP 410 instead of a 410 ERROR event. */
  goneAsHttpStatus?: boolean;
  /**
   * Resources (plurals) this server does not serve, as a cluster without a beta API's feature
   * gate: absent from discovery, and 404 for every request.
   */
  unservedResources?: string[];
}

export interface RecordedRequest {
  user: string;
  verb: string;
  group: string;
  resource: string;
  namespace?: string;
  name?: string;
  status: number;
}

interface OpenWatch {
  res: ServerResponse;
  stalled?: boolean;
  close(): void;
}

const ADMIN: UserInfo = { username: "kubernetes-admin", groups: ["system:masters", "system:authenticated"] };
const MAX_BODY = 3 * 1024 * 1024;

export class KubeApiServer {
  readonly store = new ObjectStore();
  readonly tokens = new TokenIssuer();
  readonly requests: RecordedRequest[] = [];
  readonly #options: KubeApiServerOptions;
  readonly #staticTokens = new Map<string, UserInfo>();
  readonly #watches = new Set<OpenWatch>();
  #server?: Server;
  #dir = "";
  caPem = "";
  url = "";
  adminToken = "";

  constructor(options: KubeApiServerOptions = {}) {
    this.#options = options;
  }

  async start(): Promise<this> {
    await this.tokens.init();
    this.#dir = mkdtempSync(join(tmpdir(), "meshauth-kube-api-"));
    const key = join(this.#dir, "server.key");
    const cert = join(this.#dir, "server.crt");
    // OpenSSL makes the serving certificate: an independent peer, as the real one is.
    execFileSync("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=kube-apiserver",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
    ], { stdio: "ignore" });
    this.caPem = readFileSync(cert, "utf8");
    this.adminToken = `admin-${randomUUID()}`;
    this.#staticTokens.set(this.adminToken, ADMIN);
    this.#server = createServer({ key: readFileSync(key), cert: this.caPem }, (req, res) => {
      void this.#handle(req, res);
    });
    this.#server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve) => this.#server!.listen(0, "127.0.0.1", resolve));
    this.url = `https://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
    for (const name of ["default", "kube-system"]) {
      this.seed({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
    }
    return this;
  }

  async stop(): Promise<void> {
    this.dropWatches();
    this.#server?.closeAllConnections();
    await new Promise<void>((resolve) => this.#server ? this.#server.close(() => resolve()) : resolve());
    rmSync(this.#dir, { recursive: true, force: true });
  }

  // ---- test controls -------------------------------------------------------------------

  /** Ends every open watch abruptly, as a dropped connection or an API server restart would. */
  dropWatches(): number {
    const count = this.#watches.size;
    for (const w of [...this.#watches]) {
      w.close();
      w.res.destroy();
    }
    return count;
  }

  /**
   * Stalls every open watch: events stop reaching them (a partitioned or wedged stream) until
   * they are dropped. What happens meanwhile is only found again by a list.
   */
  stallWatches(): void {
    for (const w of this.#watches) w.stalled = true;
  }

  /** Forgets all history (etcd compaction): watches resuming from an older version get 410. */
  compact(): void {
    this.store.compact();
  }

  /** Open watches now. */
  get openWatches(): number {
    return this.#watches.size;
  }

  /** A bearer token for a user that is not a service account (a kubelet: `system:node:<n>`). */
  staticToken(user: UserInfo): string {
    const token = `static-${randomUUID()}`;
    this.#staticTokens.set(token, user);
    return token;
  }

  /** Writes an object straight to storage, past admission (as if put into etcd). */
  seed(object: KubeObject): KubeObject {
    const resource = this.#resourceOfObject(object);
    const namespace = resource.namespaced ? object.metadata.namespace ?? "default" : undefined;
    const stored = this.#prepareNew({
      ...structuredClone(object),
      metadata: { ...object.metadata, namespace },
    });
    return this.store.write(resource, stored, namespace, stored.metadata.name!).object;
  }

  /** Applies every document of YAML manifests as the admin, as `kubectl apply` creates them. */
  apply(yamlText: string): KubeObject[] {
    const out: KubeObject[] = [];
    for (const doc of parseAllDocuments(yamlText)) {
      const object = doc.toJS() as KubeObject | null;
      if (!object) continue;
      const resource = this.#resourceOfObject(object);
      const namespace = resource.namespaced ? object.metadata.namespace ?? "default" : undefined;
      if (this.store.current(resource, namespace, object.metadata.name!)) continue;
      out.push(this.#create(resource, this.#versionOf(object), namespace, object, ADMIN));
    }
    return out;
  }

  /** A projected service-account token, as the kubelet gets it through TokenRequest. */
  tokenFor(request: Omit<TokenRequest, "serviceAccountUid">): Promise<string> {
    const sa = this.store.current(
      this.#resource("", "serviceaccounts"),
      request.namespace,
      request.serviceAccount,
    );
    if (!sa) throw new Error(`no service account ${request.namespace}/${request.serviceAccount}`);
    return this.tokens.issue({ ...request, serviceAccountUid: sa.metadata.uid! });
  }

  /** A kubeconfig file (in a temporary directory) that reaches this server with `token`. */
  writeKubeconfig(token: string, dir = this.#dir): string {
    const path = join(dir, `kubeconfig-${randomUUID()}.yaml`);
    writeFileSync(
      path,
      [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: test",
        "  cluster:",
        `    server: ${this.url}`,
        `    certificate-authority-data: ${Buffer.from(this.caPem).toString("base64")}`,
        "users:",
        "- name: user",
        "  user:",
        `    token: ${token}`,
        "contexts:",
        "- name: test",
        "  context: {cluster: test, user: user}",
        "current-context: test",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    return path;
  }

  /** The requests `username` made that RBAC allowed. */
  requestsBy(username: string): RecordedRequest[] {
    return this.requests.filter((r) => r.user === username);
  }

  // ---- HTTP ------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", this.url);
      const user = await this.#authenticate(req);
      await this.#route(req, res, url, user);
    } catch (err) {
      const failure = err instanceof ApiFailure
        ? err
        : new ApiFailure(500, "InternalError", String((err as Error)?.stack ?? err));
      if (!res.headersSent) this.#json(res, failure.code, failure.body());
      else res.destroy();
    }
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  async #body(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) {
        throw new ApiFailure(413, "RequestEntityTooLarge", "the request body is too large");
      }
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    if (!text) return {};
    try {
      return JSON.parse(text);
    } catch {
      throw badRequest(
        "the body of the request was in an unknown format - accepted media types include: application/json",
      );
    }
  }

  async #authenticate(req: IncomingMessage): Promise<UserInfo> {
    const header = req.headers.authorization ?? "";
    const m = /^Bearer (.+)$/.exec(header);
    if (!m) throw unauthorized();
    const token = m[1].trim();
    const fixed = this.#staticTokens.get(token);
    if (fixed) return fixed;
    const review = await this.tokens.review(token, [API_AUDIENCE], this.#bindings());
    if ("error" in review) throw unauthorized();
    return review.user;
  }

  #bindings() {
    return {
      serviceAccountUid: (ns: string, name: string) =>
        this.store.current(this.#resource("", "serviceaccounts"), ns, name)?.metadata.uid,
      podUid: (ns: string, name: string) =>
        this.store.current(this.#resource("", "pods"), ns, name)?.metadata.uid,
    };
  }

  #rbac(): RbacSource {
    const rbac = (plural: string) => this.#resource("rbac.authorization.k8s.io", plural);
    return {
      roles: (ns) => this.store.list(rbac("roles"), ns),
      roleBindings: (ns) => this.store.list(rbac("rolebindings"), ns),
      clusterRoles: () => this.store.list(rbac("clusterroles"), undefined),
      clusterRoleBindings: () => this.store.list(rbac("clusterrolebindings"), undefined),
    };
  }

  #check(user: UserInfo, request: AuthorizationRequest): void {
    const allowed = authorize(this.#rbac(), user, request);
    this.requests.push({
      user: user.username,
      verb: request.verb,
      group: request.group,
      resource: request.resource,
      namespace: request.namespace,
      name: request.name,
      status: allowed ? 200 : 403,
    });
    if (!allowed) {
      throw forbidden(
        user.username,
        request.verb,
        request.resource,
        request.group,
        request.namespace,
        request.name,
      );
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, url: URL, user: UserInfo): Promise<void> {
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? "GET";
    // Discovery and the issuer's documents: any authenticated user (system:discovery).
    if (method === "GET") {
      if (url.pathname === "/api") {
        return this.#json(res, 200, {
          kind: "APIVersions",
          versions: ["v1"],
          serverAddressByClientCIDRs: [],
        });
      }
      if (url.pathname === "/apis") return this.#json(res, 200, apiGroupList());
      if (url.pathname === "/openid/v1/jwks") return this.#json(res, 200, this.tokens.jwks());
      if (url.pathname === "/.well-known/openid-configuration") {
        return this.#json(res, 200, {
          issuer: ISSUER,
          jwks_uri: `${this.url}/openid/v1/jwks`,
          response_types_supported: ["id_token"],
          subject_types_supported: ["public"],
          id_token_signing_alg_values_supported: ["ES256"],
        });
      }
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === "api" && parts.length >= 2) {
      [group, version, rest] = ["", parts[1], parts.slice(2)];
    } else if (parts[0] === "apis" && parts.length >= 3) {
      [group, version, rest] = [parts[1], parts[2], parts.slice(3)];
    } else {
      throw notFound("", url.pathname);
    }
    const unserved = new Set(this.#options.unservedResources ?? []);
    if (rest.length === 0 && method === "GET") {
      const list = apiResourceList(group, version);
      list.resources = list.resources.filter((r) => !unserved.has(r.name.split("/")[0]));
      if (list.resources.length === 0) {
        throw new ApiFailure(404, "NotFound", "the server could not find the requested resource");
      }
      return this.#json(res, 200, list);
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [plural, name, subresource, ...extra] = rest;
    const resource = unserved.has(plural) ? undefined : findResource(group, version, plural);
    if (!resource || extra.length || (subresource && !resource.subresources?.includes(subresource))) {
      throw new ApiFailure(404, "NotFound", "the server could not find the requested resource");
    }
    if (resource.namespaced === false && namespace !== undefined) {
      throw new ApiFailure(404, "NotFound", "the server could not find the requested resource");
    }
    const authz = (verb: string, objectName = name) =>
      this.#check(user, {
        verb,
        group,
        resource: subresource ? `${plural}/${subresource}` : plural,
        namespace,
        name: objectName,
      });

    if (method === "GET" && !name) {
      const isWatch = url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1";
      authz(isWatch ? "watch" : "list");
      if (isWatch) return this.#watch(res, resource, version, namespace, url);
      return this.#json(res, 200, this.#list(resource, version, namespace, url));
    }
    if (method === "GET") {
      authz("get");
      const object = this.store.current(resource, namespace, name);
      if (!object) throw notFound(plural, name, group);
      return this.#json(res, 200, this.#view(resource, version, object));
    }
    if (method === "POST" && !name) {
      authz("create", undefined);
      const body = await this.#body(req);
      if (resource.isReview) return this.#json(res, 201, await this.#review(resource, body));
      return this.#json(
        res,
        201,
        this.#view(resource, version, this.#create(resource, version, namespace, body as KubeObject, user)),
      );
    }
    if (method === "POST" && subresource === "token") {
      authz("create");
      return this.#json(res, 201, await this.#tokenRequest(namespace!, name, await this.#body(req)));
    }
    if (method === "PUT" && name) {
      authz("update");
      const body = await this.#body(req) as KubeObject;
      return this.#json(
        res,
        200,
        this.#view(resource, version, this.#update(resource, namespace, name, body, subresource, user)),
      );
    }
    if (method === "PATCH" && name) {
      authz("patch");
      const type = String(req.headers["content-type"] ?? "");
      const current = this.store.current(resource, namespace, name);
      if (!current) throw notFound(plural, name, group);
      let patched: KubeObject;
      if (/merge-patch\+json|strategic-merge-patch\+json/.test(type)) {
        patched = mergePatch(current, await this.#body(req)) as KubeObject;
      } else if (/json-patch\+json/.test(type)) {
        patched = jsonPatch(current, await this.#body(req) as unknown as JsonPatchOperation[]);
      } else {
        throw new ApiFailure(
          415,
          "UnsupportedMediaType",
          `the server does not support patches of type ${type}`,
        );
      }
      return this.#json(
        res,
        200,
        this.#view(resource, version, this.#update(resource, namespace, name, patched, subresource, user)),
      );
    }
    if (method === "DELETE" && name) {
      authz("delete");
      const body = await this.#body(req) as { preconditions?: { uid?: string; resourceVersion?: string } };
      const current = this.store.current(resource, namespace, name);
      if (!current) throw notFound(plural, name, group);
      const pre = body.preconditions ?? {};
      if (pre.uid && pre.uid !== current.metadata.uid) {
        throw new ApiFailure(
          409,
          "Conflict",
          `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
        );
      }
      if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion) {
        throw new ApiFailure(
          409,
          "Conflict",
          `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`,
        );
      }
      const event = this.store.write(resource, null, namespace, name);
      return this.#json(res, 200, this.#view(resource, version, event.object));
    }
    throw new ApiFailure(
      405,
      "MethodNotAllowed",
      `the server does not allow this method on the requested resource`,
    );
  }

  // ---- objects ---------------------------------------------------------------------------

  #resource(group: string, plural: string): ResourceType {
    return RESOURCES.find((r) => r.group === group && r.plural === plural)!;
  }

  #resourceOfObject(object: KubeObject): ResourceType {
    const [group, version] = object.apiVersion!.includes("/")
      ? object.apiVersion!.split("/")
      : ["", object.apiVersion!];
    const resource = RESOURCES.find((r) =>
      r.group === group && r.kind === object.kind && r.versions.includes(version)
    );
    if (!resource) throw new Error(`the test API server does not serve ${object.apiVersion} ${object.kind}`);
    return resource;
  }

  #versionOf(object: KubeObject): string {
    return object.apiVersion!.includes("/") ? object.apiVersion!.split("/")[1] : object.apiVersion!;
  }

  #view(resource: ResourceType, version: string, object: KubeObject): KubeObject {
    const shown = resource.view ? resource.view(object, version) : object;
    return {
      ...shown,
      apiVersion: resource.group ? `${resource.group}/${version}` : version,
      kind: resource.kind,
    };
  }

  #prepareNew(object: KubeObject): KubeObject {
    const metadata = object.metadata ?? {};
    if (!metadata.name && metadata.generateName) {
      metadata.name = `${metadata.generateName}${randomUUID().slice(0, 5)}`;
    }
    return {
      ...object,
      metadata: {
        ...metadata,
        uid: randomUUID(),
        creationTimestamp: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
        ...(object.spec !== undefined ? { generation: 1 } : {}),
      },
    };
  }

  #create(
    resource: ResourceType,
    version: string,
    namespace: string | undefined,
    body: KubeObject,
    user: UserInfo,
  ): KubeObject {
    if (!body?.metadata) throw badRequest("metadata is required");
    if (resource.namespaced) {
      namespace ??= body.metadata.namespace ?? "default";
      if (body.metadata.namespace && body.metadata.namespace !== namespace) {
        throw badRequest(
          "the namespace of the provided object does not match the namespace sent on the request",
        );
      }
      if (!this.store.current(this.#resource("", "namespaces"), undefined, namespace)) {
        throw notFound("namespaces", namespace);
      }
    }
    const object = this.#prepareNew({ ...body, metadata: { ...body.metadata, namespace } });
    const name = object.metadata.name;
    if (!name || !/^[a-z0-9]([-a-z0-9.:]*[a-z0-9])?$/.test(name) || name.length > 253) {
      throw invalid(resource.kind, resource.group, name ?? "", [{
        field: "metadata.name",
        message: `Invalid value: ${JSON.stringify(name)}: a lowercase RFC 1123 subdomain is required`,
      }]);
    }
    if (this.store.current(resource, namespace, name)) {
      throw alreadyExists(resource.plural, name, resource.group);
    }
    delete object.apiVersion;
    delete object.kind;
    if (resource.plural === "podcertificaterequests") this.#admitPodCertificateRequest(version, object);
    if (resource.plural === "clustertrustbundles") this.#admitClusterTrustBundle(object, user);
    if (resource.plural === "secrets") object.type ??= "Opaque";
    if (
      resource.subresources?.includes("status") && resource.plural !== "pods" && resource.plural !== "nodes"
    ) {
      delete object.status; // a create does not set status, except where the API allows it
    }
    return this.store.write(resource, object, namespace, name).object;
  }

  #update(
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
    body: KubeObject,
    subresource: string | undefined,
    user: UserInfo,
  ): KubeObject {
    const current = this.store.current(resource, namespace, name);
    if (!current) throw notFound(resource.plural, name, resource.group);
    if (body?.metadata?.name !== undefined && body.metadata.name !== name) {
      throw badRequest("the name of the object does not match the name on the URL");
    }
    const rv = body?.metadata?.resourceVersion;
    if (rv && rv !== current.metadata.resourceVersion) throw conflict(resource.plural, name, resource.group);
    let next: KubeObject;
    if (subresource === "status") {
      next = { ...current, status: body.status };
      if (resource.plural === "podcertificaterequests") {
        const causes = validatePodCertificateRequestStatus(current, next);
        if (causes.length) throw invalid(resource.kind, resource.group, name, causes);
        if (JSON.stringify(current.status ?? {}) !== JSON.stringify(next.status ?? {})) {
          this.#requireSignerVerb(user, "sign", String((current.spec as Record<string, unknown>).signerName));
        }
      }
    } else {
      next = {
        ...body,
        metadata: {
          ...body.metadata,
          uid: current.metadata.uid,
          namespace: current.metadata.namespace,
          creationTimestamp: current.metadata.creationTimestamp,
          generation: current.metadata.generation,
        },
      };
      delete next.apiVersion;
      delete next.kind;
      if (resource.subresources?.includes("status") && resource.plural !== "namespaces") {
        next.status = current.status;
      }
      if (resource.plural === "secrets" && (next.type ?? "Opaque") !== (current.type ?? "Opaque")) {
        throw invalid("Secret", "", name, [{ field: "type", message: "Invalid value: field is immutable" }]);
      }
      if (
        resource.plural === "podcertificaterequests" &&
        JSON.stringify(next.spec) !== JSON.stringify(current.spec)
      ) {
        throw invalid(resource.kind, resource.group, name, [{
          field: "spec",
          message: "Forbidden: immutable",
        }]);
      }
      if (resource.plural === "clustertrustbundles") this.#admitClusterTrustBundle(next, user);
      if (JSON.stringify(next.spec) !== JSON.stringify(current.spec) && current.metadata.generation) {
        next.metadata.generation = current.metadata.generation + 1;
      }
    }
    return this.store.write(resource, next, namespace, name).object;
  }

  #requireSignerVerb(user: UserInfo, verb: "sign" | "attest", signerName: string): void {
    const domain = signerName.split("/")[0];
    const allowed = [signerName, `${domain}/*`].some((name) =>
      authorize(this.#rbac(), user, { verb, group: "certificates.k8s.io", resource: "signers", name })
    );
    this.requests.push({
      user: user.username,
      verb,
      group: "certificates.k8s.io",
      resource: "signers",
      name: signerName,
      status: allowed ? 200 : 403,
    });
    if (!allowed) {
      throw new ApiFailure(
        403,
        "Forbidden",
        `spec.signerName: Forbidden: User "${user.username}" is not permitted to "${verb}" for signer "${signerName}"`,
      );
    }
  }

  #admitClusterTrustBundle(object: KubeObject, user: UserInfo): void {
    const causes = validateClusterTrustBundle(object);
    if (causes.length) {
      throw invalid("ClusterTrustBundle", "certificates.k8s.io", object.metadata.name ?? "", causes);
    }
    const signerName = (object.spec as { signerName?: string }).signerName;
    if (signerName) this.#requireSignerVerb(user, "attest", signerName);
  }

  #admitPodCertificateRequest(version: string, object: KubeObject): void {
    const spec = (object.spec ?? {}) as Record<string, unknown>;
    const causes: Array<{ field: string; message: string }> = [];
    for (
      const field of [
        "signerName",
        "podName",
        "podUID",
        "serviceAccountName",
        "serviceAccountUID",
        "nodeName",
        "nodeUID",
      ]
    ) {
      if (typeof spec[field] !== "string" || !spec[field]) {
        causes.push({ field: `spec.${field}`, message: "Required value" });
      }
    }
    if (version === "v1") {
      delete spec.pkixPublicKey;
      delete spec.proofOfPossession;
    }
    spec.maxExpirationSeconds ??= 86400;
    const max = Number(spec.maxExpirationSeconds);
    if (!(max >= 3600 && max <= 91 * 86400)) {
      causes.push({ field: "spec.maxExpirationSeconds", message: "must be in the range [3600, 7862400]" });
    }
    const { error } = requestedSpki(spec, true);
    if (error) causes.push(error);
    if (!spec.stubPKCS10Request && spec.pkixPublicKey && !proofOfPossessionHolds(spec)) {
      causes.push({
        field: "spec.proofOfPossession",
        message: "Invalid value: could not verify proof-of-possession signature",
      });
    }
    if (causes.length) {
      throw invalid("PodCertificateRequest", "certificates.k8s.io", object.metadata.name ?? "", causes);
    }
    object.spec = spec;
  }

  // ---- list and watch ---------------------------------------------------------------------

  #selectors(resource: ResourceType, url: URL): (o: KubeObject) => boolean {
    const fields = fieldSelector(resource, url.searchParams.get("fieldSelector"));
    if (typeof fields === "string") throw badRequest(fields);
    const labels = labelSelector(url.searchParams.get("labelSelector"));
    if (typeof labels === "string") throw badRequest(labels);
    return (o) => fields(o) && labels(o);
  }

  #list(resource: ResourceType, version: string, namespace: string | undefined, url: URL) {
    const matches = this.#selectors(resource, url);
    const limit = Number(url.searchParams.get("limit") ?? 0);
    const token = url.searchParams.get("continue");
    let atRevision = this.store.revision;
    let after = "";
    if (token) {
      try {
        ({ rv: atRevision, after } = JSON.parse(Buffer.from(token, "base64").toString("utf8")));
      } catch {
        throw badRequest("continue key is not valid");
      }
      if (atRevision < this.store.compactedRevision) {
        throw expired(
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
      }
    } else {
      const rv = url.searchParams.get("resourceVersion");
      const match = url.searchParams.get("resourceVersionMatch");
      if (rv && rv !== "0" && match === "Exact") {
        atRevision = Number(rv);
        if (atRevision < this.store.compactedRevision) {
          throw expired(`too old resource version: ${rv} (${this.store.compactedRevision})`);
        }
      }
    }
    const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    const all = this.store.list(resource, namespace, atRevision).filter(matches).filter((o) =>
      keyOf(o) > after
    );
    const page = limit > 0 ? all.slice(0, limit) : all;
    const more = limit > 0 && all.length > limit;
    return {
      kind: `${resource.kind}List`,
      apiVersion: resource.group ? `${resource.group}/${version}` : version,
      metadata: {
        resourceVersion: String(atRevision),
        ...(more
          ? {
            continue: Buffer.from(JSON.stringify({ rv: atRevision, after: keyOf(page.at(-1)!) })).toString(
              "base64",
            ),
            remainingItemCount: all.length - page.length,
          }
          : {}),
      },
      // List items carry no apiVersion or kind, as the API server sends them.
      items: page.map((o) => {
        const { apiVersion: _a, kind: _k, ...rest } = this.#view(resource, version, o);
        return rest;
      }),
    };
  }

  #watch(
    res: ServerResponse,
    resource: ResourceType,
    version: string,
    namespace: string | undefined,
    url: URL,
  ): void {
    const matches = this.#selectors(resource, url);
    const rvParam = url.searchParams.get("resourceVersion") ?? "";
    const bookmarks = url.searchParams.get("allowWatchBookmarks") === "true";
    const timeoutSeconds = Number(url.searchParams.get("timeoutSeconds") ?? 0);
    const inScope = (o: KubeObject) => namespace === undefined || o.metadata.namespace === namespace;
    const fromRevision = rvParam === "" || rvParam === "0" ? undefined : Number(rvParam);
    if (fromRevision !== undefined && !Number.isFinite(fromRevision)) {
      throw badRequest(`invalid resource version: ${rvParam}`);
    }
    const replay = fromRevision === undefined ? [] : this.store.eventsSince(fromRevision);
    if (replay === undefined && this.#options.goneAsHttpStatus) {
      throw expired(`too old resource version: ${fromRevision} (${this.store.compactedRevision})`);
    }
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    const cleanups: Array<() => void> = [];
    const open: OpenWatch = {
      res,
      close: () => {
        for (const cleanup of cleanups.splice(0)) cleanup();
        this.#watches.delete(open);
      },
    };
    const send = (type: string, object: KubeObject | Record<string, unknown>) => {
      if (!open.stalled) res.write(`${JSON.stringify({ type, object })}\n`);
    };
    if (replay === undefined) {
      // The watch cache's answer to a compacted version: one ERROR event, then the end.
      send(
        "ERROR",
        { ...expired(`too old resource version: ${fromRevision} (${this.store.compactedRevision})`).body() },
      );
      res.end();
      return;
    }
    const deliver = (event: StoreEvent) => {
      if (event.resource !== resource || !inScope(event.object)) return;
      const now = matches(event.object);
      const before = event.previous !== undefined && matches(event.previous);
      let type: string | undefined = event.type;
      // With a selector, an object moving out of it is DELETED and one moving in is ADDED.
      if (event.type === "MODIFIED") {
        type = now && before ? "MODIFIED" : now ? "ADDED" : before ? "DELETED" : undefined;
      } else if (!now) type = undefined;
      if (type) send(type, this.#view(resource, version, event.object));
    };
    if (fromRevision === undefined) {
      for (const o of this.store.list(resource, namespace).filter(matches)) {
        send("ADDED", this.#view(resource, version, o));
      }
    } else {
      for (const event of replay) deliver(event);
    }
    cleanups.push(this.store.subscribe(deliver));
    const timers: Array<ReturnType<typeof setInterval>> = [];
    cleanups.push(() => timers.forEach((t) => clearInterval(t)));
    if (bookmarks) {
      timers.push(setInterval(() => {
        send("BOOKMARK", {
          kind: resource.kind,
          apiVersion: resource.group ? `${resource.group}/${version}` : version,
          metadata: { resourceVersion: String(this.store.revision) },
        });
      }, this.#options.bookmarkIntervalMs ?? 1000));
    }
    if (timeoutSeconds > 0) {
      timers.push(setTimeout(() => {
        open.close();
        res.end();
      }, timeoutSeconds * 1000) as unknown as ReturnType<typeof setInterval>);
    }
    this.#watches.add(open);
    res.on("close", () => open.close());
  }

  // ---- reviews and tokens ------------------------------------------------------------------

  async #review(resource: ResourceType, body: Record<string, unknown>) {
    if (resource.plural !== "tokenreviews") throw new ApiFailure(405, "MethodNotAllowed", "not supported");
    const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
    const result = await this.tokens.review(spec.token ?? "", spec.audiences ?? [], this.#bindings());
    const status = "error" in result
      ? { authenticated: false, user: {}, error: result.error }
      : { authenticated: true, user: result.user, audiences: result.audiences };
    return {
      kind: "TokenReview",
      apiVersion: "authentication.k8s.io/v1",
      metadata: { creationTimestamp: null },
      spec,
      status,
    };
  }

  async #tokenRequest(namespace: string, name: string, body: Record<string, unknown>) {
    const sa = this.store.current(this.#resource("", "serviceaccounts"), namespace, name);
    if (!sa) throw notFound("serviceaccounts", name);
    const spec = (body.spec ?? {}) as {
      audiences?: string[];
      expirationSeconds?: number;
      boundObjectRef?: { kind?: string; name?: string; uid?: string };
    };
    let pod: { name: string; uid: string } | undefined;
    let node: { name: string; uid: string } | undefined;
    if (spec.boundObjectRef?.kind === "Pod") {
      const p = this.store.current(this.#resource("", "pods"), namespace, spec.boundObjectRef.name ?? "");
      if (!p || p.metadata.uid !== spec.boundObjectRef.uid) {
        throw notFound("pods", spec.boundObjectRef.name ?? "");
      }
      pod = { name: p.metadata.name!, uid: p.metadata.uid! };
      const nodeName = (p.spec as { nodeName?: string }).nodeName;
      const n = nodeName ? this.store.current(this.#resource("", "nodes"), undefined, nodeName) : undefined;
      if (n) node = { name: n.metadata.name!, uid: n.metadata.uid! };
    }
    const expirationSeconds = spec.expirationSeconds ?? 3600;
    const token = await this.tokens.issue({
      namespace,
      serviceAccount: name,
      serviceAccountUid: sa.metadata.uid!,
      audiences: spec.audiences?.length ? spec.audiences : [API_AUDIENCE],
      expirationSeconds,
      pod,
      node,
    });
    return {
      kind: "TokenRequest",
      apiVersion: "authentication.k8s.io/v1",
      metadata: { name, namespace, creationTimestamp: null },
      spec: { ...spec, expirationSeconds },
      status: {
        token,
        expirationTimestamp: new Date(Date.now() + expirationSeconds * 1000).toISOString().replace(
          /\.\d{3}Z$/,
          "Z",
        ),
      },
    };
  }
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = typeof target === "object" && target !== null && !Array.isArray(target)
    ? { ...(target as Record<string, unknown>) }
    : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

interface JsonPatchOperation {
  op: "add" | "remove" | "replace" | "test" | "move" | "copy";
  path: string;
  from?: string;
  value?: unknown;
}

/** RFC 6902 JSON patch (the typed client's default patch type). */
export function jsonPatch<T>(target: T, operations: JsonPatchOperation[]): T {
  if (!Array.isArray(operations)) throw badRequest("a JSON patch is a list of operations");
  const doc = structuredClone(target) as unknown;
  const pointer = (path: string) =>
    path.split("/").slice(1).map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
  const parentOf = (path: string): [Record<string, unknown> | unknown[], string] => {
    const parts = pointer(path);
    let node = doc as Record<string, unknown>;
    for (const part of parts.slice(0, -1)) {
      node = node?.[part] as Record<string, unknown>;
      if (typeof node !== "object" || node === null) {
        throw new ApiFailure(422, "Invalid", `the path ${path} does not exist`);
      }
    }
    return [node, parts.at(-1)!];
  };
  const get = (path: string) => {
    const [parent, key] = parentOf(path);
    return (parent as Record<string, unknown>)[key];
  };
  const remove = (path: string) => {
    const [parent, key] = parentOf(path);
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete parent[key];
  };
  const add = (path: string, value: unknown) => {
    const [parent, key] = parentOf(path);
    if (Array.isArray(parent)) parent.splice(key === "-" ? parent.length : Number(key), 0, value);
    else parent[key] = value;
  };
  for (const op of operations) {
    if (op.op === "add") add(op.path, op.value);
    else if (op.op === "remove") remove(op.path);
    else if (op.op === "replace") {
      remove(op.path);
      add(op.path, op.value);
    } else if (op.op === "test") {
      if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value)) {
        throw new ApiFailure(422, "Invalid", `test failed at ${op.path}`);
      }
    } else if (op.op === "move" || op.op === "copy") {
      const value = structuredClone(get(op.from!));
      if (op.op === "move") remove(op.from!);
      add(op.path, value);
    } else throw badRequest(`unknown JSON patch operation ${JSON.stringify(op.op)}`);
  }
  return doc as T;
}
