/**
 * Helpers shared by the stores for turning stored JSON back into records.
 * @module
 */

import { ACCEPTED_REVOCATION_REASONS, type AcceptedRevocationReason } from "./store.ts";

const DATE_FIELDS = new Set([
  "notBefore",
  "notAfter",
  "issuedAt",
  "revokedAt",
  "expiresAt",
  "usedAt",
  "createdAt",
  "at",
]);

/** Turns ISO date strings in the known date fields (at any depth) back into `Date`s. */
export function reviveDates(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reviveDates);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = DATE_FIELDS.has(k) && typeof v === "string" ? new Date(v) : reviveDates(v);
    }
    return out;
  }
  return value;
}

/** True when `value` names an RFC 5280 reason the server accepts. */
export function isAcceptedReason(value: unknown): value is AcceptedRevocationReason {
  return typeof value === "string" && (ACCEPTED_REVOCATION_REASONS as readonly string[]).includes(value);
}
