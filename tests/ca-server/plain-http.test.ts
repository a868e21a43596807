// A CA on plain HTTP (loopback only, when asked): Kubernetes tokens checked through a
// TokenReview API, per-identity rate limits, and DNS SANs refused unless configured.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createCsr, generateKeyPair } from "../../mod.ts";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  openTestStore,
  postJson,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const REVIEWER_TOKEN = "reviewer-secret";
const GOOD_SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
const BAD_SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiIn0.c2lnbmF0dXJl";

describe("CA on plain HTTP with TokenReview", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;
  let store: CaStore;
  let apiServer: Server;
  const reviews: unknown[] = [];

  before(async () => {
    dir = await tempDir();
    // A stand-in for the Kubernetes API server's TokenReview endpoint.
    apiServer = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => body += d);
      req.on("end", () => {
        if (
          req.url !== "/apis/authentication.k8s.io/v1/tokenreviews" ||
          req.headers.authorization !== `Bearer ${REVIEWER_TOKEN}`
        ) {
          res.writeHead(403).end();
          return;
        }
        const review = JSON.parse(body);
        reviews.push(review);
        const authenticated = review.spec.token === GOOD_SA_TOKEN;
        res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          status: authenticated
            ? {
              authenticated,
              user: { username: "system:serviceaccount:billing:invoicer" },
              audiences: ["meshauth"],
            }
            : { authenticated: false, error: "token is invalid" },
        }));
      });
    });
    await new Promise<void>((resolve) => apiServer.listen(0, "127.0.0.1", resolve));
    const apiPort = (apiServer.address() as { port: number }).port;
    await writeFile(join(dir.path, "reviewer-token"), REVIEWER_TOKEN);
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      kubernetes: {
        audiences: ["meshauth"],
        tokenReview: { url: `http://127.0.0.1:${apiPort}`, tokenFile: join(dir.path, "reviewer-token") },
      },
      rateLimit: { requestsPerSecond: 1, burst: 3 },
      dnsNames: { [`spiffe://${TRUST_DOMAIN}/web`]: ["web.test.example"] },
      log: { level: "info" },
    });
    const init = await cli(["ca", "init", "--config", config]);
    assert.equal(init.code, 0, init.stderr);
    ca = await startCa(config);
    store = await openTestStore(dir.path);
  });

  after(async () => {
    await ca?.stop();
    await store?.close();
    await new Promise((resolve) => apiServer?.close(resolve));
    await dir?.remove();
  });

  it("listens on plain HTTP on loopback when asked", () => {
    assert.match(ca.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("issues for a service-account token that the TokenReview API authenticates", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/ns/billing/sa/invoicer`;
    const reply = await postJson(`${ca.url}/v1/certificates`, { csr: (await csrFor(id)).csr }, {
      authorization: `Bearer ${GOOD_SA_TOKEN}`,
    });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    assert.equal(reply.json.spiffeId, id);
    assert.deepEqual((reviews.at(-1) as { spec: { audiences: string[] } }).spec.audiences, ["meshauth"]);
  });

  it("refuses a token the TokenReview API does not authenticate", async () => {
    const reply = await postJson(`${ca.url}/v1/certificates`, {
      csr: (await csrFor(`spiffe://${TRUST_DOMAIN}/x`)).csr,
    }, {
      authorization: `Bearer ${BAD_SA_TOKEN}`,
    });
    assert.equal(reply.status, 401);
    assert.equal(reply.json.code, "ERR_TOKEN_INVALID");
  });

  it("issues DNS SANs only where configured", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/web`;
    const keys = await generateKeyPair();
    const allowed = await createCsr({ keys, id, dnsNames: ["web.test.example"] });
    const t1 = await token(store, { role: "workload", spiffeId: id });
    assert.equal(
      (await postJson(`${ca.url}/v1/certificates`, { csr: allowed }, { authorization: `Bearer ${t1}` }))
        .status,
      201,
    );
    const other = `spiffe://${TRUST_DOMAIN}/not-web`;
    const t2 = await token(store, { role: "workload", spiffeId: other });
    const refused = await postJson(`${ca.url}/v1/certificates`, {
      csr: await createCsr({ keys, id: other, dnsNames: ["web.test.example"] }),
    }, { authorization: `Bearer ${t2}` });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.code, "ERR_FORBIDDEN");
  });

  it("rate-limits each identity and says when to retry", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/chatty`;
    const t = await token(store, { role: "workload", spiffeId: id, isSingleUse: false });
    const { csr } = await csrFor(id);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i++) {
      const reply = await postJson(`${ca.url}/v1/certificates`, { csr }, { authorization: `Bearer ${t}` });
      statuses.push(reply.status);
      if (reply.status === 429) {
        retryAfter = reply.headers.get("retry-after");
        assert.equal(reply.json.code, "ERR_RATE_LIMITED");
      }
    }
    assert.deepEqual(statuses.slice(0, 3), [201, 201, 201]);
    assert.ok(statuses.slice(3).includes(429), `statuses ${statuses}`);
    assert.match(retryAfter ?? "", /^\d+$/);
  });

  it("answers oversized, chunked and malformed bodies with problem bodies, and keeps serving", async () => {
    // Each body comes from an identity of its own: a refused body counts against its sender's
    // rate (burst 3 here), as any request it authenticated does.
    let n = 0;
    const post = async (body: BodyInit, headers: Record<string, string> = {}) => {
      const sender = await token(store, {
        role: "workload",
        spiffeId: `spiffe://${TRUST_DOMAIN}/ns/apps/sa/hostile-${n++}`,
      });
      const response = await fetch(`${ca.url}/v1/certificates`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${sender}`, ...headers },
        body,
        duplex: "half",
      } as RequestInit);
      return {
        status: response.status,
        type: response.headers.get("content-type"),
        json: await response.json(),
      };
    };
    const chunks = (text: string) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          const bytes = new TextEncoder().encode(text);
          for (let i = 0; i < bytes.length; i += 8192) controller.enqueue(bytes.subarray(i, i + 8192));
          controller.close();
        },
      });
    for (
      const [what, reply, status, code] of [
        ["70 KiB", await post(JSON.stringify({ csr: "x".repeat(70 * 1024) })), 413, "ERR_BODY_TOO_LARGE"],
        [
          "2 MiB",
          await post(JSON.stringify({ csr: "x".repeat(2 * 1024 * 1024) })),
          413,
          "ERR_BODY_TOO_LARGE",
        ],
        [
          "chunked 80 KiB",
          await post(chunks(JSON.stringify({ csr: "y".repeat(80 * 1024) }))),
          413,
          "ERR_BODY_TOO_LARGE",
        ],
        ["malformed JSON", await post('{"csr": '), 400, "ERR_MALFORMED_JSON"],
      ] as const
    ) {
      assert.equal(reply.status, status, what);
      assert.match(reply.type ?? "", /^application\/problem\+json/, what);
      assert.equal(reply.json.code, code, what);
    }
    const id = `spiffe://${TRUST_DOMAIN}/ns/apps/sa/hostile`;
    const t = await token(store, { role: "workload", spiffeId: id });
    const good = await postJson(`${ca.url}/v1/certificates`, { csr: (await csrFor(id)).csr }, {
      authorization: `Bearer ${t}`,
    });
    assert.equal(good.status, 201);
  });

  it("logs a client that hangs up mid-body as an incomplete body, not a server failure", async () => {
    // Authenticated: the body of a request without credentials is never read.
    const t = await token(store, {
      role: "workload",
      spiffeId: `spiffe://${TRUST_DOMAIN}/ns/apps/sa/quitter`,
    });
    const first = ca.logs.length;
    const socket = connect(ca.port, "127.0.0.1");
    await new Promise<void>((resolve) => socket.once("connect", resolve));
    socket.write(
      "POST /v1/certificates HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
        `Authorization: Bearer ${t}\r\nContent-Length: 1000\r\n\r\n{"csr": "`,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.destroy();
    let denial: { code?: string; level?: string } | undefined;
    for (let i = 0; i < 100 && !denial; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      denial = ca.logs.slice(first).map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          return {};
        }
      }).find((entry) => entry.msg === "denied");
    }
    assert.equal(denial?.code, "ERR_BODY_INCOMPLETE", ca.logs.slice(first).join("\n"));
    const since = ca.logs.slice(first).join("\n");
    assert.doesNotMatch(since, /"level":"error"|request failed|ERR_INTERNAL|Error: aborted/);
  });

  // Last in this suite: it spends the loopback address's budget for failed attempts.
  it("counts every failed authentication against the client's address", async () => {
    // Failures no authenticator sees (a Basic header, no credentials at all), sent together so
    // that the bucket (1/s, burst 3) cannot refill between them.
    const replies = await Promise.all(
      Array.from(
        { length: 8 },
        (_, i) =>
          postJson(`${ca.url}/v1/certificates`, { csr: "x" }, i % 2 ? { authorization: "Basic x" } : {}),
      ),
    );
    const statuses = replies.map((r) => r.status);
    assert.ok(statuses.every((s) => s === 401 || s === 429), `statuses ${statuses}`);
    assert.ok(statuses.filter((s) => s === 429).length >= 4, `statuses ${statuses}`);
  });
});
