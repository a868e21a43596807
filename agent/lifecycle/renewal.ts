/**
 * When to renew a certificate the agent (or a rotator) holds. The CA backdates `notBefore` (30
 * s by default) so that peers with a slow clock accept a new certificate; counting that slack
 * as life would renew a 35-second certificate a few seconds after it arrived. The life that
 * counts runs from when the certificate was obtained (or its `notBefore`, if later) to its
 * `notAfter`.
 *
 * @module
 */

import { type RenewalOptions, renewalTime } from "../../mod.ts";

/** What renewal needs of a held certificate. */
export interface RenewableCertificate {
  /** The certificate's notBefore, on the CA's clock (backdated by the CA). */
  notBefore: Date;
  /** The certificate's notAfter, on the CA's clock. */
  expiresAt: Date;
  /** When it was received; unknown for records stored before the agent kept it. */
  obtainedAt?: Date;
}

/**
 * The start of the usable life of `svid`: when it was obtained, or its `notBefore` if that is
 * later (or nothing else is known), never after its end.
 */
export function usableFrom(svid: RenewableCertificate): Date {
  const notBefore = svid.notBefore.getTime();
  const obtained = svid.obtainedAt?.getTime() ?? notBefore;
  return new Date(Math.min(Math.max(notBefore, obtained), svid.expiresAt.getTime() - 1));
}

/**
 * When to renew `svid`, on this node's clock: {@link renewalTime} (half-life, jitter taken off)
 * over its usable life ({@link usableFrom} to `notAfter`), but never sooner than a tenth of its
 * remaining life (at least 1 s) from now, so that a certificate restored late in its life, or
 * one shorter than the clocks' disagreement, does not renew in a tight loop. The certificate's
 * times are the CA's: with `clockOffsetMs` (the CA's clock minus this node's) the moment is
 * found on the CA's clock and answered on this one, so a node whose clock is off still renews
 * at half-life.
 */
export function renewalMoment(
  svid: RenewableCertificate,
  renewal?: RenewalOptions,
  now = Date.now(),
  clockOffsetMs = 0,
): Date {
  const caNow = now + clockOffsetMs;
  // obtainedAt was read on this node's clock.
  const obtainedAt = svid.obtainedAt && new Date(svid.obtainedAt.getTime() + clockOffsetMs);
  const usable = usableFrom({ ...svid, obtainedAt });
  const at = renewalTime({ notBefore: usable, notAfter: svid.expiresAt }, renewal).getTime();
  const floor = caNow + Math.max(1000, (svid.expiresAt.getTime() - caNow) / 10);
  return new Date(Math.max(at, floor) - clockOffsetMs);
}
