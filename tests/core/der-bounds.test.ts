// Length-driven decoding is bounded before any work proportional to the length is done, and
// every value the DER reader hands out is one the DER rules allow (issue 18).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  contextTag,
  parseDer,
  readBigInt,
  readOid,
  readSmallInt,
  readString,
  Tag,
} from "../../lib/asn1/der.ts";
import {
  bitString,
  bool,
  integer,
  octetString,
  oid,
  seq,
  set,
  time,
  tlv,
} from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { MalformedInput, MeshAuthError } from "../../lib/errors.ts";
import { encodePem } from "../../lib/pem.ts";
import { parseAlgorithmIdentifier, parseCertificate, parseCertificates } from "../../lib/x509/certificate.ts";
import { parseCrl } from "../../lib/x509/crl.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import { issue, issueUnparsed } from "../support/cert-factory.ts";

function malformed(fn: () => unknown, reason: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof MalformedInput, `expected MalformedInput, got ${err}`);
    assert.match(err.reason, reason);
    return true;
  });
}

/** `n` content octets of a minimal positive INTEGER (leading 0x01). */
function integerContent(n: number): Uint8Array {
  const content = new Uint8Array(n).fill(0xab);
  content[0] = 0x01;
  return content;
}

/** An INTEGER of `n` content octets. */
function bigInteger(n: number): Uint8Array {
  return tlv(Tag.INTEGER, integerContent(n));
}

test("readSmallInt refuses an INTEGER longer than a few octets without decoding it", () => {
  malformed(() => readSmallInt(parseDer(bigInteger(60_000))), /60000 octets/);
  assert.equal(readSmallInt(parseDer(integer(0x7fffffff))), 0x7fffffff);
});

test("readBigInt refuses an INTEGER past its octet bound", () => {
  malformed(() => readBigInt(parseDer(bigInteger(150_000)), "INTEGER", 21), /150000 octets \(at most 21/);
  malformed(() => readBigInt(parseDer(bigInteger(22)), "INTEGER", 21), /22 octets \(at most 21/);
  assert.equal(readBigInt(parseDer(bigInteger(20)), "INTEGER", 21), BigInt(`0x01${"ab".repeat(19)}`));
  assert.equal(readBigInt(parseDer(tlv(Tag.INTEGER, new Uint8Array([0xff, 0x00]))), "INTEGER", 21), -256n);
});

test("readOid refuses an arc longer than any real OID's", () => {
  const arc = new Uint8Array(200).fill(0x81);
  arc[arc.length - 1] = 0x01;
  malformed(() => readOid(parseDer(tlv(Tag.OID, new Uint8Array([0x2a, ...arc])))), /arc/);
  // A UUID arc (2.25.<128-bit>) still reads.
  const uuid = "2.25.329800735698586629295641978511506172918";
  assert.equal(readOid(parseDer(oid(uuid))), uuid);
});

test("parseCertificate refuses a 60 KB pathLenConstraint by its length", async () => {
  const { der } = await issueUnparsed({
    name: "Big pathLen",
    ca: true,
    omit: ["basicConstraints"],
    extensions: [{ oid: OID.basicConstraints, critical: true, value: seq(bool(true), bigInteger(60_000)) }],
  });
  malformed(() => parseCertificate(der), /60000 octets/);
});

test("parseCrl refuses a 150 KB reason code by its length", () => {
  const reason = seq(oid(OID.reasonCode), octetString(tlv(Tag.ENUMERATED, integerContent(150_000))));
  const entry = seq(integer(7), time(new Date()), seq(reason));
  const alg = seq(oid(OID.ecdsaWithSha256));
  const name = seq(set(seq(oid(OID.commonName), tlv(Tag.UTF8_STRING, new TextEncoder().encode("CA")))));
  const tbs = seq(integer(1), alg, name, time(new Date()), seq(entry));
  const crl = seq(tbs, alg, bitString(new Uint8Array(8)));
  malformed(() => parseCrl(crl), /octets/);
});

test("parseCertificate refuses a serial number far past 20 octets", async () => {
  const { der } = await issueUnparsed({ name: "Long serial", raw: { serial: bigInteger(100) } });
  malformed(() => parseCertificate(der), /serial number of 100 octets/);
  // 20 octets, and 21 with the sign octet, are what RFC 5280 allows; a little more parses
  // (the validator refuses it on a path; a trust anchor's serial is never read).
  const twenty = await issue({ name: "Twenty", raw: { serial: bigInteger(20) } });
  assert.equal(twenty.cert.serialBytes.length, 20);
});

/** A Name with one CN whose value is `value` (a whole TLV). */
function nameWith(value: Uint8Array): Uint8Array {
  return seq(set(seq(oid(OID.commonName), value)));
}

test("a UniversalString above U+10FFFF is MalformedInput from every public parser", async () => {
  const bad = nameWith(tlv(Tag.UNIVERSAL_STRING, new Uint8Array([0x00, 0x11, 0x00, 0x00])));
  const { der } = await issueUnparsed({
    name: "",
    raw: { subject: bad },
    sans: [uriName("spiffe://example.org/w")],
  });
  const pem = encodePem("CERTIFICATE", der);
  malformed(() => parseCertificate(der), /UniversalString/);
  malformed(() => parseCertificates(pem), /UniversalString/);
  assert.throws(() => new TrustBundle("example.org", [pem]), MeshAuthError);
  const alg = seq(oid(OID.ecdsaWithSha256));
  const crl = seq(seq(integer(1), alg, bad, time(new Date())), alg, bitString(new Uint8Array(8)));
  malformed(() => parseCrl(crl), /UniversalString/);
});

test("readString refuses surrogates in UniversalString and BMPString", () => {
  malformed(
    () => readString(parseDer(tlv(Tag.UNIVERSAL_STRING, new Uint8Array([0, 0, 0xd8, 0])))),
    /surrogate/,
  );
  malformed(() => readString(parseDer(tlv(Tag.BMP_STRING, new Uint8Array([0xdc, 0])))), /surrogate/);
  assert.equal(
    readString(parseDer(tlv(Tag.UNIVERSAL_STRING, new Uint8Array([0, 1, 0xf6, 0x00])))),
    "\u{1f600}",
  );
});

test("readString refuses a type that is not a string instead of reading it as Latin-1", () => {
  malformed(
    () => readString(parseDer(tlv(Tag.OCTET_STRING, new TextEncoder().encode("Evil")))),
    /not a string type/,
  );
  malformed(() => readString(parseDer(tlv(Tag.NULL, new Uint8Array()))), /not a string type/);
  malformed(() => readString(parseDer(tlv(0x1a, new TextEncoder().encode("Evil")))), /not a string type/);
});

test("PrintableString content is checked against its character set", () => {
  const printable = (s: string) => parseDer(tlv(Tag.PRINTABLE_STRING, new TextEncoder().encode(s)));
  assert.equal(readString(printable("Example Co. (1) +-/:=?,'")), "Example Co. (1) +-/:=?,'");
  malformed(() => readString(printable("a@example.org")), /PrintableString/);
  malformed(() => readString(printable("caf\u00e9")), /PrintableString/);
  malformed(() => readString(parseDer(tlv(Tag.IA5_STRING, new Uint8Array([0x80])))), /IA5String/);
});

test("a certificate dated before 2050 in GeneralizedTime is refused, as a CRL is", async () => {
  const generalized = (d: string) => tlv(Tag.GENERALIZED_TIME, new TextEncoder().encode(d));
  const { der } = await issueUnparsed({
    name: "Generalized",
    raw: { validity: seq(generalized("20260101000000Z"), generalized("20300101000000Z")) },
  });
  malformed(() => parseCertificate(der), /through 2049 are UTCTime/);
  // From 2050 GeneralizedTime is the required form.
  const late = await issue({
    name: "Late",
    raw: { validity: seq(time(new Date("2026-01-01T00:00:00Z")), generalized("20600101000000Z")) },
  });
  assert.equal(late.cert.notAfter.toISOString(), "2060-01-01T00:00:00.000Z");
});

test("DER readers on a context-tagged node stay bounded too", () => {
  malformed(() => readSmallInt(parseDer(tlv(contextTag(0, false), integerContent(70_000)))), /octets/);
});

test("a universal type in the wrong form (constructed NULL, primitive SEQUENCE) is not DER", () => {
  malformed(() => parseDer(tlv(0x25, new Uint8Array())), /universal tag 5 must be primitive/);
  malformed(() => parseDer(tlv(0x10, new Uint8Array())), /universal tag 16 must be constructed/);
  malformed(() => parseDer(tlv(0x00, new Uint8Array())), /end-of-contents/);
});

test("AlgorithmIdentifier parameters must be DER throughout, though the certificate treats them as ANY", () => {
  const nonMinimalCurve = tlv(Tag.OID, new Uint8Array([0x80, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]));
  malformed(
    () => parseAlgorithmIdentifier(parseDer(seq(oid(OID.ecPublicKey), nonMinimalCurve)), "key"),
    /non-minimal OID arc/,
  );
  malformed(
    () =>
      parseAlgorithmIdentifier(
        parseDer(seq(oid(OID.sha256WithRSA), tlv(Tag.NULL, new Uint8Array([0])))),
        "sig",
      ),
    /NULL with content/,
  );
  assert.equal(
    parseAlgorithmIdentifier(parseDer(seq(oid(OID.ecPublicKey), oid(OID.p256))), "key").oid,
    OID.ecPublicKey,
  );
});

test("a unique identifier must be a BIT STRING (found by the certificate fuzz target)", async () => {
  const root = await issue({ name: "Root", ca: true });
  const name = encodeName([[OID.commonName, "x"]]);
  const validity = seq(time(new Date("2026-01-01T00:00:00Z")), time(new Date("2027-01-01T00:00:00Z")));
  const v2 = (uniqueId: Uint8Array) =>
    seq(
      seq(
        tlv(contextTag(0, true), integer(1)),
        integer(5),
        root.signer.algorithmIdentifier,
        name,
        validity,
        name,
        root.signer.spki,
        uniqueId,
      ),
      root.signer.algorithmIdentifier,
      bitString(new Uint8Array(64)),
    );
  malformed(
    () => parseCertificate(v2(tlv(contextTag(1, false), new Uint8Array([0xa0, 0x01])))),
    /unused-bit count/,
  );
  assert.deepEqual(
    parseCertificate(v2(tlv(contextTag(1, false), new Uint8Array([0, 0x01])))).issuerUniqueId,
    new Uint8Array([0, 0x01]),
  );
});

test("a CRL's authority key identifier is read as strictly as a certificate's", () => {
  const alg = seq(oid(OID.ecdsaWithSha256));
  const name = encodeName([[OID.commonName, "CA"]]);
  const keyId = (b: number) => tlv(contextTag(0, false), new Uint8Array([b]));
  const crlWithAki = (...fields: Uint8Array[]) => {
    const aki = seq(oid(OID.authorityKeyIdentifier), octetString(seq(...fields)));
    const tbs = seq(integer(1), alg, name, time(new Date()), tlv(contextTag(0, true), seq(aki)));
    return seq(tbs, alg, bitString(new Uint8Array(8)));
  };
  assert.deepEqual(parseCrl(crlWithAki(keyId(1))).authorityKeyIdentifier, new Uint8Array([1]));
  // Two key identifiers: the last used to win silently.
  malformed(() => parseCrl(crlWithAki(keyId(1), keyId(2))), /out of order/);
  malformed(() => parseCrl(crlWithAki(tlv(contextTag(5, false), new Uint8Array([1])))), /unexpected/);
});
