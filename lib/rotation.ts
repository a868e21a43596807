/**
 * When to renew a certificate. Istio renews workload certificates at half their lifetime;
 * jitter spreads a fleet's renewals so they do not all hit the CA at once.
 *
 * @example
 * ```ts
 * import { renewalTime } from "meshauth";
 * const at = renewalTime({ notBefore: svid.notBefore, notAfter: svid.notAfter }); // ~45-50% of the lifetime
 * ```
 * @module
 */

import { InvalidArgument, optionsOf } from "./errors.ts";

/** Options of {@link renewalTime}. */
export interface RenewalOptions {
  /** Fraction of the lifetime after which to renew. Default 0.5. */
  ratio?: number;
  /** Up to this fraction of the lifetime is taken off at random. Default 0.1. */
  jitter?: number;
  /** Random source in [0, 1); tests pass a fixed one. */
  random?: () => number;
}

/**
 * The moment a holder should renew: `notBefore + lifetime * (ratio - jitter * random)`,
 * never before `notBefore`.
 */
export function renewalTime(
  validity: { notBefore: Date; notAfter: Date },
  options: RenewalOptions = {},
): Date {
  optionsOf(options);
  const ratio = options.ratio ?? 0.5;
  const jitter = options.jitter ?? 0.1;
  if (!(ratio > 0 && ratio <= 1)) throw new InvalidArgument("ratio", `must be in (0, 1], got ${ratio}`);
  if (!(jitter >= 0 && jitter < ratio)) {
    throw new InvalidArgument("jitter", `must be in [0, ratio), got ${jitter}`);
  }
  if (!(validity?.notBefore instanceof Date) || !(validity.notAfter instanceof Date)) {
    throw new InvalidArgument(
      "validity",
      "expected { notBefore, notAfter } Dates, as issued certificates have",
    );
  }
  const start = validity.notBefore.getTime();
  const lifetime = validity.notAfter.getTime() - start;
  if (!(lifetime > 0)) throw new InvalidArgument("validity", "notAfter must be after notBefore");
  const draw = (options.random ?? Math.random)();
  // A draw outside [0, 1) would move renewal before notBefore or past the ratio.
  if (!(draw >= 0 && draw < 1)) {
    throw new InvalidArgument("random", `must return a number in [0, 1), got ${draw}`);
  }
  return new Date(start + Math.floor(lifetime * (ratio - jitter * draw)));
}
