/**
 * The node agent: one per node, it owns the certificates of every workload on that node, the
 * way istio-agent, ztunnel and SPIRE's agent do. It holds the node's identity, takes workloads
 * from its sources, makes each workload's key on the node and has the CA sign it as the node
 * (the CA's node authorization decides which identities the node may obtain), delivers the
 * files atomically, keeps them renewed, and keeps the trust bundle and CRLs current.
 *
 * Everything it holds is reachable in memory for an in-process consumer such as an mTLS proxy:
 * {@link NodeAgent.svid} answers a workload's current SVID (key and chain as PEM, for
 * `tls.createSecureContext`), {@link NodeAgent.trustBundle} and {@link NodeAgent.crls} the
 * verification material, and {@link NodeAgent.subscribe} reports each change as it happens.
 *
 * @example
 * ```ts
 * import { CaClient, NodeAgent, StaticSource } from "meshauth/agent";
 * const agent = new NodeAgent({
 *   trustDomain: "prod.example",
 *   nodeName: "node-a",
 *   bootstrapToken: () => process.env.MESHAUTH_JOIN_TOKEN,
 *   client: new CaClient({ url: "https://ca.prod.example:8443", caCertificatesPem: bundlePem }),
 *   trustBundlePem: bundlePem,
 *   stateDir: "/var/lib/meshauth/agent",
 *   sources: [new StaticSource(workloads)],
 * });
 * agent.subscribe((event) => {
 *   if (event.type === "svid") server.setSecureContext({ key: event.svid.privateKeyPem, cert: event.svid.certificateChainPem });
 * });
 * await agent.start();
 * ```
 * @module
 */

import { promises as fs } from "node:fs";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import {
  type Crl,
  type KeyAlgorithm,
  MeshAuthError,
  type RenewalOptions,
  SpiffeId,
  TrustBundle,
  TrustDomain,
  verifySvid,
} from "../mod.ts";
import { type Logger, silentLogger } from "../internal/mod.ts";
import type { CaClient } from "./ca-client.ts";
import { ConcurrencyLimit } from "./concurrency.ts";
import { DEFAULT_DELIVERY_ROOT, removeDelivery } from "./delivery/atomic-writer.ts";
import type { HeldSvid } from "./issuance.ts";
import { type BackoffOptions } from "./lifecycle/backoff.ts";
import { CaClock } from "./lifecycle/ca-clock.ts";
import { NodeIdentity } from "./lifecycle/node-identity.ts";
import { StateStore, type WorkloadRecord } from "./lifecycle/state-store.ts";
import { holdProcessOpen } from "./lifecycle/timer.ts";
import { TrustRefresher } from "./lifecycle/trust-refresh.ts";
import { WorkloadCredential } from "./lifecycle/workload-credential.ts";
import { AgentMetrics, type HeldCertificateStatus } from "./metrics.ts";
import type { WorkloadProblem, WorkloadSink, WorkloadSource, WorkloadSpec } from "./sources/source.ts";

/** Something that happened in the agent, for in-process consumers (an mTLS proxy, a status page). */
export type AgentEvent =
  /** A workload has a new SVID: `svid()` answers it from now on (it is stored next; its files follow in a `delivered` event). */
  | { type: "svid"; workload: string; spiffeId: SpiffeId; svid: HeldSvid }
  /** Obtaining a workload's SVID failed (`cause` as in the metrics); it is retried on the backoff. */
  | { type: "issue-failed"; workload: string; cause: string; message: string }
  /** A workload's files now hold this certificate (or it expired or was revoked there: `isValid` false). */
  | { type: "delivered"; workload: string; directory: string; serialNumber: string; isValid: boolean }
  /** A workload is gone; its files are deleted. */
  | { type: "removed"; workload: string }
  /** The node's own SVID changed. */
  | { type: "node-svid"; svid: HeldSvid }
  /** The trust bundle changed (a root added or retired). */
  | { type: "bundle"; trustBundle: TrustBundle; pem: string; sequence?: number }
  /** A new CRL of one authority, verified. */
  | { type: "crl"; authorityId: string; crl: Crl; revokedSerials: ReadonlySet<string> }
  /** A workload entry was skipped. */
  | { type: "problem"; problem: WorkloadProblem }
  /** Every workload has a valid certificate in its files. */
  | { type: "ready" };

/** A workload's files do not hold a valid certificate (yet), and why. */
export class WorkloadNotDelivered extends MeshAuthError {
  /** Stable code of this class: `ERR_WORKLOAD_NOT_DELIVERED`. */
  static override code: string = "ERR_WORKLOAD_NOT_DELIVERED";
  /** `workload` is the workload's name; `reason` says what its files lack. */
  constructor(readonly workload: string, readonly reason: string) {
    super(`workload ${workload} has no certificate in its files: ${reason}`);
    this.name = "WorkloadNotDelivered";
  }
}

/** Options of {@link NodeAgent}. */
export interface NodeAgentOptions {
  /** The trust domain of the node and of every workload. */
  trustDomain: TrustDomain | string;
  /** The node's name: its identity is `spiffe://<trust domain>/node/<name>`. */
  nodeName: string;
  /** The node join token, read when needed (bootstrap, or a refused node SVID). */
  bootstrapToken?: () => string | undefined | Promise<string | undefined>;
  /** The CA client every request goes through, as the node. */
  client: CaClient;
  /** The CA's roots as configured: verify the CA before a bundle has been fetched. */
  trustBundlePem: string;
  /** Where the node SVID, the trust bundle and every workload's key and certificate are kept. */
  stateDir: string;
  /** Where workloads come from: static entries, a directory, this node's pods, CSI volumes. */
  sources: WorkloadSource[];
  /**
   * Workload directories must be inside one of these; an entry whose directory is elsewhere
   * is reported and skipped. Every directory from the root down to a workload's must belong to
   * root or the agent and be writable by neither group nor others. Default
   * `/var/run/meshauth`.
   */
  deliveryRoots?: string[];
  /** The node key's algorithm. Default `ECDSA-P256`. */
  nodeKeyAlgorithm?: KeyAlgorithm;
  /** Lifetime in seconds asked for the node SVID. Default: the CA's. */
  nodeTtlSeconds?: number;
  /** When the node's and the workloads' SVIDs are renewed. Default ratio 0.5, jitter 0.1. */
  renewal?: RenewalOptions;
  /** The waits between retries of a failed request. Default 1 s doubling to 60 s. */
  backoff?: BackoffOptions;
  /** Lower bound on the wait between trust bundle and CRL fetches, in seconds. Default 5. */
  minRefreshSeconds?: number;
  /** Upper bound on the wait between trust bundle and CRL fetches, in seconds. Default 300. */
  maxRefreshSeconds?: number;
  /** Workloads writing files at once. Default 16. */
  maxConcurrentWrites?: number;
  /** Issuances under way at once (the CA client bounds requests in flight itself). Default 8. */
  maxConcurrentIssuances?: number;
  /** Where the agent's log lines go. Default: none. */
  logger?: Logger;
  /** The metrics the agent updates. Default: its own. */
  metrics?: AgentMetrics;
  /**
   * Keep the process alive while the agent runs (default true): a script that only starts
   * the agent keeps renewing until {@link NodeAgent.stop}.
   */
  keepAlive?: boolean;
}

/** A workload's state, for status pages and tests. */
export interface WorkloadStatus {
  /** The workload's name, unique on the node. */
  name: string;
  /** The SPIFFE ID its SVID carries. */
  spiffeId: string;
  /** Where its files are written. */
  directory: string;
  /** True when its files hold a valid certificate. */
  isReady: boolean;
  /** Serial number (hex) of the certificate it holds, once it has one. */
  serialNumber?: string;
  /** When that certificate expires. */
  notAfter?: Date;
}

/** The node agent. */
export class NodeAgent {
  /** The node's identity: `spiffe://<trust domain>/node/<name>`. */
  readonly nodeId: SpiffeId;
  /** The metrics it updates (`options.metrics`, or its own). */
  readonly metrics: AgentMetrics;
  readonly #o: NodeAgentOptions;
  readonly #logger: Logger;
  readonly #state: StateStore;
  readonly #trust: TrustRefresher;
  readonly #node: NodeIdentity;
  readonly #clock: CaClock;
  readonly #workloads = new Map<string, WorkloadCredential>();
  readonly #bySource = new Map<string, readonly WorkloadSpec[]>();
  readonly #listeners = new Set<(event: AgentEvent) => void>();
  readonly #writes: ConcurrencyLimit;
  readonly #issuances: ConcurrencyLimit;
  /** Workloads whose files hold no valid certificate: readiness in O(1) as thousands deliver. */
  readonly #notReady = new Set<string>();
  #lastBundle?: { pem: string; bundle: TrustBundle };
  readonly #reportedConflicts = new Set<string>();
  #records = new Map<string, WorkloadRecord>();
  readonly #issuers = new Set<string>();
  readonly #movedDirectories: string[] = [];
  #isStarted = false;
  #sourcesStarted = false;
  #isStopped = false;
  #wasReady = false;
  #release?: () => void;
  #reconciling: Promise<void> = Promise.resolve();
  readonly #roots: string[];

  /** Throws on a bad trust domain or node name; starts nothing ({@link NodeAgent.start} does). */
  constructor(options: NodeAgentOptions) {
    this.#o = options;
    this.#roots = (options.deliveryRoots ?? [DEFAULT_DELIVERY_ROOT]).map((root) => resolve(root));
    const trustDomain = TrustDomain.from(options.trustDomain);
    this.nodeId = SpiffeId.fromSegments(trustDomain, "node", options.nodeName);
    this.#logger = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? new AgentMetrics();
    this.#state = new StateStore(options.stateDir);
    this.#clock = new CaClock(this.#logger);
    options.client.observe((observation) => {
      if (observation.clockOffsetMs !== undefined) this.#clock.observe(observation.clockOffsetMs);
    });
    this.#writes = new ConcurrencyLimit(options.maxConcurrentWrites ?? 16);
    this.#issuances = new ConcurrencyLimit(options.maxConcurrentIssuances ?? 8);
    this.#trust = new TrustRefresher({
      client: options.client,
      trustDomain,
      state: this.#state,
      bootstrapBundlePem: options.trustBundlePem,
      minRefreshMs: (options.minRefreshSeconds ?? 5) * 1000,
      maxRefreshMs: (options.maxRefreshSeconds ?? 300) * 1000,
      backoff: options.backoff,
      logger: this.#logger,
      metrics: this.metrics,
      heldCertificates: () => this.#heldCertificates(),
      caNow: () => this.#clock.now(),
      onBundle: (trustBundle, pem, sequence) => {
        this.#emit({ type: "bundle", trustBundle, pem, sequence });
        for (const workload of this.#workloads.values()) workload.trustBundleChanged();
      },
      onCrl: (authorityId, crl, revokedSerials) => {
        this.#emit({ type: "crl", authorityId, crl, revokedSerials });
        void this.#checkRevoked(revokedSerials);
      },
    });
    const token = options.bootstrapToken;
    this.#node = new NodeIdentity({
      client: options.client,
      id: this.nodeId,
      bootstrapToken: async () => (await token?.())?.trim() || undefined,
      state: this.#state,
      keyAlgorithm: options.nodeKeyAlgorithm,
      ttlSeconds: options.nodeTtlSeconds,
      renewal: options.renewal,
      backoff: options.backoff,
      logger: this.#logger,
      metrics: this.metrics,
      isTrusted: (svid) => this.#isTrusted(svid),
      clock: this.#clock,
      onChange: (svid) => {
        this.#emit({ type: "node-svid", svid });
        void this.#watchIssuer(svid);
      },
    });
    options.client.observe(this.metrics.caRequest);
    this.metrics.attach({
      workloadCount: () => this.#workloads.size,
      certificates: () => this.#certificateStatuses(),
      node: () => {
        const svid = this.#node.current;
        return svid && {
          workload: "",
          spiffeId: svid.spiffeId.toString(),
          notBefore: svid.notBefore,
          notAfter: svid.expiresAt,
        };
      },
      trustBundleSequence: () => this.#trust.sequence,
      clockOffsetSeconds: () => this.#clock.offsetMs / 1000,
      crls: () => this.#trust.crls(),
    });
  }

  /**
   * Opens the state directory, starts the sources and every workload (still-valid stored
   * certificates are delivered at once, before the CA is asked, even when the node's own SVID
   * must first be obtained again), restores or obtains the node identity, then keeps the trust
   * bundle and CRLs current. Throws when the node identity cannot be obtained without an
   * operator (a spent or missing join token); the files delivered stay.
   */
  async start(): Promise<void> {
    if (this.#isStarted) return;
    this.#isStarted = true;
    this.#isStopped = false;
    if (this.#o.keepAlive ?? true) this.#release = holdProcessOpen();
    try {
      await this.#state.open();
      await this.#trust.load();
      this.#records = await this.#state.loadWorkloads(this.#trust.pem);
      const sink: WorkloadSink = {
        replace: (source, workloads) => {
          this.#bySource.set(source, workloads);
          // Before every source has sent its first set, start() applies them all at once.
          return this.#isStarted && this.#sourcesStarted ? this.#scheduleReconcile() : Promise.resolve();
        },
        problem: (problem) => this.#problem(problem),
        delivered: (name, signal) => this.#delivered(name, signal),
      };
      // The node identity is restored or obtained while the workloads start: issuances wait for
      // it, restores do not, and no restore (a slow disk, a directory that is not the agent's)
      // holds it up.
      const nodeStarted = this.#node.start();
      nodeStarted.catch(() => {});
      for (const source of this.#o.sources) await source.start(sink);
      this.#sourcesStarted = true;
      await this.#scheduleReconcile();
      // Stored records no source names any more: their workloads went while the agent was down.
      await this.#removeOrphans();
      await nodeStarted;
      if (this.#isStopped) return;
      this.#trust.start();
      this.#checkReady();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stops renewing and watching. Files and stored state stay for the next start. */
  async stop(): Promise<void> {
    if (this.#isStopped) return;
    this.#isStopped = true;
    this.#node.stop();
    await Promise.all(this.#o.sources.map((s) => s.stop().catch(() => {})));
    await this.#reconciling;
    await this.#trust.stop();
    await Promise.all([...this.#workloads.values()].map((w) => w.stop()));
    await this.#o.client.close();
    this.#release?.();
    this.#release = undefined;
    this.#isStarted = false;
  }

  /** Reports each change to `listener`; answers a function that unsubscribes. */
  subscribe(listener: (event: AgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The SVID a workload holds now (key and chain as PEM), if any. */
  svid(workload: string): HeldSvid | undefined {
    return this.#workloads.get(workload)?.held;
  }

  /** Every workload's current SVID, by workload name. */
  svids(): Map<string, HeldSvid> {
    const out = new Map<string, HeldSvid>();
    for (const [name, w] of this.#workloads) if (w.held) out.set(name, w.held);
    return out;
  }

  /** The node's own SVID. */
  nodeSvid(): HeldSvid | undefined {
    return this.#node.current;
  }

  /** The trust bundle now. */
  trustBundle(): TrustBundle {
    return this.#trust.bundle;
  }

  /** The trust bundle now, as PEM. */
  trustBundlePem(): string {
    return this.#trust.pem;
  }

  /** The verified CRLs of the authorities that issued what the agent holds, by authority id. */
  crls(): ReadonlyMap<string, Crl> {
    return this.#trust.crls();
  }

  /** Each workload's state. */
  workloads(): WorkloadStatus[] {
    return [...this.#workloads.values()].map((w) => ({
      name: w.name,
      spiffeId: w.spec.spiffeId.toString(),
      directory: w.spec.directory,
      isReady: w.isReady,
      serialNumber: w.delivered?.serialNumber,
      notAfter: w.delivered?.notAfter,
    }));
  }

  /** Ready once the node has its identity and every workload a valid, unrevoked certificate in its files. */
  readiness(): { isReady: boolean; waitingFor: string[] } {
    const waitingFor = [...this.#workloads.values()].filter((w) => !w.isReady).map((w) => w.name);
    const node = this.#node.current;
    if (!node || node.expiresAt.getTime() <= this.#clock.now() || this.#trust.isRevoked(node.serialNumber)) {
      waitingFor.unshift(`node ${this.nodeId}`);
    }
    if (!this.#sourcesStarted) waitingFor.unshift("workload sources");
    return { isReady: waitingFor.length === 0, waitingFor };
  }

  /**
   * Replaces a workload's key and certificate now, as its renewal would: a new key made here,
   * a CSR, the CA's signature, then its files. Resolves with the new SVID once held (its files
   * follow in a `delivered` event); rejects with {@link WorkloadNotDelivered} when the agent
   * does not hold the workload or the CA refuses.
   */
  renew(workload: string): Promise<HeldSvid> {
    const credential = this.#workloads.get(workload);
    if (!credential || !this.#isStarted || this.#isStopped) {
      const why = credential ? "the agent is not running" : "the agent does not hold it";
      return Promise.reject(new WorkloadNotDelivered(workload, why));
    }
    const before = credential.held?.serialNumber;
    return new Promise((resolve, reject) => {
      const unsubscribe = this.subscribe((event) => {
        if (event.type === "svid" && event.workload === workload && event.svid.serialNumber !== before) {
          unsubscribe();
          resolve(event.svid);
        } else if (event.type === "issue-failed" && event.workload === workload) {
          // Retried on the workload's backoff; the caller hears of the first failure.
          unsubscribe();
          reject(new WorkloadNotDelivered(workload, `${event.cause}: ${event.message}`));
        } else if (event.type === "removed" && event.workload === workload) {
          unsubscribe();
          reject(new WorkloadNotDelivered(workload, "it was removed"));
        }
      });
      credential.issueNow("requested");
    });
  }

  /**
   * Follows, from now on, the CRLs of the authority that issued a peer's chain (PEM, leaf
   * first; it must chain to the trust bundle), and fetches them now; resolves once they are in
   * {@link NodeAgent.crls} (a `crl` event), or once the fetch failed. The agent otherwise follows
   * the authorities of the certificates it holds, so a peer renewed onto a new authority before
   * this node would be refused for want of its CRL; the proxy asks for it then. Peers' authorities
   * are followed while the peer's certificate is valid, at most 16 of them.
   */
  fetchCrlsFor(peerChainPem: string): Promise<void> {
    return this.#trust.followPeer(peerChainPem);
  }

  /** Fetches the trust bundle and CRLs now instead of at the next scheduled refresh. */
  async refreshTrust(): Promise<void> {
    await this.#trust.refreshBundle();
    await this.#trust.refreshCrls();
  }

  #delivered(name: string, signal?: AbortSignal): Promise<void> {
    const workload = this.#workloads.get(name);
    if (!workload) {
      return Promise.reject(
        new WorkloadNotDelivered(name, "the agent does not hold it (an entry that conflicts with another?)"),
      );
    }
    if (workload.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void) => {
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
        settle();
      };
      const onAbort = () =>
        finish(() =>
          reject(
            new WorkloadNotDelivered(
              name,
              this.#workloads.get(name)?.lastFailure ?? "no certificate yet (the CA has not answered)",
            ),
          )
        );
      const unsubscribe = this.subscribe((event) => {
        if (event.type === "delivered" && event.workload === name && event.isValid) finish(resolve);
        else if (event.type === "removed" && event.workload === name) {
          finish(() => reject(new WorkloadNotDelivered(name, "it was removed")));
        }
      });
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #emit(event: AgentEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (err) {
        this.#logger.error("an agent event listener failed", { event: event.type, error: err });
      }
    }
  }

  #problem(problem: WorkloadProblem): void {
    this.metrics.workloadProblems.inc({ source: problem.source.split(":")[0] });
    this.#logger.error("workload entry skipped", {
      source: problem.source,
      file: problem.file,
      field: problem.field,
      problem: problem.message,
    });
    this.#emit({ type: "problem", problem });
  }

  #scheduleReconcile(): Promise<void> {
    const next = this.#reconciling.then(() => this.#reconcile()).catch((err) => {
      this.#logger.error("applying workload changes failed", { error: err });
    });
    this.#reconciling = next;
    return next;
  }

  /**
   * The sources' sets merged: first come, first served, conflicts reported and skipped. Two
   * entries conflict when they name the same workload or the same directory once symlinks are
   * resolved; an entry whose directory is outside the delivery roots, or overlaps the state
   * directory, is skipped too.
   */
  async #merged(): Promise<Map<string, WorkloadSpec>> {
    const byName = new Map<string, WorkloadSpec>();
    const byDirectory = new Map<string, WorkloadSpec>();
    const stateDir = await canonicalPath(this.#o.stateDir);
    const conflicts = new Set<string>();
    for (const source of this.#o.sources) {
      for (const spec of this.#bySource.get(source.name) ?? []) {
        const directory = await canonicalPath(spec.directory);
        let message: string | undefined;
        let field = "directory";
        const sameName = byName.get(spec.name);
        const sameDirectory = byDirectory.get(directory);
        if (sameName) {
          message = `the workload name ${spec.name} is already defined by ${where(sameName)}`;
          field = "name";
        } else if (this.#rootOf(spec.directory) === undefined) {
          message = `the directory ${spec.directory} is outside the delivery roots (${
            this.#roots.join(", ")
          }); add its root to delivery.roots`;
        } else if (sameDirectory) {
          message = `the directory ${spec.directory} is already used by workload ${sameDirectory.name} (${
            where(sameDirectory)
          })`;
        } else if (
          directory === stateDir || directory.startsWith(stateDir + sep) ||
          stateDir.startsWith(directory + sep)
        ) {
          message = `the directory ${spec.directory} overlaps the agent's state directory`;
        }
        if (message) {
          const key = `${where(spec)}|${message}`;
          conflicts.add(key);
          if (!this.#reportedConflicts.has(key)) {
            this.#problem({ ...spec.origin, field: fieldOf(spec, field), message });
          }
          continue;
        }
        byName.set(spec.name, spec);
        byDirectory.set(directory, spec);
      }
    }
    this.#reportedConflicts.clear();
    for (const key of conflicts) this.#reportedConflicts.add(key);
    return byName;
  }

  /** The delivery root that `directory` is in (it or below it), if any. */
  #rootOf(directory: string): string | undefined {
    const target = resolve(directory);
    return this.#roots.find((root) => {
      const rel = relative(root, target);
      return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !rel.startsWith(sep));
    });
  }

  async #reconcile(): Promise<void> {
    if (this.#isStopped) return;
    const wanted = await this.#merged();
    const removals: Promise<void>[] = [];
    for (const [name, credential] of this.#workloads) {
      if (wanted.has(name)) continue;
      this.#workloads.delete(name);
      this.#notReady.delete(name);
      removals.push(
        credential.remove().then(
          () => {
            this.#logger.info("workload removed; its files are deleted", {
              workload: name,
              directory: credential.spec.directory,
            });
            this.#emit({ type: "removed", workload: name });
          },
          (err) =>
            this.#logger.error("removing a workload's files failed", {
              workload: name,
              directory: credential.spec.directory,
              error: err,
            }),
        ),
      );
    }
    const starts: Promise<void>[] = [];
    for (const [name, spec] of wanted) {
      const existing = this.#workloads.get(name);
      if (existing) {
        if (!sameSpec(existing.spec, spec)) existing.update(spec);
        continue;
      }
      const credential = new WorkloadCredential(spec, {
        client: this.#o.client,
        nodeCredential: () => this.#node.credential(),
        deliveryRoot: (directory) => this.#rootOf(directory),
        isRevoked: (serialNumber) => this.#trust.isRevoked(serialNumber),
        trustBundlePem: () => this.#trust.pem,
        trustBundle: () => this.#trust.bundle,
        state: this.#state,
        writes: this.#writes,
        issuances: this.#issuances,
        parseBundle: (pem) => {
          if (this.#lastBundle?.pem !== pem) {
            this.#lastBundle = { pem, bundle: TrustBundle.fromPem(this.nodeId.trustDomain, pem) };
          }
          return this.#lastBundle;
        },
        renewal: this.#o.renewal,
        backoff: this.#o.backoff,
        logger: this.#logger,
        metrics: this.metrics,
        clock: this.#clock,
        onSvid: (w, svid) => {
          this.#emit({ type: "svid", workload: w.name, spiffeId: w.spec.spiffeId, svid });
          void this.#watchIssuer(svid);
        },
        onIssueFailed: (w, cause, message) => {
          this.#emit({ type: "issue-failed", workload: w.name, cause, message });
        },
        onDelivered: (w) => {
          if (w.isReady) this.#notReady.delete(w.name);
          else this.#notReady.add(w.name);
          this.#emit({
            type: "delivered",
            workload: w.name,
            directory: w.spec.directory,
            serialNumber: w.delivered?.serialNumber ?? "",
            isValid: w.isReady,
          });
          this.#checkReady();
        },
      });
      this.#workloads.set(name, credential);
      this.#notReady.add(name);
      const record = this.#records.get(name);
      this.#records.delete(name);
      // Moved while the agent was down: the SVID still serves, the old directory is cleared.
      if (record && resolve(record.directory) !== resolve(spec.directory)) {
        this.#movedDirectories.push(record.directory);
      }
      starts.push(credential.start(record));
    }
    await Promise.all([...removals, ...starts]);
    this.#checkReady();
  }

  async #removeOrphans(): Promise<void> {
    const inUse = new Set([...this.#workloads.values()].map((w) => resolve(w.spec.directory)));
    const removeFiles = async (directory: string) => {
      const root = this.#rootOf(directory);
      // Outside the delivery roots (they changed): the agent no longer writes there, or removes.
      if (root === undefined || inUse.has(resolve(directory))) return;
      await removeDelivery(directory, { root });
    };
    for (const directory of this.#movedDirectories.splice(0)) await removeFiles(directory).catch(() => {});
    for (const [name, record] of this.#records) {
      if (this.#workloads.has(name)) continue;
      try {
        await removeFiles(record.directory);
        await this.#state.removeWorkload(name);
        this.#logger.info("workload removed while the agent was stopped; its files are deleted", {
          workload: name,
          directory: record.directory,
        });
      } catch (err) {
        this.#logger.error("removing a former workload's files failed", {
          workload: name,
          directory: record.directory,
          error: err,
        });
      }
    }
    this.#records.clear();
  }

  /** Starts watching the CRL of a new issuer as soon as something it issued is held. */
  async #watchIssuer(svid: HeldSvid): Promise<void> {
    const id = await this.#trust.issuerIdOf(svid);
    if (!id || this.#issuers.has(id)) return;
    this.#issuers.add(id);
    if (this.#sourcesStarted) void this.#trust.refreshCrls();
  }

  async #isTrusted(svid: HeldSvid): Promise<boolean> {
    try {
      await verifySvid(svid.certificateChainPem, this.#trust.bundle, { at: new Date(this.#clock.now()) });
      return true;
    } catch {
      return false;
    }
  }

  *#heldCertificates(): Iterable<HeldSvid> {
    const node = this.#node.current;
    if (node) yield node;
    for (const w of this.#workloads.values()) if (w.held) yield w.held;
  }

  *#certificateStatuses(): Iterable<HeldCertificateStatus> {
    for (const w of this.#workloads.values()) {
      const d = w.delivered;
      if (d) {
        yield {
          workload: w.name,
          spiffeId: w.spec.spiffeId.toString(),
          notBefore: d.notBefore,
          notAfter: d.notAfter,
        };
      }
    }
  }

  #checkRevoked(revoked: ReadonlySet<string>): void {
    if (revoked.size === 0) return;
    const node = this.#node.current;
    if (node && revoked.has(node.serialNumber)) {
      this.metrics.revocations.inc();
      this.#logger.warn("the node's own SVID is revoked; renewing it", { serialNumber: node.serialNumber });
      this.#node.renewNow("revoked");
    }
    for (const w of this.#workloads.values()) {
      for (const serial of [w.held?.serialNumber, w.delivered?.serialNumber]) {
        if (serial && revoked.has(serial)) {
          w.revoked(serial);
          break;
        }
      }
    }
  }

  #checkReady(): void {
    if (!this.#sourcesStarted || this.#isStopped) return;
    // Every delivery calls this: decide from the set of workloads not ready, in O(1).
    const node = this.#node.current;
    const isReady = this.#notReady.size === 0 && !!node && node.expiresAt.getTime() > this.#clock.now();
    if (isReady && !this.#wasReady) {
      this.#logger.info("ready", { workloads: this.#workloads.size });
      this.#emit({ type: "ready" });
    } else if (!isReady && this.#wasReady) {
      this.#logger.warn("not ready", { waitingFor: this.readiness().waitingFor.slice(0, 20) });
    }
    this.#wasReady = isReady;
  }
}

function where(spec: WorkloadSpec): string {
  return [spec.origin.file ?? spec.origin.source, spec.origin.field].filter(Boolean).join(" ");
}

function fieldOf(spec: WorkloadSpec, field: string): string {
  return spec.origin.field ? `${spec.origin.field}.${field}` : field;
}

function sameSpec(a: WorkloadSpec, b: WorkloadSpec): boolean {
  return a.spiffeId.equals(b.spiffeId) && a.directory === b.directory && a.keyAlgorithm === b.keyAlgorithm &&
    a.layout === b.layout && a.keyFileMode === b.keyFileMode && a.ttlSeconds === b.ttlSeconds &&
    a.combinedFile === b.combinedFile && a.owner.uid === b.owner.uid && a.owner.gid === b.owner.gid;
}

/**
 * `path` with every symlink in it resolved, as far as it exists (the rest, not made yet, is
 * appended as written), so that two spellings of one directory compare equal.
 */
async function canonicalPath(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await fs.realpath(absolute);
  } catch {
    const parent = dirname(absolute);
    return parent === absolute ? absolute : join(await canonicalPath(parent), basename(absolute));
  }
}
