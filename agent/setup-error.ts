/**
 * {@link AgentSetupError}: what `meshauth agent` and `meshauth proxy` throw when a file their
 * configuration names cannot be read at start. A module of its own so that the sidecar, which
 * throws it too, does not load the node agent to do so.
 *
 * @module
 */

import { MeshAuthError } from "../mod.ts";

/** A file the configuration names cannot be read. */
export class AgentSetupError extends MeshAuthError {
  /** Stable code of this class: `ERR_AGENT_SETUP`. */
  static override code: string = "ERR_AGENT_SETUP";
  /** `message` names the setting, the file and why it cannot be read. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AgentSetupError";
  }
}
