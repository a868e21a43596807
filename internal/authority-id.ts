/**
 * The identifier of a CA authority: the first 16 bytes (hex) of the SHA-256 of its CA
 * certificate's PEM body. The CA names its authorities so (key directory, `?authority=` of
 * `/v1/crl`), and the agent computes it from the issuer in a chain it holds to ask for the CRL
 * that covers its certificates; both call this one function.
 *
 * @module
 */

import { toHex } from "../lib/encoding.ts";

/** An authority id from a PEM chain whose first certificate is the CA's own. */
export async function authorityIdOf(certificateChainPem: string): Promise<string> {
  const body = certificateChainPem.split("-----END CERTIFICATE-----")[0];
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body.replace(/\s+/g, "")));
  return toHex(new Uint8Array(digest).subarray(0, 16));
}
