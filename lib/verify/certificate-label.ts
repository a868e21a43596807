/**
 * How verification errors name a certificate: its subject and serial number.
 * @module
 */

import type { Certificate } from "../x509/certificate.ts";
import { formatName } from "../x509/name.ts";

/** `certificate "CN=x" (serial 0a1b...)`, for error messages. */
export function certificateLabel(cert: Certificate): string {
  const subject = cert.subject.rdns.length ? formatName(cert.subject) : "(empty subject)";
  const serial = cert.serialNumber.length > 40 ? `${cert.serialNumber.slice(0, 40)}...` : cert.serialNumber;
  return `certificate ${JSON.stringify(subject)} (serial ${serial})`;
}
