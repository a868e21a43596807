/**
 * The agent's and `meshauth proxy`'s setup error: a file their configuration names cannot be
 * read, or written (the audit log).
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
