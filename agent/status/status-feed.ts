/**
 * What the agent's status page shows, kept as it happens: every workload with its SPIFFE ID,
 * the serial and validity of the SVID it presents, and how many times it was rotated; and the
 * recent events: authorization decisions from the proxy's audit stream (allowed or denied, by
 * which policy and rule), rotations, revocations and trust bundle changes. Browsers follow it
 * with Server-Sent Events (`GET /events`), or read it whole (`GET /status.json`).
 *
 * Everything is bounded: the last {@link StatusFeedOptions.maxEvents} decisions are kept, and
 * apart from them the last {@link StatusFeedOptions.maxLifecycleEvents} other events (issued,
 * rotated, revoked, failed, bundle, removed), so a stream of decisions never pushes those out; events
 * reach the followers in batches at most every {@link StatusFeedOptions.flushIntervalMs}, at
 * most `maxEvents` a batch (a burst of decisions costs one write per follower, and the ones
 * beyond are counted, not sent); at most {@link StatusFeedOptions.maxFollowers} follow at once,
 * and one that does not read is dropped rather than buffered for.
 *
 * @example
 * ```ts
 * import { StatusFeed } from "meshauth/agent";
 * const feed = new StatusFeed({ agent, proxy });
 * console.log(feed.snapshot().workloads.map((w) => `${w.spiffeId} ${w.serialNumber}`));
 * ```
 * @module
 */

import type { ServerResponse } from "node:http";
import type { NodeAgent } from "../node-agent.ts";
import type { AuditRecord } from "../proxy/audit.ts";
import type { MeshProxy } from "../proxy/proxy.ts";
import { formatAddress } from "../proxy/address.ts";

/** One workload as the page shows it. */
export interface WorkloadView {
  /** The workload's name in the agent's configuration. */
  name: string;
  /** Its SPIFFE ID. */
  spiffeId: string;
  /** Where its files are written. */
  directory: string;
  /** The serial (hex) of the SVID the workload holds now; absent before the first one. */
  serialNumber?: string;
  /** The start of that SVID's validity (ISO 8601). */
  notBefore?: string;
  /** The end of that SVID's validity (ISO 8601): the page's bar counts down to it. */
  notAfter?: string;
  /** Its files hold a valid certificate. */
  isReady: boolean;
  /** SVIDs obtained after the first one this process saw (renewals, re-issues after a revocation). */
  rotations: number;
  /** When the last of those came (ISO 8601). */
  lastRotation?: string;
}

/** Something that happened, as the page lists it. */
export type FeedEvent =
  | { kind: "decision"; time: string; record: AuditRecord }
  | {
    kind: "issued" | "rotated" | "revoked";
    time: string;
    workload: string;
    spiffeId: string;
    serialNumber: string;
    previousSerialNumber?: string;
  }
  | { kind: "failed"; time: string; workload: string; cause: string; message: string }
  | { kind: "bundle"; time: string; roots: number; sequence?: number }
  | { kind: "removed"; time: string; workload: string };

/** What `GET /status.json` answers and the page starts from. */
export interface StatusSnapshot {
  /** When the snapshot was taken (ISO 8601), so the page can correct for its own clock. */
  now: string;
  /** The node's SPIFFE ID (empty before it has one). */
  node: string;
  /** The trust domain. */
  trustDomain: string;
  /** Roots in the trust bundle. */
  roots: number;
  /** Every workload, by name. */
  workloads: WorkloadView[];
  /** The proxy's listeners (none without a `proxy:` section). */
  listeners: { name: string; direction: "inbound" | "outbound"; address: string; workload: string }[];
  /** The latest events, oldest first: at most `maxEvents` decisions and `maxLifecycleEvents` others. */
  events: FeedEvent[];
  /** Events not sent to followers because a burst went past a batch's limit. */
  eventsNotSent: number;
}

/** Options of {@link StatusFeed}. */
export interface StatusFeedOptions {
  /** The agent whose workloads and events the page shows. */
  agent: NodeAgent;
  /** Its proxy, whose authorization decisions the page shows. */
  proxy?: MeshProxy;
  /** Decisions kept, and events sent per batch at most. Default 200. */
  maxEvents?: number;
  /** Other events (issued, rotated, revoked, failed, bundle, removed) kept apart from decisions. Default 50. */
  maxLifecycleEvents?: number;
  /** Followers (open `/events` streams) at once. Default 16. */
  maxFollowers?: number;
  /** Events reach followers at most this often. Default 200 ms. */
  flushIntervalMs?: number;
  /** A follower with more than this waiting to be sent is dropped. Default 1 MiB. */
  maxFollowerBufferBytes?: number;
}

/** The status page's data, and its followers. */
export class StatusFeed {
  readonly #agent: NodeAgent;
  readonly #proxy?: MeshProxy;
  readonly #maxEvents: number;
  readonly #maxLifecycleEvents: number;
  readonly #maxFollowers: number;
  readonly #flushIntervalMs: number;
  readonly #maxBufferBytes: number;
  readonly #decisions: FeedEvent[] = [];
  readonly #lifecycle: FeedEvent[] = [];
  #pending: FeedEvent[] = [];
  #isWorkloadChanged = false;
  #eventsNotSent = 0;
  readonly #rotations = new Map<string, { count: number; last?: string; serialNumber: string }>();
  readonly #followers = new Set<ServerResponse>();
  readonly #unsubscribe: (() => void)[] = [];
  #flushTimer?: ReturnType<typeof setTimeout>;
  #heartbeat?: ReturnType<typeof setInterval>;
  #isClosed = false;

  /** Subscribes to the agent's events and the proxy's audit stream; `close()` ends both. */
  constructor(options: StatusFeedOptions) {
    this.#agent = options.agent;
    this.#proxy = options.proxy;
    this.#maxEvents = options.maxEvents ?? 200;
    this.#maxLifecycleEvents = options.maxLifecycleEvents ?? 50;
    this.#maxFollowers = options.maxFollowers ?? 16;
    this.#flushIntervalMs = options.flushIntervalMs ?? 200;
    this.#maxBufferBytes = options.maxFollowerBufferBytes ?? 1024 * 1024;
    this.#unsubscribe.push(this.#agent.subscribe((event) => {
      const time = new Date().toISOString();
      switch (event.type) {
        case "svid": {
          const known = this.#rotations.get(event.workload);
          const serialNumber = event.svid.serialNumber;
          if (known?.serialNumber === serialNumber) return;
          const spiffeId = event.spiffeId.toString();
          if (known) {
            this.#rotations.set(event.workload, { count: known.count + 1, last: time, serialNumber });
            this.#add({
              kind: "rotated",
              time,
              workload: event.workload,
              spiffeId,
              serialNumber,
              previousSerialNumber: known.serialNumber,
            });
          } else {
            this.#rotations.set(event.workload, { count: 0, serialNumber });
            this.#add({ kind: "issued", time, workload: event.workload, spiffeId, serialNumber });
          }
          return this.#workloadsChanged();
        }
        case "crl":
          // Told before the agent re-issues: the serials revoked are still the ones held.
          for (const [workload, svid] of this.#agent.svids()) {
            if (event.revokedSerials.has(svid.serialNumber)) {
              this.#add({
                kind: "revoked",
                time,
                workload,
                spiffeId: svid.spiffeId.toString(),
                serialNumber: svid.serialNumber,
              });
            }
          }
          return;
        case "bundle":
          this.#add({
            kind: "bundle",
            time,
            roots: event.trustBundle.x509Authorities().length,
            sequence: event.sequence,
          });
          return this.#workloadsChanged();
        case "removed":
          this.#rotations.delete(event.workload);
          this.#add({ kind: "removed", time, workload: event.workload });
          return this.#workloadsChanged();
        case "issue-failed":
          this.#add({
            kind: "failed",
            time,
            workload: event.workload,
            cause: event.cause,
            message: event.message,
          });
          return;
        case "delivered":
          return this.#workloadsChanged();
      }
    }));
    if (this.#proxy) {
      this.#unsubscribe.push(this.#proxy.subscribe((record) => {
        this.#add({ kind: "decision", time: record.time, record });
      }));
    }
    // A comment line now and then: a follower that went away is noticed, and idle timeouts
    // of whatever sits between keep the stream open.
    this.#heartbeat = setInterval(() => this.#broadcast(": heartbeat\n\n"), 15_000);
    this.#heartbeat.unref?.();
  }

  /** Every workload, newest state. */
  workloads(): WorkloadView[] {
    return this.#agent.workloads().map((w) => {
      const svid = this.#agent.svid(w.name);
      const rotations = this.#rotations.get(w.name);
      return {
        name: w.name,
        spiffeId: w.spiffeId,
        directory: w.directory,
        serialNumber: svid?.serialNumber ?? w.serialNumber,
        notBefore: svid?.notBefore.toISOString(),
        notAfter: (svid?.expiresAt ?? w.notAfter)?.toISOString(),
        isReady: w.isReady,
        rotations: rotations?.count ?? 0,
        lastRotation: rotations?.last,
      };
    }).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The whole state now. */
  snapshot(): StatusSnapshot {
    const config = this.#proxy?.config;
    const addresses = this.#proxy?.addresses() ?? {};
    const listeners: StatusSnapshot["listeners"] = [
      ...(config?.inbound ?? []).map((l) => ({ ...l, direction: "inbound" as const })),
      ...(config?.outbound ?? []).map((l) => ({ ...l, direction: "outbound" as const })),
    ].map((l) => ({
      name: l.name,
      direction: l.direction,
      workload: l.workload,
      address: formatAddress(addresses[l.name] ?? l.listen),
    }));
    let roots = 0;
    try {
      roots = this.#agent.trustBundle().x509Authorities().length;
    } catch {
      // no bundle yet
    }
    return {
      now: new Date().toISOString(),
      node: this.#agent.nodeId.toString(),
      trustDomain: this.#agent.nodeId.trustDomain.name,
      roots,
      workloads: this.workloads(),
      listeners,
      // Both kept lists, merged oldest first (ISO 8601 times of one clock sort as text).
      events: [...this.#lifecycle, ...this.#decisions].sort((a, b) =>
        a.time < b.time ? -1 : a.time > b.time ? 1 : 0
      ),
      eventsNotSent: this.#eventsNotSent,
    };
  }

  /**
   * Answers `GET /events`: the snapshot, then batches of new events and the workloads whenever
   * they change, as Server-Sent Events. 503 when {@link StatusFeedOptions.maxFollowers} follow.
   */
  follow(response: ServerResponse): void {
    if (this.#isClosed || this.#followers.size >= this.#maxFollowers) {
      const body = JSON.stringify({ error: "too many status page followers; try again later" });
      response.writeHead(503, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "retry-after": "5",
      });
      response.end(body);
      return;
    }
    response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    });
    response.socket?.setNoDelay(true);
    this.#followers.add(response);
    response.on("close", () => this.#followers.delete(response));
    response.write(message("snapshot", this.snapshot()));
  }

  /** Ends every stream and stops following the agent and the proxy. */
  close(): void {
    this.#isClosed = true;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#flushTimer);
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    for (const follower of this.#followers) follower.end();
    this.#followers.clear();
  }

  #add(event: FeedEvent): void {
    const [kept, max] = event.kind === "decision"
      ? [this.#decisions, this.#maxEvents]
      : [this.#lifecycle, this.#maxLifecycleEvents];
    kept.push(event);
    if (kept.length > max) kept.splice(0, kept.length - max);
    if (this.#followers.size === 0) return;
    this.#pending.push(event);
    if (this.#pending.length > this.#maxEvents) {
      this.#eventsNotSent += this.#pending.length - this.#maxEvents;
      this.#pending.splice(0, this.#pending.length - this.#maxEvents);
    }
    this.#scheduleFlush();
  }

  #workloadsChanged(): void {
    if (this.#followers.size === 0) return;
    this.#isWorkloadChanged = true;
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushTimer || this.#isClosed) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      let text = "";
      if (this.#isWorkloadChanged) {
        this.#isWorkloadChanged = false;
        text += message("workloads", { now: new Date().toISOString(), workloads: this.workloads() });
      }
      if (this.#pending.length) {
        text += message("events", { events: this.#pending, eventsNotSent: this.#eventsNotSent });
        this.#pending = [];
      }
      if (text) this.#broadcast(text);
    }, this.#flushIntervalMs);
    this.#flushTimer.unref?.();
  }

  #broadcast(text: string): void {
    for (const follower of this.#followers) {
      // A follower that does not read is let go, not buffered for without bound.
      if (follower.writableLength > this.#maxBufferBytes) {
        this.#followers.delete(follower);
        follower.destroy();
        continue;
      }
      follower.write(text);
    }
  }
}

function message(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
