// The CA server's API behaviour over real TLS on 127.0.0.1, run once per store (file and
// PostgreSQL) by api-file.test.ts and api-postgres.test.ts. Requests go through curl, so the
// same test runs unchanged under Node and Deno.
import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { exportJWK, generateKeyPair as generateJwtKeys, SignJWT } from "jose";
import { exportPrivateKeyPem, generateKeyPair, TrustBundle, verifySvid } from "../../mod.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import { issue } from "../support/cert-factory.ts";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  curl,
  openTestStore,
  run,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const K8S_ISSUER = "https://kubernetes.test.example";
const NODE_WORKLOAD = `spiffe://${TRUST_DOMAIN}/ns/apps/sa/on-node-a`;
const OTHER_WORKLOAD = `spiffe://${TRUST_DOMAIN}/ns/apps/sa/elsewhere`;

interface Reply {
  status: number;
  contentType: string;
  body: string;
  json: any;
}

/** Defines the whole API suite against a CA on `postgresUrl` (or the embedded store when undefined). */
export function defineApiSuite(
  name: string,
  database: () => Promise<{ url?: string; stop(): Promise<void> }>,
): void {
  describe(`CA server API (${name})`, () => {
    let dir: { path: string; remove(): Promise<void> };
    let db: { url?: string; stop(): Promise<void> };
    let ca: CaProcess;
    let store: CaStore;
    let bundlePath: string;
    let jwtKeys: Awaited<ReturnType<typeof generateJwtKeys>>;

    before(async () => {
      dir = await tempDir();
      db = await database();
      jwtKeys = await generateJwtKeys("ES256");
      const jwk = { ...(await exportJWK(jwtKeys.publicKey)), kid: "k1", alg: "ES256", use: "sig" };
      await writeFile(join(dir.path, "jwks.json"), JSON.stringify({ keys: [jwk] }));
      const config = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0 },
        store: db.url ? { kind: "postgres", url: db.url } : { kind: "file" },
        issuance: { defaultTtlSeconds: 3600, maxTtlSeconds: 7200 },
        admins: [`spiffe://${TRUST_DOMAIN}/admin`],
        nodes: { "node-a": { workloads: [NODE_WORKLOAD] } },
        kubernetes: { issuer: K8S_ISSUER, audiences: ["meshauth"], jwksFile: join(dir.path, "jwks.json") },
        rateLimit: { requestsPerSecond: 1000, burst: 1000 },
        log: { level: "info" },
      });
      const init = await cli(["ca", "init", "--config", config]);
      assert.equal(init.code, 0, init.stderr);
      const keysDir = join(dir.path, "data", "keys");
      const record = JSON.parse(
        await readFile(join(keysDir, (await readdir(keysDir)).find((n) => n.endsWith(".json"))!), "utf8"),
      );
      bundlePath = join(dir.path, "root.pem");
      await writeFile(bundlePath, record.certificateChainPem);
      ca = await startCa(config);
      store = await openTestStore(dir.path, db.url);
    });

    after(async () => {
      await ca?.stop();
      await store?.close();
      await db?.stop();
      await dir?.remove();
    });

    async function call(
      method: string,
      path: string,
      options: {
        body?: unknown;
        token?: string;
        cert?: { chainPem: string; keyPem: string };
        headers?: string[];
      } = {},
    ): Promise<Reply> {
      const args = ["--cacert", bundlePath, "-X", method, `${ca.url}${path}`];
      if (options.token) args.push("-H", `Authorization: Bearer ${options.token}`);
      for (const h of options.headers ?? []) args.push("-H", h);
      if (options.cert) {
        const base = join(dir.path, `client-${Math.random().toString(36).slice(2)}`);
        await writeFile(`${base}.pem`, options.cert.chainPem);
        await writeFile(`${base}.key`, options.cert.keyPem, { mode: 0o600 });
        args.push("--cert", `${base}.pem`, "--key", `${base}.key`);
      }
      let input: string | undefined;
      if (options.body !== undefined) {
        input = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
        if (!(options.headers ?? []).some((h) => /^content-type:/i.test(h))) {
          args.push("-H", "Content-Type: application/json");
        }
        args.push("--data-binary", "@-");
      }
      const r = await curl(args, { input });
      assert.ok(r.status > 0, `curl failed: ${r.stderr}`);
      let json: unknown;
      try {
        json = r.body ? JSON.parse(r.body) : undefined;
      } catch {
        json = undefined;
      }
      return { ...r, json };
    }

    async function issueWithToken(id: string) {
      const t = await token(store, { role: "workload", spiffeId: id });
      const { csr, keyPem } = await csrFor(id);
      const reply = await call("POST", "/v1/certificates", { body: { csr }, token: t });
      assert.equal(reply.status, 201, reply.body);
      return { reply, keyPem, chainPem: (reply.json.certificateChain as string[]).join("") };
    }

    function assertProblem(reply: Reply, status: number, code: string) {
      assert.equal(reply.status, status, reply.body);
      assert.match(reply.contentType, /^application\/problem\+json/);
      assert.equal(reply.json.code, code);
      assert.equal(reply.json.status, status);
      assert.equal(typeof reply.json.type, "string");
      assert.equal(typeof reply.json.detail, "string");
    }

    async function k8sToken(
      claims: { sub?: string; aud?: string; expiresIn?: string | number; key?: CryptoKey },
    ) {
      return await new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "k1" })
        .setIssuer(K8S_ISSUER)
        .setSubject(claims.sub ?? "system:serviceaccount:shop:web")
        .setAudience(claims.aud ?? "meshauth")
        .setIssuedAt()
        .setExpirationTime(claims.expiresIn ?? "10m")
        .sign(claims.key ?? jwtKeys.privateKey);
    }

    it("answers /healthz and /readyz", async () => {
      assert.equal((await call("GET", "/healthz")).json.status, "ok");
      assert.equal((await call("GET", "/readyz")).json.status, "ready");
    });

    it("serves the trust bundle as SPIFFE JWKS and PEM with its sequence and caching headers", async () => {
      const jwks = await call("GET", "/v1/bundle", { headers: [] });
      assert.equal(jwks.status, 200);
      assert.equal(jwks.json.keys[0].use, "x509-svid");
      assert.equal(typeof jwks.json.spiffe_sequence, "number");
      const pem = await run("curl", ["-sS", "-D", "-", "--cacert", bundlePath, `${ca.url}/v1/bundle.pem`]);
      assert.match(pem.stdout, /cache-control: public, max-age=\d+/i);
      assert.match(pem.stdout, /etag: "/i);
      assert.match(pem.stdout, /spiffe-bundle-sequence: \d+/i);
      assert.match(pem.stdout, /-----BEGIN CERTIFICATE-----/);
    });

    it("issues an SVID for a join token's identity", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`;
      const { reply, chainPem } = await issueWithToken(id);
      assert.equal(reply.json.spiffeId, id);
      assert.match(reply.json.serialNumber, /^[0-9a-f]+$/);
      assert.ok(new Date(reply.json.expiresAt).getTime() > Date.now());
      const verified = await verifySvid(chainPem, TrustBundle.fromPem(TRUST_DOMAIN, reply.json.trustBundle));
      assert.equal(verified.id.toString(), id);
    });

    it("refuses a single-use join token the second time", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/once`;
      const t = await token(store, { role: "workload", spiffeId: id });
      assert.equal(
        (await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, token: t })).status,
        201,
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, token: t }),
        401,
        "ERR_TOKEN_USED",
      );
    });

    it("refuses an expired join token", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/late`;
      const t = await token(store, {
        role: "workload",
        spiffeId: id,
        ttlSeconds: 60,
        now: new Date(Date.now() - 3600_000),
      });
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, token: t }),
        401,
        "ERR_TOKEN_EXPIRED",
      );
    });

    it("refuses a forged join token", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/forged`;
      const real = await token(store, { role: "workload", spiffeId: id });
      const forged = `${real.split(".")[0]}.${"A".repeat(43)}`;
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, token: forged }),
        401,
        "ERR_TOKEN_INVALID",
      );
    });

    it("refuses a request without credentials", async () => {
      const { csr } = await csrFor(`spiffe://${TRUST_DOMAIN}/anonymous`);
      assertProblem(await call("POST", "/v1/certificates", { body: { csr } }), 401, "ERR_UNAUTHENTICATED");
    });

    it("refuses a lifetime above the maximum without spending a single-use token", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/patient`;
      const t = await token(store, { role: "workload", spiffeId: id });
      const { csr } = await csrFor(id);
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr, ttlSeconds: 999_999 }, token: t }),
        400,
        "ERR_TTL_EXCEEDS_MAXIMUM",
      );
      assert.equal((await call("POST", "/v1/certificates", { body: { csr }, token: t })).status, 201);
    });

    it("refuses a CSR naming another identity, without spending the token", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/mine`;
      const t = await token(store, { role: "workload", spiffeId: id });
      const other = await csrFor(`spiffe://${TRUST_DOMAIN}/someone-else`);
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: other.csr }, token: t }),
        403,
        "ERR_IDENTITY_MISMATCH",
      );
      assert.equal(
        (await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, token: t })).status,
        201,
      );
    });

    it("issues for a Kubernetes service-account token validated against the JWKS", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/web`;
      const reply = await call("POST", "/v1/certificates", {
        body: { csr: (await csrFor(id)).csr },
        token: await k8sToken({}),
      });
      assert.equal(reply.status, 201, reply.body);
      assert.equal(reply.json.spiffeId, id);
    });

    it("refuses an expired, a forged and a wrong-audience Kubernetes token", async () => {
      const { csr } = await csrFor(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/web`);
      const expired = await k8sToken({ expiresIn: Math.floor(Date.now() / 1000) - 600 });
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr }, token: expired }),
        401,
        "ERR_TOKEN_EXPIRED",
      );
      const forged = await k8sToken({ key: (await generateJwtKeys("ES256")).privateKey });
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr }, token: forged }),
        401,
        "ERR_TOKEN_INVALID",
      );
      const otherAudience = await k8sToken({ aud: "someone-else" });
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr }, token: otherAudience }),
        401,
        "ERR_TOKEN_INVALID",
      );
    });

    it("renews the same identity over mTLS, and only that identity", async () => {
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/renewer`;
      const first = await issueWithToken(id);
      const cert = { chainPem: first.chainPem, keyPem: first.keyPem };
      const renewed = await call("POST", "/v1/certificates", { body: { csr: (await csrFor(id)).csr }, cert });
      assert.equal(renewed.status, 201, renewed.body);
      assert.notEqual(renewed.json.serialNumber, first.reply.json.serialNumber);
      const other = await call("POST", "/v1/certificates", {
        body: { csr: (await csrFor(OTHER_WORKLOAD)).csr },
        cert,
      });
      assertProblem(other, 403, "ERR_IDENTITY_MISMATCH");
    });

    it("refuses an oversized client certificate by its size, before reading it", async () => {
      // 28 KB of an unknown extension (38 KB of PEM): parseable, but no SVID is near that size.
      const keys = await generateKeyPair();
      const big = await issue({
        name: "Oversized",
        keys,
        sans: [uriName(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/big`)],
        extensions: [{ oid: "1.3.6.1.4.1.55738.1", value: new Uint8Array(28_000) }],
      });
      const reply = await call("POST", "/v1/certificates", {
        body: { csr: (await csrFor(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/big`)).csr },
        cert: { chainPem: big.pem, keyPem: await exportPrivateKeyPem(keys.privateKey) },
      });
      assertProblem(reply, 401, "ERR_CLIENT_CERT_INVALID");
      assert.match(reply.json.detail, /limit/);
    });

    it("lets a node agent obtain its own and its workloads' identities, and no other", async () => {
      const t = await token(store, { role: "node", node: "node-a", isSingleUse: false });
      const nodeId = `spiffe://${TRUST_DOMAIN}/node/node-a`;
      const own = await csrFor(nodeId);
      const nodeCert = await call("POST", "/v1/certificates", { body: { csr: own.csr }, token: t });
      assert.equal(nodeCert.status, 201, nodeCert.body);
      assert.equal(
        (await call("POST", "/v1/certificates", {
          body: { csr: (await csrFor(NODE_WORKLOAD)).csr },
          token: t,
        })).status,
        201,
      );
      assertProblem(
        await call("POST", "/v1/certificates", {
          body: { csr: (await csrFor(OTHER_WORKLOAD)).csr },
          token: t,
        }),
        403,
        "ERR_IDENTITY_MISMATCH",
      );
      const cert = { chainPem: nodeCert.json.certificateChain.join(""), keyPem: own.keyPem };
      const viaMtls = await call("POST", "/v1/certificates", {
        body: { csr: (await csrFor(NODE_WORKLOAD)).csr },
        cert,
      });
      assert.equal(viaMtls.status, 201, viaMtls.body);
    });

    it("answers each bad input with its own problem code", async () => {
      const t = await token(store, {
        role: "workload",
        spiffeId: `spiffe://${TRUST_DOMAIN}/bad-input`,
        isSingleUse: false,
      });
      assertProblem(
        await call("POST", "/v1/certificates", { body: "{not json", token: t }),
        400,
        "ERR_MALFORMED_JSON",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { ttlSeconds: 60 }, token: t }),
        400,
        "ERR_MISSING_FIELD",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: 42 }, token: t }),
        400,
        "ERR_INVALID_FIELD",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: "x".repeat(70 * 1024) }, token: t }),
        413,
        "ERR_BODY_TOO_LARGE",
      );
      assertProblem(
        await call("POST", "/v1/certificates", {
          body: { csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" },
          token: t,
        }),
        400,
        "ERR_CSR_INVALID",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr: "hello" }, token: t }),
        400,
        "ERR_CSR_INVALID",
      );
      const { csr } = await csrFor(`spiffe://${TRUST_DOMAIN}/bad-input`);
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr, ttlSeconds: 99999 }, token: t }),
        400,
        "ERR_TTL_EXCEEDS_MAXIMUM",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: { csr, ttlSeconds: "1h" }, token: t }),
        400,
        "ERR_INVALID_FIELD",
      );
      assertProblem(
        await call("POST", "/v1/certificates", {
          body: { csr },
          token: t,
          headers: ["Content-Type: text/plain"],
        }),
        415,
        "ERR_UNSUPPORTED_MEDIA_TYPE",
      );
      assertProblem(await call("GET", "/v1/nothing-here"), 404, "ERR_NOT_FOUND");
      assertProblem(await call("DELETE", "/v1/bundle"), 405, "ERR_METHOD_NOT_ALLOWED");
      assert.equal((await call("GET", "/healthz")).status, 200, "the server still serves after bad input");
    });

    it("survives hostile bodies: chunked oversize, invalid UTF-8, arrays, prototype keys", async () => {
      const t = await token(store, {
        role: "workload",
        spiffeId: `spiffe://${TRUST_DOMAIN}/hostile`,
        isSingleUse: false,
      });
      const chunked = await call("POST", "/v1/certificates", {
        body: JSON.stringify({ csr: "y".repeat(80 * 1024) }),
        token: t,
        headers: ["Transfer-Encoding: chunked"],
      });
      assertProblem(chunked, 413, "ERR_BODY_TOO_LARGE");
      const encoder = new TextEncoder();
      const invalidUtf8 = new Uint8Array([
        ...encoder.encode('{"csr": "'),
        0xff,
        0xfe,
        ...encoder.encode('"}'),
      ]);
      const badUtf8 = await curl([
        "--cacert",
        bundlePath,
        "-H",
        `Authorization: Bearer ${t}`,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@-",
        `${ca.url}/v1/certificates`,
      ], { input: invalidUtf8 }); // deno-fmt-ignore
      assert.equal(badUtf8.status, 400, badUtf8.body);
      assert.equal(JSON.parse(badUtf8.body).code, "ERR_MALFORMED_JSON");
      assertProblem(
        await call("POST", "/v1/certificates", { body: "[1,2]", token: t }),
        400,
        "ERR_MALFORMED_JSON",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: "null", token: t }),
        400,
        "ERR_MALFORMED_JSON",
      );
      assertProblem(
        await call("POST", "/v1/certificates", { body: '{"__proto__": {"csr": "x"}}', token: t }),
        400,
        "ERR_MISSING_FIELD",
      );
      const bundle = await curl([
        "--cacert",
        bundlePath,
        "-H",
        'If-None-Match: "nope"',
        `${ca.url}/v1/bundle`,
      ]);
      assert.equal(bundle.status, 200);
      assert.equal((await call("GET", "/readyz")).status, 200, "the server is still ready");
    });

    it("answers 304 to a bundle request with the current ETag", async () => {
      const first = await run("curl", [
        "-sS",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--cacert",
        bundlePath,
        `${ca.url}/v1/bundle`,
      ]);
      const etag = /etag: (".*")/i.exec(first.stdout)![1];
      const again = await curl([
        "--cacert",
        bundlePath,
        "-H",
        `If-None-Match: ${etag}`,
        `${ca.url}/v1/bundle`,
      ]);
      assert.equal(again.status, 304);
    });

    it("keeps the administrative API for administrators", async () => {
      const t = await token(store, {
        role: "workload",
        spiffeId: `spiffe://${TRUST_DOMAIN}/not-admin`,
        isSingleUse: false,
      });
      assertProblem(await call("GET", "/v1/certificates", { token: t }), 403, "ERR_FORBIDDEN");
      assertProblem(
        await call("POST", "/v1/revocations", {
          body: { serialNumber: "01", reason: "keyCompromise" },
          token: t,
        }),
        403,
        "ERR_FORBIDDEN",
      );
      assertProblem(await call("GET", "/v1/certificates"), 401, "ERR_UNAUTHENTICATED");
    });

    it("finds a certificate by its serial number (hex, or OpenSSL's AB:CD form)", async () => {
      const admin = await token(store, { role: "admin" });
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/looked-up`;
      const serial: string = (await issueWithToken(id)).reply.json.serialNumber;
      const colons = serial.toUpperCase().match(/../g)!.join(":");
      for (const query of [serial, colons]) {
        const found = await call("GET", `/v1/certificates?serialNumber=${query}`, { token: admin });
        assert.equal(found.status, 200, found.body);
        assert.deepEqual(found.json.certificates.map((c: { spiffeId: string }) => c.spiffeId), [id]);
      }
      const none = await call("GET", "/v1/certificates?serialNumber=0badc0de", { token: admin });
      assert.deepEqual(none.json.certificates, []);
      assertProblem(
        await call("GET", "/v1/certificates?serialNumber=xyz", { token: admin }),
        400,
        "ERR_INVALID_FIELD",
      );
    });

    it("revokes by serial number: listed, in the next CRL, and refused for mTLS", async () => {
      const admin = await token(store, { role: "admin" });
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/compromised`;
      const issued = await issueWithToken(id);
      const serial = issued.reply.json.serialNumber;
      const revoked = await call("POST", "/v1/revocations", {
        body: { serialNumber: serial, reason: "keyCompromise" },
        token: admin,
      });
      assert.equal(revoked.status, 200, revoked.body);
      assert.deepEqual(revoked.json.revoked.map((r: { serialNumber: string }) => r.serialNumber), [serial]);

      const listed = await call("GET", `/v1/certificates?spiffeId=${encodeURIComponent(id)}`, {
        token: admin,
      });
      assert.equal(listed.status, 200);
      assert.equal(listed.json.certificates[0].serialNumber, serial);
      assert.equal(listed.json.certificates[0].isRevoked, true);

      const crlPath = join(dir.path, "crl.der");
      const fetched = await run("curl", [
        "-sS",
        "--cacert",
        bundlePath,
        "-o",
        crlPath,
        "-w",
        "%{content_type}",
        `${ca.url}/v1/crl`,
      ]);
      assert.equal(fetched.stdout, "application/pkix-crl");
      const text = await run("openssl", ["crl", "-inform", "DER", "-in", crlPath, "-noout", "-text"]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout.toUpperCase(), new RegExp(`SERIAL NUMBER: ${serial.toUpperCase()}`));
      assert.match(text.stdout, /Key Compromise/);
      const verifiedCrl = await run("openssl", [
        "crl",
        "-inform",
        "DER",
        "-in",
        crlPath,
        "-noout",
        "-CAfile",
        bundlePath,
      ]);
      assert.equal(verifiedCrl.code, 0, verifiedCrl.stderr);
      assert.match(verifiedCrl.stderr + verifiedCrl.stdout, /verify OK/);

      const renewal = await call("POST", "/v1/certificates", {
        body: { csr: (await csrFor(id)).csr },
        cert: { chainPem: issued.chainPem, keyPem: issued.keyPem },
      });
      assertProblem(renewal, 401, "ERR_CLIENT_CERT_REVOKED");
    });

    it("revokes every unexpired certificate of a SPIFFE ID", async () => {
      const admin = await token(store, { role: "admin" });
      const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/retired`;
      const a = await issueWithToken(id);
      const b = await issueWithToken(id);
      const revoked = await call("POST", "/v1/revocations", {
        body: { spiffeId: id, reason: "cessationOfOperation" },
        token: admin,
      });
      assert.equal(revoked.status, 200, revoked.body);
      const serials = revoked.json.revoked.map((r: { serialNumber: string }) => r.serialNumber).sort();
      assert.deepEqual(serials, [a.reply.json.serialNumber, b.reply.json.serialNumber].sort());
      assertProblem(
        await call("POST", "/v1/revocations", {
          body: { serialNumber: "0badc0de", reason: "superseded" },
          token: admin,
        }),
        404,
        "ERR_NOT_FOUND",
      );
      assertProblem(
        await call("POST", "/v1/revocations", { body: { spiffeId: id, reason: "because" }, token: admin }),
        400,
        "ERR_INVALID_FIELD",
      );
    });

    it("finds a certificate issued after ten concurrent listings: it can be revoked and is listed", async () => {
      const admin = await token(store, { role: "admin" });
      // Three rounds, as the race this guards against needs the listings to overlap.
      for (let round = 0; round < 3; round++) {
        await issueWithToken(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/listed-first-${round}`);
        if (!db.url) {
          // 16 MB of journal the server has not read yet: its first listing takes a while to
          // read them, and the others arrive meanwhile.
          const padding = "x".repeat(16_000);
          await Promise.all(
            Array.from(
              { length: 1000 },
              (_, i) =>
                store.appendAudit({
                  at: new Date(),
                  action: "padding",
                  requester: "test",
                  details: { i, padding },
                }),
            ),
          );
        }
        // One curl sending all ten at once (-Z), so that they reach the server together.
        const listings = await run("curl", [
          "-sS",
          "-Z",
          "--parallel-immediate",
          "--parallel-max",
          "10",
          "--cacert",
          bundlePath,
          "-H",
          `Authorization: Bearer ${admin}`,
          "-w",
          "%{http_code}\\n",
          ...Array(10).fill([`${ca.url}/v1/certificates`, "-o", "/dev/null"]).flat(),
        ]);
        assert.deepEqual(listings.stdout.trim().split("\n"), Array(10).fill("200"), listings.stderr);
        const id = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/listed-second-${round}`;
        const second = await issueWithToken(id);
        const serial = second.reply.json.serialNumber;
        const revoked = await call("POST", "/v1/revocations", {
          body: { serialNumber: serial, reason: "superseded" },
          token: admin,
        });
        assert.equal(revoked.status, 200, revoked.body);
        assert.deepEqual(revoked.json.revoked.map((r: { serialNumber: string }) => r.serialNumber), [serial]);
        const listed = await call("GET", "/v1/certificates", { token: admin });
        assert.ok(listed.json.certificates.some((c: { serialNumber: string }) => c.serialNumber === serial));
      }
    });

    it("says when a certificate was already revoked, and keeps its first reason", async () => {
      const admin = await token(store, { role: "admin" });
      const issued = await issueWithToken(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/revoked-twice`);
      const serialNumber = issued.reply.json.serialNumber;
      const first = await call("POST", "/v1/revocations", {
        body: { serialNumber, reason: "keyCompromise" },
        token: admin,
      });
      assert.equal(first.json.revoked.length, 1);
      assert.deepEqual(first.json.alreadyRevoked, []);
      const again = await call("POST", "/v1/revocations", {
        body: { serialNumber, reason: "superseded" },
        token: admin,
      });
      assert.equal(again.status, 200, again.body);
      assert.deepEqual(again.json.revoked, []);
      assert.equal(again.json.alreadyRevoked[0].serialNumber, serialNumber);
      assert.equal(again.json.alreadyRevoked[0].reason, "keyCompromise");
      assert.equal(again.json.alreadyRevoked[0].revokedAt, first.json.revoked[0].revokedAt);
    });

    it("refuses a revocation that could name nothing this CA issued, and takes OpenSSL's serial form", async () => {
      const admin = await token(store, { role: "admin" });
      const cases: [Record<string, string>, string][] = [
        [{ spiffeId: "notanid", reason: "superseded" }, "spiffeId"],
        [{ spiffeId: "spiffe://elsewhere.example/ns/a/sa/b", reason: "superseded" }, "spiffeId"],
        [
          { serialNumber: "0a", spiffeId: `spiffe://${TRUST_DOMAIN}/x`, reason: "superseded" },
          "serialNumber|spiffeId",
        ],
        [{ serialNumber: "abc", reason: "superseded" }, "serialNumber"],
      ];
      for (const [body, field] of cases) {
        const reply = await call("POST", "/v1/revocations", { body, token: admin });
        assertProblem(reply, 400, "ERR_INVALID_FIELD");
        assert.equal(reply.json.field, field, reply.body);
      }
      const issued = await issueWithToken(`spiffe://${TRUST_DOMAIN}/ns/shop/sa/colon`);
      const serialNumber: string = issued.reply.json.serialNumber;
      const opensslForm = serialNumber.toUpperCase().match(/../g)!.join(":");
      const revoked = await call("POST", "/v1/revocations", {
        body: { serialNumber: opensslForm, reason: "keyCompromise" },
        token: admin,
      });
      assert.equal(revoked.status, 200, revoked.body);
      assert.deepEqual(revoked.json.revoked.map((r: { serialNumber: string }) => r.serialNumber), [
        serialNumber,
      ]);
      // The same fields as `meshauth ca revoke` prints.
      const [entry] = revoked.json.revoked;
      assert.equal(entry.spiffeId, `spiffe://${TRUST_DOMAIN}/ns/shop/sa/colon`);
      assert.equal(entry.reason, "keyCompromise");
      assert.equal(entry.notAfter, issued.reply.json.expiresAt);
      assert.match(entry.authorityId, /^[0-9a-f]{32}$/);
      assert.ok(!Number.isNaN(Date.parse(entry.revokedAt)));
    });

    it("writes issuances, denials and revocations to the audit trail with the requester", async () => {
      // Past the padding the parallel-listings test wrote.
      const events = await store.readAudit(10_000);
      const issued = events.find((e) =>
        e.action === "issued" && e.requester === `spiffe://${TRUST_DOMAIN}/ns/shop/sa/cart`
      );
      assert.ok(issued, "issuance audited");
      assert.ok(
        events.some((e) =>
          e.action === "denied" && e.details.code === "ERR_IDENTITY_MISMATCH" &&
          e.requester === `spiffe://${TRUST_DOMAIN}/mine`
        ),
      );
      assert.ok(events.some((e) => e.action === "revoked" && String(e.requester).startsWith("token:")));
    });

    it("exposes Prometheus metrics", async () => {
      const r = await call("GET", "/metrics");
      assert.match(r.contentType, /^text\/plain/);
      assert.match(r.body, /meshauth_ca_certificates_issued_total\{method="join-token"\} \d+/);
      assert.match(r.body, /meshauth_ca_denials_total\{reason="ERR_IDENTITY_MISMATCH"\} \d+/);
      assert.match(r.body, /meshauth_ca_revocations_total [1-9]/);
      assert.match(r.body, /meshauth_ca_issuance_duration_seconds_bucket\{le="\+Inf"\} \d+/);
      assert.match(r.body, /meshauth_ca_certificate_expiry_timestamp_seconds\{authority="[0-9a-f]+"\} \d+/);
    });
  });
}
