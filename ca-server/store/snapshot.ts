/**
 * The file store's snapshot: the certificates of the index at a compaction, so that start-up
 * reads them and the journal segments archived after it rather than every segment ever
 * written. `snapshot.jsonl` is a header line, then one certificate per line as a JSON array
 * (times in milliseconds since the epoch):
 *
 * ```
 * {"version":1,"segment":12,"createdAt":"2026-12-01T10:00:00.000Z"}
 * ["5f3a...","spiffe://td/ns/a/sa/b",1764583200000,1764586800000,1764583230000,"token:ab12...","join-token","9c1d..."]
 * ```
 *
 * `segment` is the last archived journal segment whose records it holds. It is replaced with
 * `writeFileAtomic` (a temporary file beside it, synced and renamed over the old one), so a
 * crash leaves one whole snapshot or the other, and the next open sweeps the temporary file.
 *
 * @module
 */

import { closeSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../../internal/mod.ts";
import type { IndexedCertificate } from "./certificate-index.ts";
import { parseLine, readLines } from "./lines.ts";
import { StoreError } from "./store.ts";

const NAME = "snapshot.jsonl";
const LINES_PER_WRITE = 4096;

/** Writes a snapshot holding `certificates` and the segments up to `segment`. */
export async function writeSnapshot(
  dir: string,
  segment: number,
  certificates: Iterable<IndexedCertificate>,
): Promise<void> {
  await writeFileAtomic(join(dir, NAME), snapshotChunks(segment, certificates), 0o600);
}

/** The snapshot's lines, some thousands at a time: serving goes on while a large one is written. */
async function* snapshotChunks(segment: number, certificates: Iterable<IndexedCertificate>) {
  yield `${JSON.stringify({ version: 1, segment, createdAt: new Date().toISOString() })}\n`;
  let lines: string[] = [];
  for (const c of certificates) {
    lines.push(
      JSON.stringify([
        c.serialNumber,
        c.spiffeId,
        c.notBefore,
        c.notAfter,
        c.issuedAt,
        c.requester,
        c.method,
        c.authorityId,
      ]),
    );
    if (lines.length === LINES_PER_WRITE) {
      yield `${lines.join("\n")}\n`;
      lines = [];
    }
  }
  if (lines.length > 0) yield `${lines.join("\n")}\n`;
}

/**
 * Reads the snapshot into `onCertificate` and answers the last segment it holds, or
 * `undefined` when there is none yet (a new store, or one written before snapshots existed).
 */
export async function readSnapshot(
  dir: string,
  onCertificate: (c: IndexedCertificate) => void,
): Promise<number | undefined> {
  const path = join(dir, NAME);
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let segment: number | undefined;
  let damaged = 0;
  try {
    await readLines(fd, 0, (line) => {
      const value = parseLine(line);
      if (segment === undefined) {
        const header = value as { version?: unknown; segment?: unknown } | undefined;
        if (header?.version !== 1 || !Number.isSafeInteger(header.segment)) {
          throw new StoreError(`${path} has an unknown layout; restore it from a backup`);
        }
        segment = header.segment as number;
        return;
      }
      if (!Array.isArray(value) || value.length !== 8 || typeof value[0] !== "string") {
        damaged++;
        return;
      }
      const [serialNumber, spiffeId, notBefore, notAfter, issuedAt, requester, method, authorityId] = value;
      onCertificate({
        serialNumber,
        spiffeId,
        notBefore,
        notAfter,
        issuedAt,
        requester,
        method,
        authorityId,
      });
    });
  } finally {
    closeSync(fd);
  }
  // Written whole and renamed into place: a line that does not parse is damage to the disk.
  if (segment === undefined || damaged > 0) {
    throw new StoreError(`${path} is damaged (${damaged} unreadable lines); restore it from a backup`);
  }
  return segment;
}

/** The last segment the current snapshot holds (0 when there is none), from its first line. */
export function snapshotSegment(dir: string): number {
  let fd: number;
  try {
    fd = openSync(join(dir, NAME), "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw err;
  }
  try {
    const head = new Uint8Array(256);
    const n = readSync(fd, head, 0, head.length, 0);
    const header = parseLine(head.subarray(0, Math.max(0, head.subarray(0, n).indexOf(0x0a))));
    const segment = (header as { segment?: unknown } | undefined)?.segment;
    if (!Number.isSafeInteger(segment)) throw new StoreError(`${join(dir, NAME)} has an unknown layout`);
    return segment as number;
  } finally {
    closeSync(fd);
  }
}
