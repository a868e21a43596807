/**
 * Facts about a subjectPublicKey read from its encoding, shared by the CSR checks, the path
 * validator and bundles.
 * @module
 */

import { childrenOf, contentOf, expectTag, parseDer, Tag } from "../asn1/der.ts";

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
