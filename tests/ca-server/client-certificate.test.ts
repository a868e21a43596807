// The CA reads a TLS client's certificate chain by its size before decoding any of it: the
// chain is taken as the DER OpenSSL holds (getPeerX509Certificate), never decoded field by
// field into objects (getPeerCertificate(true)), and reading stops once the DER is past the
// mTLS limit, so a peer's oversized chain costs a length comparison. Real TLS on 127.0.0.1.
import assert from "node:assert/strict";
import { request } from "node:https";
import { TLSSocket } from "node:tls";
import { after, before, describe, it } from "node:test";
import { Hono } from "hono";
import { clientCertificate, listen, type Listener } from "../../ca-server/http-listener.ts";
import { MAX_CLIENT_CHAIN_PEM, MtlsAuthenticator } from "../../ca-server/auth/mtls.ts";
import type { Authorities } from "../../ca-server/authorities.ts";
import type { CaStore } from "../../ca-server/store/store.ts";
import { decodePem, exportPrivateKeyPem, TrustBundle } from "../../mod.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { issue, type Issued } from "../support/cert-factory.ts";

const runtime = globalThis as { Deno?: unknown; Bun?: unknown };

describe("the CA's reading of a TLS client's certificate chain", () => {
  let listener: Listener;
  let root: Issued;
  let peerCertificateCalls = 0;
  const original = TLSSocket.prototype.getPeerCertificate;

  before(async () => {
    TLSSocket.prototype.getPeerCertificate = function (this: TLSSocket, detailed?: boolean) {
      peerCertificateCalls++;
      return original.call(this, detailed as true);
    } as typeof original;
    root = await issue({ name: "Root", ca: true });
    const server = await issue({ name: "localhost", issuer: root, sans: [dnsName("localhost")] });
    const app = new Hono();
    app.get("/chain", (c) => c.text(clientCertificate(c) ?? ""));
    listener = await listen(app, {
      host: "127.0.0.1",
      port: 0,
      tls: { key: await exportPrivateKeyPem(server.keys.privateKey), cert: server.pem, ca: root.pem },
    });
  });

  after(async () => {
    TLSSocket.prototype.getPeerCertificate = original;
    await listener?.close();
  });

  async function chainSeenByServer(chain: Issued[]): Promise<string> {
    const key = await exportPrivateKeyPem(chain[0].keys.privateKey);
    return await new Promise((resolve, reject) => {
      const req = request({
        host: "127.0.0.1",
        port: listener.port,
        path: "/chain",
        cert: chain.map((c) => c.pem).join(""),
        key,
        rejectUnauthorized: false,
        agent: false,
      }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => body += d);
        res.on("end", () => resolve(body));
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("reads the chain the client sent, leaf first, without decoding it", async () => {
    const intermediate = await issue({ name: "Intermediate", ca: true, issuer: root });
    const leaf = await issue({ name: "", issuer: intermediate, sans: [uriName("spiffe://example.org/w")] });
    peerCertificateCalls = 0;
    const pem = await chainSeenByServer([leaf, intermediate]);
    // Bun's issuerCertificate goes on to the root of the server's own client CAs.
    const read = decodePem(pem).map((b) => b.der).filter((_, i) => i < 2 || !runtime.Bun);
    assert.deepEqual(read, [leaf.der, intermediate.der]);
    // Node never needs the decoding API (Deno's and Bun's node:tls may use it inside theirs).
    if (!runtime.Deno && !runtime.Bun) {
      assert.equal(peerCertificateCalls, 0, "getPeerCertificate decoded the chain");
    }
  });

  it("stops reading an oversized chain once it is past the limit, and decodes none of it", async () => {
    // Eight CA certificates of about 5.5 KB each: 44 KB of DER the client sends (under the 64 KB
    // a TLS handshake message holds in rustls, which Deno's node:tls is).
    const padding = { oid: "1.3.6.1.4.1.55738.2", value: new Uint8Array(5_000) };
    const cas: Issued[] = [];
    let issuer = root;
    for (let i = 0; i < 8; i++) {
      issuer = await issue({ name: `CA ${i}`, ca: true, issuer, extensions: [padding] });
      cas.unshift(issuer);
    }
    const leaf = await issue({ name: "", issuer, sans: [uriName("spiffe://example.org/w")] });
    peerCertificateCalls = 0;
    if (runtime.Deno || runtime.Bun) {
      // Deno's and Bun's node:tls do not carry a client chain past about 32 KB at all: the
      // handshake fails before the app is reached, which bounds it as well.
      await assert.rejects(chainSeenByServer([leaf, ...cas]));
      return;
    }
    const pem = await chainSeenByServer([leaf, ...cas]);
    const read = decodePem(pem);
    assert.ok(pem.length > MAX_CLIENT_CHAIN_PEM, "what was read is over the limit the authenticator applies");
    assert.ok(read.length < 9, `read ${read.length} of the 9 certificates sent`);
    const derBeforeLast = read.slice(0, -1).reduce((n, b) => n + b.der.length, 0);
    assert.ok(
      derBeforeLast <= MAX_CLIENT_CHAIN_PEM,
      "reading stopped at the certificate that passed the limit",
    );
    if (!runtime.Deno) assert.equal(peerCertificateCalls, 0, "getPeerCertificate decoded the chain");
  });
});

describe("the CA's mTLS authenticator completes a chain from its own authorities", () => {
  // A client that sends only its leaf, or a runtime that hands the server only the leaf (Node
  // 24.21 and 26.8, nodejs/node#65579), still authenticates when an intermediate of this CA
  // issued it; an intermediate the CA does not hold is still needed from the client.
  async function setup() {
    const root = await issue({ name: "Root", ca: true });
    const intermediate = await issue({ name: "Intermediate", ca: true, issuer: root });
    const leaf = await issue({ name: "", issuer: intermediate, sans: [uriName("spiffe://example.org/w")] });
    const bundle = TrustBundle.fromPem("example.org", root.pem);
    const authority = (chain: Issued[]) => ({
      roots: bundle,
      ca: { certificateChain: chain.map((c) => c.cert) },
    });
    const authenticator = (chain: Issued[]) =>
      new MtlsAuthenticator({
        authorities: { bundle: () => bundle, published: () => [authority(chain)] } as unknown as Authorities,
        store: { isRevoked: () => Promise.resolve(false) } as unknown as CaStore,
        nodeWorkloads: () => Promise.resolve([]),
        admins: [],
      });
    return { root, intermediate, leaf, authenticator };
  }

  it("verifies a leaf sent alone against the intermediate the CA signs with", async () => {
    const { intermediate, leaf, authenticator } = await setup();
    const principal = await authenticator([intermediate]).authenticate({
      clientCertificateChainPem: leaf.pem,
    });
    assert.equal(principal?.requester, "spiffe://example.org/w");
  });

  it("refuses a leaf sent alone when the CA holds no certificate between it and the root", async () => {
    const { root, leaf, authenticator } = await setup();
    await assert.rejects(
      authenticator([root]).authenticate({ clientCertificateChainPem: leaf.pem }),
      (err: Error & { code?: string }) => err.code === "ERR_CLIENT_CERT_INVALID",
    );
  });
});
