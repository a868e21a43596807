/**
 * A reflector: keeps a local copy of a collection in step with the API server, the way
 * client-go's does. It lists (in pages, at one resource version), then watches from that
 * version with bookmarks; when a watch ends (a timeout, a dropped connection) it resumes from
 * the last version it saw, and when the API server says that version is gone (410), it lists
 * again and reports every object that disappeared meanwhile as deleted, so that nothing is
 * missed either way. Failures back off exponentially with jitter, capped.
 *
 * A watch can also go quiet without ending (a half-open TCP connection, a wedged proxy): the
 * API server sends a bookmark about once a minute, so a watch that brings no event and no
 * bookmark for `maxWatchIdleSeconds` is abandoned by a watchdog and resumed from the last
 * resource version seen.
 *
 * What it keeps of each object is what `project` returns, so a cache of pods holds a few
 * strings per pod rather than whole pod specs; `maxObjects` bounds it.
 *
 * @module
 */

import type { Logger } from "../logger.ts";
import { type KubernetesApi, KubernetesApiError, type ListResult, type ObjectMeta } from "./api.ts";

/** What a reflector tells its owner. */
export interface ReflectorHandler<T> {
  /** An object appeared or changed (also once for each object of the first list). */
  upsert?(key: string, value: T, previous: T | undefined): void;
  /** An object went away (a DELETED event, or missing from a relist). */
  remove?(key: string, last: T): void;
  /** The cache holds a complete list (after the first list, and after each relist). */
  synced?(): void;
}

/** Options of {@link Reflector}. */
export interface ReflectorOptions<T> {
  /** The client the collection is listed and watched with. */
  api: KubernetesApi;
  /** The collection, e.g. `/api/v1/namespaces/photo-ns/serviceaccounts` or `/api/v1/pods`. */
  path: string;
  /** Only objects whose fields match (`spec.nodeName=node-1`). */
  fieldSelector?: string;
  /** Only objects whose labels match. */
  labelSelector?: string;
  /** What to keep of each object; `undefined` drops it as if it did not match. */
  project: (object: { metadata?: ObjectMeta } & Record<string, unknown>) => T | undefined;
  /** Told of each object added, changed or removed, and when a complete list is held. */
  handler?: ReflectorHandler<T>;
  /** Where list and watch failures are logged. */
  logger: Logger;
  /** For logs: what is being watched. */
  name: string;
  /** Items per list page. Default 500. */
  pageSize?: number;
  /** The most objects kept; beyond it the reflector reports itself overflowed and keeps no more. */
  maxObjects?: number;
  /** Server-side watch timeout, randomized within [t, 2t). Default 300 s. */
  watchTimeoutSeconds?: number;
  /**
   * A watch with no event and no bookmark for this long is abandoned and resumed. Default
   * 150 s: two and a half of the API server's bookmark intervals (one minute).
   */
  maxWatchIdleSeconds?: number;
  /** Backoff bounds for failed lists and watches. Defaults 500 ms and 30 s. */
  minBackoffMs?: number;
  /** Backoff bounds for failed lists and watches: the largest. */
  maxBackoffMs?: number;
}

/** The key of an object: `namespace/name`, or `name` for cluster-scoped objects. */
export function keyOf(metadata: ObjectMeta | undefined): string {
  return metadata?.namespace ? `${metadata.namespace}/${metadata.name}` : `${metadata?.name}`;
}

interface Entry<T> {
  value: T;
  resourceVersion: string;
}

/** Lists and watches one collection into a local cache. */
export class Reflector<T> {
  readonly #o: ReflectorOptions<T>;
  readonly #items = new Map<string, Entry<T>>();
  #resourceVersion = "";
  #watch?: AbortController;
  #timer?: ReturnType<typeof setTimeout>;
  #watchdog?: ReturnType<typeof setInterval>;
  #failures = 0;
  #stopped = true;
  #synced = false;
  #overflowed = false;
  #waiters: Array<() => void> = [];
  /** Counts, for tests and logs. */
  readonly stats = {
    lists: 0,
    watches: 0,
    relistsAfterGone: 0,
    resumes: 0,
    bookmarks: 0,
    idleWatchesAbandoned: 0,
  };

  /** A reflector of `options.path`; `start` begins listing and watching. */
  constructor(options: ReflectorOptions<T>) {
    this.#o = options;
  }

  /** True once the first list is in the cache. */
  get isSynced(): boolean {
    return this.#synced;
  }

  /** True when the collection holds more objects than `maxObjects`: the cache is incomplete. */
  get isOverflowed(): boolean {
    return this.#overflowed;
  }

  /** The newest resource version seen. */
  get resourceVersion(): string {
    return this.#resourceVersion;
  }

  /** The object kept under `key` (`namespace/name`). */
  get(key: string): T | undefined {
    return this.#items.get(key)?.value;
  }

  /** The keys of the objects kept. */
  keys(): IterableIterator<string> {
    return this.#items.keys();
  }

  /** The objects kept, with their keys. */
  entries(): Array<[string, T]> {
    return [...this.#items].map(([key, entry]) => [key, entry.value]);
  }

  /** How many objects are kept. */
  get size(): number {
    return this.#items.size;
  }

  /** Starts listing and watching; resolves at once (see {@link synced}). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0, () => this.#relist());
  }

  /** Resolves when the cache is synced, or rejects after `timeoutMs`. */
  synced(timeoutMs = 30_000): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.#o.name}: not synced within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Stops watching; the objects kept stay readable. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#watch?.abort();
    this.#watch = undefined;
  }

  #schedule(delayMs: number, step: () => Promise<void>): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#stopped) void step();
    }, delayMs);
    this.#timer.unref?.();
  }

  #backoffMs(): number {
    const min = this.#o.minBackoffMs ?? 500;
    const max = this.#o.maxBackoffMs ?? 30_000;
    const base = Math.min(max, min * 2 ** Math.min(this.#failures, 16));
    this.#failures++;
    // Full jitter over the upper half: replicas that failed together do not retry together.
    return base / 2 + Math.random() * base / 2;
  }

  async #relist(): Promise<void> {
    const seen = new Map<string, Entry<T>>();
    let listVersion = "";
    let continueToken: string | undefined;
    let overflowed = false;
    try {
      do {
        this.stats.lists++;
        const page: ListResult<{ metadata?: ObjectMeta } & Record<string, unknown>> = await this.#o.api.get(
          this.#o.path,
          {
            limit: this.#o.pageSize ?? 500,
            continue: continueToken,
            fieldSelector: this.#o.fieldSelector,
            labelSelector: this.#o.labelSelector,
          },
        );
        // Every page is served at the first page's version, so the watch resumes from it.
        if (!continueToken) listVersion = page.metadata?.resourceVersion ?? "";
        for (const item of page.items ?? []) {
          const value = this.#o.project(item);
          if (value === undefined) continue;
          if (this.#o.maxObjects !== undefined && seen.size >= this.#o.maxObjects) {
            overflowed = true;
            continue;
          }
          seen.set(keyOf(item.metadata), { value, resourceVersion: item.metadata?.resourceVersion ?? "" });
        }
        continueToken = page.metadata?.continue || undefined;
        if (this.#stopped) return;
      } while (continueToken);
    } catch (err) {
      // An expired continue token (410) means: start the list over, at once.
      const delay = err instanceof KubernetesApiError && err.isGone ? 0 : this.#backoffMs();
      this.#o.logger.warn("Kubernetes list failed", {
        watch: this.#o.name,
        error: err,
        retryInMs: Math.round(delay),
      });
      this.#schedule(delay, () => this.#relist());
      return;
    }
    if (overflowed && !this.#overflowed) {
      this.#o.logger.warn("Kubernetes cache is full", {
        watch: this.#o.name,
        maxObjects: this.#o.maxObjects,
      });
    }
    this.#overflowed = overflowed;
    for (const [key, entry] of this.#items) {
      if (!seen.has(key)) {
        this.#items.delete(key);
        this.#o.handler?.remove?.(key, entry.value);
      }
    }
    for (const [key, entry] of seen) {
      const previous = this.#items.get(key);
      this.#items.set(key, entry);
      if (!previous || previous.resourceVersion !== entry.resourceVersion) {
        this.#o.handler?.upsert?.(key, entry.value, previous?.value);
      }
    }
    this.#resourceVersion = listVersion;
    this.#failures = 0;
    if (!this.#synced) {
      this.#synced = true;
      for (const resolve of this.#waiters.splice(0)) resolve();
    }
    this.#o.handler?.synced?.();
    await this.#startWatch();
  }

  async #startWatch(): Promise<void> {
    if (this.#stopped) return;
    this.stats.watches++;
    const base = this.#o.watchTimeoutSeconds ?? 300;
    let isGone = false;
    let sawEvent = false;
    let isAbandoned = false;
    let lastHeardAt = Date.now();
    // The watch may end before it is handed back (a refusal such as 410 comes at once).
    let controller: AbortController | undefined = undefined;
    controller = await this.#o.api.watch(
      this.#o.path,
      {
        resourceVersion: this.#resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: Math.floor(base + Math.random() * base),
        fieldSelector: this.#o.fieldSelector,
        labelSelector: this.#o.labelSelector,
      },
      (event) => {
        if (this.#stopped || isAbandoned) return;
        lastHeardAt = Date.now();
        const object = event.object as { metadata?: ObjectMeta; code?: number } & Record<string, unknown>;
        if (event.type === "ERROR") {
          // The API server's watch cache answers a too-old version with a 410 Status event.
          if (object?.code === 410) isGone = true;
          else this.#o.logger.warn("Kubernetes watch error event", { watch: this.#o.name, status: object });
          return;
        }
        sawEvent = true;
        const resourceVersion = object?.metadata?.resourceVersion;
        if (event.type === "BOOKMARK") this.stats.bookmarks++;
        else this.#apply(event.type, object);
        if (resourceVersion) this.#resourceVersion = resourceVersion;
      },
      (err) => {
        if (controller && this.#watch === controller) this.#watch = undefined;
        if (this.#stopped || isAbandoned) return;
        isAbandoned = true;
        if (isGone || err?.statusCode === 410) {
          this.stats.relistsAfterGone++;
          this.#o.logger.info("Kubernetes watch expired, listing again", {
            watch: this.#o.name,
            resourceVersion: this.#resourceVersion,
          });
          this.#schedule(0, () => this.#relist());
          return;
        }
        if (err) {
          const delay = this.#backoffMs();
          this.#o.logger.warn("Kubernetes watch failed", {
            watch: this.#o.name,
            error: err,
            retryInMs: Math.round(delay),
          });
          // A refusal (403 after an RBAC change, 404 for a resource the server stopped serving)
          // will not heal by resuming: list again, which also re-checks the whole cache.
          this.#schedule(delay, () => err.statusCode ? this.#relist() : this.#resume());
          return;
        }
        if (sawEvent) this.#failures = 0;
        // A stream that ends at once, twice running, is backed off like a failure.
        this.#schedule(sawEvent ? 0 : this.#backoffMs(), () => this.#resume());
      },
    ).catch((err: Error) => {
      this.#o.logger.warn("Kubernetes watch did not start", { watch: this.#o.name, error: err });
      this.#schedule(this.#backoffMs(), () => this.#resume());
      return undefined;
    });
    if (!controller) return;
    if (this.#stopped || isAbandoned) {
      controller.abort();
      return;
    }
    const watch = controller;
    this.#watch = watch;
    if (this.#watchdog) clearInterval(this.#watchdog);
    const maxIdleMs = (this.#o.maxWatchIdleSeconds ?? 150) * 1000;
    const watchdog = setInterval(() => {
      if (this.#stopped || isAbandoned) return clearInterval(watchdog);
      if (Date.now() - lastHeardAt < maxIdleMs) return;
      clearInterval(watchdog);
      isAbandoned = true;
      this.stats.idleWatchesAbandoned++;
      this.#o.logger.warn("Kubernetes watch silent too long: resuming it", {
        watch: this.#o.name,
        silentMs: Date.now() - lastHeardAt,
        resourceVersion: this.#resourceVersion,
      });
      watch.abort();
      if (this.#watch === watch) this.#watch = undefined;
      this.#schedule(0, () => this.#resume());
    }, Math.max(50, Math.min(maxIdleMs / 4, 10_000)));
    watchdog.unref?.();
    this.#watchdog = watchdog;
  }

  async #resume(): Promise<void> {
    if (!this.#resourceVersion) return await this.#relist();
    this.stats.resumes++;
    await this.#startWatch();
  }

  #apply(type: string, object: { metadata?: ObjectMeta } & Record<string, unknown>): void {
    const key = keyOf(object.metadata);
    const previous = this.#items.get(key);
    const value = type === "DELETED" ? undefined : this.#o.project(object);
    if (value === undefined) {
      // Deleted, or changed so that it no longer matters (projection says so).
      if (previous) {
        this.#items.delete(key);
        this.#o.handler?.remove?.(key, previous.value);
      }
      return;
    }
    if (!previous && this.#o.maxObjects !== undefined && this.#items.size >= this.#o.maxObjects) {
      if (!this.#overflowed) {
        this.#overflowed = true;
        this.#o.logger.warn("Kubernetes cache is full", {
          watch: this.#o.name,
          maxObjects: this.#o.maxObjects,
        });
      }
      return;
    }
    this.#items.set(key, { value, resourceVersion: object.metadata?.resourceVersion ?? "" });
    this.#o.handler?.upsert?.(key, value, previous?.value);
  }
}
