#!/usr/bin/env node
// Runs the core's tests (tests/core/*.test.ts), the WebCrypto algorithm checks
// (tests/workerd/*.test.ts) and the edge example's tests (tests/examples/*.test.ts) inside
// Cloudflare's workerd, as plain Workers: Node
// compatibility is off (flags no_nodejs_compat, no_nodejs_compat_v2), so a Node API that
// leaks into lib/ fails here even though Node, Deno and Bun all provide it.
//
// Each group of test files becomes one worker module bundled by esbuild, with `node:test` and
// `node:assert/strict` aliased to the shims in tests/workerd/. workerd serves the workers on
// 127.0.0.1; this script asks each for its files, runs them one request at a time, prints the
// results like a test runner, stops workerd and exits non-zero on any failure or when no test
// ran. Before that it bundles mod.ts alone and fails on any `node:` import or Node global.
//
// usage: node scripts/test-workerd.mjs [--keep] [file.test.ts ...]
//   files given on the command line replace the default groups (one worker "adhoc");
//   --keep leaves the generated bundles and config in the temp directory and prints it.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import * as esbuild from "esbuild";
import { nodeGlobalReferences, sourceHints } from "../tests/workerd/node-globals.mjs";
import { RUNTIME_BINARIES } from "../tests/runtimes/runtimes.mjs";

const root = resolve(new URL("..", import.meta.url).pathname);
const workerdBin = RUNTIME_BINARIES.workerd;
const COMPATIBILITY_DATE = "2026-11-01";
const COMPATIBILITY_FLAGS = ["no_nodejs_compat", "no_nodejs_compat_v2"];
const STARTUP_TIMEOUT_MS = 20_000;
const FILE_TIMEOUT_MS = 300_000;
const SHUTDOWN_TIMEOUT_MS = 5_000;

const args = process.argv.slice(2);
const keep = args.includes("--keep");
const adhoc = args.filter((a) => !a.startsWith("--"));

function testFiles(dir) {
  const full = join(root, dir);
  if (!existsSync(full)) return [];
  return readdirSync(full).filter((f) => f.endsWith(".test.ts")).sort().map((f) => `${dir}/${f}`);
}

// An example test that imports a Node built-in other than node:test and node:assert (one that
// spawns the example under each runtime, say) cannot run inside a Worker; it is listed and
// left to Node, Deno and Bun. Core tests get no such pass: a node: import fails the bundle.
const NODE_ONLY_IMPORT = /\bfrom\s+["'](node:(?!test["']|assert(?:\/strict)?["'])[^"']+)["']/;
function workerCapable(file) {
  const match = readFileSync(join(root, file), "utf8").match(NODE_ONLY_IMPORT);
  if (match) console.log(`skip   ${file} (imports ${match[1]}; runs on Node, Deno and Bun only)`);
  return !match;
}

const groups = adhoc.length ? [{ name: "adhoc", files: adhoc.map((f) => relative(root, resolve(f))) }] : [
  { name: "core", files: testFiles("tests/core") },
  { name: "webcrypto", files: testFiles("tests/workerd") },
  { name: "examples", files: testFiles("tests/examples").filter(workerCapable) },
].filter((g) => g.files.length);

// esbuild plugin: Node built-ins are not available to a plain Worker. The test shims stand in
// for node:test and node:assert; any other `node:` import is an error naming the importer.
function nodeBuiltinsPlugin({ withTestShims = true } = {}) {
  const shims = !withTestShims ? {} : {
    "node:test": join(root, "tests/workerd/node-test-shim.ts"),
    "node:assert/strict": join(root, "tests/workerd/assert-shim.ts"),
    "node:assert": join(root, "tests/workerd/assert-shim.ts"),
  };
  return {
    name: "node-builtins",
    setup(build) {
      build.onResolve({ filter: /^node:/ }, (a) => {
        if (shims[a.path]) return { path: shims[a.path] };
        return {
          errors: [{
            text: `${a.path} imported by ${
              relative(root, a.importer)
            }: Node built-ins are unavailable on workerd`,
          }],
        };
      });
    },
  };
}

const bundleOptions = {
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  conditions: ["workerd", "worker", "browser"],
  mainFields: ["module", "main"],
  // Error classes name themselves with `new.target.name`; keep esbuild from renaming them.
  keepNames: true,
  logLevel: "silent",
  absWorkingDir: root,
};

async function bundleGroup(group, outDir) {
  const imports = group.files.map((f) =>
    `  ${JSON.stringify(f)}: () => import(${JSON.stringify(join(root, f))}),`
  );
  const entry = [
    `import { createTestWorker } from ${JSON.stringify(join(root, "tests/workerd/test-worker.ts"))};`,
    `export default createTestWorker({`,
    ...imports,
    `});`,
  ].join("\n");
  const outfile = join(outDir, `${group.name}.js`);
  await esbuild.build({
    ...bundleOptions,
    stdin: { contents: entry, resolveDir: root, sourcefile: `${group.name}-worker.ts`, loader: "ts" },
    outfile,
    sourcemap: "external",
    sourcesContent: false,
    plugins: [nodeBuiltinsPlugin()],
  });
  return new SourceMap(JSON.parse(readFileSync(`${outfile}.map`, "utf8")));
}

// Stack frames in the bundle ("worker.js:267:9") mapped back to the test's or the core's source.
function sourcePositions(stack, sourceMap, outDir) {
  return stack.replace(/worker\.js:(\d+):(\d+)/g, (frame, line, column) => {
    const entry = sourceMap?.findEntry(Number(line) - 1, Number(column) - 1);
    if (!entry?.originalSource) return frame;
    const source = relative(root, resolve(outDir, entry.originalSource.replace(/^file:\/\//, "")));
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

// mod.ts on its own, minified: no `node:` import may resolve (not even node:test or
// node:assert, which the test bundles shim), and no identifier may refer to a Node global.
async function checkCoreBundle() {
  const result = await esbuild.build({
    ...bundleOptions,
    entryPoints: [join(root, "mod.ts")],
    write: false,
    minify: true,
    metafile: true,
    plugins: [nodeBuiltinsPlugin({ withTestShims: false })],
  });
  const code = result.outputFiles[0].text;
  const references = nodeGlobalReferences(code);
  const imports = Object.values(result.metafile.outputs)[0].imports;
  const problems = [];
  for (const ref of references) problems.push(`reference to Node global ${ref.name}: ...${ref.snippet}...`);
  for (const imp of imports) problems.push(`unbundled import ${imp.path}`);
  if (problems.length) {
    const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.includes("node_modules"));
    const hints = sourceHints(inputs, (f) => readFileSync(join(root, f), "utf8"));
    throw new Error(`mod.ts is not a plain web module:\n  ${problems.join("\n  ")}\n  ${hints.join("\n  ")}`);
  }
  const inputs = Object.keys(result.metafile.inputs).length;
  console.log(`mod.ts bundles for a plain Worker: ${inputs} inputs, no node: import, no Node global`);
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function capnpConfig(workers) {
  const services = workers.map((w) => `    (name = "${w.name}", worker = .${w.name}Worker),`).join("\n");
  const sockets = workers.map((w) =>
    `    (name = "${w.name}", address = "127.0.0.1:${w.port}", http = (), service = "${w.name}"),`
  ).join("\n");
  const definitions = workers.map((w) => `
const ${w.name}Worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "${w.name}.js") ],
  compatibilityDate = "${COMPATIBILITY_DATE}",
  compatibilityFlags = [${COMPATIBILITY_FLAGS.map((f) => `"${f}"`).join(", ")}],
);`).join("\n");
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
${services}
  ],
  sockets = [
${sockets}
  ],
);
${definitions}
`;
}

async function fetchJson(url, timeoutMs) {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await response.text();
  try {
    return { status: response.status, json: JSON.parse(body) };
  } catch {
    throw new Error(`${url} answered ${response.status} with non-JSON: ${body.slice(0, 500)}`);
  }
}

async function waitUntilServing(url, child, output) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`workerd exited with ${child.exitCode}:\n${output()}`);
    try {
      return await fetchJson(url, 2_000);
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`workerd did not answer ${url} within ${STARTUP_TIMEOUT_MS} ms:\n${output()}`);
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      done();
    }, SHUTDOWN_TIMEOUT_MS);
    child.once("exit", () => {
      clearTimeout(timer);
      done();
    });
    child.kill("SIGTERM");
  });
}

function printResult(r, mapStack) {
  const seconds = (r.durationMs / 1000).toFixed(2);
  if (r.status === "passed") console.log(`  ok     ${r.name} (${seconds}s)`);
  else if (r.status === "skipped") console.log(`  skip   ${r.name}${r.message ? ` # ${r.message}` : ""}`);
  else if (r.status === "todo") console.log(`  todo   ${r.name}${r.message ? ` # ${r.message}` : ""}`);
  else {
    console.log(`  FAIL   ${r.name} (${seconds}s)`);
    const e = r.error ?? {};
    console.log(`         ${e.name ?? "Error"}${e.code ? ` [${e.code}]` : ""}: ${e.message}`);
    if (e.stack) {
      const frames = mapStack(e.stack).split("\n").slice(1).filter((l) => !l.includes("tests/workerd/"));
      if (frames.length) console.log(frames.slice(0, 5).map((l) => `         ${l.trim()}`).join("\n"));
    }
  }
  for (const d of r.diagnostics ?? []) console.log(`         # ${d}`);
}

async function main() {
  if (!existsSync(workerdBin)) {
    throw new Error(
      `workerd not found at ${workerdBin}; run npm test, which installs it into tests/runtimes/`,
    );
  }
  await checkCoreBundle();
  if (!groups.length) {
    console.error("no test files for workerd (tests/core/*.test.ts, tests/examples/*.test.ts)");
    return 1;
  }
  const outDir = mkdtempSync(join(tmpdir(), "meshauth-workerd-"));
  let child;
  let log = "";
  try {
    const workers = [];
    for (const group of groups) {
      const sourceMap = await bundleGroup(group, outDir);
      workers.push({ name: group.name, port: await freePort(), files: group.files, sourceMap });
    }
    const configPath = join(outDir, "config.capnp");
    writeFileSync(configPath, capnpConfig(workers));
    child = spawn(workerdBin, ["serve", configPath], { cwd: outDir, stdio: ["ignore", "pipe", "pipe"] });
    const collect = (chunk) => {
      log += chunk;
      if (log.length > 200_000) log = log.slice(-100_000);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const output = () => log.trim() || "(no output)";

    const counts = { passed: 0, failed: 0, skipped: 0, todo: 0 };
    const failures = [];
    for (const worker of workers) {
      const base = `http://127.0.0.1:${worker.port}`;
      const { json: listing } = await waitUntilServing(`${base}/files`, child, output);
      console.log(`\n# workerd worker "${worker.name}" (${COMPATIBILITY_FLAGS.join(", ")})`);
      for (const file of listing.files) {
        console.log(`${file}`);
        const t0 = Date.now();
        let results;
        try {
          const { json } = await fetchJson(`${base}/run?file=${encodeURIComponent(file)}`, FILE_TIMEOUT_MS);
          results = json.results ?? [{
            file,
            name: "(worker)",
            status: "failed",
            durationMs: Date.now() - t0,
            error: { message: JSON.stringify(json) },
          }];
        } catch (err) {
          results = [{
            file,
            name: "(running the file)",
            status: "failed",
            durationMs: Date.now() - t0,
            error: { name: err.name, message: `${err.message}\nworkerd output:\n${output()}` },
          }];
        }
        for (const r of results) {
          printResult(r, (stack) => sourcePositions(stack, worker.sourceMap, outDir));
          counts[r.status]++;
          if (r.status === "failed") failures.push(`${file}: ${r.name}`);
        }
      }
    }
    if (failures.length) {
      console.log(`\nfailed on workerd:\n${failures.map((f) => `  ${f}`).join("\n")}`);
      if (log.trim()) console.log(`\nworkerd output:\n${log.trim().slice(-5_000)}`);
    }
    console.log(
      `\nworkerd: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped, ${counts.todo} todo`,
    );
    if (counts.passed + counts.failed === 0) {
      console.error("no test ran on workerd");
      return 1;
    }
    return counts.failed ? 1 : 0;
  } finally {
    if (child) await stop(child);
    if (keep) console.log(`bundles and config kept in ${outDir}`);
    else rmSync(outDir, { recursive: true, force: true });
  }
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (err) {
  console.error(err?.errors?.length ? err.message : err?.stack ?? err);
}
process.exit(exitCode);
