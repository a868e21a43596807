/**
 * Differential testing of meshauth's parsers against OpenSSL (node:crypto and the openssl CLI),
 * @peculiar/x509 and pkijs (issue 18). For every pinned input certificate (the x509-limbo cases,
 * the repository's fuzz corpus, and certificates OpenSSL, meshauth and @peculiar/x509 made once,
 * kept in tests/differential/made-here/) and mutated variants of each, it compares "parses /
 * refuses" and the decoded fields; for every pinned CRL and certification request and their
 * mutants it compares "parses / refuses" with the openssl CLI (`openssl crl`, `openssl req
 * -verify`). It prints the agreement counts and each kind of disagreement with an example. An
 * input meshauth accepts and OpenSSL refuses fails the run (exit 1) unless its kind is listed
 * in ACCEPTED_DISAGREEMENTS with the reason (docs/conformance.md).
 *
 * The inputs are pinned: tests/differential/pinned-inputs.txt lists each by kind, origin and
 * SHA-256 (128 bits), in the order they run, and the mutants come from a fixed seed, so the same commit
 * prints the same figures. A pinned input that is no longer in its source (the fuzz corpus was
 * merged, ../shared changed) fails the run; `--pin` takes the current inputs instead (and makes
 * tests/differential/made-here/ when it is empty), after which the figures in
 * docs/conformance.md and docs/x509-layer.md are to be regenerated from its output.
 *
 * Run: npm run differential [-- --pin] [-- --mutants=N] [-- --seed=N] [-- --json=path]
 * @module
 */
import { writeFileSync } from "node:fs";
import { parseCrl, parseCsr } from "../mod.ts";
import { MeshAuthError } from "../lib/errors.ts";
import {
  type CertificateView,
  differingFields,
  type Oracle,
  RDN_SEPARATOR,
  VIEWS,
} from "../tests/support/oracles.ts";
import { opensslCliAccepts, type OpenSslCliKind } from "../tests/fuzz/openssl-cli-oracle.ts";
import { currentInputs, type DifferentialInput, pin, pinnedInputs } from "./differential-inputs.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) =>
  args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const MUTANTS = Number(option("mutants", "8"));
let seed = Number(option("seed", "18"));
const jsonPath = option("json", "");
const isPinning = args.includes("--pin");

/**
 * Kinds where meshauth accepts what OpenSSL (node:crypto) refuses, on purpose, with the reason
 * (docs/conformance.md). Every other such kind found so far was a defect, and was fixed.
 */
const ACCEPTED_DISAGREEMENTS: Record<string, string> = {};

function random(): number {
  // xorshift32: the same mutants every run for a seed.
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}
const pick = (n: number) => Math.floor(random() * n);

// ---------------------------------------------------------------- inputs
const current = await currentInputs(isPinning);
let pinned: DifferentialInput[];
if (isPinning) {
  pinned = current;
  pin(pinned);
} else {
  const found = pinnedInputs(current);
  if (found.missing.length) {
    console.error(
      `${found.missing.length} pinned input(s) are no longer in their sources, e.g. ${
        found.missing[0]
      }: the ` +
        "documented figures were made with them. Run `npm run differential -- --pin` to pin the current inputs, " +
        "and regenerate the figures in docs/conformance.md and docs/x509-layer.md from its output.",
    );
    process.exit(1);
  }
  pinned = found.inputs;
}
const corpus = pinned.filter((i) => i.kind === "certificate");
// ---------------------------------------------------------------- mutation
interface Tlv {
  start: number;
  headerLength: number;
  end: number;
}
/** TLV positions of `der`, read leniently (any structure that holds together). */
function tlvs(der: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  const walk = (start: number, limit: number, depth: number) => {
    let p = start;
    while (p < limit && depth < 20) {
      const tag = der[p];
      let len = der[p + 1];
      let header = 2;
      if (len === undefined) return;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n === 0 || n > 3) return;
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + der[p + 2 + i];
        header += n;
      }
      const end = p + header + len;
      if (end > limit) return;
      out.push({ start: p, headerLength: header, end });
      if (tag & 0x20) walk(p + header, end, depth + 1);
      p = end;
    }
  };
  walk(0, der.length, 0);
  return out;
}

const STRING_TAGS = [0x0c, 0x12, 0x13, 0x14, 0x16, 0x1a, 0x1c, 0x1e, 0x05, 0x01, 0x04];
function mutate(der: Uint8Array): { der: Uint8Array; how: string } {
  const out = der.slice();
  const nodes = tlvs(der);
  const node = nodes[pick(nodes.length)];
  // An input with no TLV structure to speak of (some fuzz corpus entries) gets byte mutations.
  switch (node ? pick(7) : pick(2) * 5) {
    case 0: {
      const i = pick(out.length);
      out[i] ^= 1 << pick(8);
      return { der: out, how: "bit flip" };
    }
    case 1: // flip a node's constructed bit
      out[node.start] ^= 0x20;
      return { der: out, how: "constructed bit" };
    case 2: // another universal type for a primitive
      if (out[node.start] & 0x20 || out[node.start] & 0xc0) return mutate(der);
      out[node.start] = STRING_TAGS[pick(STRING_TAGS.length)];
      return { der: out, how: "retyped primitive" };
    case 3: { // a content byte set to a boundary value
      if (node.end === node.start + node.headerLength) return mutate(der);
      const i = node.start + node.headerLength + pick(node.end - node.start - node.headerLength);
      out[i] = [0x00, 0x7f, 0x80, 0xff, 0x2e, 0x40][pick(6)];
      return { der: out, how: "content byte" };
    }
    case 4: // context tag number changed
      if ((out[node.start] & 0xc0) !== 0x80) return mutate(der);
      out[node.start] = (out[node.start] & 0xe0) | pick(9);
      return { der: out, how: "context tag number" };
    case 5: { // truncation
      return { der: out.subarray(0, pick(out.length)), how: "truncated" };
    }
    default: { // a node duplicated in place (lengths of its parents left as they were)
      const copy = new Uint8Array(out.length + (node.end - node.start));
      copy.set(out.subarray(0, node.end));
      copy.set(out.subarray(node.start, node.end), node.end);
      copy.set(out.subarray(node.end), node.end + (node.end - node.start));
      return { der: copy, how: "duplicated node" };
    }
  }
}

// ---------------------------------------------------------------- comparison
const ORACLES: Oracle[] = ["openssl", "peculiar", "pkijs"];
interface Tally {
  bothAccept: number;
  bothRefuse: number;
  onlyMeshauthAccepts: number;
  onlyOracleAccepts: number;
  fieldsAgree: number;
  fieldsDiffer: number;
}
const tallies = Object.fromEntries(ORACLES.map((o) => [o, {
  bothAccept: 0,
  bothRefuse: 0,
  onlyMeshauthAccepts: 0,
  onlyOracleAccepts: 0,
  fieldsAgree: 0,
  fieldsDiffer: 0,
}])) as Record<Oracle, Tally>;
const kinds = new Map<string, { count: number; example: string }>();
function note(kind: string, example: string) {
  const k = kinds.get(kind) ?? { count: 0, example };
  k.count++;
  kinds.set(kind, k);
}
let meshauthCrashes = 0;

function view(oracle: Oracle, der: Uint8Array): CertificateView | Error {
  try {
    return VIEWS[oracle](der);
  } catch (err) {
    if (oracle === "meshauth" && !(err instanceof MeshAuthError)) meshauthCrashes++;
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** Another parser's refusal, without codes and offsets. */
function opensslReason(err: Error): string {
  return err.message.replace(/^error:[0-9A-F]+:/, "").replace(/\d+/g, "N").slice(0, 90);
}

/** meshauth's refusal reason, without the numbers that vary per input. */
function reason(err: Error): string {
  return err.message.replace(/^malformed [^:]*?(certificate[^:]*)?: /, "").replace(/\d+/g, "N").replace(
    /0x[0-9a-f]+/g,
    "0xN",
  ).slice(0, 90);
}

/** The DER or RFC 5280 rule behind a meshauth refusal, for the summary by class. */
const CLASSES: Array<[string, RegExp]> = [
  [
    "DER length encoding (indefinite, non-minimal, overlong, past its container, trailing bytes)",
    /indefinite|non-minimal length|length too large|truncated length|runs past|trailing bytes|unexpected end/,
  ],
  [
    "DER canonical values (BOOLEAN, INTEGER, OID arcs, BIT STRING unused bits, DEFAULT encoded, one form per universal type, high tags)",
    /BOOLEAN|NULL|non-minimal INTEGER|empty INTEGER|OID|unused|explicit .* is not DER|explicit critical|universal tag|end-of-contents|high tag|SET OF/,
  ],
  [
    "times (UTCTime/GeneralizedTime syntax and length, calendar, UTCTime through 2049)",
    /UTCTime|GeneralizedTime|valid date|through N are UTCTime|time longer than/,
  ],
  [
    "character strings (not a string type, PrintableString/NumericString/IA5String sets, UTF-8, UniversalString/BMPString code points)",
    /string type|PrintableString|NumericString|IA5String|IANString|UTF-N|UniversalString|BMPString/,
  ],
  [
    "structure (wrong tag, missing or extra fields, GeneralName form, DistributionPoint name)",
    /expected tag|unexpected|extra fields|missing|malformed|must hold|GeneralName|expected a|field|DistributionPoint|distributionPoint/,
  ],
  [
    "RFC 5480 EC public keys (a point's first octet other than 0x02, 0x03, 0x04, or a length that does not fit its form)",
    /EC point/,
  ],
  [
    "RFC 5280 content rules (version, empty issuer, duplicate or empty extensions, key usage without bits, serial length)",
    /version|empty|duplicate|keyUsage|serial|integer out of range/,
  ],
];
const classCounts = new Map<string, Record<Oracle, number>>();
function classify(oracle: Oracle, meshReason: string) {
  const name = CLASSES.find(([, re]) => re.test(meshReason))?.[0] ?? `other: ${meshReason}`;
  const row = classCounts.get(name) ?? { meshauth: 0, openssl: 0, peculiar: 0, pkijs: 0 };
  row[oracle]++;
  classCounts.set(name, row);
}

let inputs = 0;
function compare(der: Uint8Array, origin: string) {
  inputs++;
  const mesh = view("meshauth", der);
  for (const oracle of ORACLES) {
    const other = view(oracle, der);
    const t = tallies[oracle];
    const meshOk = !(mesh instanceof Error);
    const otherOk = !(other instanceof Error);
    if (meshOk && otherOk) {
      t.bothAccept++;
      if (other.spki === undefined) note(`${oracle} parses it but cannot decode its public key`, origin);
      const meshView = { ...mesh };
      // node's `ca` is X509_check_ca() == 1: basicConstraints cA and, if present, keyCertSign.
      if (oracle === "openssl") {
        meshView.ca = mesh.ca === true && (!mesh.keyUsage || mesh.keyUsage.includes("keyCertSign"));
      }
      // pkijs flattens multi-valued RDNs.
      if (oracle === "pkijs") {
        meshView.subject = mesh.subject?.flatMap((r) => r.split(RDN_SEPARATOR));
        meshView.issuer = mesh.issuer?.flatMap((r) => r.split(RDN_SEPARATOR));
      }
      const fields = differingFields(meshView, other);
      if (fields.length === 0) t.fieldsAgree++;
      else {
        t.fieldsDiffer++;
        for (const f of fields) {
          note(
            `${oracle}: field ${f} differs`,
            `${origin}: meshauth ${JSON.stringify(meshView[f as keyof CertificateView])} / ${oracle} ${
              JSON.stringify(other[f as keyof CertificateView])
            }`,
          );
        }
      }
    } else if (!meshOk && !otherOk) t.bothRefuse++;
    else if (meshOk) {
      t.onlyMeshauthAccepts++;
      note(`${oracle} refuses, meshauth accepts: ${opensslReason(other as Error)}`, origin);
    } else {
      t.onlyOracleAccepts++;
      note(`${oracle} accepts, meshauth refuses: ${reason(mesh as Error)}`, origin);
      classify(oracle, reason(mesh as Error));
    }
  }
}

const started = performance.now();
for (const { der, origin } of corpus) {
  compare(der, origin);
  for (let i = 0; i < MUTANTS; i++) {
    const m = mutate(der);
    compare(m.der, `${origin} (${m.how})`);
  }
}

// The openssl CLI on the unmutated corpus: `openssl x509 -noout` parses and decodes the body.
let cliAgree = 0;
let cliDisagree = 0;
const cliVerdicts = opensslCliAccepts("x509", corpus.map((c) => c.der));
corpus.forEach(({ der, origin }, i) => {
  const meshOk = !(view("meshauth", der) instanceof Error);
  if (cliVerdicts[i] === meshOk) cliAgree++;
  else {
    cliDisagree++;
    note(
      `openssl CLI ${cliVerdicts[i] ? "accepts" : "refuses"}, meshauth ${
        meshOk ? "accepts" : "refuses"
      } (${origin})`,
      origin,
    );
  }
});

// ---------------------------------------------------------------- CRLs and requests
// node:crypto reads neither: the openssl CLI judges them (`openssl crl`, `openssl req -verify`,
// which checks the self-signature as parseCsr does), on the pinned inputs and their mutants.
interface RequestTally {
  inputs: number;
  bothAccept: number;
  bothRefuse: number;
  onlyMeshauthAccepts: number;
  onlyOpensslAccepts: number;
}
const requestTallies = {} as Record<"crl" | "csr", RequestTally>;
for (const kind of ["crl", "csr"] as const) {
  const items: Array<{ der: Uint8Array; origin: string }> = [];
  for (const { der, origin } of pinned.filter((i) => i.kind === kind)) {
    items.push({ der, origin });
    for (let i = 0; i < MUTANTS; i++) {
      const m = mutate(der);
      items.push({ der: m.der, origin: `${origin} (${m.how})` });
    }
  }
  const cliKind: OpenSslCliKind = kind === "crl" ? "crl" : "req";
  const opensslOk = opensslCliAccepts(cliKind, items.map((i) => i.der));
  const t: RequestTally = {
    inputs: items.length,
    bothAccept: 0,
    bothRefuse: 0,
    onlyMeshauthAccepts: 0,
    onlyOpensslAccepts: 0,
  };
  for (const [i, { der, origin }] of items.entries()) {
    let refusal: Error | undefined;
    try {
      if (kind === "crl") parseCrl(der);
      else await parseCsr(der);
    } catch (err) {
      if (!(err instanceof MeshAuthError)) meshauthCrashes++;
      refusal = err instanceof Error ? err : new Error(String(err));
    }
    if (!refusal && opensslOk[i]) t.bothAccept++;
    else if (refusal && !opensslOk[i]) t.bothRefuse++;
    else if (!refusal) {
      t.onlyMeshauthAccepts++;
      note(`openssl refuses, meshauth accepts (${kind}, openssl ${cliKind})`, origin);
    } else {
      t.onlyOpensslAccepts++;
      note(`openssl ${cliKind} accepts, meshauth refuses: ${reason(refusal)}`, origin);
    }
  }
  requestTallies[kind] = t;
}

console.log(
  `${corpus.length} corpus certificates and ${inputs - corpus.length} mutants (${MUTANTS} each), seed ${
    option("seed", "18")
  }, ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
);
console.log(
  "oracle     both accept  both refuse  only meshauth accepts  only oracle accepts  fields agree  fields differ",
);
for (const o of ORACLES) {
  const t = tallies[o];
  console.log(
    `${o.padEnd(11)}${String(t.bothAccept).padStart(11)}${String(t.bothRefuse).padStart(13)}${
      String(t.onlyMeshauthAccepts).padStart(23)
    }${String(t.onlyOracleAccepts).padStart(21)}${String(t.fieldsAgree).padStart(14)}${
      String(t.fieldsDiffer).padStart(15)
    }`,
  );
}
console.log(`openssl CLI (corpus only): ${cliAgree} agree, ${cliDisagree} disagree`);
console.log("\nCRLs and requests, against the openssl CLI (the pinned ones and their mutants):");
console.log("kind   inputs  both accept  both refuse  only meshauth accepts  only openssl accepts");
for (const [kind, t] of Object.entries(requestTallies)) {
  console.log(
    `${kind.padEnd(5)}${String(t.inputs).padStart(8)}${String(t.bothAccept).padStart(13)}${
      String(t.bothRefuse).padStart(13)
    }${String(t.onlyMeshauthAccepts).padStart(23)}${String(t.onlyOpensslAccepts).padStart(22)}`,
  );
}
console.log(`meshauth errors that are not MeshAuthError: ${meshauthCrashes}\n`);
console.log("what meshauth refuses that another parser accepts, by rule (inputs):");
console.log(`${"".padEnd(100)}${"openssl".padStart(9)}${"peculiar".padStart(9)}${"pkijs".padStart(9)}`);
for (const [name, row] of [...classCounts].sort((a, b) => b[1].pkijs - a[1].pkijs)) {
  console.log(
    `${name.slice(0, 99).padEnd(100)}${String(row.openssl).padStart(9)}${String(row.peculiar).padStart(9)}${
      String(row.pkijs).padStart(9)
    }`,
  );
}
console.log("");
const sorted = [...kinds].sort((a, b) => b[1].count - a[1].count);
for (const [kind, { count, example }] of sorted) {
  console.log(`${String(count).padStart(6)}  ${kind}\n        e.g. ${example}`);
}
if (jsonPath) {
  writeFileSync(
    jsonPath,
    JSON.stringify(
      { corpus: corpus.length, inputs, tallies, requests: requestTallies, kinds: Object.fromEntries(kinds) },
      null,
      2,
    ),
  );
}
const unexplained = sorted.filter(([kind]) =>
  kind.startsWith("openssl refuses, meshauth accepts") &&
  !Object.keys(ACCEPTED_DISAGREEMENTS).some((accepted) => kind.startsWith(accepted))
);
if (meshauthCrashes > 0 || unexplained.length > 0) {
  console.error(
    `\n${meshauthCrashes} crash(es), ${unexplained.length} unexplained kind(s) of OpenSSL refusal`,
  );
  process.exit(1);
}
