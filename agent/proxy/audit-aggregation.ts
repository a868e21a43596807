/**
 * Audit records about peers without a verified identity (plain text in PERMISSIVE mode, a peer
 * whose SVID did not verify, plain text refused in STRICT mode) are written at most once per
 * source address per interval: anyone who can reach a listener can make them, as fast as they
 * can connect. The first such record of an interval is written whole; the rest of that interval
 * are counted, and at its end one summary record says how many there were (`repeated`, `since`).
 * Addresses are grouped as an attacker would spread them: IPv4 by address, IPv6 by /64 prefix;
 * beyond `maxSources` groups in one interval, every further source shares one group (`*`). So
 * the records written per interval are bounded whatever the peers do, and a verified peer's
 * decisions, which name who made them, are still written one by one.
 *
 * @module
 */

import type { AuditRecord } from "./audit.ts";

interface Window {
  first: AuditRecord;
  source: string;
  folded: number;
  last: string;
}

/** What {@link UnverifiedAudit} writes to, and how often. */
export interface UnverifiedAuditOptions {
  intervalMs: number;
  /** Source groups kept apart per interval; default 1000. */
  maxSources?: number;
  /** Writes one record. */
  write(record: AuditRecord): void;
  /** Called for each record folded into a summary instead of written. */
  folded(record: AuditRecord): void;
}

/** The per-interval, per-source rate limit on unverified peers' audit records. */
export class UnverifiedAudit {
  readonly #windows = new Map<string, Window>();
  readonly #sources = new Set<string>();
  readonly #maxSources: number;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(readonly options: UnverifiedAuditOptions) {
    this.#maxSources = options.maxSources ?? 1000;
  }

  /** Writes `record`, or counts it when one like it was written this interval. */
  add(record: AuditRecord): void {
    let source = sourceGroup(record.source);
    if (!this.#sources.has(source) && this.#sources.size >= this.#maxSources) source = "*";
    this.#sources.add(source);
    const key = [
      record.listener,
      record.direction,
      record.decision,
      record.reason,
      record.policy ?? "",
      record.transport,
      source,
    ].join("\u0000");
    const window = this.#windows.get(key);
    if (window) {
      window.folded++;
      window.last = record.time;
      this.options.folded(record);
      return;
    }
    this.#windows.set(key, { first: record, source, folded: 0, last: record.time });
    this.options.write(record);
    if (!this.#timer) {
      this.#timer = setTimeout(() => this.flush(), this.options.intervalMs);
      this.#timer.unref?.();
    }
  }

  /** Ends the interval: writes a summary for every group that had more than its first record. */
  flush(): void {
    for (const window of this.#windows.values()) {
      if (window.folded === 0) continue;
      this.options.write({
        ...window.first,
        time: window.last,
        source: window.source,
        repeated: window.folded,
        since: window.first.time,
      });
    }
    this.#windows.clear();
    this.#sources.clear();
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** `10.1.2.3:5555` -> `10.1.2.3`; `[2001:db8:1:2:aa::1]:5555` -> `2001:db8:1:2::/64`. */
export function sourceGroup(source: string | undefined): string {
  if (source === undefined) return "local";
  if (!source.startsWith("[")) return source.replace(/:\d+$/, "");
  const address = source.slice(1, source.indexOf("]")).toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (mapped) return mapped[1];
  const [head, tail] = address.split("::") as [string, string | undefined];
  const front = head ? head.split(":") : [];
  const back = tail ? tail.split(":") : [];
  const groups = tail === undefined
    ? front
    : [...front, ...Array(8 - front.length - back.length).fill("0"), ...back];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}
