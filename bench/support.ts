/**
 * Shared measuring loop for the benches: bounded in count and in time, with a fixed number
 * of operations in flight (WebCrypto and node:crypto's async calls both use libuv's pool).
 * @module
 */

/** The outcome of one measured run. */
export interface Measurement {
  name: string;
  operations: number;
  seconds: number;
  perSecond: number;
}

/** Options of {@link measure}. */
export interface MeasureOptions {
  /** Stop after this many operations. */
  maxOperations?: number;
  /** Stop after this many seconds. */
  maxSeconds?: number;
  /** Operations in flight at once. */
  concurrency?: number;
  /** Operations run first and not counted. */
  warmup?: number;
}

/** Runs `operation` until the count or time bound is reached and reports the rate. */
export async function measure(
  name: string,
  operation: (i: number) => Promise<unknown> | unknown,
  options: MeasureOptions = {},
): Promise<Measurement> {
  const maxOperations = options.maxOperations ?? 20_000;
  const maxSeconds = options.maxSeconds ?? 3;
  const concurrency = options.concurrency ?? 8;
  for (let i = 0; i < (options.warmup ?? 50); i++) await operation(i);
  let started = 0;
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + maxSeconds * 1000;
  const worker = async () => {
    while (started < maxOperations && performance.now() < deadline) {
      await operation(started++);
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { name, operations: done, seconds, perSecond: done / seconds };
}

/** Prints measurements as a table with the ratio of each `ours` to its `peer`. */
export function printComparison(rows: { what: string; ours: Measurement; peer: Measurement }[]): void {
  const fmt = (n: number) => n.toFixed(0).padStart(9);
  console.log(
    `${"operation".padEnd(28)} ${"meshauth/s".padStart(10)} ${"peer/s".padStart(9)} ${
      "ratio".padStart(6)
    }  peer`,
  );
  for (const { what, ours, peer } of rows) {
    console.log(
      `${what.padEnd(28)} ${fmt(ours.perSecond).padStart(10)} ${fmt(peer.perSecond)} ${
        (ours.perSecond / peer.perSecond).toFixed(2).padStart(6)
      }  ${peer.name}`,
    );
  }
}
