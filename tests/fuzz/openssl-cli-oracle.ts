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

/** What the CLI is asked to read: a CRL or a PKCS#10 request, as DER. */
export type OpenSslCliKind = "crl" | "req";

const ARGS: Record<OpenSslCliKind, string[]> = {
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
      const run = spawnSync("openssl", [...ARGS[kind], "-in", file], { stdio: ["ignore", "ignore", "pipe"] });
      if (run.error) throw new Error(`the openssl CLI could not run: ${run.error.message}`);
      return run.status === 0;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
