/**
 * The one list of x509-limbo features meshauth deliberately does not implement, keyed by the
 * suite's feature tag (or by the peer-name kind). A case carrying one of these is skipped and
 * counted as skipped, never as passed. Each entry says why.
 * @module
 */

import { OID } from "../lib/asn1/oids.ts";
import type { Certificate } from "../lib/x509/certificate.ts";

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
 * Web PKI (CABF) rules that RFC 5280 path validation does not have, recognised by what the
 * case's leaf certificate holds, so a case of the suite not seen here is skipped for the same
 * reason. Each of these cases expects FAILURE and verifyChain accepts it, by design.
 */
export const SKIPPED_WEBPKI_RULES: ReadonlyArray<{
  name: string;
  why: string;
  applies(leaf: Certificate): boolean;
}> = [
  {
    name: "CABF 7.1.2.7.12 critical SAN beside a subject",
    why: "CABF forbids a critical subjectAltName when the subject is not empty; RFC 5280 4.2.1.6 only says " +
      "SHOULD be non-critical, so path validation accepts it; an X509-SVID's identity is its URI SAN " +
      "whatever the extension's criticality",
    applies: (leaf) =>
      leaf.subject.rdns.length > 0 &&
      leaf.extensions.some((e) => e.oid === OID.subjectAltName && e.critical),
  },
  {
    name: "CABF 7.1.2.7.8 CA certificate as the end entity",
    why: "CABF forbids cA in a subscriber certificate; RFC 5280 6.1 makes no stipulation about the target " +
      "(rfc5280::ca-as-leaf expects SUCCESS), so verifyChain accepts it; verifySvid refuses a CA leaf " +
      "(X509-SVID 4.1), and SPIFFE mTLS verifies peers with verifySvid",
    applies: (leaf) => leaf.basicConstraints?.ca === true,
  },
];

/** Skip reasons by expected peer-name kind. */
export const SKIPPED_PEER_NAME_KINDS: Readonly<Record<string, string>> = {
  RFC822: "S/MIME email peer names are out of scope: meshauth verifies TLS peers (DNS and IP names)",
};
