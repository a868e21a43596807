/**
 * The `openssl` CLI as the oracle for what node:crypto cannot judge: CRLs (`openssl crl`) and
 * certification requests (`openssl req -verify`, which checks the self-signature as parseCsr
 * does). One process per input, far too slow for the fuzzing loop, so it judges the corpora
 * (tests/fuzz/regression.test.ts) and the differential run's inputs (scripts/differential.ts).
 * @module
 */

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** What the CLI is asked to read, as DER: a CRL, a PKCS#10 request, or a certificate. */
export type OpenSslCliKind = "crl" | "req" | "x509";

const ARGS: Record<OpenSslCliKind, string[]> = {
  x509: ["x509", "-inform", "DER", "-noout"],
  crl: ["crl", "-inform", "DER", "-noout"],
  req: ["req", "-inform", "DER", "-noout", "-verify"],
};

/** Runs the CLI on each input; true where it reads the input (and, for a request, its signature verifies). */
export function opensslCliAccepts(kind: OpenSslCliKind, inputs: readonly Uint8Array[]): boolean[] {
  const dir = mkdtempSync(join(tmpdir(), "meshauth-openssl-"));
  try {
    const file = join(dir, "input.der");
    return inputs.map((der) => {
      writeFileSync(file, der);
      const run = spawnSync("openssl", [...ARGS[kind], "-in", file], { stdio: ["ignore", "pipe", "pipe"] });
      if (run.error) throw new Error(`the openssl CLI could not run: ${run.error.message}`);
      // OpenSSL 3.0's `req -verify` exits 0 when the signature does not verify, and says so.
      if (kind === "req") return run.status === 0 && /verify OK/.test(`${run.stdout}${run.stderr}`);
      return run.status === 0;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
