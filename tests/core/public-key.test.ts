// The curve-equation check the WebCrypto provider runs before importing an EC point (Deno's
// WebCrypto imports points off the curve, and coordinates not below the field prime), held to
// each curve's base point and to the encodings it must refuse.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isOnCurve } from "../../lib/x509/public-key.ts";
import { NIST_CURVES, type NistCurve, smallPoint, uncompressedPoint } from "../support/ec-points.ts";

const CURVES = Object.keys(NIST_CURVES) as NistCurve[];

describe("isOnCurve", () => {
  for (const curve of CURVES) {
    const { p, gx, gy, size } = NIST_CURVES[curve];

    test(`${curve}: takes the base point, its negation and a point whose x is mostly leading zeros`, () => {
      const small = smallPoint(curve);
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, gx, gy)), true, "G");
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, gx, p - gy)), true, "-G");
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, small.x, small.y)), true, `x = ${small.x}`);
    });

    test(`${curve}: refuses a point off the curve`, () => {
      assert.equal(
        isOnCurve(curve, uncompressedPoint(curve, gx, gy ^ 1n)),
        false,
        "y with its last bit flipped",
      );
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, gx + 1n, gy)), false, "x + 1");
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, 0n, 0n)), false, "(0, 0)");
    });

    test(`${curve}: refuses coordinates that are not below p, though they reduce to a point of the curve`, () => {
      const small = smallPoint(curve);
      assert.equal(isOnCurve(curve, uncompressedPoint(curve, small.x + p, small.y)), false, "x + p");
      if (curve === "P-521") {
        // 66 bytes hold 7 bits above p's 521, so y + p fits too (on P-256 and P-384 it would
        // take a point whose y is small, which has no easy construction).
        assert.equal(isOnCurve(curve, uncompressedPoint(curve, gx, gy + p)), false, "G's y + p");
      }
    });

    test(`${curve}: refuses the point at infinity, compressed points and points of the wrong length`, () => {
      const point = uncompressedPoint(curve, gx, gy);
      assert.equal(isOnCurve(curve, new Uint8Array([0])), false, "infinity (SEC 1 2.3.3: a single 0x00)");
      assert.equal(isOnCurve(curve, new Uint8Array(1 + 2 * size)), false, "0x00 and zeros");
      assert.equal(
        isOnCurve(curve, new Uint8Array([0x02 | Number(gy & 1n), ...point.subarray(1, 1 + size)])),
        false,
      );
      assert.equal(
        isOnCurve(curve, new Uint8Array([0x06 | Number(gy & 1n), ...point.subarray(1)])),
        false,
        "hybrid",
      );
      assert.equal(isOnCurve(curve, point.subarray(0, point.length - 1)), false, "one byte short");
      assert.equal(isOnCurve(curve, new Uint8Array([...point, 0])), false, "one byte long");
      assert.equal(isOnCurve(curve, new Uint8Array()), false, "empty");
    });
  }

  test("a point of one curve is not a point of another", () => {
    const p256 = NIST_CURVES["P-256"];
    const p384 = NIST_CURVES["P-384"];
    assert.equal(isOnCurve("P-384", uncompressedPoint("P-384", p256.gx, p256.gy)), false);
    assert.equal(isOnCurve("P-256", uncompressedPoint("P-256", p384.gx % p256.p, p384.gy % p256.p)), false);
  });
});
