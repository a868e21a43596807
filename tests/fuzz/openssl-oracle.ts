/**
 * OpenSSL, through node:crypto's X509Certificate, as the fuzz targets' in-process oracle:
 * an input meshauth accepts must be one OpenSSL parses, with the extensions OpenSSL decodes
 * lazily (subjectAltName, basicConstraints) readable and saying the same. Deno and Bun have
 * no OpenSSL behind node:crypto, so there the oracle is absent and only the other properties
 * are checked.
 * @module
 */

import { X509Certificate } from "node:crypto";
import type { Certificate } from "../../lib/x509/certificate.ts";
import { Finding } from "./harness.ts";

const runtime = globalThis as { Deno?: unknown; Bun?: unknown };
/** Whether node:crypto here is OpenSSL (Node itself). */
export const hasOpenSsl = runtime.Deno === undefined && runtime.Bun === undefined;

/** What OpenSSL makes of a certificate, or undefined when it refuses it. */
export function opensslView(der: Uint8Array): X509Certificate | undefined {
  try {
    return new X509Certificate(der);
  } catch {
    return undefined;
  }
}

/**
 * Throws a Finding when OpenSSL disagrees with meshauth about a certificate meshauth parsed:
 * it refuses it, cannot decode a subjectAltName meshauth decoded, or finds a CA certificate's
 * extensions invalid. X509_check_ca (node's `ca`) answers 1 exactly for a basicConstraints cA
 * whose key usage, if any, allows keyCertSign, unless OpenSSL marked an extension it decoded
 * invalid (undecodable basicConstraints, key usage, EKU, SAN, name constraints, key
 * identifiers, CRL distribution points, a negative pathLen, a duplicate extension). For such a
 * certificate a false `ca` means OpenSSL refused an extension meshauth accepted.
 */
export function assertOpenSslAgrees(cert: Certificate): void {
  if (!hasOpenSsl) return;
  const view = opensslView(cert.der);
  if (!view) throw new Finding("meshauth parsed a certificate that OpenSSL refuses");
  if (cert.subjectAltName && view.subjectAltName === undefined) {
    throw new Finding("meshauth decoded a subjectAltName that OpenSSL cannot decode");
  }
  const caExpected = cert.basicConstraints?.ca === true &&
    (!cert.keyUsage || cert.keyUsage.has("keyCertSign"));
  if (caExpected && !view.ca) {
    throw new Finding("OpenSSL finds an extension of this CA certificate invalid where meshauth accepts it");
  }
  if (!caExpected && view.ca) throw new Finding("OpenSSL reads cA where meshauth does not");
}
