/**
 * What a failure was, in one word for a metric label and a log field, and how it bears on the
 * next attempt: the CA's problem code (`ERR_IDENTITY_MISMATCH`), `http_<status>` without one,
 * the kind of transport failure (`timeout`, `connect`, `tls`, `answer`), a file system error
 * code (`ENOSPC`), or a meshauth error code.
 *
 * @module
 */

import { MeshAuthError } from "../../mod.ts";
import { CaRequestFailed, CaUnavailable } from "../ca-client.ts";
import { DeliveryFailed } from "../delivery/atomic-writer.ts";

/** The cause of `err` as a label value. */
export function causeOf(err: unknown): string {
  if (err instanceof CaRequestFailed) return err.problemCode ?? `http_${err.status}`;
  if (err instanceof CaUnavailable) return err.kind;
  if (err instanceof DeliveryFailed) return err.causeCode ?? DeliveryFailed.code;
  if (err instanceof MeshAuthError) return err.code;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && /^[A-Z_0-9]{2,40}$/.test(code) ? code : "internal";
}

/** The error's message on one line. */
export function messageOf(err: unknown): string {
  return String((err as Error)?.message ?? err).split("\n")[0];
}

/**
 * True when asking again the same way cannot succeed until someone changes something: the CA
 * refused the identity or the request (4xx other than 408 and 429). Such failures are retried
 * at the slowest pace, so an operator's fix is still picked up.
 */
export function isRefusal(err: unknown): boolean {
  return err instanceof CaRequestFailed && err.status >= 400 && err.status < 500 &&
    err.status !== 408 && err.status !== 429;
}

/** How long the CA asked to wait (`Retry-After`), in milliseconds; 0 when it did not. */
export function retryAfterMs(err: unknown): number {
  return err instanceof CaRequestFailed && err.retryAfterSeconds !== undefined
    ? err.retryAfterSeconds * 1000
    : 0;
}
