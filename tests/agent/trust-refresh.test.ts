// TrustRefresher against a real CA on 127.0.0.1: the CRL of the authority of a held certificate
// is fetched and handed on (onCrl); once no certificate of that authority is held any more, the
// CRL is dropped and the drop is said (onCrlsDropped), so that a holder of copies (a proxy
// sidecar's FileCredentialSource) drops its copy too rather than keep one that goes stale.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { parseCertificates, TrustDomain } from "../../mod.ts";
import { silentLogger } from "../../internal/mod.ts";
import { CaClient, ProxyMetrics } from "../../agent/mod.ts";
import { type HeldCertificate, TrustRefresher } from "../../agent/lifecycle/trust-refresh.ts";
import { TestCaServer } from "./proxy-ca-support.ts";

let ca: TestCaServer;

before(async () => {
  ca = await TestCaServer.start("test.example");
});

after(async () => {
  await ca?.stop();
});

test("a CRL no certificate of its authority needs any more is dropped, and the drop is said", async () => {
  const svid = (await ca.issue("spiffe://test.example/app")).svid;
  let held: HeldCertificate[] = [{
    certificateChainPem: svid.certificateChainPem,
    serialNumber: svid.serialNumber,
    expiresAt: parseCertificates(svid.certificateChainPem)[0].notAfter,
  }];
  const client = new CaClient({ url: ca.server.url, caCertificatesPem: ca.bundlePem });
  const taken: string[] = [];
  const dropped: string[] = [];
  const refresher = new TrustRefresher({
    client,
    trustDomain: TrustDomain.parse("test.example"),
    bootstrapBundlePem: ca.bundlePem,
    minRefreshMs: 60_000,
    maxRefreshMs: 60_000,
    logger: silentLogger,
    metrics: { crlUpdates: new ProxyMetrics().crlUpdates },
    heldCertificates: () => held,
    onBundle: () => {},
    onCrl: (authority) => taken.push(authority),
    onCrlsDropped: (authorities) => dropped.push(...authorities),
  });
  try {
    await refresher.load();
    await refresher.refreshCrls();
    assert.equal(taken.length, 1);
    assert.deepEqual([...refresher.crls().keys()], taken);
    assert.deepEqual(dropped, []);
    held = [];
    await refresher.refreshCrls();
    assert.equal(refresher.crls().size, 0);
    assert.deepEqual(dropped, taken);
  } finally {
    await refresher.stop();
    await client.close();
  }
});
