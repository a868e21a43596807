// Chains signed with algorithms meshauth refuses fail with ERR_ALGORITHM_UNSUPPORTED, naming
// the certificate, rather than as a bad signature or a crash. OpenSSL makes the chains.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCsr, VerificationError, verifyChain } from "../../mod.ts";

let dir: string;
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });

before(() => {
  dir = mkdtempSync(join(tmpdir(), "meshauth-algs-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function selfSigned(name: string, keyArgs: string[], extra: string[] = []): string {
  openssl("genpkey", ...keyArgs, "-out", `${name}.key`);
  openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    `${name}.key`,
    "-subj",
    `/CN=${name}`,
    "-days",
    "1",
    "-out",
    `${name}.pem`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    ...extra,
  );
  return readFileSync(join(dir, `${name}.pem`), "utf8");
}

test("a root signed with Ed448 is refused with ERR_ALGORITHM_UNSUPPORTED", async () => {
  const root = selfSigned("ed448-root", ["-algorithm", "ed448"]);
  openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "leaf.key");
  openssl("req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr");
  openssl(
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ed448-root.pem",
    "-CAkey",
    "ed448-root.key",
    "-days",
    "1",
    "-set_serial",
    "7",
    "-out",
    "leaf.pem",
  );
  await assert.rejects(
    verifyChain({ leaf: readFileSync(join(dir, "leaf.pem"), "utf8"), roots: root }),
    (err: unknown) =>
      err instanceof VerificationError && err.code === "ERR_ALGORITHM_UNSUPPORTED" &&
      /leaf/.test(err.message),
  );
});

test("a leaf signed with SHA-1 is refused with ERR_ALGORITHM_UNSUPPORTED", async () => {
  const root = selfSigned("rsa-root", ["-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048"]);
  openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sha1.key");
  openssl("req", "-new", "-key", "sha1.key", "-subj", "/CN=sha1", "-out", "sha1.csr");
  openssl(
    "x509",
    "-req",
    "-sha1",
    "-in",
    "sha1.csr",
    "-CA",
    "rsa-root.pem",
    "-CAkey",
    "rsa-root.key",
    "-days",
    "1",
    "-set_serial",
    "8",
    "-out",
    "sha1.pem",
  );
  await assert.rejects(
    verifyChain({ leaf: readFileSync(join(dir, "sha1.pem"), "utf8"), roots: root }),
    (err: unknown) => err instanceof VerificationError && err.code === "ERR_ALGORITHM_UNSUPPORTED",
  );
});

test("parseCsr refuses an RSA key of an odd size (2056 bits) that verifiers would refuse later", async () => {
  openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2056", "-out", "odd.key");
  openssl(
    "req",
    "-new",
    "-key",
    "odd.key",
    "-subj",
    "/O=odd",
    "-addext",
    "subjectAltName=URI:spiffe://example.org/odd",
    "-out",
    "odd.csr",
  );
  await assert.rejects(parseCsr(readFileSync(join(dir, "odd.csr"), "utf8")), {
    code: "ERR_CSR_INVALID",
    reason: "unsupported-algorithm",
  });
});
