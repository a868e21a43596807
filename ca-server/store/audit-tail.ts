/**
 * Reading the newest audit events of the file store's journal: from the end of the current
 * segment back through the archived ones, in windows that grow until enough are found, so
 * the cost follows how many events are asked for, not how large the journal is.
 *
 * @module
 */

import { closeSync, fstatSync, openSync } from "node:fs";
import { parseLine, readLines, startsWith } from "./lines.ts";
import { reviveDates } from "./records.ts";
import type { AuditEvent } from "./store.ts";

/** How an audit line starts (`JSON.stringify` keeps the `kind` it was given first). */
export const AUDIT_PREFIX = new TextEncoder().encode('{"kind":"audit"');

async function newestIn(path: string, limit: number): Promise<(AuditEvent & { id?: string })[]> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    for (let window = Math.max(64 * 1024, limit * 1024);; window *= 4) {
      const start = Math.max(0, size - window);
      const found: (AuditEvent & { id?: string })[] = [];
      let isFirst = start > 0;
      await readLines(fd, start, (line) => {
        // A window that starts inside a line: that line is not whole.
        if (isFirst) return void (isFirst = false);
        if (!startsWith(line, AUDIT_PREFIX)) return;
        const { kind: _, ...event } = (reviveDates(parseLine(line)) ?? {}) as Record<string, unknown>;
        found.push(event as unknown as AuditEvent & { id?: string });
      });
      if (found.length >= limit || start === 0) return found.slice(-limit);
    }
  } finally {
    closeSync(fd);
  }
}

/** The last `limit` audit events in `paths` (newest file first), oldest first, each once. */
export async function readAuditTail(paths: string[], limit: number): Promise<AuditEvent[]> {
  const newestFirst: AuditEvent[] = [];
  const seen = new Set<string>();
  for (const path of paths) {
    // As many as asked for from each file: some may be copies of events already taken.
    const events = await newestIn(path, limit);
    for (let i = events.length - 1; i >= 0 && newestFirst.length < limit; i--) {
      const { id, ...event } = events[i];
      // Written twice across a segment rotation: the id tells.
      if (id !== undefined && seen.has(id)) continue;
      if (id !== undefined) seen.add(id);
      newestFirst.push(event);
    }
    if (newestFirst.length >= limit) break;
  }
  return newestFirst.reverse();
}
