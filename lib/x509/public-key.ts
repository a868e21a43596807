/**
 * Facts about a subjectPublicKey read from its encoding, shared by the CSR checks, the path
 * validator and bundles.
 * @module
 */

import { childrenOf, contentOf, expectTag, parseDer, readOid, Tag } from "../asn1/der.ts";
import { EC_CURVES, OID } from "../asn1/oids.ts";
import { toBase64Url, toHex } from "../encoding.ts";
import { MalformedInput, UnsupportedAlgorithm } from "../errors.ts";
import type { AlgorithmIdentifier, SubjectPublicKeyInfo } from "./certificate.ts";

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
 * The OID of the named curve in an EC key's algorithm parameters (RFC 5480 2.1.1), or
 * undefined for parameters of any other form (explicit curve parameters, NULL, absent).
 */
export function namedCurveOid({ parameters }: AlgorithmIdentifier): string | undefined {
  return parameters?.[0] === Tag.OID
    ? readOid(parseDer(parameters, "EC parameters"), "EC parameters")
    : undefined;
}

/**
 * The form of an EC key's point, decided here once for every EC key the core reads (a
 * certificate's, a CSR's, a trust bundle's, the key a signature is checked with):
 * `parseSubjectPublicKeyInfo` calls this. RFC 5480 2.2 allows a first octet of 0x04
 * (uncompressed) or 0x02/0x03 (compressed) and requires rejecting any other; SEC 1 2.3.3 puts
 * two coordinates of the curve's size after 0x04, one after 0x02/0x03. Any other form or
 * length is {@link MalformedInput}: left to WebCrypto, Node's imported the hybrid 0x06/0x07
 * and Deno's a 0x05 followed by x, which Bun's refused. A compressed point of the right length
 * is {@link UnsupportedAlgorithm}: Deno's WebCrypto imports one whose x is not below p or has
 * no point on the curve, which the others refuse, and meshauth issues (and Go's crypto/x509
 * reads) uncompressed points only. Lengths are checked on the curves meshauth knows; a key on
 * another is refused where it is used. After this, a point on a known curve is 0x04 and
 * exactly two coordinates of the curve's size.
 */
export function checkEcPoint({ algorithm, publicKey }: SubjectPublicKeyInfo, what: string): void {
  if (publicKey.length === 0) throw new MalformedInput(what, "empty EC point");
  const form = publicKey[0];
  const octet = `0x${form.toString(16).padStart(2, "0")}`;
  if (form !== 0x02 && form !== 0x03 && form !== 0x04) {
    throw new MalformedInput(
      what,
      `EC point whose first octet is ${octet} (RFC 5480 2.2: 0x04, 0x02 or 0x03)`,
    );
  }
  const kind = form === 0x04 ? "uncompressed" : "compressed";
  const curveOid = namedCurveOid(algorithm);
  const curve = curveOid === undefined ? undefined : EC_CURVES[curveOid];
  const length = curve && (form === 0x04 ? 1 + 2 * curve.size : 1 + curve.size);
  if (curve && publicKey.length !== length) {
    throw new MalformedInput(
      what,
      `${kind} EC point (${octet}) of ${publicKey.length} octets, where ${curve.name} takes ${length}`,
    );
  }
  if (form !== 0x04) {
    throw new UnsupportedAlgorithm(
      `compressed EC points (${octet})`,
      "meshauth reads uncompressed (0x04) points only, as runtimes' WebCrypto disagree on compressed ones",
    );
  }
}

/**
 * The public JWK of an EC key on a named curve meshauth knows, from a SubjectPublicKeyInfo
 * `parseSubjectPublicKeyInfo` read (so its point is uncompressed and of the curve's size); undefined for any other key: another algorithm, explicit curve parameters, an
 * unknown curve. Whether the point is on the curve is left to whoever imports the JWK.
 */
export function ecPublicJwk({ algorithm, publicKey }: SubjectPublicKeyInfo): EcPublicJwk | undefined {
  const curveOid = algorithm.oid === OID.ecPublicKey ? namedCurveOid(algorithm) : undefined;
  const curve = curveOid === undefined ? undefined : EC_CURVES[curveOid];
  if (!curve) return undefined;
  return {
    kty: "EC",
    crv: curve.name,
    x: toBase64Url(publicKey.subarray(1, 1 + curve.size)),
    y: toBase64Url(publicKey.subarray(1 + curve.size)),
  };
}

/** Coordinate size in bytes of each named curve, by WebCrypto name. */
export const CURVE_SIZE: Readonly<Record<"P-256" | "P-384" | "P-521", number>> = {
  "P-256": EC_CURVES[OID.p256].size,
  "P-384": EC_CURVES[OID.p384].size,
  "P-521": EC_CURVES[OID.p521].size,
};

// The NIST curves' field primes and b (FIPS 186-4 D.1.2; SEC 2 2.4.2, 2.5.1, 2.6.1); a = -3.
const CURVE_EQUATIONS: Record<"P-256" | "P-384" | "P-521", { p: bigint; b: bigint }> = {
  "P-256": {
    p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
  },
  "P-384": {
    p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
  },
  "P-521": {
    p: 2n ** 521n - 1n,
    b: 0x051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00n,
  },
};

/**
 * Whether an EC point {@link checkEcPoint} accepted (0x04 and two coordinates of `curve`'s
 * size) has coordinates that are field elements satisfying the curve's equation (SEC 1
 * 3.2.2.1's checks; the NIST curves have cofactor 1, so such a point is in the group). A key
 * off the curve must be refused, not used: some runtimes' WebCrypto (Deno's) imports one.
 */
export function isOnCurve(curve: "P-256" | "P-384" | "P-521", point: Uint8Array): boolean {
  const size = CURVE_SIZE[curve];
  const { p, b } = CURVE_EQUATIONS[curve];
  // Callers pass what checkEcPoint accepted; anything else is no point of this curve.
  if (point.length !== 1 + 2 * size || point[0] !== 0x04) return false;
  const x = BigInt(`0x${toHex(point.subarray(1, 1 + size))}`);
  const y = BigInt(`0x${toHex(point.subarray(1 + size))}`);
  if (x >= p || y >= p) return false;
  return (y * y - (x * x * x - 3n * x + b)) % p === 0n;
}
