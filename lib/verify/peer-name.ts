/**
 * Peer-name matching: does a leaf certificate name the DNS host or IP address the caller
 * dialled? RFC 6125 6.4 / RFC 9525 with the CA/Browser Forum's wildcard rules. Names come
 * from subjectAltName only: the subject common name is never read as a name (as in Go since
 * 1.15, rustls-webpki and Chrome), so what it says cannot make a certificate match.
 * @module
 */

import type { Certificate } from "../x509/certificate.ts";
import { formatIp, parseIp } from "../x509/general-name.ts";
import { bytesEqual } from "../encoding.ts";
import { VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * True when `name` is a DNS name in the preferred name syntax (RFC 1034 3.5, RFC 1123 2.1):
 * LDH labels of 1 to 63 characters, 253 characters at most, at least one label. With
 * `allowWildcard`, a leftmost label of exactly `*` is also accepted. Compare lowercase.
 */
export function isDnsName(name: string, allowWildcard = false): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.toLowerCase().split(".");
  if (allowWildcard && labels[0] === "*" && labels.length > 1) labels.shift();
  // A name that is all digits and dots is an IP address written as a DNS name.
  if (labels.every((l) => /^\d+$/.test(l))) return false;
  return labels.every((l) => LABEL.test(l));
}

/**
 * Whether the presented SAN dNSName matches the reference name. A wildcard matches exactly
 * one whole leftmost label (`*.example.com` matches `a.example.com`, not `example.com` or
 * `a.b.example.com`), and must cover at least two labels (`*.com` and `*` never match).
 */
export function dnsNameMatches(presented: string, reference: string): boolean {
  const p = presented.toLowerCase();
  const r = reference.toLowerCase();
  if (!isDnsName(p, true) || !isDnsName(r)) return false;
  if (!p.startsWith("*.")) return p === r;
  const base = p.slice(2);
  if (!base.includes(".")) return false;
  const dot = r.indexOf(".");
  return dot > 0 && r.slice(dot + 1) === base;
}

/** Normalises a reference DNS name: lowercase, one trailing dot removed. */
function normaliseReference(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/** Checks that `cert` names `dnsName` and/or `ipAddress`; throws ERR_PEER_NAME_MISMATCH if not. */
export function checkPeerName(cert: Certificate, peer: { dnsName?: string; ipAddress?: string }): void {
  const sans = cert.subjectAltName ?? [];
  if (peer.dnsName !== undefined) {
    const reference = normaliseReference(peer.dnsName);
    if (!isDnsName(reference)) {
      throw new VerificationError(
        "ERR_PEER_NAME_MISMATCH",
        `${JSON.stringify(peer.dnsName)} is not a valid DNS name`,
        undefined,
        { rule: "peer-name", required: [peer.dnsName] },
      );
    }
    const matched = sans.some((n) => n.type === "dns" && dnsNameMatches(n.value, reference));
    if (!matched) {
      throw new VerificationError(
        "ERR_PEER_NAME_MISMATCH",
        `${certificateLabel(cert)} does not name ${JSON.stringify(reference)} (its DNS names: ${
          dnsList(cert)
        })`,
        0,
        {
          rule: "peer-name",
          certificate: certificateSummary(cert),
          required: [reference],
          present: sans.flatMap((n) => n.type === "dns" ? [n.value] : []),
        },
      );
    }
  }
  if (peer.ipAddress !== undefined) {
    const address = parseIp(peer.ipAddress);
    if (!address) {
      throw new VerificationError(
        "ERR_PEER_NAME_MISMATCH",
        `${JSON.stringify(peer.ipAddress)} is not an IP address`,
        undefined,
        { rule: "peer-name", required: [peer.ipAddress] },
      );
    }
    const matched = sans.some((n) => n.type === "ip" && bytesEqual(n.value, address));
    if (!matched) {
      throw new VerificationError(
        "ERR_PEER_NAME_MISMATCH",
        `${certificateLabel(cert)} does not name IP address ${formatIp(address)}`,
        0,
        {
          rule: "peer-name",
          certificate: certificateSummary(cert),
          required: [formatIp(address)],
          present: sans.flatMap((n) => n.type === "ip" ? [formatIp(n.value)] : []),
        },
      );
    }
  }
}

function dnsList(cert: Certificate): string {
  const names = (cert.subjectAltName ?? []).flatMap((n) => n.type === "dns" ? [n.value] : []);
  return names.length ? names.join(", ") : "none";
}
