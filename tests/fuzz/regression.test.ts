// The fuzz corpora as regression tests (issue 18): every input kept in tests/fuzz/corpus/<target>/
// (the inputs that reached new coverage, every fuzzer finding once fixed, and, as crash-*, the
// inputs that catch the defects issue 18's probing found: scripts/fuzz/regression-inputs.ts)
// runs through its target again, which must neither crash nor find anything. The CRL and CSR
// corpora are judged by the openssl CLI too: what meshauth accepts, OpenSSL must read.
// `npm run fuzz -- <target> <seconds>` fuzzes further; this replays what is known, in a few
// seconds per target.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { TARGETS } from "./targets/index.ts";
import { parseCrl } from "../../lib/x509/crl.ts";
import { parseCsr } from "../../lib/csr.ts";
import { opensslCliAccepts, type OpenSslCliKind } from "./openssl-cli-oracle.ts";

const corpusRoot = new URL("./corpus/", import.meta.url);

for (const [name, target] of Object.entries(TARGETS)) {
  test(`fuzz target ${name}: its corpus replays without a finding`, async () => {
    const dir = new URL(`${name}/`, corpusRoot);
    assert.ok(existsSync(dir), `tests/fuzz/corpus/${name} is missing`);
    const files = readdirSync(dir).sort();
    assert.ok(files.length > 0, `tests/fuzz/corpus/${name} is empty`);
    for (const file of files) {
      const data = new Uint8Array(readFileSync(new URL(file, dir)));
      try {
        await target.check(data);
      } catch (err) {
        assert.fail(
          `tests/fuzz/corpus/${name}/${file}: ${err instanceof Error ? `${err.name}: ${err.message}` : err}`,
        );
      }
    }
  });
}

const CLI_JUDGED: Array<[string, OpenSslCliKind, (der: Uint8Array) => Promise<unknown>]> = [
  ["crl", "crl", (der) => Promise.resolve().then(() => parseCrl(der))],
  ["csr", "req", (der) => parseCsr(der)],
];

for (const [name, kind, parse] of CLI_JUDGED) {
  test(`fuzz corpus ${name}: what meshauth accepts, openssl ${kind} reads`, async () => {
    const dir = new URL(`${name}/`, corpusRoot);
    const accepted: Array<[string, Uint8Array]> = [];
    for (const file of readdirSync(dir).sort()) {
      const data = new Uint8Array(readFileSync(new URL(file, dir)));
      if (await parse(data).then(() => true, () => false)) accepted.push([file, data]);
    }
    assert.ok(accepted.length > 0, `no input of tests/fuzz/corpus/${name} parses: nothing is judged`);
    const verdicts = opensslCliAccepts(kind, accepted.map(([, data]) => data));
    const refused = accepted.filter((_, i) => !verdicts[i]).map(([file]) => file);
    assert.deepEqual(refused, [], `meshauth accepts what openssl ${kind} refuses`);
  });
}
