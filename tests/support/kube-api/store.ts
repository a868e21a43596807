// The test API server's storage, as etcd keeps it for the API server: one global revision that
// every write bumps and stamps into metadata.resourceVersion, the history of every object
// since the last compaction (so a list can be served at a past revision, page by page), and the
// event log that watches replay from a resource version. A compaction forgets the history, after
// which older resource versions are answered with 410 Gone.

import type { KubeObject, ResourceType } from "./resources.ts";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  rv: number;
  type: EventType;
  resource: ResourceType;
  key: string;
  object: KubeObject;
  previous?: KubeObject;
}

export type Listener = (event: StoreEvent) => void;

interface Version {
  rv: number;
  object: KubeObject | null;
}

function storageKey(resource: ResourceType, namespace: string | undefined, name: string): string {
  return `${resource.group}/${resource.plural}/${namespace ?? ""}/${name}`;
}

export class ObjectStore {
  revision = 1;
  /** History at or before this revision is gone. */
  compactedRevision = 0;
  readonly #history = new Map<string, Version[]>();
  readonly #events: StoreEvent[] = [];
  readonly #listeners = new Set<Listener>();
  /** Events kept for watches; older ones go as if compacted. */
  maxEvents = 10_000;

  current(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const versions = this.#history.get(storageKey(resource, namespace, name));
    const last = versions?.at(-1)?.object;
    return last ? structuredClone(last) : undefined;
  }

  /** The objects of a resource (one namespace, or all) as they were at `atRevision`. */
  list(resource: ResourceType, namespace: string | undefined, atRevision = this.revision): KubeObject[] {
    const prefix = `${resource.group}/${resource.plural}/${namespace === undefined ? "" : `${namespace}/`}`;
    const out: Array<[string, KubeObject]> = [];
    for (const [key, versions] of this.#history) {
      if (!key.startsWith(prefix)) continue;
      let found: Version | undefined;
      for (const v of versions) if (v.rv <= atRevision) found = v;
      if (found?.object) out.push([key, found.object]);
    }
    return out.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, o]) => structuredClone(o));
  }

  write(
    resource: ResourceType,
    object: KubeObject | null,
    namespace: string | undefined,
    name: string,
  ): StoreEvent {
    const key = storageKey(resource, namespace, name);
    const versions = this.#history.get(key) ?? [];
    const previous = versions.at(-1)?.object ?? undefined;
    const rv = ++this.revision;
    let stored: KubeObject;
    let type: EventType;
    if (object) {
      stored = structuredClone(object);
      stored.metadata.resourceVersion = String(rv);
      type = previous ? "MODIFIED" : "ADDED";
    } else {
      if (!previous) throw new Error(`nothing to delete at ${key}`);
      stored = structuredClone(previous);
      stored.metadata.resourceVersion = String(rv);
      type = "DELETED";
    }
    versions.push({ rv, object: object ? stored : null });
    this.#history.set(key, versions);
    const event: StoreEvent = { rv, type, resource, key, object: stored, previous };
    this.#events.push(event);
    if (this.#events.length > this.maxEvents) {
      const dropped = this.#events.shift()!;
      this.compactedRevision = Math.max(this.compactedRevision, dropped.rv);
    }
    for (const listener of this.#listeners) listener(event);
    return event;
  }

  /** Events after `fromRevision`, or undefined when that revision is compacted away. */
  eventsSince(fromRevision: number): StoreEvent[] | undefined {
    if (fromRevision < this.compactedRevision) return undefined;
    return this.#events.filter((e) => e.rv > fromRevision);
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Forgets history and events up to now, as etcd compaction does. */
  compact(): void {
    this.compactedRevision = this.revision;
    this.#events.length = 0;
    for (const [key, versions] of this.#history) {
      const last = versions.at(-1)!;
      if (last.object) this.#history.set(key, [last]);
      else this.#history.delete(key);
    }
  }
}
