// The published package, as a user gets it: `npm pack`, then `npm install <tarball>` into an
// empty project. It must import through each of its entries, and bring no JavaScript runtime
// with it (Node, Deno, Bun and workerd are tools of meshauth's own test run, installed from
// tests/runtimes/, never dependencies of the package). Runs once per `npm test`, on Node, as
// its own step (scripts/test.mjs), since it installs from the registry.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

const ROOT = new URL("../..", import.meta.url).pathname;
const run = promisify(execFile);
/** Package names (and name prefixes) that would put a runtime into a user's node_modules. */
const RUNTIME_PACKAGES = [
  /^node-(linux|darwin|win)/,
  /^deno$/,
  /^@deno\//,
  /^bun$/,
  /^@oven\//,
  /^workerd$/,
  /^@cloudflare\/workerd/,
];

async function packagesIn(modules: string): Promise<string[]> {
  const names: string[] = [];
  for (const entry of await readdir(modules).catch(() => [])) {
    if (entry.startsWith(".")) continue;
    if (entry.startsWith("@")) {
      for (const inner of await readdir(join(modules, entry))) names.push(`${entry}/${inner}`);
    } else names.push(entry);
  }
  return names;
}

async function sizeOf(path: string): Promise<number> {
  const info = await stat(path);
  if (!info.isDirectory()) return info.size;
  let total = 0;
  for (const entry of await readdir(path)) total += await sizeOf(join(path, entry));
  return total;
}

describe("the published package", { timeout: 300_000 }, () => {
  let work = "";
  let project = "";

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "meshauth-pack-"));
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], {
      cwd: ROOT,
      maxBuffer: 64 * 1024 * 1024,
    });
    const [{ filename }] = JSON.parse(stdout.slice(stdout.indexOf("[")));
    project = join(work, "app");
    await run("mkdir", ["-p", project]);
    await writeFile(
      join(project, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module" }),
    );
    await run(
      "npm",
      ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", join(work, filename)],
      { cwd: project, maxBuffer: 64 * 1024 * 1024 },
    );
  });

  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("imports meshauth, meshauth/ca-server and meshauth/agent", async () => {
    const probe = [
      `import { SpiffeId, MeshAuthError } from "meshauth";`,
      `import { createCaApp } from "meshauth/ca-server";`,
      `import { CaClient } from "meshauth/agent";`,
      `if (SpiffeId.parse("spiffe://example.org/x").path !== "/x") process.exit(1);`,
      `if (typeof createCaApp !== "function" || typeof CaClient !== "function") process.exit(2);`,
      `console.log(MeshAuthError.code);`,
    ].join("\n");
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", probe], { cwd: project });
    assert.equal(stdout.trim(), "ERR_MESHAUTH");
  });

  it("type-checks for a TypeScript user without the optional peers, library checks on", async () => {
    // skipLibCheck false checks every .d.ts the entries reach: a declaration that names
    // @kubernetes/client-node or @grpc/grpc-js (optional peers, absent here) fails with TS2307.
    const consumer = join(project, "consumer.ts");
    await writeFile(
      consumer,
      [
        `import { SpiffeId } from "meshauth";`,
        `export * as core from "meshauth";`,
        `export * as caServer from "meshauth/ca-server";`,
        `export * as agent from "meshauth/agent";`,
        `// @ts-expect-error SpiffeId.parse returns a SpiffeId, not a number (the types are not \`any\`)`,
        `export const notANumber: number = SpiffeId.parse("spiffe://example.org/x");`,
        ``,
      ].join("\n"),
    );
    const config = join(project, "tsconfig.json");
    await writeFile(
      config,
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          lib: ["ES2023", "DOM"],
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ["node"],
          typeRoots: [join(ROOT, "node_modules/@types")],
        },
        files: ["consumer.ts"],
      }),
    );
    const tsc = join(ROOT, "node_modules/.bin/tsc");
    const checked = await run(tsc, ["-p", config], { cwd: project, maxBuffer: 64 * 1024 * 1024 }).then(
      () => "",
      (err) => String(err.stdout) + String(err.stderr),
    );
    assert.equal(checked, "");
  });

  it("runs its CLI with the user's Node, and brings no runtime binaries", async (t) => {
    const modules = join(project, "node_modules");
    const installed = await packagesIn(modules);
    assert.ok(installed.includes("meshauth"), installed.join(", "));
    const runtimes = installed.filter((name) => RUNTIME_PACKAGES.some((pattern) => pattern.test(name)));
    assert.deepEqual(runtimes, [], `runtime packages installed with meshauth: ${runtimes.join(", ")}`);
    const bins = await readdir(join(modules, ".bin"));
    for (const shadow of ["node", "deno", "bun", "workerd"]) {
      assert.ok(!bins.includes(shadow), `.bin/${shadow}`);
    }
    const { stdout } = await run(join(modules, ".bin", "meshauth"), ["--version"], { cwd: project });
    assert.match(stdout, /^meshauth \d+\.\d+\.\d+/);
    const total = await sizeOf(modules);
    const own = await sizeOf(join(modules, "meshauth"));
    t.diagnostic(
      `installed size: node_modules ${
        (total / 1024 / 1024).toFixed(1)
      } MB in ${installed.length} packages, ` +
        `meshauth itself ${(own / 1024 / 1024).toFixed(1)} MB`,
    );
    // A guard against a runtime slipping in under a name the list above does not know (each is
    // 100 MB or more), and against @kubernetes/client-node (about 57 MB of generated API), an
    // optional peer that only the CA on Kubernetes installs.
    assert.ok(!installed.includes("@kubernetes/client-node"), "the Kubernetes client is an optional peer");
    assert.ok(total < 30 * 1024 * 1024, `node_modules is ${(total / 1024 / 1024).toFixed(1)} MB`);
  });

  it("without the optional Kubernetes client, a CA configured for Kubernetes says what to install", async () => {
    const config = join(project, "ca.yaml");
    await writeFile(
      config,
      "trustDomain: example.org\nlisten: { port: 0 }\nkubernetes:\n  audiences: [meshauth]\n  api: { kubeconfig: kubeconfig }\n",
    );
    const bin = join(project, "node_modules", ".bin", "meshauth");
    await run(bin, ["ca", "init", "--config", config], { cwd: project });
    const serve = await run(bin, ["ca", "serve", "--config", config], { cwd: project }).then(
      () => ({ code: 0, stderr: "" }),
      (err) => ({ code: err.code as number, stderr: String(err.stderr) }),
    );
    assert.equal(serve.code, 1);
    assert.match(
      serve.stderr,
      /needs the package @kubernetes\/client-node 1\.4.*npm install @kubernetes\/client-node/,
    );
  });
});
