/**
 * Per-certificate profile rules a certificate must meet before it may sit on a validated
 * path: encoding rules RFC 5280 states as MUSTs, extension criticality, consistency between
 * basic constraints and key usage, and the public keys meshauth accepts. Rules that depend on
 * the position in the path take the certificate's role.
 * @module
 */

import { parseDer, readOid, Tag } from "../asn1/der.ts";
import { EC_CURVES, OID } from "../asn1/oids.ts";
import { rsaModulusBits } from "../x509/public-key.ts";
import type { Certificate } from "../x509/certificate.ts";
import { bytesEqual } from "../encoding.ts";
import { type VerificationCode, type VerificationDetails, VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";

/** Where a certificate sits on a path: the leaf, a CA below the anchor, or the trust anchor. */
export type CertificateRole = "leaf" | "intermediate" | "anchor";

/** Extensions the validator processes; a critical extension outside this set fails the path. */
const UNDERSTOOD_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.certificatePolicies,
  OID.policyMappings,
  OID.policyConstraints,
  OID.inhibitAnyPolicy,
  OID.crlDistributionPoints,
]);

/**
 * Checks the rules of one certificate in the role it plays on a candidate path. Throws a
 * {@link VerificationError} naming the certificate and the rule.
 */
export function checkProfile(cert: Certificate, role: CertificateRole, index: number): void {
  const fail = (code: VerificationCode, why: string, details: VerificationDetails = {}): never => {
    throw failure(cert, index, code, why, { rule: "profile", ...details });
  };
  const usages = () => [...(cert.keyUsage ?? [])];
  // RFC 5280 6.1.1(d): a trust anchor contributes its name and key. A v1 root (no extensions
  // to hold it to) is a CA by the caller's out-of-band choice to trust it (6.1.4(k) note).
  if (role === "anchor" && cert.version === 1) return checkPublicKey(cert, index);
  // CABF 7.1.1 and RFC 5280 6.1.4(k), which lets implementations refuse v1 and v2 CAs: only v3
  // certificates are valid below the anchor.
  if (cert.version !== 3) fail("ERR_CERT_MALFORMED", `X.509 version ${cert.version}, only v3 is accepted`);
  // RFC 5280 4.1.1.2: signatureAlgorithm MUST equal tbsCertificate.signature.
  if (!bytesEqual(cert.signatureAlgorithm.der, cert.tbsSignatureAlgorithm.der)) {
    fail("ERR_CERT_MALFORMED", "signatureAlgorithm differs from the algorithm inside tbsCertificate");
  }
  // RFC 5280 4.1.2.2: a positive integer of at most 20 octets. A trust anchor's serial is
  // never looked at (anchors are configured, not issued to us), and old roots use zero.
  const serial = cert.serialBytes;
  if (role !== "anchor") {
    if (serial[0] & 0x80) fail("ERR_CERT_MALFORMED", "negative serial number");
    if (serial.every((b) => b === 0)) fail("ERR_CERT_MALFORMED", "serial number is zero");
    if (serial.length > 20 && !(serial.length === 21 && serial[0] === 0)) {
      fail("ERR_CERT_MALFORMED", `serial number of ${serial.length} octets (at most 20)`);
    }
  }
  for (const ext of cert.extensions) {
    if (ext.critical && !UNDERSTOOD_EXTENSIONS.has(ext.oid)) {
      fail("ERR_UNHANDLED_CRITICAL_EXTENSION", `unhandled critical extension ${ext.oid}`, {
        rule: "critical-extension",
        extension: ext.oid,
      });
    }
  }
  const extension = (oid: string) => cert.extensions.find((e) => e.oid === oid);
  // RFC 5280 4.2.1.1 and 4.2.1.2: both key identifier extensions MUST be non-critical.
  if (extension(OID.authorityKeyIdentifier)?.critical) {
    fail("ERR_CERT_MALFORMED", "critical authorityKeyIdentifier");
  }
  if (extension(OID.subjectKeyIdentifier)?.critical) {
    fail("ERR_CERT_MALFORMED", "critical subjectKeyIdentifier");
  }
  // RFC 5280 4.2.1.11: policy constraints MUST be critical.
  const policyConstraints = extension(OID.policyConstraints);
  if (policyConstraints && !policyConstraints.critical) {
    fail("ERR_CERT_MALFORMED", "non-critical policyConstraints");
  }

  const isCa = cert.basicConstraints?.ca === true;
  // RFC 5280 4.2.1.1: every certificate but a self-signed one carries the issuer's key id.
  if (cert.subject.key !== cert.issuer.key && !extension(OID.authorityKeyIdentifier)) {
    fail("ERR_CERT_MALFORMED", "missing authorityKeyIdentifier (required unless self-signed)");
  }
  if (extension(OID.authorityKeyIdentifier)) {
    if (!cert.authorityKeyIdentifier) {
      fail("ERR_CERT_MALFORMED", "authorityKeyIdentifier without keyIdentifier");
    }
    // CABF 7.1.2.1.3 / 7.1.2.2.5: a CA's AKI names the key only, never issuer and serial.
    if (isCa && (cert.authorityCertIssuer || cert.authorityCertSerialNumber)) {
      fail("ERR_CERT_MALFORMED", "CA authorityKeyIdentifier carries authorityCertIssuer or serial");
    }
  }
  // RFC 5280 4.2.1.3 and 4.2.1.9: keyCertSign MUST NOT be asserted without cA, on any
  // certificate (a MUST on the certificate itself, which x509-limbo holds the target to too).
  if (cert.keyUsage?.has("keyCertSign") && !isCa) {
    fail("ERR_KEY_USAGE", "keyUsage asserts keyCertSign but basicConstraints does not assert cA", {
      rule: "key-usage",
      present: usages(),
    });
  }
  // RFC 5280 6.1.4(n): a CA that certifies on the path has a key usage allowing keyCertSign.
  // The target certifies nothing, and no rule of RFC 5280 makes a cA certificate assert
  // keyCertSign (CABF 7.1.2.7.8 does, for the Web PKI), so a CA target without it is valid
  // here; verifySvid refuses every CA leaf (X509-SVID 4.1).
  if (role !== "leaf" && isCa && cert.keyUsage && !cert.keyUsage.has("keyCertSign")) {
    fail("ERR_KEY_USAGE", "basicConstraints asserts cA but keyUsage lacks keyCertSign", {
      rule: "key-usage",
      required: ["keyCertSign"],
      present: usages(),
    });
  }
  if (isCa) {
    // RFC 5280 4.1.2.6: a CA's subject MUST be a non-empty distinguished name.
    if (cert.subject.rdns.length === 0) fail("ERR_CERT_MALFORMED", "CA certificate with an empty subject");
    // RFC 5280 4.2.1.2: every CA certificate carries a subject key identifier.
    if (!cert.subjectKeyIdentifier) fail("ERR_CERT_MALFORMED", "CA certificate without subjectKeyIdentifier");
  }
  // RFC 5280 4.2.1.10: name constraints MUST be used only in a CA certificate. Only the target
  // can break this (every other certificate on a path is a CA); held to it, like keyCertSign
  // above, as a MUST on the certificate's own content.
  if (cert.nameConstraints && !isCa) {
    fail("ERR_NAME_CONSTRAINTS", "nameConstraints in a certificate that is not a CA", {
      rule: "name-constraints",
    });
  }
  for (const name of cert.subjectAltName ?? []) {
    if (name.type === "ip" && name.value.length !== 4 && name.value.length !== 16) {
      fail("ERR_CERT_MALFORMED", `subjectAltName iPAddress of ${name.value.length} octets`);
    }
  }
  if (role === "leaf") {
    // RFC 5280 4.2.1.6: with an empty subject the SAN MUST be critical (the names are all in
    // it). With a subject, non-critical is only a SHOULD, so a critical SAN there is valid.
    // Whether the leaf is a CA is not path validation's business (6.1 makes no stipulation about
    // the target's basicConstraints); verifySvid refuses CA leaves (X509-SVID 4.1).
    const san = extension(OID.subjectAltName);
    if (cert.subject.rdns.length === 0 && !san?.critical) {
      fail("ERR_CERT_MALFORMED", "empty subject without a critical subjectAltName");
    }
  } else {
    // RFC 5280 6.1.4(k) and 4.2.1.9: a certificate that signs certificates asserts cA, in a
    // basicConstraints extension marked critical.
    const basicConstraints = { rule: "basic-constraints" } as const;
    if (!cert.basicConstraints) {
      fail("ERR_CERT_NOT_CA", "issuing certificate without basicConstraints", basicConstraints);
    }
    if (!isCa) {
      fail(
        "ERR_CERT_NOT_CA",
        "issuing certificate whose basicConstraints does not assert cA",
        basicConstraints,
      );
    }
    if (!extension(OID.basicConstraints)!.critical) {
      fail("ERR_CERT_MALFORMED", "CA basicConstraints is not critical", basicConstraints);
    }
  }
  // CABF 7.1.2.1.3: a self-signed anchor's authority key identifier is its own key identifier.
  if (
    role === "anchor" && cert.subject.key === cert.issuer.key && cert.authorityKeyIdentifier &&
    cert.subjectKeyIdentifier && !bytesEqual(cert.authorityKeyIdentifier, cert.subjectKeyIdentifier)
  ) {
    fail(
      "ERR_CERT_MALFORMED",
      "self-signed root whose authorityKeyIdentifier differs from its subjectKeyIdentifier",
    );
  }
  checkPublicKey(cert, index);
}

const RSA_NULL_PARAMETERS = new Uint8Array([Tag.NULL, 0]);

/**
 * The public keys meshauth accepts anywhere on a path: EC on P-256, P-384 or P-521, RSA of
 * at least 2048 bits in whole bytes (CABF 6.1.5), Ed25519.
 */
function checkPublicKey(cert: Certificate, index: number): void {
  const algorithm = cert.publicKeyAlgorithm;
  const reject = (why: string, refused = algorithm.oid): never => {
    throw failure(cert, index, "ERR_ALGORITHM_UNSUPPORTED", why, { rule: "public-key", algorithm: refused });
  };
  switch (algorithm.oid) {
    case OID.ecPublicKey: {
      const params = algorithm.parameters;
      if (!params || params[0] !== Tag.OID) reject("EC key without a named curve");
      let curve = "(malformed)";
      try {
        curve = readOid(parseDer(params!, "EC parameters"), "EC parameters");
      } catch {
        // An unreadable curve is as unsupported as an unknown one.
      }
      if (!EC_CURVES[curve]) reject(`EC key on curve ${curve}`, curve);
      return;
    }
    case OID.rsaEncryption:
      // RFC 3279 2.3.1: the parameters MUST be NULL. Anything else (an empty string, say) is a
      // second encoding of the same key, which OpenSSL re-encodes with NULL and meshauth would
      // otherwise carry as signed.
      if (!algorithm.parameters || !bytesEqual(algorithm.parameters, RSA_NULL_PARAMETERS)) {
        reject("RSA key whose algorithm parameters are not NULL");
      }
    // falls through
    case OID.rsassaPss: {
      const bits = rsaModulusBits(cert.publicKey);
      if (bits < 2048) reject(`RSA key of ${bits} bits (at least 2048)`, `RSA-${bits}`);
      if (bits % 8 !== 0) reject(`RSA key of ${bits} bits (not a whole number of bytes)`, `RSA-${bits}`);
      return;
    }
    case OID.ed25519:
      if (algorithm.parameters) reject("Ed25519 key with parameters");
      return;
    default:
      reject(`public key algorithm ${algorithm.oid}`);
  }
}

function failure(
  cert: Certificate,
  index: number,
  code: VerificationCode,
  why: string,
  details: VerificationDetails,
): VerificationError {
  return new VerificationError(code, `${certificateLabel(cert)}: ${why}`, index, {
    certificate: certificateSummary(cert),
    ...details,
  });
}
