/**
 * Validation of one candidate path (RFC 5280 6.1), leaf first and trust anchor last, once
 * the builder has checked each signature: certificate profiles, validity, basic constraints
 * and path length, key usage and extended key usage, name constraints, certificate policies,
 * the peer name and revocation. The trust anchor is treated as a certificate with all its
 * constraints, as rustls-webpki and Chrome do, so a constrained root constrains its paths.
 * @module
 */

import { EKU_BY_NAME, OID } from "../asn1/oids.ts";
import { type Certificate, isSelfIssued, type KeyUsageName } from "../x509/certificate.ts";
import type { Crl } from "../x509/crl.ts";
import { VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";
import {
  checkNameConstraints,
  ComparisonBudget,
  type ConstraintSet,
  constraintSetOf,
} from "./name-constraints.ts";
import { checkPeerName } from "./peer-name.ts";
import { checkPolicies } from "./certificate-policies.ts";
import { checkProfile } from "./profile.ts";
import { checkRevocation } from "./revocation.ts";
import type { SignatureChecker } from "./signatures.ts";

/** What a path is validated for. */
export interface PathRequirements {
  /** Validation time in whole seconds since the epoch (RFC 5280 times have no fractions). */
  atSeconds: number;
  purpose?: "serverAuth" | "clientAuth";
  /** EKU OIDs the leaf (and any CA with an EKU extension) must allow. */
  requiredEkus: readonly string[];
  /** Most non-self-issued intermediates allowed between leaf and anchor. */
  maxDepth: number;
  dnsName?: string;
  ipAddress?: string;
  crls: readonly Crl[];
  /** A CRL past its nextUpdate is used, not refused (see `checkRevocation`). */
  acceptStaleCrls: boolean;
}

/**
 * Throws a {@link VerificationError} when `path` is not valid for `req`. `comparisons` is the
 * name constraint budget, shared by the paths one verification tries.
 */
export async function validatePath(
  path: readonly Certificate[],
  req: PathRequirements,
  signatures: SignatureChecker,
  comparisons: ComparisonBudget = new ComparisonBudget(),
): Promise<void> {
  const last = path.length - 1;
  for (let i = 0; i <= last; i++) {
    checkProfile(path[i], i === 0 ? "leaf" : i === last ? "anchor" : "intermediate", i);
    checkValidity(path[i], i, req.atSeconds);
  }
  const intermediates = path.slice(1, last).filter((c) => !isSelfIssued(c)).length;
  if (intermediates > req.maxDepth) {
    throw new VerificationError(
      "ERR_CHAIN_TOO_LONG",
      `path has ${intermediates} intermediates, more than the maximum depth of ${req.maxDepth}`,
      undefined,
      { rule: "max-depth", limit: req.maxDepth, count: intermediates },
    );
  }
  // RFC 5280 4.2.1.9: pathLenConstraint counts the non-self-issued intermediates below a CA.
  for (let k = 1; k <= last; k++) {
    const limit = path[k].basicConstraints?.pathLength;
    if (limit === undefined) continue;
    const below = path.slice(1, k).filter((c) => !isSelfIssued(c)).length;
    if (below > limit) {
      throw new VerificationError(
        "ERR_PATH_LENGTH_EXCEEDED",
        `${certificateLabel(path[k])} allows ${limit} intermediates below it, the path has ${below}`,
        k,
        { rule: "path-length", certificate: certificateSummary(path[k]), limit, count: below },
      );
    }
  }
  checkLeafKeyUsage(path[0], req.purpose);
  checkExtendedKeyUsage(path, req.requiredEkus);
  const constraints: ConstraintSet[] = [];
  for (let k = last; k >= 0; k--) {
    const cert = path[k];
    // RFC 5280 6.1.3(b): self-issued CAs are exempt, the final certificate is not.
    if (k < last && (k === 0 || !isSelfIssued(cert))) {
      checkNameConstraints(cert, k, constraints, k === 0, comparisons);
    }
    if (k > 0) {
      const set = constraintSetOf(cert, k);
      if (set) constraints.push(set);
    }
  }
  checkPolicies(path);
  if (req.dnsName !== undefined || req.ipAddress !== undefined) {
    checkPeerName(path[0], { dnsName: req.dnsName, ipAddress: req.ipAddress });
  }
  await checkRevocation(path, req.crls, req.atSeconds, signatures, req.acceptStaleCrls);
}

/** RFC 5280 4.1.2.5: notBefore through notAfter, inclusive, at second granularity. */
export function checkValidity(cert: Certificate, index: number, atSeconds: number): void {
  const details = () => ({
    rule: "validity" as const,
    certificate: certificateSummary(cert),
    validationTime: new Date(atSeconds * 1000),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  });
  if (atSeconds < Math.floor(cert.notBefore.getTime() / 1000)) {
    throw new VerificationError(
      "ERR_CERT_NOT_YET_VALID",
      `${certificateLabel(cert)} is not valid before ${cert.notBefore.toISOString()}`,
      index,
      details(),
    );
  }
  if (atSeconds > Math.floor(cert.notAfter.getTime() / 1000)) {
    throw new VerificationError(
      "ERR_CERT_EXPIRED",
      `${certificateLabel(cert)} expired at ${cert.notAfter.toISOString()}`,
      index,
      details(),
    );
  }
}

/** The leaf's key usage must allow what TLS does with its key for the purpose. */
function checkLeafKeyUsage(leaf: Certificate, purpose: PathRequirements["purpose"]): void {
  const ku = leaf.keyUsage;
  if (!ku || !purpose) return;
  // What TLS does with the key: sign the handshake, or (server, RSA) decrypt or agree a key.
  const usable: KeyUsageName[] = purpose === "serverAuth"
    ? ["digitalSignature", "keyEncipherment", "keyAgreement"]
    : ["digitalSignature", "keyAgreement"];
  if (!usable.some((usage) => ku.has(usage))) {
    throw new VerificationError(
      "ERR_KEY_USAGE",
      `${certificateLabel(leaf)}: key usage ${[...ku].join(", ") || "(none)"} does not allow ${purpose}`,
      0,
      { rule: "key-usage", certificate: certificateSummary(leaf), required: usable, present: [...ku] },
    );
  }
}

/**
 * EKU as Go's crypto/x509 treats it: the leaf and every CA that carries the extension must
 * list each required purpose (or anyExtendedKeyUsage); no extension means no restriction.
 */
function checkExtendedKeyUsage(path: readonly Certificate[], required: readonly string[]): void {
  if (required.length === 0) return;
  path.forEach((cert, i) => {
    const ekus = cert.extendedKeyUsage;
    if (!ekus || ekus.includes(OID.anyExtendedKeyUsage)) return;
    const missing = required.filter((oid) => !ekus.includes(oid));
    if (missing.length) {
      throw new VerificationError(
        "ERR_EXTENDED_KEY_USAGE",
        `${certificateLabel(cert)}: extended key usage ${ekus.join(", ")} lacks ${missing.join(", ")}`,
        i,
        {
          rule: "extended-key-usage",
          certificate: certificateSummary(cert),
          required: required.map(ekuName),
          present: ekus.map(ekuName),
        },
      );
    }
  });
}

const EKU_NAMES = new Map(Object.entries(EKU_BY_NAME).map(([name, oid]) => [oid, name]));

/** An EKU as a VerificationError lists it: its short name (`serverAuth`) when it has one, else its OID. */
function ekuName(oid: string): string {
  return EKU_NAMES.get(oid) ?? oid;
}
