/**
 * Facts about a subjectPublicKey read from its encoding, shared by the CSR checks, the path
 * validator and bundles.
 * @module
 */

import { childrenOf, contentOf, expectTag, parseDer, readOid, Tag } from "../asn1/der.ts";
import { EC_CURVES, OID } from "../asn1/oids.ts";
import { toBase64Url } from "../encoding.ts";
import type { SubjectPublicKeyInfo } from "./certificate.ts";

/** Bit length of an RSAPublicKey's modulus (RFC 8017 A.1.1: SEQUENCE { n, e }). */
export function rsaModulusBits(publicKey: Uint8Array): number {
  const [modulus] = childrenOf(
    expectTag(parseDer(publicKey, "RSA public key"), Tag.SEQUENCE, "RSA public key"),
  );
  const bytes = contentOf(expectTag(modulus, Tag.INTEGER, "RSA modulus"));
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  if (i === bytes.length) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]));
}

/** The public JWK of an EC key (RFC 7518 6.2.1); a type, not an interface, so it is a JsonWebKey. */
export type EcPublicJwk = {
  kty: "EC";
  crv: "P-256" | "P-384" | "P-521";
  x: string;
  y: string;
};

/**
 * The public JWK of an EC key on a named curve meshauth knows, from its SubjectPublicKeyInfo;
 * undefined for any other key: another algorithm, explicit curve parameters, an unknown curve,
 * a compressed point or one of the wrong length (a JWK holds only uncompressed coordinates).
 * Whether the point is on the curve is left to whoever imports the JWK.
 */
export function ecPublicJwk({ algorithm, publicKey }: SubjectPublicKeyInfo): EcPublicJwk | undefined {
  const { parameters } = algorithm;
  if (algorithm.oid !== OID.ecPublicKey || parameters?.[0] !== Tag.OID) return undefined;
  const curve = EC_CURVES[readOid(parseDer(parameters, "EC parameters"), "EC parameters")];
  // SEC 1 2.3.3: 0x04, then X and Y, each exactly the curve's size.
  if (!curve || publicKey[0] !== 0x04 || publicKey.length !== 1 + 2 * curve.size) return undefined;
  return {
    kty: "EC",
    crv: curve.name,
    x: toBase64Url(publicKey.subarray(1, 1 + curve.size)),
    y: toBase64Url(publicKey.subarray(1 + curve.size)),
  };
}
