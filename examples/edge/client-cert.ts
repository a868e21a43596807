/**
 * Reading the client certificate chain a TLS-terminating front proxy forwards in a header:
 * Envoy's `x-forwarded-client-cert` (`Cert="<url-encoded PEM>";Chain="<url-encoded PEM>"`)
 * or nginx's `$ssl_client_escaped_cert` (the URL-encoded PEM of the leaf alone).
 *
 * Only a proxy the edge trusts may set these headers: it must strip any copy the client sent
 * (Envoy: `forward_client_cert_details: SANITIZE_SET`). The proxy's own verdict (`URI=`,
 * `Subject=`) is ignored; the edge verifies the chain itself.
 * @module
 */

/** How the proxy encodes the certificate. */
export type ClientCertFormat = "xfcc" | "escaped-pem";

/** Which header carries the client certificate, in which format. */
export interface ClientCertHeader {
  name: string;
  format: ClientCertFormat;
}

/** Envoy's header, the default. */
export const ENVOY_XFCC: ClientCertHeader = { name: "x-forwarded-client-cert", format: "xfcc" };

/** Headers larger than this are refused before any parsing: a chain of a few certificates fits easily. */
export const MAX_CLIENT_CERT_HEADER_BYTES = 64 * 1024;

/** A header is present but cannot be read as a certificate chain. */
export class MalformedClientCertHeader extends Error {
  constructor(readonly header: string, readonly reason: string) {
    super(`header ${header}: ${reason}`);
    this.name = "MalformedClientCertHeader";
  }
}

/**
 * The PEM chain (leaf first) in the header's value, or `undefined` when the header is
 * absent or carries no certificate.
 *
 * @example
 * ```ts
 * const pem = clientChainPem(ENVOY_XFCC, request.headers.get("x-forwarded-client-cert"));
 * ```
 */
export function clientChainPem(
  header: ClientCertHeader,
  value: string | null | undefined,
): string | undefined {
  if (value === null || value === undefined || value.trim() === "") return undefined;
  if (value.length > MAX_CLIENT_CERT_HEADER_BYTES) {
    throw new MalformedClientCertHeader(header.name, `longer than ${MAX_CLIENT_CERT_HEADER_BYTES} bytes`);
  }
  if (header.format === "escaped-pem") return decode(header.name, value.trim());
  const elements = parseXfcc(header.name, value);
  // Each proxy appends one element for the client it talked to; the last is the hop nearest us.
  const nearest = elements.at(-1);
  const encoded = nearest?.get("chain") ?? nearest?.get("cert");
  return encoded === undefined ? undefined : decode(header.name, encoded);
}

function decode(header: string, encoded: string): string {
  let pem: string;
  try {
    pem = decodeURIComponent(encoded);
  } catch {
    throw new MalformedClientCertHeader(header, "the certificate is not valid URL encoding");
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new MalformedClientCertHeader(header, "the value holds no PEM certificate");
  }
  return pem;
}

/**
 * Parses an `x-forwarded-client-cert` value: elements separated by `,`, each a list of
 * `key=value` pairs separated by `;`, where a value may be double-quoted (and then hold `,`,
 * `;` and `=`, with `\"` for a quote). Keys are returned lower-cased.
 */
export function parseXfcc(header: string, value: string): Map<string, string>[] {
  const elements: Map<string, string>[] = [];
  let element = new Map<string, string>();
  let i = 0;
  const fail = (reason: string): never => {
    throw new MalformedClientCertHeader(header, `${reason} at offset ${i}`);
  };
  while (i < value.length) {
    while (value[i] === " ") i++;
    const eq = value.indexOf("=", i);
    if (eq < 0) fail("a pair without =");
    const key = value.slice(i, eq).trim().toLowerCase();
    if (!/^[a-z]+$/.test(key)) fail(`a bad key ${JSON.stringify(key)}`);
    i = eq + 1;
    let fieldValue = "";
    if (value[i] === '"') {
      i++;
      while (i < value.length && value[i] !== '"') {
        if (value[i] === "\\" && i + 1 < value.length) i++;
        fieldValue += value[i++];
      }
      if (value[i] !== '"') fail("an unterminated quoted value");
      i++;
    } else {
      while (i < value.length && value[i] !== ";" && value[i] !== ",") fieldValue += value[i++];
      fieldValue = fieldValue.trim();
    }
    if (element.has(key) && key !== "uri" && key !== "dns") fail(`a repeated key ${key}`);
    element.set(key, fieldValue);
    while (value[i] === " ") i++;
    if (value[i] === ";") i++;
    else if (value[i] === ",") {
      elements.push(element);
      element = new Map();
      i++;
    } else if (i < value.length) fail("a missing separator");
  }
  if (element.size) elements.push(element);
  return elements;
}
