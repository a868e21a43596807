/**
 * CRL revocation checking of a candidate path (RFC 5280 6.3, simplified to complete CRLs
 * issued by the certificate's own issuer). A CRL is in scope for a certificate when its
 * issuer name is the certificate's issuer and its issuing distribution point covers the
 * certificate. An in-scope CRL must be trustworthy (signed by the issuer's key, issuer
 * allowed to sign CRLs, current at the validation time, CRL number present, no critical
 * extension we do not process) or the path fails: a bad CRL is never silently ignored.
 * Certificates no CRL covers are not checked; delta and indirect CRLs are refused.
 * @module
 */

import { OID } from "../asn1/oids.ts";
import type { Certificate, DistributionPoint } from "../x509/certificate.ts";
import type { Crl } from "../x509/crl.ts";
import { formatName } from "../x509/name.ts";
import { type GeneralName } from "../x509/general-name.ts";
import { bytesEqual } from "../encoding.ts";
import { VerificationError } from "../errors.ts";
import { describe } from "./describe.ts";
import type { SignatureChecker } from "./signatures.ts";

const UNDERSTOOD_CRL_EXTENSIONS = new Set<string>([
  OID.crlNumber,
  OID.authorityKeyIdentifier,
  OID.issuingDistributionPoint,
  OID.issuerAltName,
]);
const UNDERSTOOD_ENTRY_EXTENSIONS = new Set<string>([OID.reasonCode, OID.invalidityDate]);

/**
 * Checks every certificate of `path` but the trust anchor against the CRLs in scope for it.
 * Throws ERR_CERT_REVOKED or ERR_CRL_INVALID.
 */
export async function checkRevocation(
  path: readonly Certificate[],
  crls: readonly Crl[],
  atSeconds: number,
  signatures: SignatureChecker,
): Promise<void> {
  if (crls.length === 0) return;
  for (let i = 0; i < path.length - 1; i++) {
    const cert = path[i];
    const issuer = path[i + 1];
    for (const crl of crls) {
      if (crl.issuer.key !== cert.issuer.key || !covers(crl, cert)) continue;
      await checkCrl(crl, issuer, atSeconds, signatures);
      const entry = crl.revoked.find((r) => r.serialNumber === cert.serialNumber);
      if (entry) {
        throw new VerificationError(
          "ERR_CERT_REVOKED",
          `${describe(cert)} was revoked at ${entry.revocationDate.toISOString()}${
            entry.reason ? ` (${entry.reason})` : ""
          } by the CRL of ${JSON.stringify(formatName(crl.issuer))}`,
          i,
        );
      }
    }
  }
}

async function checkCrl(
  crl: Crl,
  issuer: Certificate,
  atSeconds: number,
  signatures: SignatureChecker,
): Promise<void> {
  const bad = (why: string): never => {
    throw new VerificationError(
      "ERR_CRL_INVALID",
      `CRL of ${JSON.stringify(formatName(crl.issuer))}: ${why}`,
    );
  };
  if (!bytesEqual(crl.signatureAlgorithm.der, crl.tbsSignatureAlgorithm.der)) {
    bad("signatureAlgorithm differs from the algorithm inside tbsCertList");
  }
  // RFC 5280 6.3.3(f): a CRL issuer with key usage must assert cRLSign.
  if (issuer.keyUsage && !issuer.keyUsage.has("cRLSign")) {
    bad(`${describe(issuer)} may not sign CRLs (no cRLSign)`);
  }
  if (crl.authorityKeyIdentifier && issuer.subjectKeyIdentifier) {
    if (!bytesEqual(crl.authorityKeyIdentifier, issuer.subjectKeyIdentifier)) {
      bad(`its authority key identifier does not match ${describe(issuer)}`);
    }
  }
  if (!(await signatures.verifies(crl, issuer))) {
    bad(`signature does not verify with the key of ${describe(issuer)}`);
  }
  for (const ext of crl.extensions) {
    if (ext.oid === OID.deltaCrlIndicator) bad("delta CRLs are not supported");
    if (ext.critical && !UNDERSTOOD_CRL_EXTENSIONS.has(ext.oid)) {
      bad(`unhandled critical extension ${ext.oid}`);
    }
  }
  for (const entry of crl.revoked) {
    for (const ext of entry.extensions) {
      // A certificateIssuer entry extension makes this an indirect CRL.
      if (ext.critical && !UNDERSTOOD_ENTRY_EXTENSIONS.has(ext.oid)) {
        bad(`entry ${entry.serialNumber} has unhandled critical extension ${ext.oid}`);
      }
    }
  }
  // RFC 5280 5.2.3: conforming CRLs carry a non-critical CRL number.
  const crlNumber = crl.extensions.find((e) => e.oid === OID.crlNumber);
  if (!crlNumber) bad("missing CRL number");
  if (crlNumber!.critical) bad("critical CRL number");
  if (crl.issuingDistributionPoint?.indirectCrl) bad("indirect CRLs are not supported");
  if (Math.floor(crl.thisUpdate.getTime() / 1000) > atSeconds) {
    bad(`not valid before ${crl.thisUpdate.toISOString()}`);
  }
  if (crl.nextUpdate && Math.floor(crl.nextUpdate.getTime() / 1000) < atSeconds) {
    bad(`stale since ${crl.nextUpdate.toISOString()}`);
  }
}

/** RFC 5280 6.3.3(b): does the CRL's issuing distribution point cover this certificate? */
function covers(crl: Crl, cert: Certificate): boolean {
  const idp = crl.issuingDistributionPoint;
  if (!idp) return true;
  const isCa = cert.basicConstraints?.ca === true;
  if (idp.onlyContainsUserCerts && isCa) return false;
  if (idp.onlyContainsCACerts && !isCa) return false;
  if (idp.onlyContainsAttributeCerts) return false;
  const names = idp.distributionPoint?.fullName;
  if (!names) return true;
  return (cert.crlDistributionPoints ?? []).some((dp: DistributionPoint) =>
    (dp.fullName ?? dp.crlIssuer ?? []).some((a) => names.some((b) => sameName(a, b)))
  );
}

function sameName(a: GeneralName, b: GeneralName): boolean {
  if (a.type !== b.type) return false;
  if (a.type === "directory" && b.type === "directory") return a.value.key === b.value.key;
  if (a.type === "ip" && b.type === "ip") return bytesEqual(a.value, b.value);
  if ("value" in a && "value" in b) return a.value === b.value;
  return false;
}
