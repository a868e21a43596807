/**
 * Certificate policy processing (RFC 5280 6.1.2-6.1.5) with the user-initial-policy-set of
 * anyPolicy and no initial explicit-policy requirement: a path only fails on policies when a
 * CA in it demands an explicit policy (requireExplicitPolicy) and no policy survives to the
 * leaf. The valid policy tree is kept as the set of policies the next certificate may assert,
 * which gives the same accept/reject answer for that user-initial-policy-set.
 * @module
 */

import { type Certificate, isSelfIssued } from "../x509/certificate.ts";
import { VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";

const ANY_POLICY = "2.5.29.32.0";

/** Throws ERR_POLICY when the path (leaf first, anchor last) has no valid policy it requires. */
export function checkPolicies(path: readonly Certificate[]): void {
  const n = path.length - 1; // certificates below the trust anchor
  // `undefined` = the NULL tree; a set holding ANY_POLICY alone = every policy is still valid.
  let valid: Set<string> | undefined = new Set([ANY_POLICY]);
  let explicitPolicy = n + 1;
  let inhibitAnyPolicy = n + 1;
  let policyMapping = n + 1;
  for (let i = 1; i <= n; i++) {
    const cert = path[n - i];
    const index = n - i;
    const isLast = i === n;
    const asserted = cert.certificatePolicies;
    if (asserted && valid) {
      const anyAllowed = asserted.includes(ANY_POLICY) &&
        (inhibitAnyPolicy > 0 || (!isLast && isSelfIssued(cert)));
      const specific = asserted.filter((p) => p !== ANY_POLICY);
      let next: Set<string>;
      if (valid.has(ANY_POLICY)) {
        next = new Set(specific);
        if (anyAllowed) next.add(ANY_POLICY);
      } else {
        next = anyAllowed ? new Set(valid) : new Set(specific.filter((p) => valid!.has(p)));
      }
      valid = next.size ? next : undefined;
    } else if (!asserted) {
      valid = undefined;
    }
    if (explicitPolicy <= 0 && !valid) {
      throw new VerificationError(
        "ERR_POLICY",
        `${certificateLabel(cert)}: no valid certificate policy remains`,
        index,
        { rule: "certificate-policies", certificate: certificateSummary(cert), present: asserted ?? [] },
      );
    }
    if (isLast) break;
    // 6.1.4(a)-(b): policy mappings rename what the next certificate must assert.
    for (const m of cert.policyMappings ?? []) {
      if (m.issuerDomainPolicy === ANY_POLICY || m.subjectDomainPolicy === ANY_POLICY) {
        throw new VerificationError(
          "ERR_POLICY",
          `${certificateLabel(cert)}: policy mapping to or from anyPolicy`,
          index,
          {
            rule: "certificate-policies",
            certificate: certificateSummary(cert),
            present: [`${m.issuerDomainPolicy} -> ${m.subjectDomainPolicy}`],
          },
        );
      }
    }
    if (valid && cert.policyMappings && !valid.has(ANY_POLICY)) {
      const mapped = new Set(valid);
      for (const m of cert.policyMappings) {
        if (!valid.has(m.issuerDomainPolicy)) continue;
        mapped.delete(m.issuerDomainPolicy);
        if (policyMapping > 0) mapped.add(m.subjectDomainPolicy);
      }
      valid = mapped.size ? mapped : undefined;
    }
    if (!isSelfIssued(cert)) {
      if (explicitPolicy > 0) explicitPolicy--;
      if (policyMapping > 0) policyMapping--;
      if (inhibitAnyPolicy > 0) inhibitAnyPolicy--;
    }
    const pc = cert.policyConstraints;
    if (pc?.requireExplicitPolicy !== undefined) {
      explicitPolicy = Math.min(explicitPolicy, pc.requireExplicitPolicy);
    }
    if (pc?.inhibitPolicyMapping !== undefined) {
      policyMapping = Math.min(policyMapping, pc.inhibitPolicyMapping);
    }
    if (cert.inhibitAnyPolicy !== undefined) {
      inhibitAnyPolicy = Math.min(inhibitAnyPolicy, cert.inhibitAnyPolicy);
    }
  }
  // 6.1.5(a)-(b) and (g): wrap-up on the leaf.
  const leaf = path[0];
  if (explicitPolicy > 0) explicitPolicy--;
  if (leaf.policyConstraints?.requireExplicitPolicy === 0) explicitPolicy = 0;
  if (explicitPolicy <= 0 && !valid) {
    throw new VerificationError(
      "ERR_POLICY",
      `${certificateLabel(leaf)}: the path requires an explicit certificate policy`,
      0,
      {
        rule: "certificate-policies",
        certificate: certificateSummary(leaf),
        present: leaf.certificatePolicies ?? [],
      },
    );
  }
}
