/**
 * Reading JSON-lines files in bounded chunks: never the whole file as one string, so a file of
 * any size (a journal past V8's 512 MiB string limit included) reads in constant memory.
 *
 * @module
 */

import { readSync } from "node:fs";

/** Bytes read per system call. */
const CHUNK_BYTES = 1 << 20;
/** A line longer than this is damage (no record is near it): it is skipped whole. */
export const MAX_LINE_BYTES = 1 << 20;
/** Bytes read between two turns of the event loop. */
const YIELD_EVERY_BYTES = 16 << 20;

function concat(a: Uint8Array | undefined, b: Uint8Array): Uint8Array {
  if (!a) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Hands each complete line of `fd` from byte `offset` on to `onLine` (without its newline; the
 * bytes are only valid during the call) and answers the offset just after the last complete
 * line. An unfinished last line (a write in progress, or torn by a crash) is left for the next
 * call. Empty lines are skipped.
 */
export async function readLines(
  fd: number,
  offset: number,
  onLine: (line: Uint8Array) => void,
): Promise<number> {
  const buffer = new Uint8Array(CHUNK_BYTES);
  let position = offset;
  let consumed = offset;
  let carry: Uint8Array | undefined;
  let isSkipping = false;
  let sinceYield = 0;
  for (;;) {
    const n = readSync(fd, buffer, 0, CHUNK_BYTES, position);
    if (n === 0) break;
    const chunk = buffer.subarray(0, n);
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      if (!isSkipping) {
        const line = carry ? concat(carry, chunk.subarray(start, nl)) : chunk.subarray(start, nl);
        if (line.length > 0 && line.length <= MAX_LINE_BYTES) onLine(line);
      }
      isSkipping = false;
      carry = undefined;
      start = nl + 1;
      consumed = position + nl + 1;
    }
    if (start < n && !isSkipping) {
      carry = concat(carry, chunk.subarray(start));
      if (carry.length > MAX_LINE_BYTES) {
        carry = undefined;
        isSkipping = true;
      }
    }
    position += n;
    sinceYield += n;
    if (sinceYield >= YIELD_EVERY_BYTES) {
      sinceYield = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return consumed;
}

const decoder = new TextDecoder();

/** Parses one line as JSON; `undefined` for a line that is not (torn by a crash). */
export function parseLine(line: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(line));
  } catch {
    return undefined;
  }
}

/** True when `line` starts with the bytes of `prefix` (ASCII), without decoding it. */
export function startsWith(line: Uint8Array, prefix: Uint8Array): boolean {
  if (line.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (line[i] !== prefix[i]) return false;
  return true;
}
