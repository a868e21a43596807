// The agent's CA client on undici, against TLS servers on 127.0.0.1 that count what they see:
// one keep-alive connection per credential, a bound on requests in flight, deadlines, answers
// that are not the API, the CA's problem codes, and errors that stay one line.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { TLSSocket } from "node:tls";
import { inspect } from "node:util";
import {
  CertificateAuthority,
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  SpiffeId,
} from "../../mod.ts";
import { CaClient, CaRequestFailed, CaUnavailable, SvidRotator, TokenMissing } from "../../agent/mod.ts";

let root: CertificateAuthority;
let serving: { key: string; cert: string };

async function credentialFor(name: string) {
  const keys = await generateKeyPair();
  const id = SpiffeId.parse(`spiffe://client.test/${name}`);
  const issued = await root.issue(await createCsr({ keys, id }), { id });
  return {
    kind: "mtls" as const,
    certificateChainPem: issued.chainPem,
    privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

async function servingFor(dnsName: string) {
  const keys = await generateKeyPair();
  const id = SpiffeId.parse("spiffe://client.test/ca");
  const issued = await root.issue(await createCsr({ keys, id, dnsNames: [dnsName] }), {
    id,
    dnsNames: [dnsName],
  });
  return { key: await exportPrivateKeyPem(keys.privateKey), cert: issued.chainPem };
}

/** A TLS server on 127.0.0.1 that records connections (by client certificate) and requests in flight. */
async function testServer(
  handler: (request: IncomingMessage, response: ServerResponse) => void,
  tls = serving,
): Promise<{ url: string; connections: string[]; maxInFlight: () => number; close(): Promise<void> }> {
  const connections: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server: Server = createServer(
    { ...tls, requestCert: true, rejectUnauthorized: false },
    (request, response) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      response.once("close", () => inFlight--);
      handler(request, response);
    },
  );
  server.on("secureConnection", (socket: TLSSocket) => {
    const peer = socket.getPeerX509Certificate();
    connections.push(peer ? createHash("sha256").update(peer.raw).digest("hex").slice(0, 8) : "none");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://localhost:${port}`,
    connections,
    maxInFlight: () => maxInFlight,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const problem = (
  response: ServerResponse,
  status: number,
  code: string,
  headers: Record<string, string> = {},
) => {
  response.writeHead(status, { "content-type": "application/problem+json", ...headers });
  response.end(JSON.stringify({ status, code, detail: `refused with ${code}` }));
};

before(async () => {
  root = await CertificateAuthority.createRoot({ trustDomain: "client.test" });
  serving = await servingFor("localhost");
});

describe("connections", () => {
  let server: Awaited<ReturnType<typeof testServer>>;
  before(async () => {
    server = await testServer((request, response) => {
      request.resume();
      request.on("end", () => problem(response, 403, "ERR_IDENTITY_MISMATCH"));
    });
  });
  after(() => server.close());

  test("each credential gets one keep-alive connection that all its requests share", async () => {
    const client = new CaClient({ url: server.url, caCertificatesPem: root.bundle().toPem() });
    const [a, b] = await Promise.all([credentialFor("a"), credentialFor("b")]);
    const calls = [];
    for (let i = 0; i < 20; i++) {
      calls.push(client.requestCertificate("csr", a).catch((e) => e));
      calls.push(client.requestCertificate("csr", b).catch((e) => e));
      calls.push(client.requestCertificate("csr", { kind: "token", token: "abc.def" }).catch((e) => e));
    }
    const results = await Promise.all(calls);
    assert.ok(
      results.every((r) => r instanceof CaRequestFailed && r.problemCode === "ERR_IDENTITY_MISMATCH"),
    );
    // Three connections: credential a's, credential b's, and one without a client certificate.
    assert.equal(server.connections.length, 3, `connections: ${server.connections.join(", ")}`);
    assert.equal(server.connections.filter((c) => c === "none").length, 1);
    assert.equal(new Set(server.connections).size, 3);
    await client.close();
  });
});

describe("bounded concurrency", () => {
  let server: Awaited<ReturnType<typeof testServer>>;
  before(async () => {
    server = await testServer((request, response) => {
      request.resume();
      setTimeout(() => problem(response, 503, "ERR_NOT_READY"), 5);
    });
  });
  after(() => server.close());

  test("300 requests started together never have more than maxConcurrentRequests in flight", async () => {
    const client = new CaClient({
      url: server.url,
      caCertificatesPem: root.bundle().toPem(),
      maxConcurrentRequests: 3,
      connectionsPerCredential: 8,
    });
    let peakQueued = 0;
    const calls = Array.from({ length: 300 }, () => {
      const call = client.trustBundle().catch((e) => e);
      peakQueued = Math.max(peakQueued, client.load.waiting);
      return call;
    });
    const results = await Promise.all(calls);
    assert.ok(results.every((r) => r instanceof CaRequestFailed && r.status === 503));
    assert.ok(server.maxInFlight() <= 3, `the server saw ${server.maxInFlight()} requests at once`);
    assert.ok(server.maxInFlight() >= 2, "requests did run side by side");
    assert.ok(peakQueued >= 290, `the rest waited in the client (${peakQueued})`);
    await client.close();
  });
});

describe("the deadline and the queue", () => {
  test("waiting for the credential's one connection does not count against a request's deadline", async () => {
    // Each answer takes 150 ms; eight requests share one connection: the last waits ~1 s for its
    // turn, far past the 500 ms deadline, which starts only when the connection is free for it.
    const server = await testServer((request, response) => {
      request.resume();
      setTimeout(() => problem(response, 503, "ERR_NOT_READY"), 150);
    });
    const observations: { seconds: number; queuedSeconds: number }[] = [];
    const client = new CaClient({
      url: server.url,
      caCertificatesPem: root.bundle().toPem(),
      timeoutMs: 500,
      maxConcurrentRequests: 8,
      connectionsPerCredential: 1,
      onResponse: (o) => observations.push(o),
    });
    const results = await Promise.all(Array.from({ length: 8 }, () => client.trustBundle().catch((e) => e)));
    assert.ok(
      results.every((r) => r instanceof CaRequestFailed && r.status === 503),
      results.map((r) => r.message).join("; "),
    );
    assert.equal(server.maxInFlight(), 1);
    assert.ok(
      Math.max(...observations.map((o) => o.queuedSeconds)) > 0.5,
      "the last one queued past the deadline",
    );
    assert.ok(observations.every((o) => o.seconds < 0.5));
    await client.close();
    await server.close();
  });

  test("a request abandoned while it waits for its turn leaves the queue at once", async () => {
    const server = await testServer((request, response) => {
      request.resume();
      setTimeout(() => problem(response, 503, "ERR_NOT_READY"), 300);
    });
    const client = new CaClient({ url: server.url, caCertificatesPem: root.bundle().toPem() });
    const first = client.requestCertificate("csr", { kind: "token", token: "t" }).catch((e) => e);
    const abandon = new AbortController();
    const second = client.requestCertificate("csr", { kind: "token", token: "t" }, { signal: abandon.signal })
      .catch((e) => e);
    abandon.abort();
    const err = await second;
    assert.ok(err instanceof CaUnavailable && err.kind === "aborted", String(err));
    assert.equal(client.load.waiting, 0);
    await first;
    await client.close();
    await server.close();
  });

  test("an answer over the size limit is refused as not the API's, and the connection dropped", async () => {
    const server = await testServer((request, response) => {
      request.resume();
      response.writeHead(200, { "content-type": "application/x-pem-file" });
      response.end("-----BEGIN CERTIFICATE-----\n" + "A".repeat(64 * 1024));
    });
    const client = new CaClient({
      url: server.url,
      caCertificatesPem: root.bundle().toPem(),
      maxResponseBytes: 32 * 1024,
    });
    await assert.rejects(
      client.trustBundle(),
      (err: unknown) =>
        err instanceof CaUnavailable && err.kind === "answer" && /larger than 32768 bytes/.test(err.message),
    );
    await client.close();
    await server.close();
  });
});

describe("failures below the API", () => {
  test("a CA that does not answer within the deadline is a timeout", async () => {
    const server = await testServer(() => {});
    const client = new CaClient({
      url: server.url,
      caCertificatesPem: root.bundle().toPem(),
      timeoutMs: 300,
    });
    await assert.rejects(
      client.trustBundle(),
      (err: unknown) => err instanceof CaUnavailable && err.kind === "timeout",
    );
    await client.close();
    await server.close();
  });

  test("an issuance answer that is not the API's is refused as such", async () => {
    const answers = [
      { type: "text/html", body: "<html>proxy error</html>", status: 201 },
      { type: "application/json", body: "{not json", status: 201 },
      { type: "application/json", body: JSON.stringify({ spiffeId: "spiffe://client.test/x" }), status: 201 },
      { type: "application/json", body: JSON.stringify({ ok: true, pad: "x".repeat(2 << 20) }), status: 201 },
    ];
    let next = 0;
    const server = await testServer((request, response) => {
      const answer = answers[next++];
      request.resume();
      response.writeHead(answer.status, { "content-type": answer.type });
      response.end(answer.body);
    });
    const client = new CaClient({ url: server.url, caCertificatesPem: root.bundle().toPem() });
    for (let i = 0; i < answers.length; i++) {
      await assert.rejects(
        client.requestCertificate("csr", { kind: "token", token: "t" }),
        (err: unknown) => err instanceof CaUnavailable && err.kind === "answer",
      );
    }
    await client.close();
    await server.close();
  });

  test("the CA's problem code and Retry-After reach the caller", async () => {
    const server = await testServer((request, response) => {
      request.resume();
      problem(response, 429, "ERR_RATE_LIMITED", { "retry-after": "7" });
    });
    const client = new CaClient({ url: server.url, caCertificatesPem: root.bundle().toPem() });
    await assert.rejects(
      client.requestCertificate("csr", { kind: "token", token: "t" }),
      (err: unknown) =>
        err instanceof CaRequestFailed && err.status === 429 && err.problemCode === "ERR_RATE_LIMITED" &&
        err.retryAfterSeconds === 7,
    );
    await client.close();
    await server.close();
  });

  test("a serving certificate that does not name the host is one line, with no certificate dump", async () => {
    const server = await testServer(
      (_request, response) => response.end(),
      await servingFor("elsewhere.test"),
    );
    const client = new CaClient({ url: server.url, caCertificatesPem: root.bundle().toPem() });
    const err = await client.trustBundle().then(() => undefined, (e) => e);
    assert.ok(err instanceof CaUnavailable);
    assert.equal(err.kind, "tls");
    assert.equal(err.causeCode, "ERR_TLS_CERT_ALTNAME_INVALID");
    assert.doesNotMatch(err.message, /\n/);
    assert.match(err.message, /localhost/);
    // What `console.error(err)` prints: the stack and the fields, not the peer's certificate.
    const printed = inspect(err);
    assert.ok(printed.split("\n").length < 20, printed);
    assert.doesNotMatch(printed, /pubkey|fingerprint|modulus|raw:/);
    await client.close();
    await server.close();
  });
});

describe("tokens", () => {
  test("an unset or empty token says the token is missing", async () => {
    const client = new CaClient({ url: "http://127.0.0.1:9" });
    for (const token of [undefined, "", "  "]) {
      await assert.rejects(
        client.requestCertificate("csr", { kind: "token", token: token as string }),
        (err: unknown) => err instanceof TokenMissing && /token is missing/.test(err.message),
      );
      assert.throws(
        () =>
          new SvidRotator({
            id: "spiffe://client.test/x",
            client,
            credential: { kind: "token", token: token as string },
          }),
        TokenMissing,
      );
    }
    // A token read by a function is checked when read.
    await assert.rejects(
      client.requestCertificate("csr", { kind: "token", token: () => process.env.MESHAUTH_UNSET_FOR_TEST }),
      TokenMissing,
    );
    await client.close();
  });
});

test("CaClient connects from its localAddress (one of a node's addresses)", async () => {
  const { createServer: createHttpServer } = await import("node:http");
  const seen: string[] = [];
  const server = createHttpServer((req, res) => {
    seen.push(req.socket.remoteAddress ?? "");
    res.writeHead(200, { "content-type": "application/x-pem-file" });
    res.end("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const client = new CaClient({ url: `http://127.0.0.1:${port}`, localAddress: "127.0.0.9" });
  try {
    await client.trustBundle();
    assert.deepEqual(seen, ["127.0.0.9"]);
  } finally {
    await client.close();
    server.close();
  }
});
