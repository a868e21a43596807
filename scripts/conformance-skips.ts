/**
 * The one list of x509-limbo cases meshauth deliberately does not pass: by the suite's feature
 * tag, by id group, by the peer-name kind, or by case id. A case skipped is counted as skipped,
 * never as passed, and still run (the runner reports what verifyChain did). Each entry says why.
 * @module
 */

import { OID } from "../lib/asn1/oids.ts";
import { type Certificate, parseCertificates } from "../lib/x509/certificate.ts";

/** Skip reasons by x509-limbo `features` tag. */
export const SKIPPED_FEATURES: Readonly<Record<string, string>> = {
  "pedantic-public-suffix-wildcard":
    "refusing wildcards on public suffixes needs the Public Suffix List, which the core does not ship; " +
    "wildcards over a single label (*.com, *) are refused without it",
  "pedantic-webpki-eku":
    "CABF's subscriber EKU rules (EKU required, never critical, never anyExtendedKeyUsage, none on roots) " +
    "are not applied: meshauth follows RFC 5280 4.2.1.12 and Go (no EKU extension means no restriction), " +
    "because X509-SVIDs from other issuers may omit it",
  "has-mldsa":
    "ML-DSA (RFC 9881) signatures cannot be verified: WebCrypto on the runtimes the core targets " +
    "(Node 20 and 22, Deno, Bun, workerd) has no ML-DSA, and the core uses WebCrypto only",
  "rfc5280-incompatible-with-webpki":
    "where RFC 5280 and the Web PKI disagree meshauth takes the Web PKI side: a non-critical " +
    "nameConstraints extension is accepted (CABF 7.1.2.5.2) and still enforced",
};

/**
 * Skip reasons for whole groups of cases that test one feature, keyed by the id prefix the
 * suite files them under.
 */
export const SKIPPED_GROUPS: Readonly<Record<string, string>> = {
  "webpki::cn::":
    "CABF BR 7.1.4.3 subject common-name encoding is not policed: meshauth never reads the CN as a name " +
    "(like Go, rustls-webpki and Chrome), so no CN can make a certificate match; the suite's other cases " +
    "issue leaves whose CN is in no SAN, so enforcing the rule would refuse those",
};

/**
 * Single cases skipped by id: each tests one Web PKI (CABF) rule that RFC 5280 path validation
 * does not have, expects FAILURE, and is accepted by verifyChain by design. Each names the
 * property of its leaf that the rule is about; the runner checks the leaf still has it (a
 * case that changed fails the run rather than stay skipped), and a case not listed here is
 * never skipped for holding such a property: it may test something else entirely.
 */
export const SKIPPED_CASES: Readonly<
  Record<string, { rule: string; why: string; property: string; holds(leaf: Certificate): boolean }>
> = {
  "webpki::san::san-critical-with-nonempty-subject": {
    rule: "CABF 7.1.2.7.12 critical SAN beside a subject",
    why: "CABF forbids a critical subjectAltName when the subject is not empty; RFC 5280 4.2.1.6 only says " +
      "SHOULD be non-critical, so path validation accepts it; an X509-SVID's identity is its URI SAN " +
      "whatever the extension's criticality",
    property: "a critical subjectAltName beside a non-empty subject",
    holds: (leaf) =>
      leaf.subject.rdns.length > 0 &&
      leaf.extensions.some((e) => e.oid === OID.subjectAltName && e.critical),
  },
  "webpki::ee-basicconstraints-ca": {
    rule: "CABF 7.1.2.7.8 CA certificate as the end entity",
    why: "CABF forbids cA in a subscriber certificate; RFC 5280 6.1 makes no stipulation about the target " +
      "(rfc5280::ca-as-leaf expects SUCCESS), and no RFC 5280 rule makes a cA certificate assert " +
      "keyCertSign, so verifyChain accepts it; verifySvid refuses a CA leaf (X509-SVID 4.1), and SPIFFE " +
      "mTLS verifies peers with verifySvid",
    property: "basicConstraints cA on the leaf",
    holds: (leaf) => leaf.basicConstraints?.ca === true,
  },
};

/** Skip reasons by expected peer-name kind. */
export const SKIPPED_PEER_NAME_KINDS: Readonly<Record<string, string>> = {
  RFC822: "S/MIME email peer names are out of scope: meshauth verifies TLS peers (DNS and IP names)",
};

/** The parts of an x509-limbo case the skip rules read. */
export interface SkippableCase {
  id: string;
  peer_certificate: string;
  expected_peer_name: { kind: string; value: string } | null;
  features: string[] | null;
}

/**
 * Why `c` is skipped, or undefined when it runs. Throws when a case skipped by id no longer
 * has the property its skip is about: the list is stale and must be looked at again.
 */
export function skipReasonOf(c: SkippableCase): string | undefined {
  for (const f of c.features ?? []) if (SKIPPED_FEATURES[f]) return `${f}: ${SKIPPED_FEATURES[f]}`;
  for (const [prefix, why] of Object.entries(SKIPPED_GROUPS)) {
    if (c.id.startsWith(prefix)) return `${prefix}: ${why}`;
  }
  const kind = c.expected_peer_name?.kind;
  if (kind && SKIPPED_PEER_NAME_KINDS[kind]) return `${kind}: ${SKIPPED_PEER_NAME_KINDS[kind]}`;
  const skip = Object.hasOwn(SKIPPED_CASES, c.id) ? SKIPPED_CASES[c.id] : undefined;
  if (!skip) return undefined;
  let leaf: Certificate | undefined;
  try {
    [leaf] = parseCertificates(c.peer_certificate);
  } catch {
    // A leaf that does not parse cannot have the property.
  }
  if (!leaf || !skip.holds(leaf)) {
    throw new Error(`${c.id} is skipped for ${skip.property}, which its leaf no longer has: review the skip`);
  }
  return `${skip.rule}: ${skip.why}`;
}
