/**
 * Points of the NIST curves for tests of the curve-equation check: each curve's field prime and
 * base point as FIPS 186-4 D.1.2 gives them, an oracle kept apart from lib/x509/public-key.ts
 * (its `b` is derived here from the base point, not copied). Test-only.
 * @module
 */
import { fromHex } from "../../lib/encoding.ts";

export type NistCurve = "P-256" | "P-384" | "P-521";

/** Field prime p, base point G and coordinate size in bytes (FIPS 186-4 D.1.2.3, D.1.2.4, D.1.2.5). */
export const NIST_CURVES: Record<
  NistCurve,
  { p: bigint; gx: bigint; gy: bigint; size: number; oid: string }
> = {
  "P-256": {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    size: 32,
    oid: "1.2.840.10045.3.1.7",
  },
  "P-384": {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    size: 48,
    oid: "1.3.132.0.34",
  },
  "P-521": {
    p: 2n ** 521n - 1n,
    gx:
      0xc6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66n,
    gy:
      0x11839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650n,
    size: 66,
    oid: "1.3.132.0.35",
  },
};

const mod = (a: bigint, p: bigint) => ((a % p) + p) % p;

function power(base: bigint, exponent: bigint, p: bigint): bigint {
  let result = 1n;
  for (base = mod(base, p); exponent > 0n; exponent >>= 1n) {
    if (exponent & 1n) result = (result * base) % p;
    base = (base * base) % p;
  }
  return result;
}

/** SEC 1 2.3.3: 0x04, then x and y, each big-endian in exactly the curve's size (no reduction). */
export function uncompressedPoint(curve: NistCurve, x: bigint, y: bigint): Uint8Array {
  const hex = (n: bigint) => n.toString(16).padStart(2 * NIST_CURVES[curve].size, "0");
  return fromHex(`04${hex(x)}${hex(y)}`);
}

/**
 * The point of `curve` with the smallest x (from 1) that has one: its x has many leading zero
 * bytes, and x + p still fits in the curve's size on every curve, as an encoding of the same
 * point that is not a field element.
 */
export function smallPoint(curve: NistCurve): { x: bigint; y: bigint } {
  const { p, gx, gy } = NIST_CURVES[curve];
  const b = mod(gy * gy - gx * gx * gx + 3n * gx, p); // y² = x³ - 3x + b holds for G
  for (let x = 1n; x < 1000n; x++) {
    const rhs = mod(x * x * x - 3n * x + b, p);
    const y = power(rhs, (p + 1n) / 4n, p); // p ≡ 3 (mod 4) on all three curves
    if ((y * y) % p === rhs) return { x, y };
  }
  throw new Error(`no point of ${curve} with x below 1000`);
}
