#!/usr/bin/env node
// The project's whole check, as `npm test` runs it: system packages, type-check, lint,
// format, then the test suites on every runtime. `node scripts/test.mjs --help` for options.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureRuntimes, isCi, RUNTIME_BINARIES } from "../tests/runtimes/runtimes.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const { deno, bun, node24, workerd } = RUNTIME_BINARIES;

// A hung test fails its step with its file's name instead of eating the run's budget.
// node --test: --test-timeout bounds every test (and, on Node 20, every file), and
// --test-force-exit ends a file's process once its tests are done, even if a child process or a
// socket a failed test left behind would hold it open. Deno has no such flag: its step watches
// which file runs and ends the run when one runs longer than FILE_TIMEOUT_MS.
const FILE_TIMEOUT_MS = 10 * 60_000;
const nodeTest = (timeoutMs = FILE_TIMEOUT_MS) => [
  "--import",
  "tsx",
  "--test",
  `--test-timeout=${timeoutMs}`,
  "--test-force-exit",
];

const args = process.argv.slice(2);
if (args.includes("--help")) {
  console.log(`usage: npm test [-- --only=step,step] [--skip=step,step]

Runs, in order: ${steps().map((s) => s.name).join(", ")}.
--long runs the fault tests' long variant (at least 200 kill points per component; what
\`npm run test:faults\` does: node scripts/test.mjs --only=system,faults --long).
System packages the tests need (openssl, curl, postgresql, redis-server, redis-tools,
stunnel4, haproxy, wrk, faketime, chromium) are installed with apt-get when
missing and running as root; otherwise the missing ones are named and the run stops.
The extra runtimes (Node 24, Deno, Bun, workerd) are installed on first use into
tests/runtimes/node_modules from tests/runtimes/package-lock.json. With CI=true a runtime
that is missing fails the run; otherwise the steps that need it are skipped and say so.
A test file that runs for more than ${
    FILE_TIMEOUT_MS / 60_000
  } minutes (a test that hangs) fails its step, named.`);
  process.exit(0);
}
const only = args.find((a) => a.startsWith("--only="))?.slice(7).split(",");
const skip = args.find((a) => a.startsWith("--skip="))?.slice(7).split(",") ?? [];

function files(dir, pattern) {
  const out = [];
  const walk = (d) => {
    if (!existsSync(d)) return;
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (pattern.test(name)) out.push(relative(root, p));
    }
  };
  walk(join(root, dir));
  return out;
}

/** The fault tests, the longest (in the short variant) first. */
function faultTests() {
  const longestFirst = ["rotation-under-load", "disk", "postgres-outage", "clock-skew", "kill-ca"];
  const rank = (f) => {
    const i = longestFirst.findIndex((name) => f.endsWith(`/${name}.test.ts`));
    return i < 0 ? longestFirst.length : i;
  };
  return files("tests/faults", /\.test\.ts$/).sort((a, b) => rank(a) - rank(b));
}

function steps() {
  // tests/package packs and installs the package from the registry, and tests/docs runs every
  // code block on each runtime itself: once per run each, on Node, as steps of their own.
  // tests/faults kills and restarts processes: once per run, on Node, as a step of its own.
  const ownSteps = ["tests/package/", "tests/docs/", "tests/faults/"];
  const tests = files("tests", /\.test\.ts$/).filter((f) => !ownSteps.some((dir) => f.startsWith(dir)));
  const coreTests = files("tests/core", /\.test\.ts$/);
  const typed = [
    "mod.ts",
    "ca-server/mod.ts",
    "agent/mod.ts",
    ...files("tests", /\.ts$/),
    ...files("bench", /\.ts$/),
    ...files("scripts", /\.ts$/),
    ...files("examples", /\.ts$/),
    ...files("ca-server", /\.ts$/),
    ...files("agent", /\.ts$/),
  ]
    .filter((f, i, all) => existsSync(join(root, f)) && all.indexOf(f) === i);
  const list = [
    { name: "system", run: ensureSystemPackages },
    { name: "runtimes", run: installRuntimes },
    { name: "typecheck", cmd: [deno, "check", "--quiet", ...typed], runtime: deno },
    { name: "lint", cmd: [deno, "lint", "--quiet"], runtime: deno },
    { name: "fmt", cmd: [deno, "fmt", "--check", "--quiet"], runtime: deno },
    // Two files at a time, in processes of their own: most tests wait on timers, sockets and child
    // processes, every server listens on port 0 and every file has its own temporary directories;
    // one at a time the suite no longer fits CI's 25 minutes.
    { name: "node", cmd: [process.execPath, ...nodeTest(), "--test-concurrency=2", ...tests] },
    {
      name: "faults",
      // Two files at a time: they mostly wait (on certificate lifetimes, outages, a watched
      // agent), using about a quarter of one core; the longest start first so both end together.
      // The long variant runs for as long as its kill points take.
      cmd: [
        process.execPath,
        ...nodeTest(args.includes("--long") ? 4 * 60 * 60_000 : FILE_TIMEOUT_MS),
        "--test-concurrency=2",
        ...faultTests(),
      ],
      env: { MESHAUTH_FAULTS: args.includes("--long") ? "long" : "short" },
    },
    {
      name: "deno",
      cmd: [deno, "test", "-A", "--quiet", ...tests],
      runtime: deno,
      fileTimeoutMs: FILE_TIMEOUT_MS,
    },
    {
      name: "node24",
      cmd: [node24, ...nodeTest(), "--test-concurrency=2", ...tests],
      runtime: node24,
    },
  ];
  if (existsSync(join(root, "scripts/conformance.ts"))) {
    list.push({ name: "conformance", cmd: [process.execPath, "--import", "tsx", "scripts/conformance.ts"] });
  }
  // Bun runs what is runtime-agnostic: the core, the harness's own checks, and the edge example;
  // and the node:crypto provider in process, whose key form on Bun (DER) no other step runs.
  const bunTests = [
    ...coreTests,
    ...files("tests/ca-server", /^node-crypto\.test\.ts$/),
    ...files("tests/workerd", /\.test\.ts$/),
    ...files("tests/examples", /\.test\.ts$/),
  ];
  if (bunTests.length) {
    list.push({
      name: "bun",
      cmd: [bun, "--no-install", "test", "--timeout", "120000", ...bunTests.map((f) => `./${f}`)],
      runtime: bun,
    });
  }
  // The CA server also runs on Bun (Bun.serve, or node:tls under node:http for client
  // certificates): its suites again, with every server process they start on Bun.
  const caServerTests = files("tests/ca-server", /\.test\.ts$/);
  if (caServerTests.length) {
    list.push({
      name: "bun-ca",
      cmd: [process.execPath, ...nodeTest(), "--test-concurrency=1", ...caServerTests],
      env: { MESHAUTH_TEST_CA_RUNTIME: "bun" },
      runtime: bun,
    });
  }
  if (existsSync(join(root, "scripts/test-workerd.mjs"))) {
    list.push({ name: "workerd", cmd: [process.execPath, "scripts/test-workerd.mjs"], runtime: workerd });
  }
  if (existsSync(join(root, "scripts/build.mjs"))) {
    list.push({ name: "build", cmd: [process.execPath, "scripts/build.mjs", "--check-size"] });
  }
  list.push({
    name: "docs",
    // code-blocks.test.ts runs every block of the docs on each runtime: up to 10 minutes.
    cmd: [process.execPath, ...nodeTest(2 * FILE_TIMEOUT_MS), ...files("tests/docs", /\.test\.ts$/)],
    runtime: deno,
  });
  list.push({
    name: "package",
    cmd: [process.execPath, ...nodeTest(), ...files("tests/package", /\.test\.ts$/)],
  });
  return list;
}

function have(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

function postgresBinDir() {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, "bin/initdb"))).sort();
  return versions.length ? join(base, versions.at(-1), "bin") : undefined;
}

function ensureSystemPackages() {
  const missing = [];
  if (!have("openssl")) missing.push("openssl");
  if (!have("curl")) missing.push("curl");
  if (!postgresBinDir()) missing.push("postgresql");
  // The clock-skew fault test runs the agent under libfaketime.
  if (!have("faketime")) missing.push("faketime");
  // The proxy's interop tests and bench/proxy.ts: independent peers and load generators.
  if (!have("redis-server")) missing.push("redis-server");
  if (!have("redis-cli") || !have("redis-benchmark")) missing.push("redis-tools");
  if (!have("stunnel4")) missing.push("stunnel4");
  if (!have("haproxy")) missing.push("haproxy");
  if (!have("wrk")) missing.push("wrk");
  // npm start's status page is checked in a real headless browser: Debian's, driven by
  // playwright-core, which downloads nothing.
  if (!existsSync("/usr/bin/chromium")) missing.push("chromium");
  if (missing.length === 0) return 0;
  if (process.getuid?.() !== 0) {
    console.error(
      `missing system packages: ${missing.join(" ")}; install them (apt-get install ${
        missing.join(" ")
      }) or run as root`,
    );
    return 1;
  }
  console.log(`installing system packages: ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  let r = spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
  if (r.status === 0) {
    r = spawnSync("apt-get", ["install", "-y", "-qq", ...missing], { stdio: "inherit", env });
  }
  if (r.status !== 0) console.error(`could not install ${missing.join(" ")} with apt-get`);
  return r.status ?? 1;
}

// The extra runtimes come from tests/runtimes/package-lock.json, never from meshauth's own
// dependencies. Under CI a runtime that cannot be installed fails the run by name; elsewhere
// the steps that need it are reported as skipped.
let runtimesChecked = false;
function installRuntimes() {
  runtimesChecked = true;
  const missing = ensureRuntimes();
  if (missing.length === 0) return 0;
  const message = `runtimes missing after npm ci in tests/runtimes: ${missing.join(", ")}`;
  if (isCi) {
    console.error(`${message} (CI=true: a missing runtime fails the run)`);
    return 1;
  }
  console.error(`${message}; the steps that need them are skipped`);
  return 0;
}

/** Runs a step's command; its exit status. */
function runCommand(step) {
  const options = { cwd: root, env: { ...process.env, NO_COLOR: "1", ...step.env } };
  if (!step.fileTimeoutMs) {
    return spawnSync(step.cmd[0], step.cmd.slice(1), { stdio: "inherit", ...options }).status;
  }
  return new Promise((resolve) => {
    // Its own process group: a kill reaches whatever the tests started, too.
    const child = spawn(step.cmd[0], step.cmd.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      ...options,
    });
    let file = "(before the first file)";
    let fileStartedAt = Date.now();
    let hungFile;
    const echo = (out) => {
      let buffered = "";
      return (chunk) => {
        out.write(chunk);
        buffered += chunk;
        const lines = buffered.split("\n");
        buffered = lines.pop();
        for (const line of lines) {
          const running = /^running \d+ tests? from (\S+)/.exec(line);
          if (running) [file, fileStartedAt] = [running[1], Date.now()];
        }
      };
    };
    child.stdout.on("data", echo(process.stdout));
    child.stderr.on("data", echo(process.stderr));
    const watchdog = setInterval(() => {
      if (hungFile || Date.now() - fileStartedAt <= step.fileTimeoutMs) return;
      hungFile = file;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, 1000);
    child.on("close", (code) => {
      clearInterval(watchdog);
      if (hungFile) {
        console.error(
          `\n${step.name}: ${hungFile} ran for more than ${step.fileTimeoutMs / 1000} s: killed`,
        );
      }
      resolve(hungFile ? 1 : code ?? 1);
    });
  });
}

const known = steps().map((s) => s.name);
const unknown = [...(only ?? []), ...skip].filter((name) => !known.includes(name));
if (unknown.length) {
  console.error(`unknown step ${unknown.join(", ")}; the steps are ${known.join(", ")}`);
  process.exit(2);
}

const started = Date.now();
const results = [];
for (const step of steps()) {
  if ((only && !only.includes(step.name)) || skip.includes(step.name)) continue;
  const t0 = Date.now();
  console.log(`\n==> ${step.name}`);
  if (step.runtime && !runtimesChecked && installRuntimes() !== 0) {
    results.push({ name: step.name, ok: false, seconds: "0.0" });
    break;
  }
  if (step.runtime && !existsSync(step.runtime)) {
    if (isCi) {
      console.error(`${step.name}: ${step.runtime} is missing (CI=true: a missing runtime fails the run)`);
      results.push({ name: step.name, ok: false, seconds: "0.0" });
      break;
    }
    console.error(`<== ${step.name}: SKIPPED, ${step.runtime} is missing`);
    results.push({ name: step.name, ok: true, skipped: true, seconds: "0.0" });
    continue;
  }
  const status = step.run ? step.run() : await runCommand(step);
  const seconds = ((Date.now() - t0) / 1000).toFixed(1);
  results.push({ name: step.name, ok: status === 0, seconds });
  console.log(`<== ${step.name}: ${status === 0 ? "ok" : `FAILED (exit ${status})`} in ${seconds}s`);
  if (status !== 0) break;
}
console.log("\nsummary:");
for (const r of results) {
  console.log(`  ${r.skipped ? "SKIPPED" : r.ok ? "ok     " : "FAILED "} ${r.name} (${r.seconds}s)`);
}
console.log(`total ${((Date.now() - started) / 1000).toFixed(1)}s`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
