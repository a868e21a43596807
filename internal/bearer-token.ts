/**
 * What a bearer token may be before it is put into an `Authorization` header: one run of
 * visible ASCII. A line break would inject a header, and fetch's refusal of such a value
 * quotes it, so a token that is not this must be refused without being quoted.
 *
 * @module
 */

/** True for one run of visible ASCII characters (0x21 to 0x7e). */
export function isBearerToken(token: unknown): token is string {
  return typeof token === "string" && /^[\x21-\x7e]+$/.test(token);
}
