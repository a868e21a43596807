// `proxy.revocation`: what the proxy does when a peer's revocation cannot be checked against a
// current CRL: none held for its authority (an agent restarted while the CA is down, or an
// authority new since a rotation), or one past its nextUpdate (the CA away longer than that).
// `best-effort` accepts the peer and reports it (audit field, counter, one warning); `strict`
// refuses it. In both, a missing authority's CRL is asked for, at most once per 10 s. Real TLS
// through a client proxy and a server proxy; the server's credential source is the one under test.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { type Crl, importPrivateKeyPem, parseCrl } from "../../mod.ts";
import { seq, tlv } from "../../lib/asn1/der-writer.ts";
import { contextTag } from "../../lib/asn1/der.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { keySigner } from "../../lib/x509/signature.ts";
import { issueCrl, type Issued } from "../support/cert-factory.ts";
import { MeshProxy } from "../../agent/mod.ts";
import {
  auditRecords,
  echoServer,
  exchange,
  IDS,
  openStream,
  proxyConfig,
  tempDir,
  TestCa,
  TestSource,
  type TestSvid,
  within,
} from "./proxy-support.ts";
import { recordingLogger } from "./helpers.ts";

let dir: { path: string; remove: () => Promise<void> };
let ca: TestCa;
let echo: Awaited<ReturnType<typeof echoServer>>;
let runs = 0;

before(async () => {
  dir = await tempDir();
  ca = await TestCa.create();
  echo = await echoServer();
});

after(async () => {
  await echo?.close();
  await dir?.remove();
});

/** A CRL of `issuer` (the test CA by default) that has been stale for an hour. */
async function staleCrl(issuer: TestCa = ca, revoked: TestSvid[] = []): Promise<Crl> {
  return parseCrl(
    await issuer.ca.createCrl({
      revoked: revoked.map((svid) => ({ serialNumber: svid.serialNumber, revokedAt: new Date() })),
      thisUpdate: new Date(Date.now() - 2 * 3600_000),
      nextUpdateSeconds: 3600,
    }),
  );
}

/** A source whose CRL fetches are counted, and do what `onFetch` does (the CA not answering by default). */
class FetchingSource extends TestSource {
  fetches = 0;
  onFetch: () => void = () => {};
  fetchCrlsFor(): Promise<void> {
    this.fetches++;
    this.onFetch();
    return Promise.resolve();
  }
}

interface Setup {
  server: FetchingSource;
  serverProxy: MeshProxy;
  logs: ReturnType<typeof recordingLogger>;
  port: number;
  records(): Promise<{ decision: string; revocation?: string; error?: { code: string } }[]>;
  stop(): Promise<void>;
}

/** client (current CRL) -> outbound -> mutual TLS -> inbound of `server` (the source under test) -> echo. */
async function setup(revocation: "best-effort" | "strict" | undefined, serverCrls: Crl[], client?: TestSvid) {
  const runDir = join(dir.path, `run-${runs++}`);
  await mkdir(runDir);
  const server = new FetchingSource(await ca.issue(IDS.backend), ca.bundle(), serverCrls);
  const clientSource = new TestSource(client ?? await ca.issue(IDS.frontend), ca.bundle(), [await ca.crl()]);
  const logs = recordingLogger();
  const serverProxy = new MeshProxy({
    config: proxyConfig({
      auditLog: join(runDir, "audit.jsonl"),
      ...(revocation ? { revocation } : {}),
      inbound: [{
        name: "in",
        workload: "server",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${echo.port}`,
        defaultAction: "ALLOW",
      }],
    }, runDir),
    sources: { server },
    logger: logs,
  });
  await serverProxy.start();
  const inbound = serverProxy.addresses().in as { port: number };
  const clientProxy = new MeshProxy({
    config: proxyConfig({
      auditLog: join(runDir, "client-audit.jsonl"),
      outbound: [{
        name: "out",
        service: "backend",
        workload: "client",
        listen: "127.0.0.1:0",
        upstream: `127.0.0.1:${inbound.port}`,
        allowedIds: [IDS.backend],
      }],
    }, runDir),
    sources: { client: clientSource },
  });
  await clientProxy.start();
  const setup: Setup = {
    server,
    serverProxy,
    logs,
    port: (clientProxy.addresses().out as { port: number }).port,
    records: async () => (await auditRecords(runDir)).filter((r) => r.listener === "in"),
    stop: async () => {
      await clientProxy.stop();
      await serverProxy.stop();
    },
  };
  return setup;
}

const unchecked = (s: Setup, reason: string) =>
  s.serverProxy.metrics.revocationUnchecked.value({ workload: "server", reason });
const warnings = (s: Setup) => s.logs.entries.filter((e) => e.level === "warn" && "reason" in e);

test("best-effort is the default: with no CRL held and the CA not answering, peers are accepted and reported, and the CRL asked for once per 10 s", async () => {
  const s = await setup(undefined, []);
  try {
    assert.equal(s.serverProxy.config.revocation, "best-effort");
    assert.equal((await exchange({ port: s.port }, "one")).reply, "one");
    assert.equal((await exchange({ port: s.port }, "two")).reply, "two");
    // The first connection asked for its authority's CRL; the second, within 10 s, did not.
    assert.equal(s.server.fetches, 1);
    const records = await s.records();
    assert.deepEqual(records.map((r) => [r.decision, r.revocation]), [
      ["allow", "unchecked-no-crl"],
      ["allow", "unchecked-no-crl"],
    ]);
    assert.equal(unchecked(s, "unchecked-no-crl"), 2);
    assert.equal(warnings(s).length, 1, "one warning, not one per connection");
    assert.equal(warnings(s)[0].reason, "unchecked-no-crl");
  } finally {
    await s.stop();
  }
});

test("best-effort: a peer of an authority whose CRL is not held (another's is) is accepted and reported; the fetched CRL then refuses it once it lists it", async () => {
  const other = await TestCa.create();
  const client = await ca.issue(IDS.frontend);
  const s = await setup("best-effort", [await other.crl()], client);
  try {
    assert.equal((await exchange({ port: s.port }, "unknown")).reply, "unknown");
    assert.deepEqual((await s.records()).map((r) => r.revocation), ["unchecked-no-crl"]);
    assert.equal(unchecked(s, "unchecked-no-crl"), 1);
    assert.equal(s.server.fetches, 1);
    // The CA answers now (after the 10 s a second ask would wait, the source fetches on its own).
    ca.revoke(client);
    s.server.update({ crls: [await other.crl(), await ca.crl()] });
    const refused = await exchange({ port: s.port }, "revoked");
    assert.equal(refused.reply, "");
    const last = (await s.records()).at(-1)!;
    assert.equal(last.decision, "deny");
    assert.equal(last.error?.code, "ERR_CERT_REVOKED");
  } finally {
    await s.stop();
  }
});

test("best-effort: with a stale CRL, a peer it does not list is accepted and stays connected; one it lists is refused", async () => {
  const client = await ca.issue(IDS.frontend);
  const listed = await ca.issue(IDS.frontend);
  const s = await setup("best-effort", [await staleCrl(ca, [listed])], client);
  try {
    const stream = await openStream({ port: s.port });
    assert.equal(await stream.send("open"), "open");
    await s.serverProxy.revalidate();
    assert.equal(await stream.send("still open"), "still open");
    assert.equal(stream.isClosed(), false);
    stream.destroy();
    const records = await s.records();
    assert.deepEqual(records.map((r) => [r.decision, r.revocation]), [["allow", "stale-crl"]]);
    assert.ok(unchecked(s, "stale-crl") >= 2, "the connection and its revalidation are counted");
    assert.equal(warnings(s).length, 1);
    assert.equal(warnings(s)[0].reason, "stale-crl");
  } finally {
    await s.stop();
  }
  const r = await setup("best-effort", [await staleCrl(ca, [listed])], listed);
  try {
    assert.equal((await exchange({ port: r.port }, "listed")).reply, "");
    assert.equal((await r.records()).at(-1)?.error?.code, "ERR_CERT_REVOKED");
  } finally {
    await r.stop();
  }
});

test("strict: a peer is refused with ERR_REVOCATION_UNKNOWN when no CRL is held (after asking for it), and an open connection is closed when the CRL turns stale", async () => {
  const s = await setup("strict", []);
  try {
    assert.equal((await exchange({ port: s.port }, "none")).reply, "");
    assert.equal(s.server.fetches, 1);
    const refusal = (await s.records()).at(-1)!;
    assert.equal(refusal.decision, "deny");
    assert.equal(refusal.error?.code, "ERR_REVOCATION_UNKNOWN");
    assert.equal(unchecked(s, "unchecked-no-crl"), 0);

    s.server.update({ crls: [await ca.crl()] });
    const stream = await openStream({ port: s.port });
    assert.equal(await stream.send("current"), "current");
    assert.equal((await s.records()).at(-1)?.revocation, "checked");
    s.server.update({ crls: [await staleCrl()] });
    await within(stream.closed, 5000, "the open connection closed once its CRL is stale");
    const closing = (await s.records()).at(-1)!;
    assert.equal(closing.decision, "deny");
    assert.equal(closing.error?.code, "ERR_REVOCATION_UNKNOWN");
  } finally {
    await s.stop();
  }
});

test("strict: a CRL fetched on demand lets the peer in, checked", async () => {
  const s = await setup("strict", []);
  try {
    const crl = await ca.crl();
    s.server.onFetch = () => s.server.update({ crls: [crl] });
    assert.equal((await exchange({ port: s.port }, "fetched")).reply, "fetched");
    assert.deepEqual((await s.records()).map((r) => [r.decision, r.revocation]), [["allow", "checked"]]);
  } finally {
    await s.stop();
  }
});

/**
 * A CRL of the test CA's intermediate that covers CA certificates only (issuing distribution
 * point, onlyContainsCACerts): a CRL of the leaf's issuer that does not cover the leaf.
 */
async function caOnlyCrl(): Promise<Crl> {
  const keys = await importPrivateKeyPem((await ca.ca.exportPem()).privateKeyPem);
  const issuer = {
    signer: await keySigner(keys.privateKey, keys.publicKey),
    subject: ca.ca.certificate.subject.der,
    ski: ca.ca.certificate.subjectKeyIdentifier!,
  } as Issued;
  const onlyCaCerts = seq(tlv(contextTag(2, false), new Uint8Array([0xff])));
  return parseCrl(
    await issueCrl(issuer, {
      extensions: [{ oid: OID.issuingDistributionPoint, critical: true, value: onlyCaCerts }],
    }),
  );
}

test("a CRL of the peer's authority that does not cover it (ERR_REVOCATION_UNKNOWN) has the current ones asked for once per 10 s", async () => {
  const s = await setup("best-effort", [await caOnlyCrl()]);
  try {
    for (const message of ["one", "two", "three"]) {
      assert.equal((await exchange({ port: s.port }, message)).reply, "");
    }
    assert.equal(s.server.fetches, 1, "asked for once, not once per connection");
    // Records of unverified peers are folded per source address: the first one says why.
    assert.equal((await s.records())[0].error?.code, "ERR_REVOCATION_UNKNOWN");
  } finally {
    await s.stop();
  }
});

test("proxy.revocation accepts best-effort and strict only", () => {
  assert.throws(() => proxyConfig({ revocation: "off" }, dir.path), /proxy\.revocation/);
});
