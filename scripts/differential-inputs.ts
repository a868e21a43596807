/**
 * The inputs of the differential run (scripts/differential.ts), and their pinning: what the
 * sources hold now (the x509-limbo cases in ../shared, the certificate, CRL and CSR fuzz
 * corpora, what was made here once) and the pinned list the documented figures were made with.
 * @module
 */
import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as peculiar from "@peculiar/x509";
import { CertificateAuthority, createCsr, generateKeyPair, SpiffeId } from "../mod.ts";
import { decodePem } from "../lib/pem.ts";
import { readLimboSuite } from "./limbo-suite.ts";

const root = new URL("..", import.meta.url).pathname;

/** What an input is parsed as. */
export type InputKind = "certificate" | "crl" | "csr";

/** One input: its kind, where it came from, and its DER. */
export interface DifferentialInput {
  kind: InputKind;
  origin: string;
  der: Uint8Array;
}

/** An input's identity in the pin list: the first 128 bits of its SHA-256, in hex. */
export const pinHash = (der: Uint8Array): string =>
  createHash("sha256").update(der).digest("hex").slice(0, 32);
/** The pin list: `kind origin hash` per line, in run order. */
export const PINNED_INPUTS = join(root, "tests/differential/pinned-inputs.txt");
const madeHere = join(root, "tests/differential/made-here");

/**
 * Every input the sources hold now: x509-limbo, the fuzz corpora, what was made here (made
 * first when `makeMissing` and tests/differential/made-here/ is empty). Each once, in a fixed
 * order.
 */
export async function currentInputs(makeMissing = false): Promise<DifferentialInput[]> {
  const inputs: DifferentialInput[] = [];
  const seen = new Set<string>();
  const add = (kind: InputKind, origin: string, der: Uint8Array) => {
    const key = `${kind} ${pinHash(der)}`;
    if (!seen.has(key)) inputs.push({ kind, origin, der });
    seen.add(key);
  };
  const limbo = readLimboSuite<{
    testcases: Array<
      {
        peer_certificate: string;
        trusted_certs: string[];
        untrusted_intermediates: string[];
        crls: string[] | null;
      }
    >;
  }>();
  for (const c of limbo.testcases) {
    for (const pem of [c.peer_certificate, ...c.trusted_certs, ...c.untrusted_intermediates]) {
      for (const block of decodePem(pem)) add("certificate", "x509-limbo", block.der);
    }
    for (const pem of c.crls ?? []) for (const block of decodePem(pem)) add("crl", "x509-limbo", block.der);
  }
  for (const kind of ["certificate", "crl", "csr"] as const) {
    const dir = join(root, "tests/fuzz/corpus", kind);
    for (const f of existsSync(dir) ? readdirSync(dir).sort() : []) {
      add(kind, "fuzz corpus", new Uint8Array(readFileSync(join(dir, f))));
    }
  }
  if (makeMissing && (!existsSync(madeHere) || readdirSync(madeHere).length === 0)) await makeHere();
  for (const f of existsSync(madeHere) ? readdirSync(madeHere).sort() : []) {
    const [kind, origin] = f.split("-");
    add(kind as InputKind, origin, new Uint8Array(readFileSync(join(madeHere, f))));
  }
  return inputs;
}

/** Writes the pin list for `inputs`, in their order. */
export function pin(inputs: readonly DifferentialInput[]): void {
  mkdirSync(join(root, "tests/differential"), { recursive: true });
  writeFileSync(
    PINNED_INPUTS,
    "# The inputs `npm run differential` runs, in order: kind, origin, SHA-256 of the DER (128 bits).\n" +
      "# Written by `npm run differential -- --pin`; the figures in docs/conformance.md are for these.\n" +
      inputs.map((i) => `${i.kind} ${i.origin.replaceAll(" ", "-")} ${pinHash(i.der)}`).join("\n") + "\n",
  );
}

/** The pinned inputs found in `current`, in the pinned order, and the pinned ones not found. */
export function pinnedInputs(
  current: readonly DifferentialInput[],
): { inputs: DifferentialInput[]; missing: string[] } {
  const byHash = new Map(current.map((i) => [`${i.kind} ${pinHash(i.der)}`, i]));
  const missing: string[] = [];
  const inputs: DifferentialInput[] = [];
  for (const line of readFileSync(PINNED_INPUTS, "utf8").split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const [kind, origin, hash] = line.split(" ");
    const input = byHash.get(`${kind} ${hash}`);
    if (input) inputs.push(input);
    else missing.push(`${kind} ${hash} (${origin})`);
  }
  return { inputs, missing };
}

/**
 * Certificates, CRLs and requests OpenSSL, meshauth and @peculiar/x509 make, written once to
 * tests/differential/made-here/ as `<kind>-<maker>-<what>.der` (made afresh each run, their
 * keys, serials and dates would change the mutants and the figures with them).
 */
async function makeHere(): Promise<void> {
  mkdirSync(madeHere, { recursive: true });
  const save = (name: string, der: Uint8Array) => writeFileSync(join(madeHere, `${name}.der`), der);
  const ca = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
  const sub = await ca.createIntermediate({ ttlSeconds: 86400 });
  for (const algorithm of ["ECDSA-P256", "ECDSA-P384", "Ed25519", "RSA-2048"] as const) {
    const keys = await generateKeyPair(algorithm);
    const id = SpiffeId.parse(`spiffe://example.org/w/${algorithm.toLowerCase()}`);
    const csr = await createCsr({ keys, id, dnsNames: ["w.example.org"] });
    const svid = await sub.issue(csr, { id, dnsNames: ["w.example.org"] });
    save(`certificate-meshauth-svid-${algorithm.toLowerCase()}`, svid.certificateDer);
    save(`csr-meshauth-${algorithm.toLowerCase()}`, decodePem(csr)[0].der);
  }
  sub.certificateChain.forEach((cert, i) => save(`certificate-meshauth-ca-${i}`, cert.der));
  const crl = await sub.createCrl({
    revoked: [{ serialNumber: "01", revokedAt: new Date(), reason: "keyCompromise" }],
    nextUpdateSeconds: 3600,
  });
  save("crl-meshauth-intermediate", decodePem(crl)[0].der);
  const dir = mkdtempSync(join(tmpdir(), "meshauth-differential-"));
  try {
    for (
      const [label, key] of [["p256", "ec -pkeyopt ec_paramgen_curve:P-256"], ["rsa2048", "rsa:2048"], [
        "ed25519",
        "ed25519",
      ]]
    ) {
      const r = spawnSync("sh", [
        "-c",
        `openssl req -x509 -newkey ${key} -nodes -keyout k.pem -out c.pem -subj "/C=US/O=Example/OU=a+OU=b/CN=x" ` +
        `-addext "subjectAltName=URI:spiffe://example.org/x,DNS:x.example.org,IP:10.1.2.3,IP:2001:db8::1,email:a@example.org" ` +
        `-addext "nameConstraints=critical,permitted;DNS:example.org" -days 10 2>/dev/null && ` +
        `openssl x509 -in c.pem -outform DER -out c.der && ` +
        `openssl req -new -key k.pem -subj "/CN=x" -addext "subjectAltName=URI:spiffe://example.org/x" -outform DER -out r.der`,
      ], { cwd: dir });
      if (r.status !== 0) throw new Error(`openssl could not make the ${label} certificate`);
      save(`certificate-openssl-${label}`, new Uint8Array(readFileSync(join(dir, "c.der"))));
      save(`csr-openssl-${label}`, new Uint8Array(readFileSync(join(dir, "r.der"))));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const cert = await peculiar.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=peculiar",
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 86400_000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new peculiar.BasicConstraintsExtension(true, 0, true),
      new peculiar.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org" }]),
    ],
  });
  save("certificate-peculiar-root", new Uint8Array(cert.rawData));
  const request = await peculiar.Pkcs10CertificateRequestGenerator.create({
    name: "CN=peculiar",
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new peculiar.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/p" }]),
    ],
  });
  save("csr-peculiar-p256", new Uint8Array(request.rawData));
}
