// A documentation walkthrough, run as written: the shell blocks between `<!-- doc-test: begin -->`
// and `<!-- doc-test: end -->`, in order, in one directory; a block marked
// `<!-- doc-test: background "<text>" -->` keeps running (a server) until `<text>` appears in its
// output. Used by the tests of the walkthroughs of docs/agent.md, docs/operations.md and docs/proxy.md.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";

export interface Block {
  script: string;
  /** For a block that keeps running: the output that says it is ready. */
  waitFor?: string;
}

/** The shell blocks between `<!-- doc-test: begin -->` and `<!-- doc-test: end -->`. */
export function walkthrough(markdown: string): Block[] {
  const section = markdown.slice(
    markdown.indexOf("<!-- doc-test: begin -->"),
    markdown.indexOf("<!-- doc-test: end -->"),
  );
  const blocks: Block[] = [];
  const pattern = /(?:<!-- doc-test: background "((?:[^"\\]|\\.)*)" -->\s*)?```sh\n([\s\S]*?)```/g;
  for (const m of section.matchAll(pattern)) {
    blocks.push({ script: m[2], waitFor: m[1]?.replaceAll('\\"', '"') });
  }
  return blocks;
}

const background: ChildProcess[] = [];

/**
 * Stops every background process started (SIGTERM, then SIGKILL after 5 s); resolves once each
 * has exited and its output is all read (its last lines are in what `startBackground` gave).
 */
export async function stopBackground(): Promise<void> {
  for (const child of background.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const closed = new Promise((resolve) => child.once("close", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await closed;
      clearTimeout(timer);
    }
  }
}

/** Starts a block that keeps running; resolves with its output once `waitFor` appears. */
export function startBackground(
  script: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
  waitFor: string,
): Promise<string[]> {
  const child = spawn("sh", ["-c", `exec ${script.trim()}`], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  background.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${waitFor} from ${script}:\n${lines.join("\n")}`)),
      60_000,
    );
    const onData = (d: unknown) => {
      lines.push(...String(d).split("\n"));
      if (lines.some((l) => l.includes(waitFor))) {
        clearTimeout(timer);
        resolve(lines);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    // Once its output is all read (an exit can be seen before the last of it): why it failed
    // is in the message.
    child.once("close", (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code}:\n${lines.join("\n")}`));
    });
  });
}

/** Runs a block with `sh -e`; its exit code and its output. */
export function runShell(
  script: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      "sh",
      ["-ec", script],
      { cwd, env, timeout: 60_000, encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err
          ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1)
          : 0;
        resolve({ code, output: `${stdout}${stderr}` });
      },
    );
  });
}

/** The `url` of the first JSON log line `"msg":"listening"`. */
export function listeningUrl(lines: string[]): string {
  for (const line of lines) {
    try {
      const entry = JSON.parse(line);
      if (entry.msg === "listening") return entry.url;
    } catch {
      // not a log line
    }
  }
  throw new Error(`no listening line in:\n${lines.join("\n")}`);
}

/**
 * The environment a walkthrough runs in from the checkout at `root` (its path, ending in `/`):
 * `npm run ca` and `npx meshauth` run what package.json says they run (its ca script and its
 * bin's source, through tsx), from shims in `<dir>/.bin`, so that the state stays in `dir`; the
 * CA's and the agent's ports are 0 (free ones, read from their `listening` lines), and no join
 * token comes from the caller's environment.
 */
export async function checkoutEnv(dir: string, root: string): Promise<NodeJS.ProcessEnv> {
  const bin = join(dir, ".bin");
  await mkdir(bin);
  const tsx = createRequire(join(root, "package.json")).resolve("tsx");
  const shims = {
    npm:
      `[ "$1 $2" = "run ca" ] || exit 127\nshift 2\n[ "$1" = "--" ] && shift\nexec node --import "${tsx}" "${root}cli/dev-ca.ts" "$@"`,
    npx: `[ "$1" = meshauth ] || exit 127\nshift\nexec node --import "${tsx}" "${root}cli/main.ts" "$@"`,
  };
  for (const [name, body] of Object.entries(shims)) {
    await writeFile(join(bin, name), `#!/bin/sh\n${body}\n`);
    await chmod(join(bin, name), 0o755);
  }
  return {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    MESHAUTH_LISTEN_PORT: "0",
    MESHAUTH_AGENT_LISTEN_PORT: "0",
    MESHAUTH_JOIN_TOKEN: "",
  };
}
