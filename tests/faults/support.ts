// The fault harness: processes started again and again and killed with SIGKILL at random
// moments, HTTPS calls that answer status 0 (never throw) when the peer is gone, and the
// short/long switch. `npm test` runs the short variant (a few kill points per component);
// `npm run test:faults` sets MESHAUTH_FAULTS=long (at least 200 kill points per component).
import { type ChildProcess, spawn } from "node:child_process";
import { request } from "node:https";
import { connect, createServer, type Server, type Socket } from "node:net";
import { ROOT } from "../ca-server/helpers.ts";

/** True for the long variant (`npm run test:faults`). */
export const IS_LONG = process.env.MESHAUTH_FAULTS === "long";

const FORCED_KILLS = Number(process.env.MESHAUTH_FAULT_KILLS);
const IS_KILL_COUNT_FORCED = Number.isSafeInteger(FORCED_KILLS) && FORCED_KILLS > 0;

/** How many kill points a run makes: `short` in npm test, `long` in the long variant (or MESHAUTH_FAULT_KILLS). */
export function killPoints(short: number, long = 200): number {
  if (IS_KILL_COUNT_FORCED) return FORCED_KILLS;
  return IS_LONG ? long : short;
}

/** A time bound for a test of the short or long variant. */
export function timeoutMs(shortMs: number, longMs: number): number {
  return IS_LONG ? longMs : shortMs;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A uniformly random whole number in [min, max). */
export const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min));

/** A started process, its JSON log lines, and when it was ready. */
export interface RunningProcess {
  child: ChildProcess;
  pid: number;
  /** Every stdout line parsed as JSON (others are kept as `{ text }`). */
  logs: Record<string, unknown>[];
  stderr: string[];
  /** Resolves once the ready line came; rejects if the process exits before it. */
  ready: Promise<void>;
  isReady(): boolean;
  /** Resolves with the exit code (null for a signal) once the process has exited. */
  exited: Promise<number | null>;
  hasExited(): boolean;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/** Starts `args` (after `node --import tsx`) in the checkout; `isReadyLine` recognises the ready log line. */
export function startProcess(
  args: string[],
  options: {
    env?: Record<string, string>;
    isReadyLine: (entry: Record<string, unknown>) => boolean;
    /** Prefix the command (e.g. `faketime -f -5m`). */
    wrapper?: string[];
    command?: string[];
  },
): RunningProcess {
  const base = options.command ?? [process.execPath, "--import", "tsx"];
  const command = [...(options.wrapper ?? []), ...base, ...args];
  const child = spawn(command[0], command.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let isReady = false;
  let hasExited = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      hasExited = true;
      resolve(code);
    })
  );
  const ready = new Promise<void>((resolve, reject) => {
    let buffered = "";
    child.stdout!.on("data", (d) => {
      buffered += d;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line);
        } catch {
          entry = { text: line };
        }
        logs.push(entry);
        if (!isReady && options.isReadyLine(entry)) {
          isReady = true;
          resolve();
        }
      }
    });
    child.stderr!.on("data", (d) => stderr.push(String(d)));
    void exited.then((code) => {
      if (!isReady) {
        reject(new Error(`${args.join(" ")} exited (${code}) before it was ready:\n${stderr.join("")}`));
      }
    });
  });
  ready.catch(() => {});
  return {
    child,
    pid: child.pid!,
    logs,
    stderr,
    ready,
    isReady: () => isReady,
    exited,
    hasExited: () => hasExited,
    async kill() {
      if (!hasExited) child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (hasExited) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** What a kill loop did. */
export interface KillReport {
  kills: number;
  /** Kills that came before the process was ready (during its start). */
  killedStarting: number;
  /** For each start that came up (the last one included): milliseconds from spawn to its ready line. */
  readyMs: number[];
  /** Exits the loop did not cause (a crash): each with its code and stderr. */
  crashes: string[];
}

/**
 * Starts a process, lets it live a random time (from 0, so some kills land in its start-up,
 * to `maxLifeMs` after it is ready), kills it with SIGKILL, and again, `points` times; each
 * process it starts is handed to `onStart`. Ends with a process running (answered).
 */
export async function killLoop(options: {
  points: number;
  start: () => RunningProcess;
  /** A process already started, for the first kill point. */
  first?: RunningProcess;
  maxLifeMs: number;
  /** Names the run in the progress lines the long variant prints on stderr. */
  label?: string;
  onStart?: (process: RunningProcess) => void;
  onKilled?: (index: number) => void | Promise<void>;
}): Promise<{ report: KillReport; last: RunningProcess }> {
  const report: KillReport = { kills: 0, killedStarting: 0, readyMs: [], crashes: [] };
  let running: RunningProcess | undefined;
  try {
    return await killAgain(options, report, (process) => running = process);
  } catch (err) {
    // A check that failed leaves no process behind to keep the test's process alive.
    await running?.kill();
    throw err;
  }
}

async function killAgain(
  options: Parameters<typeof killLoop>[0],
  report: KillReport,
  started: (process: RunningProcess) => void,
): Promise<{ report: KillReport; last: RunningProcess }> {
  const startedAt = Date.now();
  const isShowingProgress = IS_LONG || IS_KILL_COUNT_FORCED;
  for (let i = 0; i < options.points; i++) {
    if (isShowingProgress && i > 0 && i % 10 === 0) {
      process.stderr.write(
        `${options.label ?? "kill loop"}: ${report.kills}/${options.points} kills ` +
          `(${report.killedStarting} in start-up) in ${((Date.now() - startedAt) / 1000).toFixed(0)} s\n`,
      );
    }
    const spawnedAt = Date.now();
    const running = i === 0 && options.first ? options.first : options.start();
    started(running);
    if (running !== options.first) {
      void running.ready.then(() => report.readyMs.push(Date.now() - spawnedAt), () => {});
    }
    if (running !== options.first) options.onStart?.(running);
    // Half the kills anywhere from the spawn on (start-up included), half once it serves.
    if (Math.random() < 0.5) await running.ready.catch(() => {});
    await Promise.race([sleep(randomInt(0, options.maxLifeMs)), running.exited]);
    if (running.hasExited()) {
      report.crashes.push(`exit ${await running.exited}: ${running.stderr.join("").slice(0, 2000)}`);
      continue;
    }
    if (!running.isReady()) report.killedStarting++;
    await running.kill();
    report.kills++;
    await options.onKilled?.(i);
  }
  const lastSpawnedAt = Date.now();
  const last = options.start();
  started(last);
  options.onStart?.(last);
  await last.ready;
  report.readyMs.push(Date.now() - lastSpawnedAt);
  return { report, last };
}

/** An HTTPS answer; status 0 when the connection failed or timed out. */
export interface HttpsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json?: any;
  error?: string;
}

/** One HTTPS request on a connection of its own (the CA's roots trusted; a client certificate if given). */
export function httpsCall(
  url: string,
  init: {
    method?: string;
    bearer?: string;
    body?: unknown;
    ca: string;
    cert?: string;
    key?: string;
    timeoutMs?: number;
  },
): Promise<HttpsAnswer> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = {};
    if (init.bearer) headers.authorization = `Bearer ${init.bearer}`;
    const payload = init.body === undefined ? undefined : JSON.stringify(init.body);
    if (payload) headers["content-type"] = "application/json";
    let settled = false;
    const finish = (answer: HttpsAnswer) => {
      if (settled) return;
      settled = true;
      resolve(answer);
    };
    const req = request(url, {
      method: init.method ?? "GET",
      headers,
      ca: init.ca,
      cert: init.cert,
      key: init.key,
      agent: false,
      timeout: init.timeoutMs ?? 10_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", (err) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message }));
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        let json: unknown;
        if (/json/.test(String(res.headers["content-type"] ?? ""))) {
          try {
            json = JSON.parse(body.toString());
          } catch {
            json = undefined;
          }
        }
        finish({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (err) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message }));
    req.end(payload);
  });
}

/** Reads /proc for a process's resident memory (KiB) and open file descriptors. */
export async function processFootprint(pid: number): Promise<{ rssKiB: number; fds: number }> {
  const { readFile, readdir } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  return { rssKiB, fds };
}

/**
 * A TCP relay in front of a server that can be cut as a network partition cuts: while cut,
 * nothing passes either way (the bytes wait, as unacknowledged segments would), and new
 * connections are accepted but reach nothing; once healed, everything held goes through.
 * A peer sees a partition, not a refusal: no reset, no close.
 */
export class Partition {
  #isCut = false;
  readonly #pairs = new Set<{ client: Socket; upstream?: Socket }>();
  readonly #waiting: (() => void)[] = [];
  readonly server: Server;

  private constructor(readonly targetPort: number) {
    this.server = createServer((client) => this.#accept(client));
  }

  /** The relay's port on 127.0.0.1. */
  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** A relay on 127.0.0.1 (port 0) to `targetPort`. */
  static async open(targetPort: number): Promise<Partition> {
    const partition = new Partition(targetPort);
    await new Promise<void>((resolve) => partition.server.listen(0, "127.0.0.1", resolve));
    return partition;
  }

  #accept(client: Socket): void {
    const pair: { client: Socket; upstream?: Socket } = { client };
    this.#pairs.add(pair);
    client.on("error", () => {});
    client.on("close", () => {
      this.#pairs.delete(pair);
      pair.upstream?.destroy();
    });
    const link = () => {
      if (client.destroyed) return;
      const upstream = connect(this.targetPort, "127.0.0.1");
      pair.upstream = upstream;
      upstream.on("error", () => client.destroy());
      upstream.on("close", () => client.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    };
    if (this.#isCut) {
      client.pause();
      this.#waiting.push(link);
    } else link();
  }

  /** Nothing passes from now on. */
  cut(): void {
    this.#isCut = true;
    for (const { client, upstream } of this.#pairs) {
      if (upstream) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        upstream.pause();
      }
      client.pause();
    }
  }

  /** Everything passes again, what was held included. */
  heal(): void {
    this.#isCut = false;
    for (const { client, upstream } of this.#pairs) {
      if (!upstream) continue;
      client.pipe(upstream);
      upstream.pipe(client);
    }
    for (const link of this.#waiting.splice(0)) link();
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.#pairs) {
      client.destroy();
      upstream?.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** "p50 X s, max Y s" of the times from spawn to ready in `report`. */
export function readyTimes(report: KillReport): string {
  const sorted = [...report.readyMs].sort((a, b) => a - b);
  const seconds = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(1)} s`;
  return `spawn to ready p50 ${seconds(sorted[Math.floor(sorted.length / 2)])}, max ${
    seconds(sorted.at(-1))
  }`;
}
