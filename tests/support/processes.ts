// Child processes a test starts, so that none outlives its test file and no wait on one is
// endless. Each child leads a process group of its own, and a kill goes to the group: whatever
// it started (a shell's command, npm's script) ends with it. Every child still running is
// killed by `killStartedProcesses` (a test file's `after`) and, as a last resort, when the test
// file's process exits: a child left running by a test that failed early holds the file's event
// loop open (its pipes and its handle), and the runner then waits for the file for ever.
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";

const started = new Set<ChildProcess>();

process.once("exit", () => {
  for (const child of started) killGroup(child);
});
// Its own group keeps a child out of the terminal's Ctrl-C and the runner's SIGTERM: pass them on,
// then die of the signal as before.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    for (const child of started) killGroup(child);
    process.kill(process.pid, signal);
  });
}

/** True once `child` has exited (by itself or by a signal). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Spawns `command` as the leader of a new process group (stdin ignored, stdout and stderr piped
 * unless `options.stdio` says otherwise), remembered until it exits.
 */
export function spawnInGroup(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options, detached: true });
  started.add(child);
  child.once("exit", () => started.delete(child));
  // A spawn that fails (no such command) emits "error" and never "exit".
  child.once("error", () => started.delete(child));
  return child;
}

/** Sends `signal` to the child's process group (to the child alone if that fails). */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): void {
  if (hasExited(child) || child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

/**
 * Waits for `awaited` at most `timeoutMs`, else fails with
 * `timed out after <ms> ms waiting for <what>`.
 */
export async function within<T>(awaited: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([awaited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `child` has exited (at once if it has). */
export function exitOf(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * Kills the process group of every child started here that still runs, and waits (at most
 * `timeoutMs` each) until each has exited.
 */
export async function killStartedProcesses(timeoutMs = 10_000): Promise<void> {
  for (const child of [...started]) {
    const exited = exitOf(child);
    killGroup(child);
    await within(
      exited,
      timeoutMs,
      `process ${child.pid} (${child.spawnargs.join(" ")}) to exit after SIGKILL`,
    );
  }
}
