/**
 * A DER-level PKCS#10 builder for tests: it makes the CSRs `createCsr` never would (two URI
 * SANs, no SAN, a weak key, a SHA-1 signature, extra attributes) so that `parseCsr`'s
 * rejections can be tested on real, correctly signed requests.
 * @module
 */

import { contextTag } from "../../lib/asn1/der.ts";
import {
  bitString,
  bool,
  integer,
  nullValue,
  octetString,
  oid,
  seq,
  set,
  tlv,
} from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { toArrayBuffer } from "../../lib/encoding.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { keySigner, type Signer } from "../../lib/x509/signature.ts";

export { keySigner, type Signer };

/** A subjectAltName extension with URI and DNS names (critical, as an empty subject requires). */
export function sanExtension(names: { uris?: string[]; dnsNames?: string[] }, critical = true): Uint8Array {
  const value = seq(...(names.uris ?? []).map(uriName), ...(names.dnsNames ?? []).map(dnsName));
  return critical
    ? seq(oid(OID.subjectAltName), bool(true), octetString(value))
    : seq(oid(OID.subjectAltName), octetString(value));
}

/** An extension with any OID and DER value. */
export function extension(id: string, value: Uint8Array): Uint8Array {
  return seq(oid(id), octetString(value));
}

/** A PKCS#9 extensionRequest attribute; each argument is one value (a list of extensions). */
export function extensionRequest(...values: Uint8Array[][]): Uint8Array {
  return seq(oid(OID.extensionRequest), set(...values.map((extensions) => seq(...extensions))));
}

/** What to put in the CSR. Anything not given is what a well-formed X509-SVID CSR has. */
export interface CsrSpec {
  signer: Signer;
  /** URI SANs; default none. */
  uris?: string[];
  dnsNames?: string[];
  /** The attributes, replacing the one extensionRequest built from `uris` and `dnsNames`. */
  attributes?: Uint8Array[];
  /** CSR version; 0 is v1, the only one defined. */
  version?: number;
  /** Subject Name DER; default empty. */
  subject?: Uint8Array;
  /** SubjectPublicKeyInfo DER; default the signer's. */
  spki?: Uint8Array;
  /** The outer signatureAlgorithm; default the signer's. */
  signatureAlgorithm?: Uint8Array;
}

/** Builds and signs a CSR, returning its DER. */
export async function buildCsr(spec: CsrSpec): Promise<Uint8Array> {
  const attributes = spec.attributes ??
    [extensionRequest([sanExtension({ uris: spec.uris, dnsNames: spec.dnsNames })])];
  const info = seq(
    integer(spec.version ?? 0),
    spec.subject ?? seq(),
    spec.spki ?? spec.signer.spki,
    tlv(contextTag(0, true), ...attributes),
  );
  const signature = await spec.signer.sign(info);
  return seq(info, spec.signatureAlgorithm ?? spec.signer.algorithmIdentifier, bitString(signature));
}

/**
 * An RSASSA-PKCS1-v1_5 signer for any RSA key WebCrypto holds, of any size and hash (the
 * key's own), including the weak ones `keySigner` refuses to build.
 */
export async function rsaSigner(keys: CryptoKeyPair): Promise<Signer> {
  const hash = (keys.privateKey.algorithm as RsaHashedKeyAlgorithm).hash.name;
  const algorithmOid =
    { "SHA-1": OID.sha1WithRSA, "SHA-256": OID.sha256WithRSA, "SHA-384": OID.sha384WithRSA }[
      hash
    ];
  if (!algorithmOid) throw new Error(`no signature OID for RSA with ${hash}`);
  return {
    algorithmIdentifier: seq(oid(algorithmOid), nullValue()),
    spki: new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey)),
    async sign(data) {
      return new Uint8Array(
        await crypto.subtle.sign({ name: "RSASSA-PKCS1-v1_5" }, keys.privateKey, toArrayBuffer(data)),
      );
    },
  };
}

/**
 * A SubjectPublicKeyInfo with any algorithm OID, parameters (an OID, or raw DER such as
 * `nullValue()`) and key bytes.
 */
export function fakeSpki(
  algorithmOid: string,
  parameters: string | Uint8Array | undefined,
  key: Uint8Array,
): Uint8Array {
  const params = parameters === undefined
    ? []
    : [typeof parameters === "string" ? oid(parameters) : parameters];
  return seq(seq(oid(algorithmOid), ...params), bitString(key));
}

export { nullValue };

/** A copy of `der` with the bits of byte `index` (negative counts from the end) inverted. */
export function flipByte(der: Uint8Array, index: number): Uint8Array {
  const copy = der.slice();
  const i = index < 0 ? copy.length + index : index;
  copy[i] ^= 0xff;
  return copy;
}
