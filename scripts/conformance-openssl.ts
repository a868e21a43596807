/**
 * The same x509-limbo development cases fed to `openssl verify`, for the comparison table in
 * docs/conformance.md: each case becomes `openssl verify -x509_strict` with its roots,
 * intermediates, time, purpose (sslserver or sslclient), peer name, depth limit and CRLs
 * (`-crl_check`). Prints passed cases and false accepts by namespace. Not part of `npm test`.
 *
 * Run: node --import tsx scripts/conformance-openssl.ts
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readLimboSuiteOrExit } from "./limbo-suite.ts";

interface LimboCase {
  id: string;
  validation_kind: "SERVER" | "CLIENT";
  trusted_certs: string[];
  untrusted_intermediates: string[];
  peer_certificate: string;
  validation_time: string | null;
  expected_result: "SUCCESS" | "FAILURE";
  expected_peer_name: { kind: string; value: string } | null;
  max_chain_depth: number | null;
  crls: string[] | null;
}

const suite = readLimboSuiteOrExit<{ testcases: LimboCase[] }>();
const dir = mkdtempSync(join(tmpdir(), "meshauth-limbo-openssl-"));
const version = spawnSync("openssl", ["version"], { encoding: "utf8" }).stdout.trim();
const table = new Map<string, { cases: number; passed: number; falseAccepts: number }>();
try {
  for (const c of suite.testcases) {
    writeFileSync(join(dir, "roots.pem"), c.trusted_certs.join("\n"));
    writeFileSync(join(dir, "leaf.pem"), c.peer_certificate);
    const args = ["verify", "-x509_strict", "-CAfile", "roots.pem"];
    args.push("-purpose", c.validation_kind === "SERVER" ? "sslserver" : "sslclient");
    if (c.untrusted_intermediates.length) {
      writeFileSync(join(dir, "untrusted.pem"), c.untrusted_intermediates.join("\n"));
      args.push("-untrusted", "untrusted.pem");
    }
    if (c.validation_time) args.push("-attime", String(Math.floor(Date.parse(c.validation_time) / 1000)));
    if (c.expected_peer_name?.kind === "DNS") args.push("-verify_hostname", c.expected_peer_name.value);
    if (c.expected_peer_name?.kind === "IP") args.push("-verify_ip", c.expected_peer_name.value);
    if (c.max_chain_depth !== null) args.push("-verify_depth", String(c.max_chain_depth));
    if (c.crls?.length) {
      writeFileSync(join(dir, "crls.pem"), c.crls.join("\n"));
      args.push("-crl_check", "-CRLfile", "crls.pem");
    }
    const status = spawnSync("openssl", [...args, "leaf.pem"], { cwd: dir, timeout: 30_000 }).status;
    const actual = status === 0 ? "SUCCESS" : "FAILURE";
    const ns = c.id.split("::")[0];
    const row = table.get(ns) ?? { cases: 0, passed: 0, falseAccepts: 0 };
    row.cases++;
    if (actual === c.expected_result) row.passed++;
    else if (actual === "SUCCESS") row.falseAccepts++;
    table.set(ns, row);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${version} on ${suite.testcases.length} x509-limbo development cases`);
const total = { cases: 0, passed: 0, falseAccepts: 0 };
for (const [ns, row] of [...table].sort()) {
  console.log(
    `${ns.padEnd(14)}${String(row.cases).padStart(6)}${String(row.passed).padStart(8)}${
      String(row.falseAccepts).padStart(8)
    }`,
  );
  total.cases += row.cases;
  total.passed += row.passed;
  total.falseAccepts += row.falseAccepts;
}
console.log(`total: ${total.passed}/${total.cases} passed, ${total.falseAccepts} false accepts`);
