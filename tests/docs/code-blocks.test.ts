// Every TypeScript block of the README, docs/ and the examples' READMEs runs as a reader would
// copy it, on each runtime it is written for: Node (with tsx), Deno and Bun, importing
// "meshauth" as an installed package (the checkout, linked into a scratch project's
// node_modules, and mapped in its deno.json). A `console.log(x); // text` line must print text.
//
// The info string after `ts` says what a block needs:
//   ts                  nothing: it runs as it is
//   ts after-npm-run-ca the state `npm run ca` and its printed commands leave: a CA on
//                       https://127.0.0.1:8443 (this test's port is swapped in), its bundle in
//                       .meshauth/bundle.pem, and demo.key/demo.crt (SPIFFE ID
//                       spiffe://meshauth.local/demo) in the working directory
//   ts worker           a Workers module: its default export's fetch() gets a request carrying
//                       demo.crt (URL-encoded, in x-client-cert) and env.BUNDLE_JWKS from that CA
// A block that uses `Deno.` runs on Deno only, `Bun.` on Bun only; one that imports
// meshauth/agent on Node (the agent's CA client is undici, which Bun only shims), and one
// that imports meshauth/ca-server on Node and Bun.
// Runs once per `npm test`, as its own step (scripts/test.mjs).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { RUNTIME_BINARIES, skipUnlessRuntime } from "../runtimes/runtimes.mjs";

const ROOT = new URL("../..", import.meta.url).pathname;
const TSX = join(ROOT, "node_modules/tsx/dist/esm/index.mjs");
type Runtime = "node" | "deno" | "bun";

interface Block {
  file: string;
  line: number;
  mode: "standalone" | "after-npm-run-ca" | "worker";
  code: string;
  runtimes: Runtime[];
}

function markdownFiles(): string[] {
  const out = ["README.md"];
  const walk = (dir: string) => {
    for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== "api" && entry.name !== "node_modules") walk(path);
      else if (entry.name.endsWith(".md")) out.push(path);
    }
  };
  walk("docs");
  walk("examples");
  return out;
}

function blocks(): Block[] {
  const found: Block[] = [];
  for (const file of markdownFiles()) {
    const text = readFileSync(join(ROOT, file), "utf8");
    for (const match of text.matchAll(/^```ts( [a-z-]+)?\n([\s\S]*?)^```$/gm)) {
      const mode = (match[1]?.trim() ?? "standalone") as Block["mode"];
      assert.ok(
        ["standalone", "after-npm-run-ca", "worker"].includes(mode),
        `${file}: unknown block mode ${mode}`,
      );
      const code = match[2];
      const runtimes: Runtime[] = /\bDeno\./.test(code)
        ? ["deno"]
        : /\bBun\./.test(code)
        ? ["bun"]
        : /from "meshauth\/agent"/.test(code)
        ? ["node"]
        : /from "meshauth\/ca-server"/.test(code)
        ? ["node", "bun"]
        : ["node", "deno", "bun"];
      found.push({ file, line: text.slice(0, match.index).split("\n").length, mode, code, runtimes });
    }
  }
  return found;
}

function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: "1", ...options.env },
      timeout: 60_000,
      maxBuffer: 8 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

// The scratch project a reader's code runs in: "meshauth" resolves to this checkout.
let project = "";
let caProcess: ReturnType<typeof spawn> | undefined;
let caPort = 0;
let bundleJwks = "";

before(async () => {
  project = mkdtempSync(join(tmpdir(), "meshauth-docs-"));
  mkdirSync(join(project, "node_modules"));
  symlinkSync(ROOT, join(project, "node_modules", "meshauth"), "dir");
  writeFileSync(join(project, "package.json"), JSON.stringify({ type: "module", private: true }));
  writeFileSync(
    join(project, "deno.json"),
    JSON.stringify({
      imports: { meshauth: join(ROOT, "mod.ts") },
      nodeModulesDir: "manual",
      lock: false,
    }),
  );
  // npm run ca's CA, with its data directory in the project, as a reader's would be.
  const node = "Deno" in globalThis || "Bun" in globalThis ? "node" : process.execPath;
  caProcess = spawn(node, ["--import", TSX, join(ROOT, "cli/dev-ca.ts")], {
    cwd: project,
    env: { ...process.env, MESHAUTH_LISTEN_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  caProcess.stdout!.on("data", (chunk) => (output += chunk));
  caProcess.stderr!.on("data", (chunk) => (output += chunk));
  const deadline = Date.now() + 30_000;
  while (!output.includes("Stop with Ctrl-C")) {
    if (Date.now() > deadline || caProcess.exitCode !== null) {
      throw new Error(`npm run ca did not start:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  caPort = Number(/https:\/\/127\.0\.0\.1:(\d+)/.exec(output)![1]);
  const commands = output.slice(output.indexOf("# 1."), output.indexOf("Stop with Ctrl-C"));
  const printed = await run("sh", ["-c", commands], { cwd: project });
  assert.equal(printed.code, 0, printed.stderr);
  const jwks = await run("curl", [
    "-sS",
    "--cacert",
    ".meshauth/bundle.pem",
    `https://127.0.0.1:${caPort}/v1/bundle`,
  ], {
    cwd: project,
  });
  bundleJwks = jwks.stdout;
});

after(() => {
  caProcess?.kill("SIGTERM");
  if (project) rmSync(project, { recursive: true, force: true });
});

/** The program that runs a block: the block itself, or a driver that calls a worker's fetch. */
function program(block: Block, name: string): string {
  const code = block.code.replaceAll("127.0.0.1:8443", `127.0.0.1:${caPort}`);
  if (block.mode !== "worker") return code;
  writeFileSync(join(project, `${name}.worker.ts`), code);
  return [
    `import worker from "./${name}.worker.ts";`,
    `const chain = ${JSON.stringify(readFileSync(join(project, "demo.crt"), "utf8"))};`,
    `const request = new Request("http://edge.example/whoami", { headers: { "x-client-cert": encodeURIComponent(chain) } });`,
    `const response = await worker.fetch(request, { BUNDLE_JWKS: ${JSON.stringify(bundleJwks)} });`,
    `const body = await response.text();`,
    `if (response.status !== 200) throw new Error(\`the worker answered \${response.status}: \${body}\`);`,
    `console.log(body);`,
  ].join("\n");
}

function commandFor(runtime: Runtime, file: string): [string, string[], Record<string, string>] {
  const caCerts = join(project, ".meshauth", "bundle.pem");
  if (runtime === "node") {
    return [process.env.MESHAUTH_DOCS_NODE ?? "node", ["--import", TSX, file], {
      NODE_EXTRA_CA_CERTS: caCerts,
    }];
  }
  if (runtime === "deno") {
    return [
      RUNTIME_BINARIES.deno,
      ["run", "-A", "--quiet", "--cert", caCerts, "--config", "deno.json", file],
      {},
    ];
  }
  return [RUNTIME_BINARIES.bun, ["--no-install", file], { NODE_EXTRA_CA_CERTS: caCerts }];
}

describe("code blocks in the README and docs/ run as copied", { timeout: 600_000 }, () => {
  for (const block of blocks()) {
    for (const runtime of block.runtimes) {
      const name = `${
        relative(ROOT, join(ROOT, block.file)).replaceAll(/[/.]/g, "_")
      }_${block.line}_${runtime}`;
      test(`${block.file}:${block.line} (${block.mode}) on ${runtime}`, {
        skip: runtime === "node" ? false : skipUnlessRuntime(runtime),
        timeout: 60_000,
      }, async () => {
        const file = `${name}.ts`;
        writeFileSync(join(project, file), program(block, name));
        const [command, args, env] = commandFor(runtime, file);
        const result = await run(command, args, { cwd: project, env });
        assert.equal(
          result.code,
          0,
          `${block.file}:${block.line} failed on ${runtime}:\n${result.stderr}${result.stdout}`,
        );
        for (const expected of block.code.matchAll(/console\.log\(.*\);\s*\/\/\s*(.+)$/gm)) {
          assert.ok(
            result.stdout.includes(expected[1].trim()),
            `expected "${expected[1].trim()}" in:\n${result.stdout}`,
          );
        }
      });
    }
  }
});
