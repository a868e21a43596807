/**
 * CRL revocation checking of a candidate path (RFC 5280 6.3, simplified to complete CRLs
 * issued by the certificate's own issuer). A CRL is in scope for a certificate when its
 * issuer name is the certificate's issuer and its issuing distribution point covers the
 * certificate. An in-scope CRL must be trustworthy (signed by the issuer's key, issuer
 * allowed to sign CRLs, current at the validation time, CRL number present, no critical
 * extension we do not process) or the path fails: a bad CRL is never silently ignored.
 * Certificates no CRL covers are not checked; delta and indirect CRLs are refused.
 *
 * A caller that would rather keep working through an outage of the CRL's issuer than stop
 * (`acceptStaleCrls`) may have a CRL past its nextUpdate used all the same: every other check
 * still applies, and a certificate it lists is still refused; only its age is forgiven, and
 * {@link staleCrlsOf} names the CRLs that were stale so the caller can report it.
 * @module
 */

import { OID } from "../asn1/oids.ts";
import type { Certificate, DistributionPoint } from "../x509/certificate.ts";
import type { Crl } from "../x509/crl.ts";
import { formatName } from "../x509/name.ts";
import { type GeneralName } from "../x509/general-name.ts";
import { bytesEqual } from "../encoding.ts";
import { type VerificationDetails, VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";
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
 * When CRLs of a certificate's issuer (its name and key) were given, one of them must cover
 * the certificate (a partitioned CRL for another partition proves nothing). Throws ERR_CERT_REVOKED,
 * ERR_CRL_INVALID or ERR_REVOCATION_UNKNOWN.
 */
export async function checkRevocation(
  path: readonly Certificate[],
  crls: readonly Crl[],
  atSeconds: number,
  signatures: SignatureChecker,
  acceptStaleCrls = false,
): Promise<void> {
  if (crls.length === 0) return;
  for (let i = 0; i < path.length - 1; i++) {
    const cert = path[i];
    const issuer = path[i + 1];
    const fromIssuer = crlsOfIssuer(cert, issuer, crls);
    if (fromIssuer.length === 0) continue;
    let covered = false;
    for (const crl of fromIssuer) {
      await checkCrl(crl, issuer, atSeconds, signatures, acceptStaleCrls);
      if (!covers(crl, cert)) continue;
      covered = true;
      const entry = crl.revoked.find((r) => r.serialNumber === cert.serialNumber);
      if (entry) {
        throw new VerificationError(
          "ERR_CERT_REVOKED",
          `${certificateLabel(cert)} was revoked at ${entry.revocationDate.toISOString()}${
            entry.reason ? ` (${entry.reason})` : ""
          } by the CRL of ${JSON.stringify(formatName(crl.issuer))}`,
          i,
          {
            rule: "revocation",
            certificate: certificateSummary(cert),
            issuer: certificateSummary(issuer),
            revocationDate: entry.revocationDate,
            revocationReason: entry.reason,
          },
        );
      }
    }
    if (!covered) {
      throw new VerificationError(
        "ERR_REVOCATION_UNKNOWN",
        `${certificateLabel(cert)}: no CRL given for its issuer covers it (issuing distribution point scope)`,
        i,
        { rule: "revocation", certificate: certificateSummary(cert), issuer: certificateSummary(issuer) },
      );
    }
  }
}

/**
 * The CRLs of `path` (a validated one, leaf first) that speak for one of its certificates and
 * were past their nextUpdate at `atSeconds`: what a path validated with `acceptStaleCrls`
 * relied on although it was out of date.
 */
export function staleCrlsOf(path: readonly Certificate[], crls: readonly Crl[], atSeconds: number): Crl[] {
  const stale = new Set<Crl>();
  for (let i = 0; i < path.length - 1; i++) {
    for (const crl of crlsOfIssuer(path[i], path[i + 1], crls)) {
      if (covers(crl, path[i]) && isStale(crl, atSeconds)) stale.add(crl);
    }
  }
  return [...stale];
}

/**
 * The CRLs of `cert`'s issuer. A CRL naming another key of the same CA name (a key rollover, or
 * a new root or intermediate that kept the old one's subject) speaks for that key's
 * certificates, not for this one: it is no CRL of this certificate's issuer, as if it had not
 * been given. A rotation then never turns peers' certificates from the new key into
 * "revocation unknown" while the old key's CRL is still held (the node holding nothing from the
 * new key yet).
 */
function crlsOfIssuer(cert: Certificate, issuer: Certificate, crls: readonly Crl[]): Crl[] {
  return crls.filter((crl) =>
    crl.issuer.key === cert.issuer.key &&
    !(crl.authorityKeyIdentifier && issuer.subjectKeyIdentifier &&
      !bytesEqual(crl.authorityKeyIdentifier, issuer.subjectKeyIdentifier))
  );
}

function isStale(crl: Crl, atSeconds: number): boolean {
  return !crl.nextUpdate || Math.floor(crl.nextUpdate.getTime() / 1000) < atSeconds;
}

async function checkCrl(
  crl: Crl,
  issuer: Certificate,
  atSeconds: number,
  signatures: SignatureChecker,
  acceptStaleCrls: boolean,
): Promise<void> {
  const bad = (why: string, details: VerificationDetails = {}): never => {
    throw new VerificationError(
      "ERR_CRL_INVALID",
      `CRL of ${JSON.stringify(formatName(crl.issuer))}: ${why}`,
      undefined,
      { rule: "crl", issuer: certificateSummary(issuer), ...details },
    );
  };
  const freshness = () => ({
    validationTime: new Date(atSeconds * 1000),
    notBefore: crl.thisUpdate,
    notAfter: crl.nextUpdate,
  });
  if (!bytesEqual(crl.signatureAlgorithm.der, crl.tbsSignatureAlgorithm.der)) {
    bad("signatureAlgorithm differs from the algorithm inside tbsCertList");
  }
  // RFC 5280 6.3.3(f): a CRL issuer with key usage must assert cRLSign.
  if (issuer.keyUsage && !issuer.keyUsage.has("cRLSign")) {
    bad(`${certificateLabel(issuer)} may not sign CRLs (no cRLSign)`, {
      required: ["cRLSign"],
      present: [...issuer.keyUsage],
    });
  }
  if (!(await signatures.verifies(crl, issuer))) {
    bad(`signature does not verify with the key of ${certificateLabel(issuer)}`);
  }
  for (const ext of crl.extensions) {
    if (ext.oid === OID.deltaCrlIndicator) bad("delta CRLs are not supported", { extension: ext.oid });
    if (ext.critical && !UNDERSTOOD_CRL_EXTENSIONS.has(ext.oid)) {
      bad(`unhandled critical extension ${ext.oid}`, { extension: ext.oid });
    }
  }
  const serials = new Set<string>();
  for (const entry of crl.revoked) {
    // A serial listed twice is ambiguous about when and why it was revoked.
    if (serials.has(entry.serialNumber)) bad(`serial ${entry.serialNumber} is listed twice`);
    serials.add(entry.serialNumber);
    for (const ext of entry.extensions) {
      // A certificateIssuer entry extension makes this an indirect CRL.
      if (ext.critical && !UNDERSTOOD_ENTRY_EXTENSIONS.has(ext.oid)) {
        bad(`entry ${entry.serialNumber} has unhandled critical extension ${ext.oid}`, {
          extension: ext.oid,
        });
      }
    }
  }
  // RFC 5280 5.2.3: conforming CRLs carry a non-critical CRL number.
  const crlNumber = crl.extensions.find((e) => e.oid === OID.crlNumber);
  if (!crlNumber) bad("missing CRL number");
  if (crlNumber!.critical) bad("critical CRL number");
  const idp = crl.issuingDistributionPoint;
  if (idp?.indirectCrl) bad("indirect CRLs are not supported");
  // CABF 7.2.2.1: a partition is named by URIs in fullName, nothing else.
  if (idp?.distributionPoint?.fullName?.some((n) => n.type !== "uri")) {
    bad("issuing distribution point names something other than a URI");
  }
  if (Math.floor(crl.thisUpdate.getTime() / 1000) > atSeconds) {
    bad(`not valid before ${crl.thisUpdate.toISOString()}`, freshness());
  }
  // RFC 5280 5.1.2.5: conforming CRLs carry nextUpdate; without it staleness is unknowable.
  if (!crl.nextUpdate) bad("missing nextUpdate");
  if (!acceptStaleCrls && isStale(crl, atSeconds)) {
    bad(`stale since ${crl.nextUpdate!.toISOString()}`, freshness());
  }
}

/**
 * RFC 5280 6.3.3(b): does the CRL's issuing distribution point cover this certificate? A
 * partition named relative to the issuer, or one covering only some reasons, is not matched:
 * meshauth needs a complete CRL for the certificate.
 */
function covers(crl: Crl, cert: Certificate): boolean {
  const idp = crl.issuingDistributionPoint;
  if (!idp) return true;
  const isCa = cert.basicConstraints?.ca === true;
  if (idp.onlyContainsUserCerts && isCa) return false;
  if (idp.onlyContainsCACerts && !isCa) return false;
  if (idp.onlyContainsAttributeCerts || idp.onlySomeReasons) return false;
  const point = idp.distributionPoint;
  if (!point) return true;
  const names = point.fullName;
  if (!names) return false;
  return (cert.crlDistributionPoints ?? []).some((dp: DistributionPoint) => {
    const dpNames = dp.fullName ?? dp.crlIssuer ?? [];
    // CABF 7.1.2.11.2: a distribution point is named by URIs only, compared byte for byte.
    if (dpNames.some((n) => n.type !== "uri")) return false;
    return dpNames.some((a) => names.some((b) => sameName(a, b)));
  });
}

function sameName(a: GeneralName, b: GeneralName): boolean {
  if (a.type !== b.type) return false;
  if (a.type === "directory" && b.type === "directory") return a.value.key === b.value.key;
  if (a.type === "ip" && b.type === "ip") return bytesEqual(a.value, b.value);
  if ("value" in a && "value" in b) return a.value === b.value;
  return false;
}
