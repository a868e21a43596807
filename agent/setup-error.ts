/**
 * {@link AgentSetupError}: what `meshauth agent` and `meshauth proxy` throw when a file their
 * configuration names cannot be read at start, or the audit log cannot be opened for writing. A
 * module of its own so that the sidecar and the audit log, which throw it too, do not load the
 * node agent to do so.
 *
 * @module
 */

import { MeshAuthError } from "../mod.ts";

/** A file the configuration names cannot be read, or written (the audit log). */
export class AgentSetupError extends MeshAuthError {
  /** Stable code of this class: `ERR_AGENT_SETUP`. */
  static override code: string = "ERR_AGENT_SETUP";
  /** `message` names the setting, the file and why it cannot be used. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AgentSetupError";
  }
}
