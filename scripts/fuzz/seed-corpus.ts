/**
 * Seeds the fuzz corpora in .fuzz/corpus/<target>/ (gitignored) from the x509-limbo cases,
 * from certificates, CSRs and CRLs that OpenSSL, meshauth and @peculiar/x509 make, and from
 * sample JWKS, request bodies and configuration files. `npm run fuzz -- --merge <target>`
 * later keeps the inputs that add coverage in tests/fuzz/corpus/<target>/.
 *
 * Run: node --import tsx scripts/fuzz/seed-corpus.ts
 * @module
 */
import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { CertificateAuthority, createCsr, decodePem, generateKeyPair, SpiffeId } from "../../mod.ts";
import { contextTag } from "../../lib/asn1/der.ts";
import { bool, ia5String, octetString, oid, seq, set, tlv, utf8String } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { exportSpki } from "../../lib/keys.ts";
import { dnsName, ipName, uriName } from "../../lib/x509/general-name.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { leafTbs } from "../../tests/fuzz/chain-fixture.ts";
import { readLimboSuiteOrExit } from "../limbo-suite.ts";

const root = new URL("../../", import.meta.url).pathname;
const counts = new Map<string, number>();

function save(target: string, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const dir = join(root, ".fuzz/corpus", target);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, createHash("sha1").update(bytes).digest("hex")), bytes);
  counts.set(target, (counts.get(target) ?? 0) + 1);
}

function pemBlocks(text: string): Uint8Array[] {
  return decodePem(text).map((b) => b.der);
}

// x509-limbo: every certificate and CRL of the development cases.
const limbo = readLimboSuiteOrExit<{
  testcases: Array<
    {
      trusted_certs: string[];
      untrusted_intermediates: string[];
      peer_certificate: string;
      crls: string[] | null;
    }
  >;
}>();
for (const c of limbo.testcases) {
  for (const pem of [c.peer_certificate, ...c.trusted_certs, ...c.untrusted_intermediates]) {
    for (const der of pemBlocks(pem)) {
      save("certificate", der);
      save("der", der);
    }
  }
  for (const pem of c.crls ?? []) for (const der of pemBlocks(pem)) save("crl", der);
}
save("pem", limbo.testcases[0].peer_certificate + limbo.testcases[1].trusted_certs.join(""));

// OpenSSL: certificates with the extensions meshauth reads, a CSR and a CRL.
const dir = mkdtempSync(join(tmpdir(), "meshauth-seed-"));
const openssl = (...args: string[]) => {
  const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
};
const extensions = [
  "subjectAltName=critical,URI:spiffe://example.org/w,DNS:w.example.org,IP:10.0.0.1,email:a@example.org",
  "basicConstraints=critical,CA:TRUE,pathlen:2",
  "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
  "extendedKeyUsage=serverAuth,clientAuth",
  "nameConstraints=critical,permitted;DNS:example.org,permitted;URI:.example.org,excluded;IP:10.0.0.0/255.0.0.0,excluded;dirName:nc_dir",
  "certificatePolicies=1.2.3.4,2.5.29.32.0",
  "policyConstraints=critical,requireExplicitPolicy:1",
  "inhibitAnyPolicy=critical,2",
  "crlDistributionPoints=URI:http://crl.example.org/ca.crl",
  "authorityInfoAccess=caIssuers;URI:http://example.org/ca.cer,OCSP;URI:http://ocsp.example.org",
];
writeFileSync(
  join(dir, "ext.cnf"),
  `[req]\ndistinguished_name=dn\n[dn]\n[nc_dir]\nO=Evil\n[v3]\n${
    extensions.join("\n")
  }\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`,
);
for (
  const [name, keyArgs] of [
    ["ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]],
    ["rsa", ["-newkey", "rsa:2048"]],
    ["ed", ["-newkey", "ed25519"]],
  ] as const
) {
  openssl(
    "req",
    "-x509",
    ...keyArgs,
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-subj",
    "/C=US/O=Example \\+ Co/OU=a+OU=b/CN=seed",
    "-days",
    "30",
    "-config",
    "ext.cnf",
    "-extensions",
    "v3",
  );
  const der = pemBlocks(readFileSync(join(dir, `${name}.pem`), "utf8"))[0];
  save("certificate", der);
  save("der", der);
  openssl(
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    "/CN=csr",
    "-addext",
    "subjectAltName=URI:spiffe://example.org/ns/default/sa/web,DNS:web.example.org",
  );
  const csr = pemBlocks(readFileSync(join(dir, `${name}.csr`), "utf8"))[0];
  save("csr", csr);
  save("der", csr);
}
writeFileSync(join(dir, "index.txt"), "");
writeFileSync(join(dir, "crlnumber"), "1000\n");
writeFileSync(
  join(dir, "ca.cnf"),
  `[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ndefault_md=sha256\ndefault_crl_days=7\ncrlnumber=crlnumber\ncrl_extensions=crlx\n[crlx]\nauthorityKeyIdentifier=keyid\n`,
);
openssl(
  "ca",
  "-config",
  "ca.cnf",
  "-revoke",
  "ec.pem",
  "-keyfile",
  "ec.key",
  "-cert",
  "ec.pem",
  "-crl_reason",
  "keyCompromise",
);
openssl("ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ec.key", "-cert", "ec.pem", "-out", "ec.crl");
const crlPem = readFileSync(join(dir, "ec.crl"), "utf8");
save("crl", pemBlocks(crlPem)[0]);
save("pem", crlPem + readFileSync(join(dir, "rsa.csr"), "utf8"));
rmSync(dir, { recursive: true, force: true });

// meshauth: a root, an intermediate, SVIDs, CSRs, a CRL and bundles.
const ca = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
const sub = await ca.createIntermediate({ ttlSeconds: 86400 });
for (const algorithm of ["ECDSA-P256", "Ed25519", "RSA-2048"] as const) {
  const keys = await generateKeyPair(algorithm);
  const id = SpiffeId.parse(`spiffe://example.org/ns/default/sa/${algorithm.toLowerCase()}`);
  const csrPem = await createCsr({ keys, id, dnsNames: ["svc.example.org"] });
  save("csr", pemBlocks(csrPem)[0]);
  const svid = await sub.issue(csrPem, { id, dnsNames: ["svc.example.org"] });
  save("certificate", svid.certificateDer);
  save("der", svid.certificateDer);
  save("pem", svid.chainPem);
  const crl = await sub.createCrl({
    revoked: [{ serialNumber: svid.serialNumber, revokedAt: new Date(), reason: "keyCompromise" }],
    nextUpdateSeconds: 3600,
  });
  save("crl", pemBlocks(crl)[0]);
  save("der", pemBlocks(crl)[0]);
}
for (const cert of sub.certificateChain) save("certificate", cert.der);
save("bundle", JSON.stringify(ca.bundle().toJwks()));
save("bundle", JSON.stringify({ ...sub.bundle().toJwks(), spiffe_refresh_hint: 300 }));
save(
  "bundle",
  JSON.stringify({ keys: [{ kty: "EC", use: "jwt-svid", kid: "k", crv: "P-256", x: "AA", y: "AA" }] }),
);

// @peculiar/x509: what most TypeScript users generate.
x509.cryptoProvider.set(crypto);
const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const peculiarKeys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
const peculiarCert = await x509.X509CertificateGenerator.createSelfSigned({
  serialNumber: "01",
  name: "CN=peculiar, O=Example",
  notBefore: new Date("2026-01-01"),
  notAfter: new Date("2027-01-01"),
  keys: peculiarKeys,
  signingAlgorithm: algorithm,
  extensions: [
    new x509.BasicConstraintsExtension(true, 1, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org" }]),
    await x509.SubjectKeyIdentifierExtension.create(peculiarKeys.publicKey),
  ],
});
save("certificate", new Uint8Array(peculiarCert.rawData));
const peculiarCsr = await x509.Pkcs10CertificateRequestGenerator.create({
  name: "CN=peculiar",
  keys: peculiarKeys,
  signingAlgorithm: algorithm,
  extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/p" }])],
});
save("csr", new Uint8Array(peculiarCsr.rawData));

// The chain target: to-be-signed leaves under the fuzz fixture's intermediate.
const leafKeys = await generateKeyPair();
const spki = await exportSpki(leafKeys.publicKey);
const ext = (id: string, critical: boolean, value: Uint8Array) =>
  critical ? seq(oid(id), bool(true), octetString(value)) : seq(oid(id), octetString(value));
const keyUsage = ext(OID.keyUsage, true, tlv(0x03, new Uint8Array([7, 0x80])));
const basic = ext(OID.basicConstraints, true, seq());
const san = (critical: boolean, ...names: Uint8Array[]) => ext(OID.subjectAltName, critical, seq(...names));
const aki = ext(
  OID.authorityKeyIdentifier,
  false,
  seq(tlv(contextTag(0, false), new Uint8Array(20).fill(0x49))),
);
const evil = encodeName([[OID.organizationName, "Evil"]]);
for (
  const [subject, names] of [
    [undefined, [uriName("spiffe://example.org/w")]],
    [undefined, [uriName("spiffe://example.org/w"), dnsName("w.example.org")]],
    [undefined, [uriName("spiffe://example.org/w"), ipName(new Uint8Array([10, 0, 0, 1]))]],
    [evil, [uriName("spiffe://example.org/w")]],
    [seq(set(seq(oid(OID.organizationName), tlv(0x1a, new TextEncoder().encode("Evil"))))), [
      uriName("spiffe://example.org/w"),
    ]],
    [seq(set(seq(oid(OID.commonName), utf8String("x")), seq(oid(OID.organizationName), utf8String("y")))), [
      dnsName("a.example.org"),
    ]],
    [undefined, [uriName("spiffe://evil.example.org/w"), dnsName("evil.example.org")]],
    [undefined, [
      tlv(contextTag(1, false), new TextEncoder().encode("a@example.org")),
      uriName("spiffe://example.org/m"),
    ]],
  ] as Array<[Uint8Array | undefined, Uint8Array[]]>
) {
  save(
    "chain",
    await leafTbs({
      subject,
      spki,
      extensions: [basic, keyUsage, aki, san(subject === undefined, ...names)],
    }),
  );
}
save(
  "chain",
  await leafTbs({
    spki,
    extensions: [basic, keyUsage, aki, ext(OID.subjectAltName, true, seq(ia5String("x")))],
  }),
);

// The CA server's request bodies (first byte: content type and framing) and configuration.
const body = (mode: number, json: string) => new Uint8Array([mode, ...new TextEncoder().encode(json)]);
save(
  "request-body",
  body(
    0,
    JSON.stringify({
      csr: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
      ttlSeconds: 3600,
    }),
  ),
);
save(
  "request-body",
  body(0x80, JSON.stringify({ spiffeId: "spiffe://example.org/w", reason: "keyCompromise" })),
);
save("request-body", body(1, '{"token":"abc","a":[1,2,{"b":null}]}'));
save("request-body", body(3, "not json"));
const yaml = `trustDomain: example.org
dataDir: /tmp/meshauth-data
listen:
  host: 127.0.0.1
  port: 8443
  plainHttp: false
  dnsNames: [ca.example.org]
store:
  kind: file
  fsync: true
issuance:
  defaultTtlSeconds: 3600
  maxTtlSeconds: 86400
rateLimit:
  requestsPerSecond: 10
  burst: 20
admins: ["spiffe://example.org/admin"]
`;
save("config", new Uint8Array([0, ...new TextEncoder().encode(yaml)]));
save("config", new Uint8Array([0x21, ...new TextEncoder().encode(yaml + "0.0.0.0\nspiffe://other.org/x\n")]));
save(
  "config",
  new Uint8Array([
    1,
    ...new TextEncoder().encode(
      JSON.stringify({ trustDomain: "example.org", store: { kind: "postgres", url: "postgres://x" } }),
    ),
  ]),
);
save("config", new Uint8Array([0, ...new TextEncoder().encode("a: &a [*a]\nb: *a\n")]));

console.log(Object.fromEntries(counts));
