// The edge example (examples/edge/) on every runtime: the same file runs on Node and Deno
// (npm test), on Bun (bun test) and inside workerd (scripts/test-workerd.mjs). The CA is made
// in-process; its bundle endpoint is a Hono app reached through a stub fetch, so no network.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import {
  authorizeId,
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  SignatureCache,
  SpiffeId,
} from "../../mod.ts";
import { createEdgeApp, type EdgeAppOptions } from "../../examples/edge/app.ts";
import { BundleCache, bundleEndpoint, type FetchLike } from "../../examples/edge/bundle-cache.ts";
import { clientChainPem, ENVOY_XFCC, parseXfcc } from "../../examples/edge/client-cert.ts";
import { edgeOptionsFromEnv } from "../../examples/edge/config.ts";
import worker from "../../examples/edge/worker.ts";

const TD = "example.org";
const WEB = SpiffeId.fromServiceAccount(TD, "default", "web");
const BATCH = SpiffeId.fromServiceAccount(TD, "jobs", "batch");
const BUNDLE_URL = "http://ca.test/v1/bundle";

const POLICIES = [{
  name: "web-reads-photos",
  action: "ALLOW",
  rules: [{
    from: [{ source: { principals: [WEB.toString()] } }],
    to: [{ operation: { methods: ["GET"], paths: ["/photos/*"] } }],
  }],
}, {
  name: "members-whoami",
  action: "ALLOW",
  rules: [{
    from: [{ source: { principals: [`spiffe://${TD}/*`] } }],
    to: [{ operation: { paths: ["/whoami"] } }],
  }],
}];

interface Mesh {
  root: CertificateAuthority;
  intermediate: CertificateAuthority;
  svid(id: SpiffeId, ttlSeconds?: number, ca?: CertificateAuthority): Promise<string>;
}

// Made lazily, inside a test: workerd forbids key generation at module top level.
let meshPromise: Promise<Mesh> | undefined;
function mesh(): Promise<Mesh> {
  meshPromise ??= (async () => {
    const root = await CertificateAuthority.createRoot({ trustDomain: TD });
    const intermediate = await root.createIntermediate({ ttlSeconds: 7 * 86_400 });
    const svid = async (id: SpiffeId, ttlSeconds = 3_600, ca = intermediate) => {
      const keys = await generateKeyPair();
      return (await ca.issue(await createCsr({ keys, id }), { id, ttlSeconds })).chainPem;
    };
    return { root, intermediate, svid };
  })();
  return meshPromise;
}

/**
 * The CA's bundle endpoint as a Hono app, tagging the bundle with an ETag as the CA server
 * does, with a switch to make it fail and counters of requests and 304 answers.
 */
function caStub(root: CertificateAuthority, refreshHintSeconds = 60) {
  const state = { hits: 0, notModified: 0, failing: false };
  const ca = new Hono();
  ca.get("/v1/bundle", (c) => {
    state.hits++;
    if (state.failing) return c.json({ error: "down" }, 500);
    const bundle = root.bundle();
    const etag = `"${bundle.sequence}"`;
    if (c.req.header("if-none-match") === etag) {
      state.notModified++;
      return c.body(null, 304, { etag });
    }
    return c.json({ ...bundle.toJwks(), spiffe_refresh_hint: refreshHintSeconds }, 200, { etag });
  });
  const fetch: FetchLike = (input, init) => Promise.resolve(ca.request(input, init));
  return { state, fetch };
}

function xfcc(chainPem: string): string {
  const leaf = chainPem.slice(0, chainPem.indexOf("-----END CERTIFICATE-----") + 25);
  return `Hash=abc;Cert="${encodeURIComponent(leaf)}";Chain="${encodeURIComponent(chainPem)}";URI=${WEB}`;
}

async function edge(overrides: Partial<EdgeAppOptions> = {}, clock = { ms: Date.now() }) {
  const { root } = await mesh();
  const stub = caStub(root);
  const bundles = new BundleCache(bundleEndpoint({ trustDomain: TD, url: BUNDLE_URL, fetch: stub.fetch }), {
    now: () => clock.ms,
  });
  const app = createEdgeApp({ bundles, policies: POLICIES, now: () => clock.ms, ...overrides });
  return { app, stub, bundles, clock };
}

async function problemOf(response: Response) {
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  return await response.json() as { code: string; reason?: string; status: number; detail: string };
}

describe("edge example: authentication", () => {
  test("answers 200 with the caller's identity for a valid SVID forwarded by Envoy", async () => {
    const { app } = await edge();
    const chain = await (await mesh()).svid(WEB);
    const response = await app.request("/photos/42", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.equal(body.id, WEB.toString());
    assert.deepEqual(body.serviceAccount, { namespace: "default", name: "web" });
    assert.equal(body.path, "/photos/42");
  });

  test("accepts nginx's $ssl_client_escaped_cert for a leaf issued by the root", async () => {
    const { app } = await edge({ clientCertHeader: { name: "x-client-cert", format: "escaped-pem" } });
    const m = await mesh();
    const leaf = await m.svid(WEB, 3_600, m.root);
    const response = await app.request("/photos/1", {
      headers: { "x-client-cert": encodeURIComponent(leaf) },
    });
    assert.equal(response.status, 200);
  });

  test("remembers verified signatures across requests", async () => {
    const signatureCache = new SignatureCache();
    const { app } = await edge({ signatureCache });
    const headers = { "x-forwarded-client-cert": xfcc(await (await mesh()).svid(WEB)) };
    assert.equal((await app.request("/photos/1", { headers })).status, 200);
    const remembered = signatureCache.size;
    assert.ok(remembered > 0);
    assert.equal((await app.request("/photos/2", { headers })).status, 200);
    assert.equal(signatureCache.size, remembered);
  });

  test("answers 401 ERR_CLIENT_CERT_MISSING without a forwarded certificate", async () => {
    const { app } = await edge();
    const response = await app.request("/photos/1");
    assert.equal(response.status, 401);
    assert.equal((await problemOf(response)).code, "ERR_CLIENT_CERT_MISSING");
  });

  test("answers 401 ERR_CLIENT_CERT_MALFORMED for a header that holds no certificate", async () => {
    const { app } = await edge();
    const response = await app.request("/photos/1", {
      headers: { "x-forwarded-client-cert": 'Cert="hello"' },
    });
    assert.equal(response.status, 401);
    assert.equal((await problemOf(response)).code, "ERR_CLIENT_CERT_MALFORMED");
  });

  test("answers 401 with reason ERR_CERT_EXPIRED once the SVID has expired", async () => {
    const clock = { ms: Date.now() };
    const { app } = await edge({}, clock);
    const chain = await (await mesh()).svid(WEB, 600);
    clock.ms += 3_600_000;
    const response = await app.request("/photos/1", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 401);
    const body = await problemOf(response);
    assert.equal(body.code, "ERR_CLIENT_CERT_INVALID");
    assert.equal(body.reason, "ERR_CERT_EXPIRED");
  });

  test("answers 401 for an SVID from another CA claiming the same trust domain", async () => {
    const { app } = await edge();
    const impostor = await CertificateAuthority.createRoot({ trustDomain: TD });
    const chain = await (await mesh()).svid(WEB, 3_600, impostor);
    const response = await app.request("/photos/1", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 401);
    const body = await problemOf(response);
    assert.equal(body.code, "ERR_CLIENT_CERT_INVALID");
    assert.match(body.reason ?? "", /^ERR_/);
  });

  test("answers 401 for an SVID of a trust domain the edge has no bundle for", async () => {
    const { app } = await edge();
    const other = await CertificateAuthority.createRoot({ trustDomain: "other.test" });
    const id = SpiffeId.fromServiceAccount("other.test", "default", "web");
    const keys = await generateKeyPair();
    const { chainPem } = await other.issue(await createCsr({ keys, id }), { id });
    const response = await app.request("/photos/1", {
      headers: { "x-forwarded-client-cert": xfcc(chainPem) },
    });
    assert.equal(response.status, 401);
    assert.equal((await problemOf(response)).code, "ERR_CLIENT_CERT_INVALID");
  });
});

describe("edge example: authorization", () => {
  test("answers 403 ERR_FORBIDDEN when the policy does not allow the caller on the path", async () => {
    const { app } = await edge();
    const chain = await (await mesh()).svid(BATCH);
    const response = await app.request("/photos/1", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 403);
    const body = await problemOf(response);
    assert.equal(body.code, "ERR_FORBIDDEN");
    assert.equal(body.reason, "ERR_POLICY_DENIED");
  });

  test("denies a method the policy does not list", async () => {
    const { app } = await edge();
    const chain = await (await mesh()).svid(WEB);
    const response = await app.request("/photos/1", {
      method: "DELETE",
      headers: { "x-forwarded-client-cert": xfcc(chain) },
    });
    assert.equal(response.status, 403);
  });

  test("lets any member of the trust domain call /whoami", async () => {
    const { app } = await edge();
    const chain = await (await mesh()).svid(BATCH);
    const response = await app.request("/whoami", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).id, BATCH.toString());
  });

  test("applies the coarse authorizer before the policies", async () => {
    const { app } = await edge({ authorize: authorizeId(BATCH) });
    const chain = await (await mesh()).svid(WEB);
    const response = await app.request("/whoami", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 403);
    assert.equal((await problemOf(response)).reason, "ERR_PEER_UNAUTHORIZED");
  });
});

describe("edge example: trust bundle", () => {
  test("fetches the bundle once and reuses it until the refresh hint passes", async () => {
    const { app, stub, clock } = await edge();
    const chain = await (await mesh()).svid(WEB);
    const headers = { "x-forwarded-client-cert": xfcc(chain) };
    assert.equal((await app.request("/photos/1", { headers })).status, 200);
    assert.equal((await app.request("/photos/2", { headers })).status, 200);
    assert.equal(stub.state.hits, 1);
    clock.ms += 61_000;
    assert.equal((await app.request("/photos/3", { headers })).status, 200);
    assert.equal(stub.state.hits, 2);
    assert.equal(stub.state.notModified, 1, "the refetch revalidates with If-None-Match");
  });

  test("keeps using the cached bundle while the CA is down, within the staleness bound", async () => {
    const { app, stub, clock } = await edge();
    const chain = await (await mesh()).svid(WEB, 86_400);
    const headers = { "x-forwarded-client-cert": xfcc(chain) };
    assert.equal((await app.request("/photos/1", { headers })).status, 200);
    stub.state.failing = true;
    clock.ms += 120_000;
    assert.equal((await app.request("/photos/1", { headers })).status, 200);
    clock.ms += 2 * 3_600_000;
    const response = await app.request("/photos/1", { headers });
    assert.equal(response.status, 503);
    assert.equal((await problemOf(response)).code, "ERR_BUNDLE_UNAVAILABLE");
  });

  test("answers 503 ERR_BUNDLE_UNAVAILABLE when the CA cannot be reached at all", async () => {
    const { app, stub } = await edge();
    stub.state.failing = true;
    const chain = await (await mesh()).svid(WEB);
    const response = await app.request("/photos/1", { headers: { "x-forwarded-client-cert": xfcc(chain) } });
    assert.equal(response.status, 503);
  });

  test("serves /healthz without a client certificate, ok only once a bundle is loaded", async () => {
    const { app, stub } = await edge();
    stub.state.failing = true;
    const unavailable = await app.request("/healthz");
    assert.equal(unavailable.status, 503);
    assert.equal((await unavailable.json()).status, "no-bundle");
    stub.state.failing = false;
    const response = await app.request("/healthz");
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.equal(body.status, "ok");
    assert.equal(body.bundles.length, 1);
  });
});

describe("edge example: forwarded headers", () => {
  test("parseXfcc reads quoted values holding separators and several elements", () => {
    const elements = parseXfcc(
      "xfcc",
      'By=spiffe://a/x;Subject="CN=a, O=b;c";URI=spiffe://a/y,By=spiffe://a/z;Hash=1;Cert="a\\"b"',
    );
    assert.equal(elements.length, 2);
    assert.equal(elements[0].get("subject"), "CN=a, O=b;c");
    assert.equal(elements[1].get("cert"), 'a"b');
  });

  test("clientChainPem takes the element the nearest proxy appended", async () => {
    const chain = await (await mesh()).svid(WEB);
    const value = `Cert="${encodeURIComponent("forged")}",${xfcc(chain)}`;
    assert.equal(clientChainPem(ENVOY_XFCC, value), chain);
  });

  test("clientChainPem answers undefined when the header is absent", () => {
    assert.equal(clientChainPem(ENVOY_XFCC, null), undefined);
  });
});

describe("edge example: entries", () => {
  test("config from the environment defaults to /whoami for members of the trust domain", async () => {
    const { root } = await mesh();
    const stub = caStub(root);
    const options = edgeOptionsFromEnv(
      { MESHAUTH_TRUST_DOMAIN: TD, MESHAUTH_BUNDLE_URL: BUNDLE_URL },
      stub.fetch,
    );
    const app = createEdgeApp(options);
    const chain = await (await mesh()).svid(BATCH);
    const headers = { "x-forwarded-client-cert": xfcc(chain) };
    assert.equal((await app.request("/whoami", { headers })).status, 200);
    assert.equal((await app.request("/photos/1", { headers })).status, 403);
  });

  test("the Worker entry reaches the CA through a service binding", async () => {
    const { root } = await mesh();
    const stub = caStub(root);
    const env = { MESHAUTH_TRUST_DOMAIN: TD, MESHAUTH_BUNDLE_URL: BUNDLE_URL, CA: { fetch: stub.fetch } };
    const chain = await (await mesh()).svid(WEB);
    const request = new Request("http://edge.test/whoami", {
      headers: { "x-forwarded-client-cert": xfcc(chain) },
    });
    const response = await worker.fetch(request, env);
    assert.equal(response.status, 200);
    assert.equal(stub.state.hits, 1);
  });
});
