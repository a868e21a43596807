/**
 * The X509-SVID profile (SPIFFE X509-SVID spec 3 to 5), in one place, as go-spiffe keeps it in
 * `svid/x509svid`: which SPIFFE ID a set of URI SANs names, what a leaf SVID may and must
 * assert, and what the CA writes into one. `parseCsr` (what a workload may ask for), the CA
 * (what it issues) and `verifySvid` (what a peer may present) all read these rules from here.
 * @module
 */

import { EKU_BY_NAME } from "../asn1/oids.ts";
import { SpiffeId } from "../spiffeid.ts";
import type { Certificate, KeyUsageName } from "../x509/certificate.ts";
import type { KeyAlgorithm } from "../keys.ts";

/** Why a set of URI SANs names no single SPIFFE ID, as a code (the CSR reasons) and a sentence. */
export interface SvidIdProblem {
  reason: "no-uri-san" | "multiple-uri-sans" | "not-spiffe";
  message: string;
  cause?: unknown;
}

/** X509-SVID 2: exactly one URI SAN, and it is a SPIFFE ID. */
export function svidIdOf(uris: readonly string[]): SpiffeId | SvidIdProblem {
  if (uris.length === 0) {
    return { reason: "no-uri-san", message: "no URI SAN; an X509-SVID carries its SPIFFE ID there" };
  }
  if (uris.length > 1) {
    return { reason: "multiple-uri-sans", message: `${uris.length} URI SANs; an X509-SVID has exactly one` };
  }
  try {
    return SpiffeId.parse(uris[0]);
  } catch (cause) {
    return {
      reason: "not-spiffe",
      message: `URI SAN ${JSON.stringify(uris[0])} is not a SPIFFE ID: ${(cause as Error).message}`,
      cause,
    };
  }
}

/** X509-SVID 3.1 and 5.2: a leaf names a workload (a path), never the trust domain itself. */
export function leafIdProblem(id: SpiffeId): string | undefined {
  return id.path === "" ? `${id} is a trust domain ID; a leaf SVID's ID must have a path` : undefined;
}

/**
 * X509-SVID 4.1 and 4.3: a leaf SVID is not a CA, asserts digitalSignature, and can neither
 * certify nor sign CRLs. Returns what is wrong, or undefined.
 */
export function leafProfileProblem(leaf: Certificate): string | undefined {
  if (leaf.basicConstraints?.ca) return "a leaf SVID must not be a CA (basicConstraints cA is set)";
  if (!leaf.keyUsage?.has("digitalSignature")) {
    return "a leaf SVID must assert the digitalSignature key usage";
  }
  if (leaf.keyUsage.has("keyCertSign")) return "a leaf SVID must not assert keyCertSign";
  if (leaf.keyUsage.has("cRLSign")) return "a leaf SVID must not assert cRLSign";
  return undefined;
}

/**
 * X509-SVID 4.1 and 4.3: a signing certificate (one that signs SVIDs: the CA's own certificate
 * and every intermediate on an SVID's path) asserts cA and a key usage with keyCertSign; an
 * absent key usage extension is not enough. Returns what is wrong, or undefined. The CA checks
 * its certificate with it and verifySvid the intermediates a peer sends.
 */
export function signingCertificateProblem(ca: Certificate): string | undefined {
  if (!ca.basicConstraints?.ca) return "an X509-SVID signing certificate must be a CA (basicConstraints cA)";
  return ca.keyUsage?.has("keyCertSign")
    ? undefined
    : "an X509-SVID signing certificate must assert the keyCertSign key usage";
}

/**
 * The key usage the CA writes into a leaf SVID (X509-SVID 4.3): digitalSignature, and for RSA
 * keyEncipherment too, for TLS key exchange with RSA.
 */
export function leafKeyUsage(keyAlgorithm: KeyAlgorithm): KeyUsageName[] {
  return keyAlgorithm.startsWith("RSA") ? ["digitalSignature", "keyEncipherment"] : ["digitalSignature"];
}

/** The extended key usages the CA writes into a leaf SVID: usable by TLS servers and clients. */
export const LEAF_EXTENDED_KEY_USAGE: readonly string[] = [EKU_BY_NAME.serverAuth, EKU_BY_NAME.clientAuth];
