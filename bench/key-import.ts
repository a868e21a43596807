/**
 * What a CSR's public key costs node:crypto to import, in each form the CA's provider can hand
 * it over in (PEM text, DER bytes, a P-256 key as JWK), and what the provider's whole check
 * (import and verify) costs in each: CPU microseconds per operation, the median of interleaved
 * rounds, each over 64 keys so that nothing is cached. The provider picks its form per runtime
 * from these figures (ca-server/keys/node-crypto.ts; docs/ca-server.md, Speed).
 *
 *   node --import tsx bench/key-import.ts [--curve P-256|P-384] [--operations 3000] [--rounds 9]
 *   bun bench/key-import.ts
 *   deno run -A bench/key-import.ts
 *
 * Run it under `flock /tmp/bench.lock` on a shared machine.
 * @module
 */

import { createPublicKey, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { parseArgs } from "node:util";
import { createNodeCryptoProvider, type KeyImportForm } from "../ca-server/keys/node-crypto.ts";
import { ecPublicJwk, parseSubjectPublicKeyInfo } from "../internal/mod.ts";
import type { SignatureCheck } from "../mod.ts";

const { values } = parseArgs({
  options: {
    curve: { type: "string", default: "P-256" },
    operations: { type: "string", default: "3000" },
    rounds: { type: "string", default: "9" },
  },
});
const curve = values.curve === "P-384" ? "P-384" : "P-256";
const hash = curve === "P-384" ? "SHA-384" : "SHA-256";
const operations = Number(values.operations);
const rounds = Number(values.rounds);

const data = new TextEncoder().encode("a CertificationRequestInfo of about this size ".repeat(6));
const checks: SignatureCheck[] = Array.from({ length: 64 }, () => {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: curve });
  return {
    scheme: { name: "ECDSA", hash, namedCurve: curve },
    spki: new Uint8Array(publicKey.export({ type: "spki", format: "der" })),
    data,
    signature: new Uint8Array(sign(hash.replace("-", "").toLowerCase(), data, privateKey)),
  };
});

// The import alone, each form built as the provider builds it.
const imports: Record<string, (spki: Uint8Array) => KeyObject> = {
  pem: (spki) =>
    createPublicKey(
      `-----BEGIN PUBLIC KEY-----\n${Buffer.from(spki).toString("base64")}\n-----END PUBLIC KEY-----\n`,
    ),
  der: (spki) => createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }),
  jwk: (spki) => createPublicKey({ key: ecPublicJwk(parseSubjectPublicKeyInfo(spki))!, format: "jwk" }),
};
const forms: KeyImportForm[] = ["pem", "der", "p256-jwk"];
const providers = forms.map((form) => [form, createNodeCryptoProvider(form)] as const);

/** CPU microseconds per call of `run(i)`, the median over the rounds, each form in turn per round. */
async function measureForms(
  names: string[],
  run: (name: string, i: number) => unknown,
): Promise<Record<string, number>> {
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (const name of names) for (let i = 0; i < 300; i++) await run(name, i);
  for (let round = 0; round < rounds; round++) {
    for (const name of names) {
      const start = process.cpuUsage();
      for (let i = 0; i < operations; i++) await run(name, i);
      const used = process.cpuUsage(start);
      samples[name].push((used.user + used.system) / operations);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  return Object.fromEntries(names.map((n) => [n, median(samples[n])]));
}

const versions = process.versions as Record<string, string | undefined>;
const runtime = versions.bun
  ? `Bun ${versions.bun}`
  : versions.deno
  ? `Deno ${versions.deno}`
  : `Node ${process.version}, OpenSSL ${versions.openssl}`;
const show = (figures: Record<string, number>) =>
  Object.entries(figures).map(([name, us]) => `${name} ${us.toFixed(1)} µs`).join(", ");

console.log(`${runtime}, ${curve}, CPU per operation (median of ${rounds} rounds of ${operations}):`);
console.log(
  `  import:          ${
    show(await measureForms(Object.keys(imports), (n, i) => imports[n](checks[i & 63].spki)))
  }`,
);
const byForm = Object.fromEntries(providers);
console.log(
  `  provider.verify: ${show(await measureForms(forms, (n, i) => byForm[n].verify(checks[i & 63])))}`,
);
