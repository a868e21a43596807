/**
 * Timers for the agent's schedules: unref'd (the daemon stays alive by its listener, and a
 * library user decides with `keepAlive`), and re-armed for waits longer than `setTimeout`'s
 * 32-bit millisecond limit (about 24.8 days), which it would otherwise fire at once.
 *
 * @module
 */

const MAX_DELAY_MS = 0x7fffffff;

/** A pending call that can be cancelled. */
export interface Timer {
  cancel(): void;
}

/** Calls `fn` at `at` (a Date or epoch milliseconds), or now if that has passed. */
export function callAt(at: Date | number, fn: () => void): Timer {
  const due = typeof at === "number" ? at : at.getTime();
  let handle: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    const delay = Math.min(Math.max(0, due - Date.now()), MAX_DELAY_MS);
    handle = setTimeout(() => {
      if (Date.now() < due) return arm();
      handle = undefined;
      fn();
    }, delay);
    (handle as { unref?: () => void }).unref?.();
  };
  arm();
  return {
    cancel() {
      if (handle) clearTimeout(handle);
      handle = undefined;
    },
  };
}

/** Calls `fn` after `ms` milliseconds. */
export function callAfter(ms: number, fn: () => void): Timer {
  return callAt(Date.now() + ms, fn);
}

/**
 * Keeps the process alive until released: a library's background renewals should not end a
 * script that only started them, so the rotator and the agent hold one of these while running.
 */
export function holdProcessOpen(): () => void {
  const handle = setInterval(() => {}, 1 << 30);
  return () => clearInterval(handle);
}
