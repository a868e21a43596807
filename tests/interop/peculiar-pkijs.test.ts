// Interop with the X.509 packages most TypeScript users have (issue 18): what @peculiar/x509
// makes, meshauth reads and verifies when it fits the X509-SVID profile; what meshauth makes,
// @peculiar/x509 and pkijs read with the same fields, and pkijs's chain validation accepts.
import "reflect-metadata";
import { test } from "node:test";
import assert from "node:assert/strict";
import * as peculiar from "@peculiar/x509";
import * as pkijs from "pkijs";
import {
  CertificateAuthority,
  createCsr,
  decodePem,
  generateKeyPair,
  parseCrl,
  parseCsr,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../../mod.ts";
import { VerificationError } from "../../lib/errors.ts";
import { toHex } from "../../lib/encoding.ts";
import { meshauthView, peculiarView, pkijsView } from "../support/oracles.ts";

peculiar.cryptoProvider.set(crypto);
pkijs.setEngine("webcrypto", new pkijs.CryptoEngine({ name: "webcrypto", crypto }));

const ID = SpiffeId.parse("spiffe://example.org/ns/default/sa/web");
const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY = 86_400_000;

async function peculiarKeys(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(EC, true, ["sign", "verify"]) as CryptoKeyPair;
}

/** A root CA and an X509-SVID as someone using @peculiar/x509 would make them. */
async function peculiarSvid(leafExtensions: (rootKeys: CryptoKeyPair) => Promise<peculiar.Extension[]>) {
  const rootKeys = await peculiarKeys();
  const root = await peculiar.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "O=example.org, CN=peculiar root",
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    keys: rootKeys,
    signingAlgorithm: EC,
    extensions: [
      new peculiar.BasicConstraintsExtension(true, undefined, true),
      new peculiar.KeyUsagesExtension(
        peculiar.KeyUsageFlags.keyCertSign | peculiar.KeyUsageFlags.cRLSign,
        true,
      ),
      await peculiar.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const leafKeys = await peculiarKeys();
  const leaf = await peculiar.X509CertificateGenerator.create({
    serialNumber: "0a1b2c",
    subject: "O=example.org",
    issuer: root.subject,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + DAY),
    publicKey: leafKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: EC,
    extensions: await leafExtensions(rootKeys),
  });
  return { root, leaf };
}

const svidExtensions = async (rootKeys: CryptoKeyPair) => [
  new peculiar.BasicConstraintsExtension(false, undefined, true),
  new peculiar.KeyUsagesExtension(peculiar.KeyUsageFlags.digitalSignature, true),
  new peculiar.ExtendedKeyUsageExtension([
    peculiar.ExtendedKeyUsage.clientAuth,
    peculiar.ExtendedKeyUsage.serverAuth,
  ]),
  new peculiar.SubjectAlternativeNameExtension([{ type: "url", value: ID.toString() }]),
  await peculiar.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
];

test("verifySvid accepts an X509-SVID that @peculiar/x509 generated", async () => {
  const { root, leaf } = await peculiarSvid(svidExtensions);
  const bundle = TrustBundle.fromPem("example.org", root.toString("pem"));
  const verified = await verifySvid(leaf.toString("pem"), bundle, { purpose: "clientAuth" });
  assert.equal(verified.id.toString(), ID.toString());
});

test("verifySvid refuses a @peculiar/x509 leaf outside the X509-SVID profile, naming the rule", async () => {
  // No authority key identifier (the generator adds none unless asked): RFC 5280 4.2.1.1.
  const { root, leaf } = await peculiarSvid(async (rootKeys) => (await svidExtensions(rootKeys)).slice(0, 4));
  const bundle = TrustBundle.fromPem("example.org", root.toString("pem"));
  await assert.rejects(
    verifySvid(leaf.toString("pem"), bundle),
    (err) => err instanceof VerificationError && /authorityKeyIdentifier/.test(err.message),
  );
});

test("parseCsr accepts a CSR that @peculiar/x509 generated with a SPIFFE ID", async () => {
  for (const algorithm of [EC, { name: "Ed25519" }] as const) {
    const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
    const csr = await peculiar.Pkcs10CertificateRequestGenerator.create({
      name: "CN=web",
      keys,
      signingAlgorithm: algorithm,
      extensions: [
        new peculiar.SubjectAlternativeNameExtension([
          { type: "url", value: ID.toString() },
          { type: "dns", value: "web.example.org" },
        ]),
      ],
    });
    const request = await parseCsr(csr.toString("pem"));
    assert.equal(request.id.toString(), ID.toString());
    assert.deepEqual(request.dnsNames, ["web.example.org"]);
  }
});

async function meshauthChain() {
  const root = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
  const ca = await root.createIntermediate({ ttlSeconds: 86_400 });
  const keys = await generateKeyPair();
  const csr = await createCsr({ keys, id: ID, dnsNames: ["web.example.org"] });
  const svid = await ca.issue(csr, { id: ID, dnsNames: ["web.example.org"] });
  return { root, ca, csr, svid };
}

test("@peculiar/x509 and pkijs read meshauth's certificates with the same fields", async () => {
  const { root, ca, svid } = await meshauthChain();
  for (
    const der of [
      svid.certificateDer,
      ...ca.certificateChain.map((c) => c.der),
      ...root.certificateChain.map((c) => c.der),
    ]
  ) {
    const mine = meshauthView(der);
    assert.deepEqual(peculiarView(der), mine);
    // pkijs writes each RDN's attributes one by one; meshauth's names have one per RDN.
    assert.deepEqual(pkijsView(der), mine);
  }
});

test("@peculiar/x509 and pkijs read meshauth's CSRs", async () => {
  const { csr } = await meshauthChain();
  const der = decodePem(csr)[0].der;
  const request = new peculiar.Pkcs10CertificateRequest(der.slice());
  assert.ok(await request.verify());
  // Pkcs10CertificateRequest.getExtension takes an OID string (a class finds nothing there).
  const san = request.getExtension("2.5.29.17") as peculiar.SubjectAlternativeNameExtension | null;
  assert.deepEqual(san?.names.toJSON(), [{ type: "url", value: ID.toString() }, {
    type: "dns",
    value: "web.example.org",
  }]);
  const pkijsRequest = pkijs.CertificationRequest.fromBER(der.slice());
  assert.ok(await pkijsRequest.verify());
  assert.equal(pkijsRequest.subjectPublicKeyInfo.algorithm.algorithmId, "1.2.840.10045.2.1");
});

test("@peculiar/x509 and pkijs read meshauth's CRLs, and verify their signatures", async () => {
  const { ca, svid } = await meshauthChain();
  const crlPem = await ca.createCrl({
    revoked: [{ serialNumber: svid.serialNumber, revokedAt: new Date(), reason: "keyCompromise" }],
    nextUpdateSeconds: 3600,
  });
  const der = decodePem(crlPem)[0].der;
  const mine = parseCrl(crlPem);
  const crl = new peculiar.X509Crl(der.slice());
  assert.deepEqual(crl.entries.map((e) => e.serialNumber.toLowerCase()), [svid.serialNumber]);
  assert.equal(crl.entries[0].reason, peculiar.X509CrlReason.keyCompromise);
  assert.ok(
    await crl.verify({
      publicKey: await new peculiar.X509Certificate(ca.certificate.der.slice()).publicKey.export(),
    }),
  );
  const pkijsCrl = pkijs.CertificateRevocationList.fromBER(der.slice());
  assert.deepEqual(
    pkijsCrl.revokedCertificates?.map((r) => toHex(r.userCertificate.valueBlock.valueHexView)),
    mine.revoked.map((r) => r.serialNumber),
  );
  const issuer = pkijs.Certificate.fromBER(ca.certificate.der.slice());
  assert.ok(await pkijsCrl.verify({ issuerCertificate: issuer }));
});

test("pkijs's chain validation accepts meshauth's chains, and refuses a foreign root", async () => {
  const { root, ca, svid } = await meshauthChain();
  const cert = (der: Uint8Array) => pkijs.Certificate.fromBER(der.slice());
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: [cert(root.certificate.der)],
    certs: [cert(svid.certificateDer), cert(ca.certificate.der)],
    checkDate: new Date(),
  });
  const result = await engine.verify();
  assert.equal(result.result, true, result.resultMessage);
  const other = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
  const foreign = new pkijs.CertificateChainValidationEngine({
    trustedCerts: [cert(other.certificate.der)],
    certs: [cert(svid.certificateDer), cert(ca.certificate.der)],
    checkDate: new Date(),
  });
  assert.equal((await foreign.verify()).result, false);
});
