/**
 * Where workloads come from. A {@link WorkloadSource} tells the agent, whenever it changes, the
 * complete set of workloads it defines; the agent compares sets and issues, re-delivers or
 * removes accordingly. A complete set rather than events means a source that missed something
 * (a watch dropped, a relist after Kubernetes' `410 Gone`) recovers by sending its set again.
 *
 * Sources here: the static list of the configuration ({@link StaticSource}) and a watched
 * directory of drop-in files ({@link DirectorySource}). A Kubernetes pod source and a CSI node
 * plugin implement the same interface: the plugin keeps its published volumes and sends them
 * all after each publish or unpublish.
 *
 * @module
 */

import type { KeyAlgorithm, SpiffeId } from "../../mod.ts";
import type { FileOwner } from "../delivery/atomic-writer.ts";
import type { LayoutName } from "../delivery/layouts.ts";

/** One workload on this node: the identity it gets and how its files are delivered. */
export interface WorkloadSpec {
  /**
   * Unique on this node: names the workload in logs, metrics and the state directory. Letters,
   * digits, `.`, `_`, `-`.
   */
  name: string;
  /** The identity its certificate names; in the agent's trust domain. */
  spiffeId: SpiffeId;
  /** Absolute path of the directory its files go into. */
  directory: string;
  /** Who its files belong to (the workload's uid and gid); the agent's where unset. */
  owner: FileOwner;
  /** Mode of the key file (and of the combined file). */
  keyFileMode: number;
  /** Lifetime asked of the CA; the CA's default when unset. */
  ttlSeconds?: number;
  /** Algorithm of its key; changing it gets the workload a new key and certificate. */
  keyAlgorithm: KeyAlgorithm;
  /** The file names its directory gets: Istio's or the SPIFFE helper's. */
  layout: LayoutName;
  /** Name of a file with the chain and the key together, if wanted. */
  combinedFile?: string;
  /** Where it was defined, for messages. */
  origin: WorkloadOrigin;
}

/** Where a workload entry was defined. */
export interface WorkloadOrigin {
  /** The source's name (`static`, `directory:/etc/meshauth/workloads.d`, ...). */
  source: string;
  /** The file that defines it, when there is one. */
  file?: string;
  /** The field path within that file (`workloads[2]`), when the file defines several. */
  field?: string;
}

/** An entry that was skipped, with where and why. */
export interface WorkloadProblem extends WorkloadOrigin {
  /** The field that is wrong, when one is (`spiffeId`, `workloads[2].mode`). */
  field?: string;
  /** What is wrong, in one line, without the field path (that is in `field`). */
  message: string;
}

/** What a source reports to. */
export interface WorkloadSink {
  /**
   * The complete set of workloads `source` defines now; it replaces the set sent before.
   * Resolves once the agent has applied it: the files of workloads no longer in any set are
   * deleted, and new workloads are started (their files follow; see {@link delivered}).
   */
  replace(source: string, workloads: readonly WorkloadSpec[]): void | Promise<void>;
  /** An entry of `source` that was skipped (malformed), reported once per change. */
  problem(problem: WorkloadProblem): void;
  /**
   * Resolves once workload `name` (sent in a set that {@link replace} has applied) has a valid
   * certificate in its files. Rejects at once when the agent does not hold it (a conflicting
   * entry), when it is removed meanwhile, and when `signal` aborts, with the reason its files
   * are not there yet (the CA's refusal, a failed write).
   */
  delivered(name: string, signal?: AbortSignal): Promise<void>;
}

/** A place workloads are defined. */
export interface WorkloadSource {
  /** A name unique among the agent's sources. */
  readonly name: string;
  /** Sends the first complete set, then keeps the sink current until stopped. */
  start(sink: WorkloadSink): Promise<void>;
  /** Stops watching. The workloads sent stay until another set replaces them. */
  stop(): Promise<void>;
}
