/**
 * The errors of delivery: a directory that is not safe to write credentials into, and a write
 * that failed (the previous files stay in place).
 *
 * @module
 */

import { MeshAuthError } from "../../mod.ts";

/**
 * The directory is not safe to deliver into: it, or a directory between it and its delivery
 * root, is a symlink, not a directory, not owned by root or the agent, or writable by its
 * group or others; or a visible name in it is a file the agent did not make.
 */
export class DeliveryRefused extends MeshAuthError {
  /** Stable code of this class: `ERR_DELIVERY_REFUSED`. */
  static override code: string = "ERR_DELIVERY_REFUSED";
  /** `directory` is where delivery was asked for; `reason` names the path and what is unsafe about it. */
  constructor(readonly directory: string, reason: string) {
    super(`refusing to deliver into ${directory}: ${reason}`);
    this.name = "DeliveryRefused";
  }
}

/** Writing a generation failed (full disk, no permission...); the previous files are in place. */
export class DeliveryFailed extends MeshAuthError {
  /** Stable code of this class: `ERR_DELIVERY_FAILED`. */
  static override code: string = "ERR_DELIVERY_FAILED";
  /** `causeCode` is the system error's code (`ENOSPC`, `EACCES`...), if there was one. */
  constructor(readonly directory: string, readonly causeCode: string | undefined, reason: string) {
    super(`writing into ${directory} failed, previous files kept: ${reason}`);
    this.name = "DeliveryFailed";
  }
}
