/**
 * The workloads listed in the agent's configuration (`workloads:`). They change only when the
 * agent restarts with another configuration.
 *
 * @example
 * ```ts
 * import { StaticSource } from "meshauth/agent";
 * const source = new StaticSource(config.workloads);
 * ```
 * @module
 */

import type { WorkloadProblem, WorkloadSink, WorkloadSource, WorkloadSpec } from "./source.ts";

/** A fixed list of workloads (and the entries of it that were skipped, to report). */
export class StaticSource implements WorkloadSource {
  readonly name = "static";
  /** `workloads` is the list to send; `problems` are the entries that were skipped when it was read. */
  constructor(
    readonly workloads: readonly WorkloadSpec[],
    readonly problems: readonly WorkloadProblem[] = [],
  ) {}

  start(sink: WorkloadSink): Promise<void> {
    for (const problem of this.problems) sink.problem(problem);
    sink.replace(this.name, this.workloads);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}
