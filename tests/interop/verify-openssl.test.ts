// OpenSSL as the peer: a CA, leaf and CRLs made by `openssl req`, `openssl x509` and
// `openssl ca -gencrl` must be read and judged by parseCrl / verifyChain the way
// `openssl verify -crl_check` judges them.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifyChain } from "../../lib/verify/chain.ts";
import { parseCrl } from "../../lib/x509/crl.ts";
import { parseCertificate } from "../../lib/x509/certificate.ts";
import { VerificationError } from "../../lib/errors.ts";
import { dnsName } from "../../lib/x509/general-name.ts";
import { issue } from "../support/cert-factory.ts";

let dir = "";
const path = (name: string) => join(dir, name);
const openssl = (...args: string[]) =>
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });

const CA_CONFIG = `
[ ca ]
default_ca = local
[ local ]
database = index.txt
crlnumber = crlnumber
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_crl_days = 1
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
[ req ]
distinguished_name = dn
[ dn ]
[ v3_root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:svc.example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "meshauth-verify-openssl-"));
  writeFileSync(path("ca.cnf"), CA_CONFIG);
  writeFileSync(path("index.txt"), "");
  writeFileSync(path("crlnumber"), "1000\n");
  openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key");
  openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/CN=OpenSSL Interop Root",
    "-days",
    "30",
    "-config",
    "ca.cnf",
    "-extensions",
    "v3_root",
    "-out",
    "ca.pem",
  );
  openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "leaf.key");
  openssl(
    "req",
    "-new",
    "-key",
    "leaf.key",
    "-subj",
    "/CN=svc.example.com",
    "-config",
    "ca.cnf",
    "-out",
    "leaf.csr",
  );
  openssl(
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-set_serial",
    "0x5eed01",
    "-days",
    "2",
    "-extfile",
    "ca.cnf",
    "-extensions",
    "v3_leaf",
    "-out",
    "leaf.pem",
  );
  openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "before.crl");
  openssl("ca", "-config", "ca.cnf", "-revoke", "leaf.pem", "-crl_reason", "keyCompromise");
  openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "after.crl");
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const read = (name: string) => readFileSync(path(name), "utf8");

test("parseCrl reads a CRL written by openssl ca -gencrl", () => {
  const crl = parseCrl(read("after.crl"));
  const ca = parseCertificate(execFileSync("openssl", ["x509", "-outform", "DER", "-in", path("ca.pem")]));
  assert.equal(crl.version, 2);
  assert.equal(crl.issuer.key, ca.subject.key);
  assert.equal(crl.crlNumber, 0x1001n);
  assert.deepEqual(crl.revoked.map((r) => [r.serialNumber, r.reason]), [["5eed01", "keyCompromise"]]);
});

test("verifyChain accepts the OpenSSL leaf with the CRL from before its revocation", async () => {
  const result = await verifyChain({
    leaf: read("leaf.pem"),
    roots: read("ca.pem"),
    crls: [read("before.crl")],
    purpose: "serverAuth",
    dnsName: "svc.example.com",
  });
  assert.equal(result.path.length, 2);
});

test("verifyChain rejects the OpenSSL leaf once openssl ca has revoked it, as openssl verify does", async () => {
  const check = spawnSync("openssl", [
    "verify",
    "-crl_check",
    "-CAfile",
    "ca.pem",
    "-CRLfile",
    "after.crl",
    "leaf.pem",
  ], {
    cwd: dir,
  });
  assert.notEqual(check.status, 0, "openssl verify should refuse the revoked leaf");
  await assert.rejects(
    verifyChain({ leaf: read("leaf.pem"), roots: read("ca.pem"), crls: [read("after.crl")] }),
    (err: unknown) => err instanceof VerificationError && err.code === "ERR_CERT_REVOKED",
  );
});

test("a chain openssl verify accepts is accepted, and one it refuses for name constraints is refused", async () => {
  const root = await issue({
    name: "NC Root",
    ca: true,
    nameConstraints: { permitted: [dnsName("example.com")] },
  });
  const good = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root });
  const bad = await issue({ name: "", sans: [dnsName("a.example.org")], issuer: root });
  writeFileSync(path("nc-root.pem"), root.pem);
  writeFileSync(path("nc-good.pem"), good.pem);
  writeFileSync(path("nc-bad.pem"), bad.pem);
  const opensslSays = (leaf: string) =>
    spawnSync("openssl", ["verify", "-CAfile", "nc-root.pem", leaf], { cwd: dir }).status === 0;
  assert.equal(opensslSays("nc-good.pem"), true);
  assert.equal(opensslSays("nc-bad.pem"), false);
  await verifyChain({ leaf: good.pem, roots: root.pem });
  await assert.rejects(
    verifyChain({ leaf: bad.pem, roots: root.pem }),
    (err: unknown) => err instanceof VerificationError && err.code === "ERR_NAME_CONSTRAINTS",
  );
});
