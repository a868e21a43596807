// Kubernetes service-account tokens against a stand-in API server over HTTPS with a private CA
// (as in a cluster): the reviewer's projected token is read again when the kubelet rotates it,
// and when the API server refuses it; a TokenReview answer without the audiences the CA asked
// for is refused; an offline jwksUrl is fetched trusting the cluster's CA certificate. An API
// server that fails (503) costs the client's address a token each time, and after five
// failures in a row it is left alone for a while (a circuit breaker).
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import { createServer, type Server } from "node:https";
import { readFile, rename, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import {
  fetchTrustingCa,
  KubernetesApi,
  KubernetesAuthenticator,
  type Problem,
  ServiceAccountTokenAuthenticator,
} from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  postJson,
  run,
  startCa,
  tempDir,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const FOR_THE_CA = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYSJ9.c2lnbmF0dXJl";
const FOR_THE_API_SERVER = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcGkifQ.c2lnbmF0dXJl";
/** A token whose review the stand-in answers with 503, as an API server that is down or overloaded. */
const WHILE_DOWN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkb3duIn0.c2lnbmF0dXJl";
const ISSUER = "https://kubernetes.default.svc.cluster.local";

/** A self-signed certificate for 127.0.0.1, made by OpenSSL: the "cluster CA" and the server's. */
async function clusterCertificate(dir: string): Promise<{ key: string; cert: string; caFile: string }> {
  const key = join(dir, "apiserver.key");
  const cert = join(dir, "ca.crt");
  const made = await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    "/CN=kubernetes",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-days",
    "1",
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  assert.equal(made.code, 0, made.stderr);
  return { key: await readFile(key, "utf8"), cert: await readFile(cert, "utf8"), caFile: cert };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
}

describe("Kubernetes authentication against an API server with the cluster's CA", () => {
  let dir: { path: string; remove(): Promise<void> };
  let apiServer: Server;
  let ca: CaProcess;
  let reviewerToken = "reviewer-1";
  const tokenFile = () => join(dir.path, "token");
  let jwtKeys: Awaited<ReturnType<typeof generateKeyPair>>;
  let tls: Awaited<ReturnType<typeof clusterCertificate>>;
  /** TokenReviews the stand-in received (answered or refused), by the token reviewed. */
  const reviews = new Map<string, number>();

  before(async () => {
    dir = await tempDir();
    tls = await clusterCertificate(dir.path);
    jwtKeys = await generateKeyPair("ES256");
    const jwks = { keys: [{ ...(await exportJWK(jwtKeys.publicKey)), kid: "k1", alg: "ES256", use: "sig" }] };
    apiServer = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      let body = "";
      req.on("data", (d) => body += d);
      req.on("end", () => {
        if (req.url === "/openid/v1/jwks") {
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(jwks));
          return;
        }
        const review = JSON.parse(body);
        reviews.set(review.spec.token, (reviews.get(review.spec.token) ?? 0) + 1);
        // Only the reviewer's current token may create TokenReviews.
        if (req.headers.authorization !== `Bearer ${reviewerToken}`) {
          res.writeHead(401).end();
          return;
        }
        if (review.spec.token === WHILE_DOWN) {
          res.writeHead(503).end();
          return;
        }
        const status = review.spec.token === FOR_THE_CA
          ? {
            authenticated: true,
            user: { username: "system:serviceaccount:shop:cart" },
            audiences: ["meshauth"],
          }
          : review.spec.token === FOR_THE_API_SERVER
          // What an API server answers for a token of its own audience: no status.audiences.
          ? { authenticated: true, user: { username: "system:serviceaccount:shop:cart" } }
          : { authenticated: false };
        res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ status }));
      });
    });
    const port = await listen(apiServer);
    await writeFile(tokenFile(), reviewerToken);
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      kubernetes: {
        audiences: ["meshauth"],
        tokenReview: { url: `https://127.0.0.1:${port}`, tokenFile: tokenFile(), caFile: tls.caFile },
      },
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    ca = await startCa(config);
  });

  after(async () => {
    await ca?.stop();
    await new Promise((resolve) => apiServer?.close(resolve));
    await dir?.remove();
  });

  const issue = async (saToken: string) =>
    await postJson(`${ca.url}/v1/certificates`, {
      csr: (await csrFor(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`)).csr,
    }, { authorization: `Bearer ${saToken}` });

  it("reads the reviewer's projected token again once the kubelet has rotated it", async () => {
    assert.equal((await issue(FOR_THE_CA)).status, 201);
    // The kubelet writes the new token beside the old one and swaps it in.
    reviewerToken = "reviewer-2";
    await writeFile(`${tokenFile()}.new`, reviewerToken);
    await rename(`${tokenFile()}.new`, tokenFile());
    const reply = await issue(FOR_THE_CA);
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
  });

  it("reads the reviewer's token file again when the API server refuses the token it has", async () => {
    // A whole second, so that the file's time can be set back exactly.
    const stamp = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    await utimes(tokenFile(), stamp, stamp);
    assert.equal((await issue(FOR_THE_CA)).status, 201, "the CA has read reviewer-2");
    // Replaced in place with a token of the same length and the same time: the CA's check on
    // the file's inode, size and time cannot tell, so only the API server's 401 can.
    reviewerToken = "reviewer-3";
    await writeFile(tokenFile(), reviewerToken);
    await utimes(tokenFile(), stamp, stamp);
    const before = reviews.get(FOR_THE_CA) ?? 0;
    const reply = await issue(FOR_THE_CA);
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    assert.equal(
      (reviews.get(FOR_THE_CA) ?? 0) - before,
      2,
      "refused with reviewer-2, then reviewed with reviewer-3",
    );
  });

  it("refuses a TokenReview answer that names none of the audiences the CA asked for", async () => {
    const reply = await issue(FOR_THE_API_SERVER);
    assert.equal(reply.status, 401, JSON.stringify(reply.json));
    assert.equal(reply.json.code, "ERR_TOKEN_INVALID");
  });

  it("charges the client's address for each review the API server fails (503), so a flood meets the limit", async () => {
    const port = (apiServer.address() as { port: number }).port;
    const other = await tempDir();
    try {
      const config = await writeConfig(other.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        // One token back in 1000 s: none while the test runs.
        rateLimit: { requestsPerSecond: 0.001, burst: 3 },
        kubernetes: {
          audiences: ["meshauth"],
          tokenReview: { url: `https://127.0.0.1:${port}`, tokenFile: tokenFile(), caFile: tls.caFile },
        },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      const flooded = await startCa(config);
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 20; i++) {
          statuses.push(
            (await postJson(`${flooded.url}/v1/certificates`, {}, { authorization: `Bearer ${WHILE_DOWN}` }))
              .status,
          );
        }
        assert.deepEqual(statuses, [...Array(3).fill(503), ...Array(17).fill(429)]);
        assert.equal(reviews.get(WHILE_DOWN), 3, "one TokenReview per request the address could pay for");
      } finally {
        await flooded.stop();
      }
    } finally {
      reviews.delete(WHILE_DOWN);
      await other.remove();
    }
  });

  it("stops asking an API server that failed five times in a row, then tries once after a pause", async () => {
    const port = (apiServer.address() as { port: number }).port;
    let nowMs = Date.now();
    const k8s = new KubernetesAuthenticator({
      trustDomain: TRUST_DOMAIN,
      audiences: ["meshauth"],
      tokenReview: {
        url: `https://127.0.0.1:${port}`,
        reviewerToken: () => reviewerToken,
        fetch: fetchTrustingCa(tls.cert),
      },
      now: () => new Date(nowMs),
    });
    const review = (token: string) => k8s.authenticate({ bearerToken: token });
    const notReady = (retryAfterSeconds?: number) => (err: Problem) =>
      err.code === "ERR_NOT_READY" &&
      (retryAfterSeconds === undefined || err.extensions.retryAfterSeconds === retryAfterSeconds);
    try {
      for (let i = 0; i < 5; i++) await assert.rejects(review(WHILE_DOWN), notReady());
      assert.equal(reviews.get(WHILE_DOWN), 5);
      // Open: refused at once, with when to retry, and the API server is not asked.
      const healthyBefore = reviews.get(FOR_THE_CA) ?? 0;
      await assert.rejects(review(FOR_THE_CA), notReady(1));
      assert.equal(reviews.get(WHILE_DOWN), 5);
      assert.equal(reviews.get(FOR_THE_CA) ?? 0, healthyBefore, "not asked while open");
      // After a second, one trial; it fails, and the pause doubles.
      nowMs += 1000;
      await assert.rejects(review(WHILE_DOWN), notReady());
      assert.equal(reviews.get(WHILE_DOWN), 6);
      nowMs += 1000;
      await assert.rejects(review(FOR_THE_CA), notReady(1));
      nowMs += 1000;
      // The trial succeeds: closed again.
      assert.equal((await review(FOR_THE_CA))?.requester, `spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`);
      assert.equal((await review(FOR_THE_CA))?.requester, `spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`);
      assert.equal((reviews.get(FOR_THE_CA) ?? 0) - healthyBefore, 2);
    } finally {
      reviews.delete(WHILE_DOWN);
    }
  });

  it("validates tokens offline against a jwksUrl served with the cluster's CA certificate", async () => {
    const port = (apiServer.address() as { port: number }).port;
    const offline = await tempDir();
    try {
      const config = await writeConfig(offline.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        kubernetes: {
          issuer: ISSUER,
          audiences: ["meshauth"],
          jwksUrl: `https://127.0.0.1:${port}/openid/v1/jwks`,
          jwksCaFile: join(dir.path, "ca.crt"),
        },
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      const offlineCa = await startCa(config);
      try {
        const jwt = await new SignJWT({})
          .setProtectedHeader({ alg: "ES256", kid: "k1" })
          .setIssuer(ISSUER)
          .setSubject("system:serviceaccount:shop:web")
          .setAudience("meshauth")
          .setExpirationTime("10m")
          .sign(jwtKeys.privateKey);
        const reply = await postJson(`${offlineCa.url}/v1/certificates`, {
          csr: (await csrFor(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/web`)).csr,
        }, { authorization: `Bearer ${jwt}` });
        assert.equal(reply.status, 201, JSON.stringify(reply.json));
      } finally {
        await offlineCa.stop();
      }
    } finally {
      await offline.remove();
    }
  });
});

describe("the Kubernetes integration's token authenticator, with its API server failing", () => {
  it("stops asking after five failed TokenReviews in a row, and tries once after a pause", async () => {
    let reviews = 0;
    let isDown = true;
    const apiServer = createHttpServer((req, res) => {
      req.resume();
      req.on("end", () => {
        reviews++;
        if (isDown) {
          res.writeHead(503, { "content-type": "application/json" })
            .end(JSON.stringify({ kind: "Status", reason: "ServiceUnavailable", message: "etcd is down" }));
          return;
        }
        res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({
          status: {
            authenticated: true,
            user: { username: "system:serviceaccount:shop:cart" },
            audiences: ["meshauth"],
          },
        }));
      });
    });
    const port = await new Promise<number>((resolve) =>
      apiServer.listen(0, "127.0.0.1", () => resolve((apiServer.address() as { port: number }).port))
    );
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: "test", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
      users: [{ name: "ca", token: "ca-token" }],
      contexts: [{ name: "test", cluster: "test", user: "ca" }],
      currentContext: "test",
    });
    const api = new KubernetesApi(kubeConfig);
    let nowMs = Date.now();
    const tokens = new ServiceAccountTokenAuthenticator({
      api,
      trustDomain: TRUST_DOMAIN,
      audiences: ["meshauth"],
      agentServiceAccounts: [],
      pods: { getPod: () => Promise.resolve(undefined) },
      nodeWorkloads: () => Promise.resolve([]),
      cacheSeconds: 0,
      now: () => new Date(nowMs),
    });
    // A projected token's shape (its claims are only read to refuse junk early).
    const claims = btoa(JSON.stringify({ aud: ["meshauth"], exp: Math.floor(nowMs / 1000) + 3600, sub: "x" }))
      .replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
    const review = () => tokens.authenticate({ bearerToken: `eyJhbGciOiJSUzI1NiJ9.${claims}.c2ln` });
    const notReady = (err: Problem) => err.code === "ERR_NOT_READY";
    try {
      for (let i = 0; i < 5; i++) await assert.rejects(review(), notReady);
      await assert.rejects(
        review(),
        (err: Problem) => notReady(err) && err.extensions.retryAfterSeconds === 1,
      );
      assert.equal(reviews, 5, "not asked while open");
      isDown = false;
      nowMs += 1000;
      assert.equal((await review())?.requester, `spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`);
      assert.equal(reviews, 6);
    } finally {
      api.close();
      await new Promise((resolve) => apiServer.close(resolve));
    }
  });
});

describe("the TokenReview reviewer's token", () => {
  it("is never put into an answer or a log: a token with a line break in it is refused without it", async () => {
    // The file holds two lines (a token, and what an operator wrote after it); fetch refused
    // such a header with its value in the message, which the 503's detail carried to the caller.
    const secret = "reviewer-secret-9f2c";
    const k8s = new KubernetesAuthenticator({
      trustDomain: TRUST_DOMAIN,
      audiences: ["meshauth"],
      // Nothing listens on port 9 (discard): the token is checked before any connection.
      tokenReview: { url: "https://127.0.0.1:9", reviewerToken: () => `${secret}\nrotated on monday` },
    });
    await assert.rejects(k8s.authenticate({ bearerToken: FOR_THE_CA }), (err: Problem) => {
      assert.equal(err.code, "ERR_NOT_READY");
      assert.ok(!err.message.includes(secret), err.message);
      assert.match(err.message, /reviewer's token .* is not one run of visible ASCII characters/);
      return true;
    });
  });
});
