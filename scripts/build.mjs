#!/usr/bin/env node
// Builds what `npm publish` ships and what the edge runs:
//   dist/mod.js, dist/ca-server/mod.js, dist/agent/mod.js, dist/cli.js   ESM for Node (dependencies external)
//   dist/internal/mod.js                                                  what ca-server/ and agent/ share (not exported)
//   dist/types/**.d.ts                                                    types (tsc --emitDeclarationOnly)
//   dist/edge/meshauth.js                                                 the core as one minified ESM file
//                                                                         for Workers, Deno, Bun and browsers
// The core is built first and on its own: a missing or broken ca-server/ or agent/ never stops it.
//
// After building, a consumer in a temporary directory imports "meshauth" and must type-check
// against dist/types and run against dist/mod.js; the edge bundle must export what mod.ts does.
//
// usage: node scripts/build.mjs [--check-size] [--skip-types]
//   --check-size  print the edge bundle's size (raw, minified, gzipped) and fail above the budget
//   --skip-types  JavaScript only (no tsc, no consumer check)
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { nodeGlobalReferences, sourceHints } from "../tests/workerd/node-globals.mjs";

const root = resolve(new URL("..", import.meta.url).pathname);
const dist = join(root, "dist");
const EDGE_BUDGET_GZIP_BYTES = 150 * 1024;

const args = process.argv.slice(2);
const checkSize = args.includes("--check-size");
const skipTypes = args.includes("--skip-types");

const exists = (file) => existsSync(join(root, file));
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;

// Entries for Node. Optional ones are built only when their source exists.
const nodeEntries = [
  { in: "mod.ts", out: "mod.js", core: true },
  { in: "ca-server/mod.ts", out: "ca-server/mod.js" },
  { in: "agent/mod.ts", out: "agent/mod.js" },
  { in: "cli/main.ts", out: "cli.js", banner: "#!/usr/bin/env node" },
];

async function buildNode(entry, keepNames) {
  const outfile = join(dist, entry.out);
  // The core and the internal entry are built together and split, so they share one copy of
  // lib/ (one MeshAuthError class, one signature cache) however a program reaches them.
  const result = await esbuild.build({
    ...(entry.core
      ? {
        entryPoints: { mod: join(root, entry.in), "internal/mod": join(root, "internal/mod.ts") },
        outdir: dist,
        splitting: true,
        chunkNames: "chunks/[name]-[hash]",
      }
      : { entryPoints: [join(root, entry.in)], outfile }),
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: "linked",
    keepNames,
    metafile: true,
    banner: entry.banner ? { js: entry.banner } : undefined,
    logLevel: "warning",
    absWorkingDir: root,
    plugins: entry.core ? [] : [importCoreFromDist(outfile)],
  });
  // The bin must stay executable when a checkout rebuilds it (`npm run build`): npm sets the bit
  // only when it installs, and `npx meshauth` or the path itself would fail with "Permission denied".
  if (entry.banner) chmodSync(outfile, 0o755);
  // One copy of the core per install: `instanceof MeshAuthError` and SpiffeId values must mean
  // the same in "meshauth" and in "meshauth/ca-server".
  const copied = Object.keys(result.metafile.inputs).filter((f) =>
    f === "mod.ts" || f.startsWith("lib/") || f.startsWith("internal/")
  );
  if (!entry.core && copied.length) {
    throw new Error(`dist/${entry.out} holds a copy of the core (${copied[0]}, ...)`);
  }
}

// esbuild plugin for ca-server/, agent/ and the CLI: `../mod.ts` and `../internal/mod.ts` become
// imports of the built core (dist/mod.js, dist/internal/mod.js) instead of a second copy of it
// inside their bundles.
function importCoreFromDist(outfile) {
  const built = new Map([
    [join(root, "mod.ts"), join(dist, "mod.js")],
    [join(root, "internal/mod.ts"), join(dist, "internal/mod.js")],
  ]);
  return {
    name: "import-core-from-dist",
    setup(build) {
      build.onResolve({ filter: /mod\.ts$/ }, (a) => {
        const target = a.kind !== "entry-point" && built.get(resolve(a.resolveDir, a.path));
        if (!target) return undefined;
        let specifier = relative(dirname(outfile), target);
        if (!specifier.startsWith(".")) specifier = `./${specifier}`;
        return { path: specifier, external: true };
      });
    },
  };
}

// esbuild plugin for the edge bundle: no Node built-in may be reached, whatever its spelling.
const noNodeBuiltins = {
  name: "no-node-builtins",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (a) => ({
      errors: [{
        text: `${a.path} imported by ${
          relative(root, a.importer)
        }: the edge bundle cannot use Node built-ins`,
      }],
    }));
  },
};

async function buildEdge(keepNames) {
  const options = {
    entryPoints: [join(root, "mod.ts")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    treeShaking: true,
    keepNames,
    metafile: true,
    logLevel: "warning",
    absWorkingDir: root,
    plugins: [noNodeBuiltins],
  };
  const raw = await esbuild.build({ ...options, write: false, minify: false });
  const min = await esbuild.build({
    ...options,
    outfile: join(dist, "edge/meshauth.js"),
    minify: true,
    sourcemap: "linked",
    legalComments: "eof",
  });
  const code = readFileSync(join(dist, "edge/meshauth.js"), "utf8");
  const output = min.metafile.outputs["dist/edge/meshauth.js"];
  const problems = [];
  for (const imp of output.imports) problems.push(`imports ${imp.path}, which is not bundled`);
  for (const ref of nodeGlobalReferences(code)) {
    problems.push(
      `refers to the Node global ${ref.name}${ref.guarded ? " (typeof probe)" : ""}: ...${ref.snippet}...`,
    );
  }
  if (problems.length) {
    const inputs = Object.keys(min.metafile.inputs).filter((f) => !f.includes("node_modules"));
    const hints = sourceHints(inputs, (f) => readFileSync(join(root, f), "utf8"));
    throw new Error(
      `the edge bundle is not a plain web module:\n  ${problems.join("\n  ")}\n  ${hints.join("\n  ")}`,
    );
  }
  return {
    rawBytes: raw.outputFiles[0].contents.byteLength,
    minBytes: Buffer.byteLength(code),
    gzipBytes: gzipSync(code, { level: 9 }).byteLength,
    inputs: Object.keys(min.metafile.inputs).length,
  };
}

function runAsync(cmd, cmdArgs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, cmdArgs, { stdio: "inherit", cwd: root });
    const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
    child.on("error", () => resolve(1));
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code ?? 1);
    });
  });
}

function run(cmd, cmdArgs, options = {}) {
  const result = spawnSync(cmd, cmdArgs, { stdio: "inherit", cwd: root, timeout: 300_000, ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

// tsc keeps `.ts` in the specifiers of the .d.ts files it writes; consumers resolve `.js`.
function rewriteDeclarationSpecifiers(dir) {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const file = join(dir, name);
    if (statSync(file).isDirectory()) rewriteDeclarationSpecifiers(file);
    else if (name.endsWith(".d.ts")) {
      const text = readFileSync(file, "utf8");
      const rewritten = text.replace(
        /((?:from|import)\s*\(?\s*["'])(\.{1,2}\/[^"']+)\.ts(["'])/g,
        "$1$2.js$3",
      );
      if (rewritten !== text) writeFileSync(file, rewritten);
    }
  }
}

// Types: the core against web-only types (no @types/node), which also proves that lib/ names
// no Node global; ca-server/ and agent/, when they exist, with Node's types. The two tsc runs
// go in parallel; the second writes to a side directory and only its own folders are kept.
async function buildTypes() {
  const tsc = join(root, "node_modules/.bin/tsc");
  const failures = [];
  const core = runAsync(tsc, ["-p", "tsconfig.build.json"]);
  const serverEntries = ["ca-server/mod.ts", "agent/mod.ts", "cli/main.ts"].filter(exists);
  let server = Promise.resolve(0);
  const sideDir = join(dist, ".types-server");
  const config = join(dist, "tsconfig.server.json");
  if (serverEntries.length) {
    // tsc takes files from a config only; this one lives in dist/, so its paths are relative to it.
    writeFileSync(
      config,
      JSON.stringify({
        extends: "../tsconfig.build.json",
        compilerOptions: { rootDir: "..", outDir: ".types-server", types: ["node"] },
        files: serverEntries.map((f) => `../${f}`),
      }),
    );
    server = runAsync(tsc, ["-p", config]);
  }
  if ((await core) !== 0) failures.push("core types (tsconfig.build.json)");
  if ((await server) !== 0) failures.push(`types of ${serverEntries.join(", ")}`);
  for (const folder of ["ca-server", "agent", "internal", "cli"]) {
    if (existsSync(join(sideDir, folder))) {
      cpSync(join(sideDir, folder), join(dist, "types", folder), { recursive: true });
    }
  }
  rmSync(sideDir, { recursive: true, force: true });
  rmSync(config, { force: true });
  return failures;
}

// A consumer in a temporary directory that imports "meshauth" as npm users do, type-checked
// against the package built here (linked into its node_modules).
function verifyConsumer() {
  const subpaths = ["ca-server", "agent"].filter((sub) => existsSync(join(dist, "types", sub, "mod.d.ts")));
  const dir = mkdtempSync(join(tmpdir(), "meshauth-consumer-"));
  try {
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(root, join(dir, "node_modules/meshauth"), "dir");
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
    writeFileSync(
      join(dir, "consumer.ts"),
      [
        `import { CertificateAuthority, MeshAuthError, SpiffeId, TrustBundle } from "meshauth";`,
        `const id: SpiffeId = SpiffeId.parse("spiffe://example.org/ns/default/sa/web");`,
        `const name: string = id.trustDomain.name;`,
        `const code: string = MeshAuthError.code;`,
        `export async function bundleOf(): Promise<TrustBundle> {`,
        `  const ca = await CertificateAuthority.createRoot({ trustDomain: name });`,
        `  return ca.bundle();`,
        `}`,
        `export { code };`,
        // Would pass silently if the types had collapsed to \`any\` (a .d.ts import that does
        // not resolve, hidden by skipLibCheck); must fail with real types.
        `// @ts-expect-error SpiffeId.parse returns a SpiffeId, not a number`,
        `export const notANumber: number = SpiffeId.parse("spiffe://example.org/x");`,
        `// @ts-expect-error TrustBundle.fromJwks takes a trust domain first`,
        `TrustBundle.fromJwks({ keys: [] });`,
        // The subpath packages, when built, resolve with their types too.
        ...subpaths.map((sub, i) => `export * as subpath${i} from "meshauth/${sub}";`),
        // A re-export from internal/ (KubernetesApi) resolves with its types as well.
        ...(subpaths.includes("agent")
          ? [
            `import { KubernetesApi } from "meshauth/agent";`,
            `// @ts-expect-error KubernetesApi takes a kubeconfig, not a number`,
            `export const api = new KubernetesApi(1);`,
          ]
          : []),
        ``,
      ].join("\n"),
    );
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          lib: ["ES2023", "DOM"],
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          // Node's types only when a Node-only subpath is imported; the core needs none.
          types: subpaths.length ? ["node"] : [],
          typeRoots: [join(root, "node_modules/@types")],
        },
        files: ["consumer.ts"],
      }),
    );
    if (run(join(root, "node_modules/.bin/tsc"), ["-p", join(dir, "tsconfig.json")]) !== 0) return false;
    // And the built JavaScript loads in Node through the package's exports, subpaths included.
    const probe = `import { SpiffeId } from "meshauth"; ` +
      `if (SpiffeId.parse("spiffe://example.org/x").path !== "/x") process.exit(1); ` +
      subpaths.map((sub) => `await import("meshauth/${sub}"); `).join("");
    return run(process.execPath, ["--input-type=module", "-e", probe], { cwd: dir }) === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Errors must keep their names through bundling. A bundler renames classes (esbuild writes
// `var X = class _X`, a minifier `class r`), so an error class that takes its name from the
// class (`new.target.name`) needs esbuild's keepNames, and keepNames costs consumers
// tree-shaking: the static blocks it adds to every class count as side effects. So the build
// keeps names only while a plain minified bundle of mod.ts gets them wrong.
async function errorNamesSurviveBundling() {
  const result = await esbuild.build({
    entryPoints: [join(root, "mod.ts")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    minify: true,
    write: false,
    logLevel: "silent",
    absWorkingDir: root,
  });
  const dir = mkdtempSync(join(tmpdir(), "meshauth-names-"));
  try {
    writeFileSync(join(dir, "probe.mjs"), result.outputFiles[0].text);
    return errorNameProblems(await import(join(dir, "probe.mjs"))).length === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Exported error classes whose instances do not carry the export's name. */
function errorNameProblems(module) {
  const problems = [];
  for (const [name, value] of Object.entries(module)) {
    if (typeof value !== "function" || !(value === Error || value.prototype instanceof Error)) continue;
    let instance;
    try {
      instance = Reflect.construct(value, ["ERR_PROBE", "probe", "probe", "probe"]);
    } catch {
      continue;
    }
    if (instance.name !== name) problems.push(`${name} instances are named ${JSON.stringify(instance.name)}`);
  }
  return problems;
}

// How much of the edge bundle a consumer that needs one small export still ships.
async function shakenSize(exportName) {
  const result = await esbuild.build({
    stdin: {
      contents: `export { ${exportName} } from ${JSON.stringify(join(dist, "edge/meshauth.js"))};`,
      resolveDir: root,
    },
    bundle: true,
    format: "esm",
    platform: "neutral",
    minify: true,
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].contents.byteLength;
}

async function main() {
  const failures = [];
  rmSync(dist, { recursive: true, force: true });
  const keepNames = !(await errorNamesSurviveBundling());
  if (keepNames) {
    console.log(
      "note   lib/errors.ts names errors after their classes, which bundlers rename: building with " +
        'keepNames, so consumers cannot tree-shake the bundles (declare `override name = "X"` in each error class)',
    );
  }

  for (const entry of nodeEntries) {
    if (!exists(entry.in)) {
      if (entry.core) throw new Error(`${entry.in} is missing`);
      console.log(`skip   dist/${entry.out} (${entry.in} does not exist yet)`);
      continue;
    }
    try {
      await buildNode(entry, keepNames);
      console.log(`built  dist/${entry.out}`);
    } catch (err) {
      if (entry.core) throw err;
      failures.push(`dist/${entry.out}: ${err.message}`);
    }
  }

  const edge = await buildEdge(keepNames);
  console.log(`built  dist/edge/meshauth.js (${edge.inputs} inputs, no imports, no Node globals)`);

  if (!skipTypes) failures.push(...(await buildTypes()));
  rewriteDeclarationSpecifiers(join(dist, "types"));
  if (!skipTypes) console.log("built  dist/types/");
  if (!skipTypes) {
    if (verifyConsumer()) {
      console.log(`ok     a consumer importing "meshauth" and its subpaths type-checks and runs`);
    } else failures.push(`a consumer importing "meshauth" does not type-check or run`);
  }
  const edgeExports = Object.keys(await import(join(dist, "edge/meshauth.js"))).sort();
  const coreExports = Object.keys(await import(join(dist, "mod.js"))).sort();
  if (edgeExports.join() !== coreExports.join()) {
    failures.push("dist/edge/meshauth.js and dist/mod.js export different names");
  } else console.log(`ok     dist/edge/meshauth.js loads and exports the core's ${coreExports.length} names`);
  for (const file of ["mod.js", "edge/meshauth.js"]) {
    const problems = errorNameProblems(await import(join(dist, file)));
    if (problems.length) failures.push(`dist/${file}: ${problems.join(", ")}`);
  }

  if (checkSize) {
    const shaken = await shakenSize("SpiffeId");
    console.log(
      `tree-shaking: a consumer of SpiffeId alone ships ${kb(shaken)} of the edge bundle's ${
        kb(edge.minBytes)
      }` +
        (keepNames ? " (names kept, see the note above)" : ""),
    );
    const within = edge.gzipBytes <= EDGE_BUDGET_GZIP_BYTES;
    console.log(
      `edge bundle dist/edge/meshauth.js: raw ${kb(edge.rawBytes)}, minified ${kb(edge.minBytes)}, ` +
        `gzipped ${kb(edge.gzipBytes)} (budget ${kb(EDGE_BUDGET_GZIP_BYTES)} gzipped: ` +
        `${
          within ? `${((edge.gzipBytes / EDGE_BUDGET_GZIP_BYTES) * 100).toFixed(0)}% used` : "OVER BUDGET"
        })`,
    );
    if (!within) {
      failures.push(
        `edge bundle is ${kb(edge.gzipBytes)} gzipped, over the ${kb(EDGE_BUDGET_GZIP_BYTES)} budget`,
      );
    }
  }

  if (failures.length) {
    console.error(`build failed:\n  ${failures.join("\n  ")}`);
    return 1;
  }
  return 0;
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (err) {
  console.error(err?.errors?.length ? err.message : err?.stack ?? err);
}
process.exit(exitCode);
