// Kubernetes service-account tokens against a stand-in API server over HTTPS with a private CA
// (as in a cluster): the reviewer's projected token is read again when the kubelet rotates it,
// a TokenReview answer without the audiences the CA asked for is refused, and an offline
// jwksUrl is fetched trusting the cluster's CA certificate.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
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

  before(async () => {
    dir = await tempDir();
    const tls = await clusterCertificate(dir.path);
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
        // Only the reviewer's current token may create TokenReviews.
        if (req.headers.authorization !== `Bearer ${reviewerToken}`) {
          res.writeHead(401).end();
          return;
        }
        const review = JSON.parse(body);
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

  it("refuses a TokenReview answer that names none of the audiences the CA asked for", async () => {
    const reply = await issue(FOR_THE_API_SERVER);
    assert.equal(reply.status, 401, JSON.stringify(reply.json));
    assert.equal(reply.json.code, "ERR_TOKEN_INVALID");
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
