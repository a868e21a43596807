// Starts a throwaway PostgreSQL (Debian's binaries) on 127.0.0.1 with its socket and data in a
// temporary directory, as the postgres user when the tests run as root, and stops it after.
import { chownSync, existsSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { run, tempDir } from "./helpers.ts";

export interface TestPostgres {
  url: string;
  port: number;
  /** Stops the server at once, as a crash would (`pg_ctl stop -m immediate`): crash recovery at the next start. */
  crash(): Promise<void>;
  /** Starts it again on the same port after {@link crash}. */
  restart(): Promise<void>;
  /** Stops the server and removes its files; later calls do nothing. */
  stop(): Promise<void>;
}

function binDir(): string {
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base)
    ? readdirSync(base).filter((v) => existsSync(join(base, v, "bin/initdb")))
    : [];
  if (versions.length === 0) throw new Error("PostgreSQL is not installed (apt-get install postgresql)");
  return join(base, versions.sort((a, b) => Number(a) - Number(b)).at(-1)!, "bin");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** Initialises and starts a cluster; bounded by the commands' timeouts. */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = binDir();
  const dir = await tempDir("meshauth-pg-");
  const data = join(dir.path, "data");
  const isRoot = process.getuid?.() === 0;
  // PostgreSQL refuses to run as root: run its commands as the postgres user on a dir it owns.
  const as = (cmd: string, args: string[]) =>
    isRoot ? run("runuser", ["-u", "postgres", "--", cmd, ...args]) : run(cmd, args);
  if (isRoot) {
    const { uid, gid } = await postgresIds();
    chownSync(dir.path, uid, gid);
  }
  const init = await as(join(bin, "initdb"), [
    "-D",
    data,
    "-U",
    "meshauth",
    "--auth=trust",
    "-E",
    "UTF8",
    "--no-sync",
  ]);
  if (init.code !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const options = `-p ${port} -k ${dir.path} -h 127.0.0.1 -c fsync=off -c max_connections=60`;
  const startServer = async () => {
    const start = await as(join(bin, "pg_ctl"), [
      "-D",
      data,
      "-o",
      options,
      "-l",
      join(dir.path, "log"),
      "-w",
      "-t",
      "30",
      "start",
    ]);
    if (start.code !== 0) throw new Error(`pg_ctl start failed: ${start.stderr}${start.stdout}`);
  };
  await startServer();
  const created = await as(join(bin, "createdb"), [
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-U",
    "meshauth",
    "meshauth",
  ]);
  if (created.code !== 0) throw new Error(`createdb failed: ${created.stderr}`);
  let stopped = false;
  return {
    url: `postgres://meshauth@127.0.0.1:${port}/meshauth`,
    port,
    async crash() {
      const r = await as(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "-t", "30", "stop"]);
      if (r.code !== 0) throw new Error(`pg_ctl stop failed: ${r.stderr}${r.stdout}`);
    },
    restart: startServer,
    async stop() {
      if (stopped) return;
      stopped = true;
      await as(join(bin, "pg_ctl"), ["-D", data, "-m", "fast", "-w", "-t", "30", "stop"]);
      await dir.remove();
    },
  };
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const r = await run("id", ["-u", "postgres"]);
  const g = await run("id", ["-g", "postgres"]);
  if (r.code !== 0) throw new Error("no postgres user to run PostgreSQL as");
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}
