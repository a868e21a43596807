/**
 * What every fuzz target shares: the definition of a finding (issue 18) and the oracles.
 *
 * A finding is an exception that is not the entry point's documented error type, an input
 * that takes more than 100 ms (confirmed by a second run, so a GC pause is not one), memory
 * the process cannot bound (the fuzzer's RSS limit), or an input accepted that OpenSSL
 * refuses. Targets throw {@link Finding} (or let the unexpected error escape); Jazzer.js
 * records the input as a crash, and the regression test replays the corpus the same way.
 * @module
 */

import { MeshAuthError } from "../../lib/errors.ts";

/** A property of the entry point that an input broke. */
export class Finding extends Error {
  override name = "Finding";
}

/** One fuzz target: an entry point reading untrusted bytes, and what it must do with them. */
export interface FuzzTarget {
  /** What is fuzzed, for `npm run fuzz -- --list`. */
  description: string;
  /** Whether `check` is synchronous (Jazzer.js runs those with --sync, much faster). */
  sync: boolean;
  /** Throws a Finding (or any unexpected error) when `data` breaks a property. */
  check(data: Uint8Array): void | Promise<void>;
  /** Longest input worth trying (libFuzzer's -max_len). */
  maxLength: number;
}

/** Budget for one input (issue 18): past it, an input is a finding. */
export const SLOW_INPUT_MS = 100;

/**
 * Runs `check` on `data` and turns a refusal of the expected kind into a normal return:
 * `isRefusal` says which errors are the entry point's documented refusals.
 */
export function refusalOnly(err: unknown, isRefusal: (err: unknown) => boolean = isMeshAuthError): void {
  if (isRefusal(err)) return;
  if (err instanceof Finding) throw err;
  throw new Finding(`unexpected ${describeError(err)}`, { cause: err });
}

export function isMeshAuthError(err: unknown): boolean {
  return err instanceof MeshAuthError;
}

export function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * Wraps a target for the fuzzer: a slow input is a finding too. Time is the process's CPU time
 * (user and system), not the wall clock, so two fuzzers sharing a core do not make each other's
 * inputs slow; an input over {@link SLOW_INPUT_MS} is run twice more and is a finding only if
 * every run is over (a garbage collection lands in one run, not in three).
 */
export function timed(target: FuzzTarget): (data: Uint8Array) => void | Promise<void> {
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const used = process.cpuUsage(since);
    return (used.user + used.system) / 1000;
  };
  if (target.sync) {
    return (data: Uint8Array) => {
      let fastest = Infinity;
      for (let run = 0; run < 3 && fastest > SLOW_INPUT_MS; run++) {
        const t0 = process.cpuUsage();
        target.check(data);
        fastest = Math.min(fastest, cpuMs(t0));
      }
      if (fastest > SLOW_INPUT_MS) throw slowFinding(data, fastest);
    };
  }
  return async (data: Uint8Array) => {
    let fastest = Infinity;
    for (let run = 0; run < 3 && fastest > SLOW_INPUT_MS; run++) {
      const t0 = process.cpuUsage();
      await target.check(data);
      fastest = Math.min(fastest, cpuMs(t0));
    }
    if (fastest > SLOW_INPUT_MS) throw slowFinding(data, fastest);
  };
}

function slowFinding(data: Uint8Array, ms: number): Finding {
  return new Finding(
    `input of ${data.length} bytes took ${ms.toFixed(0)} ms of CPU (limit ${SLOW_INPUT_MS} ms)`,
  );
}

/** Text of the input as a peer would send it: UTF-8 with replacement characters. */
export function text(data: Uint8Array): string {
  return new TextDecoder().decode(data);
}
