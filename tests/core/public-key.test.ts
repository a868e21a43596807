// The curve-equation check the WebCrypto provider runs before importing an EC point (Deno's
// WebCrypto imports points off the curve, and coordinates not below the field prime), held to
// each curve's base point; the encodings it is never given are refused by the parser first.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { OID } from "../../lib/asn1/oids.ts";
import { parseSubjectPublicKeyInfo } from "../../lib/x509/certificate.ts";
import { isOnCurve } from "../../lib/x509/public-key.ts";
import { fakeSpki } from "../support/csr-builder.ts";
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

    test(`${curve}: is never asked about the point at infinity, a compressed point or one of the wrong length`, () => {
      // isOnCurve reads a point checkEcPoint accepted; the parser refuses the others first.
      const point = uncompressedPoint(curve, gx, gy);
      const forms = {
        "infinity (SEC 1 2.3.3: a single 0x00)": new Uint8Array([0]),
        "0x00 and zeros": new Uint8Array(1 + 2 * size),
        "compressed": new Uint8Array([0x02 | Number(gy & 1n), ...point.subarray(1, 1 + size)]),
        "hybrid": new Uint8Array([0x06 | Number(gy & 1n), ...point.subarray(1)]),
        "one byte short": point.subarray(0, point.length - 1),
        "one byte long": new Uint8Array([...point, 0]),
        "empty": new Uint8Array(),
      };
      for (const [what, form] of Object.entries(forms)) {
        assert.throws(
          () => parseSubjectPublicKeyInfo(fakeSpki(OID.ecPublicKey, NIST_CURVES[curve].oid, form)),
          { code: what === "compressed" ? "ERR_ALGORITHM_UNSUPPORTED" : "ERR_MALFORMED_INPUT" },
          what,
        );
      }
    });
  }

  test("answers false, never throws, for what checkEcPoint would refuse", () => {
    const { gx, gy } = NIST_CURVES["P-256"];
    const point = uncompressedPoint("P-256", gx, gy);
    assert.equal(isOnCurve("P-256", point.subarray(0, 33)), false, "half a point");
    assert.equal(isOnCurve("P-256", new Uint8Array([0x06, ...point.subarray(1)])), false, "hybrid");
    assert.equal(isOnCurve("P-256", new Uint8Array()), false, "empty");
  });

  test("a point of one curve is not a point of another", () => {
    const p256 = NIST_CURVES["P-256"];
    const p384 = NIST_CURVES["P-384"];
    assert.equal(isOnCurve("P-384", uncompressedPoint("P-384", p256.gx, p256.gy)), false);
    assert.equal(isOnCurve("P-256", uncompressedPoint("P-256", p384.gx % p256.p, p384.gy % p256.p)), false);
  });
});
