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
  static override code = "ERR_DELIVERY_REFUSED";
  override name = "DeliveryRefused";
  override code = DeliveryRefused.code;
  constructor(readonly directory: string, reason: string) {
    super(`refusing to deliver into ${directory}: ${reason}`);
  }
}

/** Writing a generation failed (full disk, no permission...); the previous files are in place. */
export class DeliveryFailed extends MeshAuthError {
  static override code = "ERR_DELIVERY_FAILED";
  override name = "DeliveryFailed";
  override code = DeliveryFailed.code;
  constructor(readonly directory: string, readonly causeCode: string | undefined, reason: string) {
    super(`writing into ${directory} failed, previous files kept: ${reason}`);
  }
}
