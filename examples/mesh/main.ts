/**
 * `npm start`: the seed's whole mesh on this machine, with no configuration. It starts the CA
 * (a process and a data directory of its own, standing for its own namespace), one node agent
 * with its mutual-TLS proxy and its live status page, and the seed's three services; plays the
 * seed's story, printing each step in plain words; then keeps the mesh running and prints the
 * commands to poke at it, until Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) ends
 * everything. Sockets directories left by a run that could not clean up (SIGKILL) are removed at
 * the next start.
 *
 * State goes to `./.meshauth/mesh/` (`MESHAUTH_MESH_DIR`), made afresh on each run. Ports are
 * fixed so the printed commands stay the same from run to run: 15000 to 15030 on 127.0.0.1
 * (`MESHAUTH_MESH_PORT` moves the block; 0 takes free ports).
 *
 * @module
 */

import { createWriteStream } from "node:fs";
import { chmod, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { loadAgentConfig, type RunningAgent, startAgentDaemon } from "../../agent/mod.ts";
import { jsonLogger } from "../../internal/mod.ts";
import { type App, startApps } from "./apps.ts";
import { type CaProcess, prepareCa, startCaProcess } from "./ca-process.ts";
import {
  DEFAULT_BASE_PORT,
  type MeshLayout,
  meshLayout,
  type MeshPorts,
  meshPorts,
  NODE,
  TRUST_DOMAIN,
  type WorkloadName,
  WORKLOADS,
  writeMeshFiles,
} from "./layout.ts";
import { createSocketsDir, isAlive, removeDeadSocketsDirs } from "./sockets-dir.ts";
import { type Mesh, playStory } from "./story.ts";
import { Terminal } from "./terminal.ts";

const HELP = `usage: npm start

Runs the seed's mesh on this machine: the CA (its own process and data directory), one node
agent with its mutual-TLS proxy and live status page, and the three services photo-frontend,
photo-backend (photo-ns) and datastore (datastore-ns). Plays the seed's story, then keeps
running for you to poke at, until Ctrl-C.

Environment:
  MESHAUTH_MESH_DIR    where its state goes, made afresh each run (default .meshauth/mesh)
  MESHAUTH_MESH_PORT   the first of its ports on 127.0.0.1 (default ${DEFAULT_BASE_PORT}: the status page;
                       the CA is +1, the inbound listeners +10 to +12, the outbound +21 to +29,
                       the impostor +30); 0 takes free ports
  NO_COLOR             no colours (none either when the output is not a terminal)

"npm run ca" runs the development CA alone.`;

function basePort(): number {
  const text = process.env.MESHAUTH_MESH_PORT;
  if (text === undefined || text === "") return DEFAULT_BASE_PORT;
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535 - 30) {
    throw new Error(
      `MESHAUTH_MESH_PORT: expected 0 or a port up to ${65535 - 30}, got ${JSON.stringify(text)}`,
    );
  }
  return port;
}

function pokeCommands(term: Terminal, layout: MeshLayout): void {
  const p = layout.ports;
  const files = (name: WorkloadName) => layout.shown(layout.workloadDir(name));
  const frontend = files("photo-frontend");
  term.line();
  term.line(term.paint("bold", "The mesh keeps running. Poke at it:"));
  term.line();
  term.line(`  status page         ${term.paint("cyan", `http://127.0.0.1:${p.status}/`)}`);
  term.line(
    `  as photo-frontend   curl http://127.0.0.1:${p.frontendToBackend}/photos            # to photo-backend: 200`,
  );
  term.line(
    `                      curl -i http://127.0.0.1:${p.frontendToDatastore}/objects/photos   # to the datastore: 403`,
  );
  term.line(
    `  as photo-backend    curl http://127.0.0.1:${p.backendToDatastore}/objects/photos      # to the datastore: 200`,
  );
  term.line(`  an inbound port, with photo-frontend's files (its key is the credential):`);
  term.line(
    `    printf 'GET /photos HTTP/1.1\\r\\nHost: photo-backend\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -quiet ` +
      `-connect 127.0.0.1:${
        p.inbound["photo-backend"]
      } -cert ${frontend}/cert-chain.pem -key ${frontend}/key.pem ` +
      `-CAfile ${frontend}/root-cert.pem -verify_return_error`,
  );
  term.line(`  metrics             curl http://127.0.0.1:${p.status}/metrics`);
  term.line(
    `  configuration       ${layout.shown(layout.caConfig)}, ${layout.shown(layout.agentConfig)}, ${
      layout.shown(layout.policiesDir)
    }/`,
  );
  term.line(
    `  logs                ${layout.shown(layout.caLog)}, ${layout.shown(layout.agentLog)}, ${
      layout.shown(layout.auditLog)
    }`,
  );
  term.line();
  term.line("Stop with Ctrl-C.");
}

/** What listens on `port`, in the reader's words. */
function roleOf(ports: MeshPorts, port: number): string | undefined {
  const roles: [number, string][] = [
    [ports.status, "the agent's status page"],
    [ports.ca, "the CA"],
    ...WORKLOADS.map(({ name }): [number, string] => [ports.inbound[name], `${name}'s inbound listener`]),
    [ports.frontendToBackend, "photo-frontend's port to photo-backend"],
    [ports.frontendToDatastore, "photo-frontend's port to the datastore"],
    [ports.backendToDatastore, "photo-backend's port to the datastore"],
    [ports.spoofedBackend, "the impostor's route"],
    [ports.impostor, "the impostor"],
  ];
  return roles.find(([p]) => p === port)?.[1];
}

/**
 * A start that failed on a port in use, in npm start's terms: the part's own message names
 * settings (listen.port, MESHAUTH_LISTEN_PORT) that npm start does not read.
 */
function portInUseMessage(message: string, base: number, ports?: MeshPorts): string | undefined {
  if (!/EADDRINUSE|in use/.test(message)) return undefined;
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(message)?.[1] ?? 0);
  const role = ports && port ? roleOf(ports, port) : undefined;
  const what = port ? `127.0.0.1:${port}${role ? ` (${role})` : ""}` : "a port it needs";
  if (base === 0) return `${what} was taken by another process as npm start started; run it again`;
  return `${what} is in use by another process. Its ports are 127.0.0.1:${base} to ${base + 30}: ` +
    `MESHAUTH_MESH_PORT=<first port> npm start moves them, MESHAUTH_MESH_PORT=0 npm start takes free ones`;
}

/** The file that marks a directory as npm start's own, which it may empty on the next run. */
const MARK = ".made-by-npm-start";

/**
 * Empties the state directory of the last run. Only a directory npm start made (or an empty one)
 * is removed: a MESHAUTH_MESH_DIR that points at anything else is refused, never deleted.
 */
async function clearState(root: string): Promise<void> {
  const entries: string[] = await readdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  if (entries.length > 0 && !entries.includes(MARK)) {
    throw new Error(
      `${root} holds files npm start did not make; it empties its state directory on each run, so choose another (MESHAUTH_MESH_DIR)`,
    );
  }
  await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true, mode: 0o700 });
  await writeFile(join(root, MARK), "npm start's state: emptied and made again on each run\n");
}

/**
 * Takes `<root>.lock` (beside the state directory, not in it) for this process: a second npm
 * start on the same directory is refused before it touches anything, whatever ports it would
 * use, rather than emptying the state of the mesh that runs. A lock whose process is gone is
 * taken over. Returns the release.
 */
async function lockState(root: string): Promise<() => Promise<void>> {
  const path = `${root}.lock`;
  await mkdir(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = Number((await readFile(path, "utf8").catch(() => "")).trim());
    if (Number.isSafeInteger(holder) && holder > 0 && isAlive(holder)) {
      throw new Error(
        `npm start already runs on ${root} (process ${holder}); stop it with Ctrl-C first, or give this one ` +
          `another state directory and ports: MESHAUTH_MESH_DIR=<dir> MESHAUTH_MESH_PORT=0 npm start`,
      );
    }
    await rm(path, { force: true });
  }
  throw new Error(`cannot take ${path}: another npm start keeps taking it`);
}

async function main(): Promise<number> {
  if (process.argv.slice(2).some((a) => a === "--help" || a === "-h")) {
    console.log(HELP);
    return 0;
  }
  const term = new Terminal();
  const root = resolve(process.env.MESHAUTH_MESH_DIR || ".meshauth/mesh");
  const base = basePort();

  // Everything started is stopped in reverse order, on a signal or a failure alike.
  let ca: CaProcess | undefined;
  let running: RunningAgent | undefined;
  let apps: Record<WorkloadName, App> | undefined;
  let mesh: Mesh | undefined;
  let socketsDir: string | undefined;
  let ports: MeshPorts | undefined;
  let agentLog: ReturnType<typeof createWriteStream> | undefined;
  let stopping: Promise<void> | undefined;
  let releaseState: (() => Promise<void>) | undefined;
  const stop = () =>
    stopping ??= (async () => {
      await running?.close().catch(() => {});
      await mesh?.impostor?.close();
      await Promise.all(Object.values(apps ?? {}).map((app) => app.close()));
      await ca?.stop();
      if (socketsDir) await rm(socketsDir, { recursive: true, force: true });
      await new Promise((resolve) => agentLog ? agentLog.end(resolve) : resolve(undefined));
      await releaseState?.();
    })();
  let signalled: ((signal: string) => void) | undefined;
  const signal = new Promise<string>((resolve) => (signalled = resolve));
  // Handlers stay installed while everything stops: with \`once\`, a second Ctrl-C (an impatient
  // reader, or a supervisor that signals the whole process group as well as npm) would find no
  // handler and kill this process before it stopped the others and removed its sockets.
  // SIGHUP is the terminal closing: everything stops as for Ctrl-C, or the CA, the services and
  // the sockets directory would outlive it.
  for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(name, () => signalled!(name));
  const stopOnSignal = signal.then(async (name) => {
    // A closed terminal fails writes (EIO): that must not stop the cleanup.
    if (name === "SIGHUP") process.stdout.on("error", () => {});
    term.line();
    term.line(`${name}: stopping the agent and its proxy, the services and the CA...`);
    await stop();
    term.line("stopped; nothing is left running.");
    process.exit(0);
  });

  try {
    // Nothing is touched before both checks: the state directory is this run's alone, and its
    // ports are free.
    releaseState = await lockState(root);
    ports = await meshPorts(base);
    // Sockets directories of earlier runs that were killed (SIGKILL) and could not remove theirs.
    await removeDeadSocketsDirs();
    await clearState(root);
    socketsDir = await createSocketsDir();
    const layout = meshLayout(root, socketsDir, ports);
    await writeMeshFiles(layout);
    const p = layout.ports;
    term.line(term.paint("bold", `meshauth: the seed's mesh on this machine, trust domain ${TRUST_DOMAIN}`));
    term.line(`  state         ${layout.shown(root)}/ (made afresh on each run)`);
    term.line(
      `  CA            https://127.0.0.1:${p.ca}: a process and a data directory of its own ` +
        `(${layout.shown(layout.caDir)}/), as in its own namespace`,
    );
    term.line(
      `  ${
        NODE.padEnd(12)
      }  one node agent with its mutual-TLS proxy; status page http://127.0.0.1:${p.status}/`,
    );
    term.line(
      `  services      photo-frontend, photo-backend (photo-ns), datastore (datastore-ns): HTTP on Unix sockets ` +
        `that only their inbound proxies reach`,
    );

    const prepared = await prepareCa(layout);
    await writeFile(layout.joinTokenFile, `${prepared.nodeToken}\n`, { mode: 0o600 });
    await chmod(layout.joinTokenFile, 0o600);
    ca = await startCaProcess(layout);
    apps = await startApps(layout);
    agentLog = createWriteStream(layout.agentLog, { flags: "a", mode: 0o600 });
    const log = agentLog;
    const agentConfig = await loadAgentConfig({ path: layout.agentConfig });
    // The agent would serve the rest and log the skipped entry; the story needs all three.
    const problem = agentConfig.workloadProblems[0];
    if (problem) {
      throw new Error(
        `${layout.shown(layout.agentConfig)}: ${problem.field ? `${problem.field}: ` : ""}${problem.message}`,
      );
    }
    running = await startAgentDaemon(agentConfig, {
      logger: jsonLogger({ write: (line) => log.write(`${line}\n`) }),
    });
    mesh = { term, layout, running, ca, prepared, apps };
    await Promise.race([playStory(mesh), stopOnSignal]);
    term.line();
    const summary = `${term.outcomes - term.failures} of ${term.outcomes} outcomes as expected.`;
    term.line(term.failures ? term.paint("red", summary) : term.paint("green", summary));
    pokeCommands(term, layout);
  } catch (err) {
    term.line();
    const message = String((err as Error).message);
    term.fail(`npm start: ${portInUseMessage(message, base, ports) ?? message}`);
    await stop();
    return 1;
  }
  await stopOnSignal;
  return 0;
}

process.exitCode = await main();
