/**
 * OpenSSL, through node:crypto's X509Certificate, as the fuzz targets' in-process oracle:
 * an input meshauth accepts must be one OpenSSL parses, with the extensions OpenSSL decodes
 * lazily (subjectAltName, basicConstraints) readable and saying the same. Deno and Bun have
 * no OpenSSL behind node:crypto, so there the oracle is absent and only the other properties
 * are checked.
 * @module
 */

import { X509Certificate } from "node:crypto";
import { childrenOf, contextTag, encodingOf, parseDer, readOid } from "../../lib/asn1/der.ts";
import { explicit, seq } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import type { Certificate } from "../../lib/x509/certificate.ts";
import { formatIp, type GeneralName, parseIp } from "../../lib/x509/general-name.ts";
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
 * it refuses it, cannot decode a subjectAltName meshauth decoded or reads other DNS, URI,
 * email or IP names in it, or finds a CA certificate's extensions invalid. X509_check_ca (node's `ca`) answers 1 exactly for a basicConstraints cA
 * whose key usage, if any, allows keyCertSign, unless OpenSSL marked an extension it decoded
 * invalid (undecodable basicConstraints, key usage, EKU, SAN, name constraints, key
 * identifiers, CRL distribution points, a negative pathLen, a duplicate extension). For such a
 * certificate a false `ca` means OpenSSL refused an extension meshauth accepted.
 */
export function assertOpenSslAgrees(cert: Certificate): void {
  if (!hasOpenSsl) return;
  const view = opensslView(cert.der);
  if (!view) throw new Finding("meshauth parsed a certificate that OpenSSL refuses");
  if (cert.subjectAltName) {
    // Node 20 answers null for a SAN OpenSSL cannot decode, later versions undefined.
    if (view.subjectAltName == null) {
      throw new Finding("meshauth decoded a subjectAltName that OpenSSL cannot decode");
    }
    const ours = sanNames(cert.subjectAltName);
    const theirs = splitOpenSslSans(view.subjectAltName);
    if (JSON.stringify(ours) !== JSON.stringify(theirs)) {
      throw new Finding(
        `OpenSSL reads the subjectAltName as ${JSON.stringify(theirs)}, meshauth as ${JSON.stringify(ours)}`,
      );
    }
  }
  const caExpected = cert.basicConstraints?.ca === true &&
    (!cert.keyUsage || cert.keyUsage.has("keyCertSign"));
  // OpenSSL also decodes extensions meshauth never reads (RFC 3779 address and AS blocks,
  // proxy certificate info) and marks the certificate invalid when one does not decode: not
  // meshauth's concern, so `ca` is asked of a copy without them.
  const ca = opensslView(withoutForeignExtensions(cert))?.ca ?? false;
  if (caExpected && !ca) {
    throw new Finding("OpenSSL finds an extension of this CA certificate invalid where meshauth accepts it");
  }
  if (!caExpected && ca) throw new Finding("OpenSSL reads cA where meshauth does not");
}

/** The extensions meshauth decodes (lib/x509/extensions.ts); OpenSSL's verdict on others is not compared. */
const DECODED = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.certificatePolicies,
  OID.policyMappings,
  OID.policyConstraints,
  OID.inhibitAnyPolicy,
  OID.nameConstraints,
  OID.crlDistributionPoints,
  OID.authorityInfoAccess,
]);

/** The certificate re-encoded without the extensions meshauth does not decode (signature unchanged). */
function withoutForeignExtensions(cert: Certificate): Uint8Array {
  if (cert.extensions.every((e) => DECODED.has(e.oid))) return cert.der;
  const fields = childrenOf(parseDer(cert.tbs));
  const rebuilt = fields.map((f) => {
    if (f.tag !== contextTag(3, true)) return encodingOf(f);
    const [list] = childrenOf(f);
    const kept = childrenOf(list).filter((ext) => DECODED.has(readOid(childrenOf(ext)[0])));
    return explicit(3, seq(...kept.map(encodingOf)));
  });
  const [, sigAlg, sig] = childrenOf(parseDer(cert.der));
  return seq(seq(...rebuilt), encodingOf(sigAlg), encodingOf(sig));
}

/** An iPAddress SAN as text; lengths other than 4 and 16 are all the same "invalid". */
export const ipText = (bytes: Uint8Array): string =>
  bytes.length === 4 || bytes.length === 16 ? formatIp(bytes) : "invalid";

/** The `dns:`, `uri:`, `email:` and `ip:` names of a SAN, in order, as the oracles compare them. */
export function sanNames(names: readonly GeneralName[]): string[] {
  return names.flatMap((n) =>
    n.type === "ip"
      ? [`ip:${ipText(n.value)}`]
      : n.type === "dns" || n.type === "uri" || n.type === "email"
      ? [`${n.type}:${n.value}`]
      : []
  );
}

/** OpenSSL writes SANs as `DNS:a, URI:b, IP Address:1.2.3.4, email:c` (values may hold ", "). */
export function splitOpenSslSans(text: string): string[] {
  const out: string[] = [];
  for (
    const part of text.split(
      /, (?=(?:DNS|URI|IP Address|email|DirName|othername|Registered ID|X400Name|EdiPartyName):)/,
    )
  ) {
    const m = /^(DNS|URI|IP Address|email):(.*)$/s.exec(part);
    if (!m) continue;
    const type = { DNS: "dns", URI: "uri", "IP Address": "ip", email: "email" }[m[1]]!;
    // OpenSSL quotes values with special characters in JSON style (Node 17+).
    const value = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
    const ip = type === "ip" ? parseIp(value) : undefined;
    out.push(`${type}:${ip ? formatIp(ip) : type === "ip" ? "invalid" : value}`);
  }
  return out;
}
