import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decodePem, encodePem } from "../../mod.ts";

const malformed = { name: "MalformedInput", code: "ERR_MALFORMED_INPUT" };
const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);

describe("encodePem", () => {
  test("wraps base64 at 64 characters between BEGIN and END lines", () => {
    const pem = encodePem("CERTIFICATE", bytes(100));
    const lines = pem.trimEnd().split("\n");
    assert.equal(lines[0], "-----BEGIN CERTIFICATE-----");
    assert.equal(lines.at(-1), "-----END CERTIFICATE-----");
    assert.equal(lines[1].length, 64);
    assert.ok(lines.slice(1, -1).every((l) => l.length <= 64));
    assert.ok(pem.endsWith("\n"));
  });
});

describe("decodePem", () => {
  test("round-trips what encodePem writes, for lengths around the padding boundaries", () => {
    for (const n of [1, 2, 3, 47, 48, 49, 1000]) {
      assert.deepEqual(decodePem(encodePem("X509 CRL", bytes(n))), [{ label: "X509 CRL", der: bytes(n) }]);
    }
  });

  test("reads several blocks in order, ignoring text between them", () => {
    const text = `subject=O = example\n${encodePem("CERTIFICATE", bytes(3))}junk\r\n${
      encodePem("PRIVATE KEY", bytes(5))
    }`;
    assert.deepEqual(decodePem(text).map((b) => [b.label, b.der.length]), [["CERTIFICATE", 3], [
      "PRIVATE KEY",
      5,
    ]]);
  });

  test("accepts CRLF line ends", () => {
    const pem = encodePem("CERTIFICATE", bytes(80)).replace(/\n/g, "\r\n");
    assert.deepEqual(decodePem(pem)[0].der, bytes(80));
  });

  test("finds no block in text without one", () => {
    assert.deepEqual(decodePem("nothing here"), []);
    assert.deepEqual(decodePem(""), []);
  });

  test("refuses a block whose END label differs from its BEGIN label", () => {
    assert.throws(
      () => decodePem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n"),
      malformed,
    );
  });

  test("refuses a body that is not base64", () => {
    for (const body of ["AA*A", "AA==AA==", "A", "Proc-Type: 4,ENCRYPTED\nAAAA"]) {
      assert.throws(
        () => decodePem(`-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`),
        malformed,
        body,
      );
    }
  });
});

describe("decodePem on hostile input", () => {
  const beginLines = "-----BEGIN CERTIFICATE-----\n".repeat((1 << 20) / 28);

  test("finds no block in 1 MiB of BEGIN lines without an END", () => {
    assert.deepEqual(decodePem(beginLines), []);
  });

  test("refuses 1 MiB of BEGIN lines closed by one END, as a body that is not base64", () => {
    assert.throws(() => decodePem(`${beginLines}AAAA\n-----END CERTIFICATE-----\n`), malformed);
  });

  test("pairs a BEGIN line with the first END line after it", () => {
    const text = `-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n${
      encodePem("CERTIFICATE", bytes(3))
    }`;
    assert.throws(() => decodePem(text), malformed);
  });

  test("skips BEGIN and END lines whose label is not a PEM label", () => {
    const text = `-----END lower-----\n-----BEGIN certificate-----\n${encodePem("CERTIFICATE", bytes(3))}`;
    assert.deepEqual(decodePem(text).map((b) => b.der), [bytes(3)]);
  });
});
