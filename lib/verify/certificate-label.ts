/**
 * How verification errors name a certificate: its subject and serial number, in the message
 * and as the error's `certificate` field.
 * @module
 */

import type { Certificate } from "../x509/certificate.ts";
import { formatName } from "../x509/name.ts";
import type { CertificateSummary } from "../errors.ts";

/** `certificate "CN=x" (serial 0a1b...)`, for error messages. */
export function certificateLabel(cert: Certificate): string {
  const subject = cert.subject.rdns.length ? formatName(cert.subject) : "(empty subject)";
  const serial = cert.serialNumber.length > 40 ? `${cert.serialNumber.slice(0, 40)}...` : cert.serialNumber;
  return `certificate ${JSON.stringify(subject)} (serial ${serial})`;
}

/** The subject and serial number of `cert`, for a VerificationError's `certificate` and `issuer`. */
export function certificateSummary(cert: Certificate): CertificateSummary {
  return {
    subject: cert.subject.rdns.length ? formatName(cert.subject) : "",
    serialNumber: cert.serialNumber,
  };
}
