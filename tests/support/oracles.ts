/**
 * The other X.509 implementations, each reduced to one comparable view of a certificate:
 * OpenSSL (node:crypto X509Certificate), @peculiar/x509 and pkijs. Used by the differential
 * run (scripts/differential.ts) and the interop tests. Test-only: the core never imports these.
 * @module
 */
import "reflect-metadata";
import { X509Certificate as OpenSslCertificate } from "node:crypto";
import * as peculiar from "@peculiar/x509";
import * as pkijs from "pkijs";
import { toHex } from "../../lib/encoding.ts";
import { parseCertificate } from "../../lib/x509/certificate.ts";
import { formatIp, parseIp } from "../../lib/x509/general-name.ts";
import { ipText, sanNames, splitOpenSslSans } from "../fuzz/openssl-oracle.ts";

/** The fields every implementation is compared on. Absent fields are not compared. */
export interface CertificateView {
  /** Attributes in order, `oid=value`, one RDN per entry, a multi-valued one joined by RDN_SEPARATOR. */
  subject?: string[];
  issuer?: string[];
  /** Serial number content octets as hex, leading zero octets removed. */
  serial: string;
  notBefore: number;
  notAfter: number;
  /** `dns:`, `uri:`, `email:`, `ip:` names in order; other forms left out. */
  sans?: string[];
  ca?: boolean;
  pathLength?: number;
  keyUsage?: string[];
  /** SubjectPublicKeyInfo DER as hex; absent where the implementation cannot decode the key. */
  spki?: string;
}

/** Joins the attributes of a multi-valued RDN in a view (a character no name value here holds). */
export const RDN_SEPARATOR = "\u001f";

export type Oracle = "meshauth" | "openssl" | "peculiar" | "pkijs";

const SHORT_NAMES: Record<string, string> = {
  CN: "2.5.4.3",
  C: "2.5.4.6",
  L: "2.5.4.7",
  ST: "2.5.4.8",
  O: "2.5.4.10",
  OU: "2.5.4.11",
  DC: "0.9.2342.19200300.100.1.25",
  E: "1.2.840.113549.1.9.1",
  SN: "2.5.4.4",
  G: "2.5.4.42",
  T: "2.5.4.12",
  serialNumber: "2.5.4.5",
  street: "2.5.4.9",
  postalCode: "2.5.4.17",
};
const KEY_USAGE_NAMES = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
];

const stripZeros = (hex: string) => hex.toLowerCase().replace(/^(00)+(?=..)/, "");
const hexOf = (bytes: ArrayBuffer | Uint8Array) => toHex(new Uint8Array(bytes));

/** meshauth's own view. */
export function meshauthView(der: Uint8Array): CertificateView {
  const cert = parseCertificate(der);
  const name = (n: typeof cert.subject) =>
    n.rdns.map((rdn) => rdn.map((a) => `${a.type}=${a.value}`).join(RDN_SEPARATOR));
  return {
    subject: name(cert.subject),
    issuer: name(cert.issuer),
    serial: stripZeros(cert.serialNumber),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    sans: cert.subjectAltName && sanNames(cert.subjectAltName),
    ca: cert.basicConstraints?.ca ?? false,
    pathLength: cert.basicConstraints?.pathLength,
    keyUsage: cert.keyUsage ? KEY_USAGE_NAMES.filter((u) => cert.keyUsage!.has(u as never)) : undefined,
    spki: hexOf(cert.spki),
  };
}

/** OpenSSL's view, through node:crypto (the library Node links). */
export function opensslView(der: Uint8Array): CertificateView {
  const cert = new OpenSslCertificate(der);
  // Node 20 answers null for a SAN OpenSSL cannot decode, later versions undefined.
  const sans = cert.subjectAltName == null ? undefined : splitOpenSslSans(cert.subjectAltName);
  return {
    serial: opensslSerial(cert.serialNumber),
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo),
    sans,
    ca: cert.ca,
    spki: opensslKey(cert),
  };
}

/**
 * The public key as OpenSSL re-encodes it, or undefined when OpenSSL cannot decode it (an EC
 * point off its curve, say): it parses such a certificate and fails only when asked for the
 * key, as meshauth fails only when it uses the key.
 */
function opensslKey(cert: OpenSslCertificate): string | undefined {
  try {
    return hexOf(cert.publicKey.export({ type: "spki", format: "der" }));
  } catch {
    return undefined;
  }
}

/** OpenSSL writes a negative serial as `-` and its magnitude; meshauth keeps the two's complement octets. */
function opensslSerial(text: string): string {
  if (!text.startsWith("-")) return stripZeros(text.length % 2 ? `0${text}` : text);
  const value = -BigInt(`0x${text.slice(1)}`);
  let bytes = 1;
  while (value < -(1n << BigInt(bytes * 8 - 1))) bytes++;
  return ((1n << BigInt(bytes * 8)) + value).toString(16).padStart(bytes * 2, "0");
}

/** @peculiar/x509's view. */
export function peculiarView(der: Uint8Array): CertificateView {
  const cert = new peculiar.X509Certificate(der.slice());
  const name = (n: peculiar.Name) =>
    n.toJSON().map((rdn) =>
      Object.entries(rdn).flatMap(([type, values]) => values.map((v) => `${SHORT_NAMES[type] ?? type}=${v}`))
        .join(RDN_SEPARATOR)
    );
  const san = cert.getExtension(peculiar.SubjectAlternativeNameExtension);
  const bc = cert.getExtension(peculiar.BasicConstraintsExtension);
  const ku = cert.getExtension(peculiar.KeyUsagesExtension);
  return {
    subject: name(cert.subjectName),
    issuer: name(cert.issuerName),
    serial: stripZeros(cert.serialNumber),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    sans: san?.names.toJSON().flatMap((n) => {
      const type = { dns: "dns", url: "uri", email: "email", ip: "ip" }[n.type as string];
      if (type === "ip") {
        const bytes = parseIp(n.value);
        return [`ip:${bytes ? formatIp(bytes) : "invalid"}`];
      }
      return type ? [`${type}:${n.value}`] : [];
    }),
    ca: bc?.ca ?? false,
    pathLength: bc?.pathLength,
    keyUsage: ku ? KEY_USAGE_NAMES.filter((_, i) => (ku.usages & (1 << i)) !== 0) : undefined,
    spki: hexOf(cert.publicKey.rawData),
  };
}

/** pkijs's view. */
export function pkijsView(der: Uint8Array): CertificateView {
  const cert = pkijs.Certificate.fromBER(der.slice());
  const name = (n: pkijs.RelativeDistinguishedNames) =>
    // pkijs flattens multi-valued RDNs; one attribute per entry is what it can say.
    n.typesAndValues.map((t) =>
      `${t.type}=${(t.value as { valueBlock: { value: string } }).valueBlock.value}`
    );
  const ext = (oid: string) => cert.extensions?.find((e) => e.extnID === oid)?.parsedValue;
  const san = ext("2.5.29.17") as pkijs.AltName | undefined;
  const bc = ext("2.5.29.19") as pkijs.BasicConstraints | undefined;
  const ku = ext("2.5.29.15") as { valueBlock: { valueHexView: Uint8Array; unusedBits: number } } | undefined;
  const time = (t: pkijs.Time) => t.value.getTime();
  return {
    subject: name(cert.subject),
    issuer: name(cert.issuer),
    serial: stripZeros(hexOf(cert.serialNumber.valueBlock.valueHexView)),
    notBefore: time(cert.notBefore),
    notAfter: time(cert.notAfter),
    sans: san?.altNames.flatMap((n) => {
      if (n.type === 1) return [`email:${n.value}`];
      if (n.type === 2) return [`dns:${n.value}`];
      if (n.type === 6) return [`uri:${n.value}`];
      if (n.type === 7) {
        return [
          `ip:${
            ipText(
              new Uint8Array(
                (n.value as { valueBlock: { valueHexView: Uint8Array } }).valueBlock.valueHexView,
              ),
            )
          }`,
        ];
      }
      return [];
    }),
    ca: bc?.cA ?? false,
    pathLength: typeof bc?.pathLenConstraint === "number" ? bc.pathLenConstraint : undefined,
    keyUsage: ku
      ? KEY_USAGE_NAMES.filter((_, i) =>
        ((ku.valueBlock.valueHexView[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0
      )
      : undefined,
    spki: hexOf(cert.subjectPublicKeyInfo.toSchema().toBER()),
  };
}

export const VIEWS: Record<Oracle, (der: Uint8Array) => CertificateView> = {
  meshauth: meshauthView,
  openssl: opensslView,
  peculiar: peculiarView,
  pkijs: pkijsView,
};

/** The fields two views disagree on (only those both report). */
export function differingFields(a: CertificateView, b: CertificateView): string[] {
  const out: string[] = [];
  for (const key of Object.keys(a) as Array<keyof CertificateView>) {
    if (a[key] === undefined || b[key] === undefined) continue;
    if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) out.push(key);
  }
  return out;
}
