// Names and GeneralNames are read strictly: a value OpenSSL and the DER rules refuse never
// reaches name constraints or the SAN rules as something else (issue 18).
import { test } from "node:test";
import assert from "node:assert/strict";
import { contextTag, parseDer, Tag } from "../../lib/asn1/der.ts";
import {
  explicit,
  nullValue,
  octetString,
  oid,
  seq,
  set,
  tlv,
  utf8String,
} from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { MalformedInput, VerificationError } from "../../lib/errors.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { parseCertificate, parseDistributionPoint } from "../../lib/x509/certificate.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { encodeName, parseName } from "../../lib/x509/name.ts";
import { issue, issueUnparsed } from "../support/cert-factory.ts";

const text = (s: string) => new TextEncoder().encode(s);

function malformed(fn: () => unknown, reason: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof MalformedInput, `expected MalformedInput, got ${err}`);
    assert.match(err.reason, reason);
    return true;
  });
}

/** Name with one RDN holding O = `value` (a whole TLV). */
const organization = (value: Uint8Array) => seq(set(seq(oid(OID.organizationName), value)));

for (
  const [label, value] of [
    ["NULL", nullValue()],
    ["BOOLEAN", tlv(Tag.BOOLEAN, new Uint8Array([0xff]))],
    ["a constructed SET", set(utf8String("Evil"))],
    ["VisibleString", tlv(0x1a, text("Evil"))],
    ["OCTET STRING", octetString(text("Evil"))],
  ] as const
) {
  test(`parseName refuses an attribute value of type ${label}`, () => {
    malformed(() => parseName(parseDer(organization(value))), /not a string type/);
  });
}

test("names compare by their characters whatever string type carries them (RFC 5280 7.1)", () => {
  const utf8 = parseName(parseDer(organization(utf8String("Evil  Corp"))));
  const printable = parseName(parseDer(organization(tlv(Tag.PRINTABLE_STRING, text("evil corp")))));
  const bmp = parseName(
    parseDer(
      organization(
        tlv(
          Tag.BMP_STRING,
          new Uint8Array([0, 0x45, 0, 0x56, 0, 0x49, 0, 0x4c, 0, 0x20, 0, 0x63, 0, 0x6f, 0, 0x72, 0, 0x70]),
        ),
      ),
    ),
  );
  assert.equal(utf8.key, printable.key);
  assert.equal(utf8.key, bmp.key);
});

test("verifyChain refuses a leaf whose O=Evil is encoded to slip past an excluded dirName", async () => {
  const root = await issue({ name: "Root", ca: true });
  const excluded = tlv(contextTag(4, true), encodeName([[OID.organizationName, "Evil"]]));
  const ca = await issue({
    name: "Constrained",
    ca: true,
    issuer: root,
    nameConstraints: { excluded: [excluded] },
  });
  for (const value of [tlv(0x1a, text("EVIL")), nullValue(), tlv(Tag.T61_STRING, text("EVIL"))]) {
    const { der } = await issueUnparsed({
      name: "",
      raw: { subject: organization(value) },
      issuer: ca,
      sans: [uriName("spiffe://example.org/w")],
      sanCritical: false,
    });
    await assert.rejects(
      verifyChain({ leaf: der, intermediates: [ca.der], roots: [root.der] }),
      (err) => err instanceof VerificationError && /ERR_CERT_MALFORMED|ERR_NAME_CONSTRAINTS/.test(err.code),
    );
  }
});

test("parseName refuses a multi-valued RDN whose SET OF is not in DER order", () => {
  const cn = seq(oid(OID.commonName), utf8String("b"));
  const o = seq(oid(OID.organizationName), utf8String("a"));
  // 2.5.4.3 (CN) encodes before 2.5.4.10 (O): that order is DER, the other is not.
  assert.equal(parseName(parseDer(seq(set(cn, o)))).rdns[0].length, 2);
  malformed(() => parseName(parseDer(seq(set(o, cn)))), /SET OF/);
});

async function leafWithSan(...names: Uint8Array[]): Promise<Uint8Array> {
  const root = await issue({ name: "Root", ca: true });
  return (await issueUnparsed({ name: "", issuer: root, sans: names })).der;
}

for (
  const [label, name] of [
    ["a primitive [4] directoryName", tlv(contextTag(4, false), text("O=Evil"))],
    ["a constructed [2] dNSName", tlv(contextTag(2, true), tlv(Tag.IA5_STRING, text("a.example.org")))],
    [
      "a constructed [6] uniformResourceIdentifier",
      tlv(contextTag(6, true), tlv(Tag.IA5_STRING, text("spiffe://example.org/x"))),
    ],
    ["a constructed [7] iPAddress", tlv(contextTag(7, true), new Uint8Array([4, 4, 10, 0, 0, 1]))],
    ["a primitive [0] otherName", tlv(contextTag(0, false), text("x"))],
    ["a primitive [3] x400Address", tlv(contextTag(3, false), text("x"))],
    ["a primitive [5] ediPartyName", tlv(contextTag(5, false), text("x"))],
    ["a registeredID that is no OID", tlv(contextTag(8, false), new Uint8Array([0x80]))],
    ["an otherName without its [0] value", tlv(contextTag(0, true), oid("1.2.3.4"))],
    // Found by the certificate fuzz target: OpenSSL 3.5 refuses this SAN, 3.0 does not read it.
    [
      "an ediPartyName that is not an EDIPartyName",
      tlv(contextTag(5, true), oid("1.3.6.1.4.1.6"), nullValue()),
    ],
    ["an ediPartyName without its partyName", tlv(contextTag(5, true), explicit(0, utf8String("assigner")))],
  ] as const
) {
  test(`parseCertificate refuses a SAN holding ${label}`, async () => {
    const der = await leafWithSan(uriName("spiffe://example.org/w"), name);
    assert.throws(() => parseCertificate(der), MalformedInput);
  });
}

test("parseCertificate reads a well-formed otherName and registeredID", async () => {
  const other = tlv(
    contextTag(0, true),
    oid("1.3.6.1.4.1.311.20.2.3"),
    explicit(0, utf8String("u@example.org")),
  );
  const registered = tlv(contextTag(8, false), oid("1.2.3.4").subarray(2));
  const cert = parseCertificate(await leafWithSan(dnsName("a.example.org"), other, registered));
  assert.deepEqual(cert.subjectAltName?.map((n) => n.type), ["dns", "other", "other"]);
});

test("parseDistributionPoint refuses unknown, repeated or misordered fields", () => {
  const uri = tlv(contextTag(6, false), text("http://crl.example.org/a.crl"));
  const name = explicit(0, tlv(contextTag(0, true), uri));
  const ok = parseDistributionPoint(parseDer(seq(name)), "dp");
  assert.equal(ok.fullName?.[0].type, "uri");
  malformed(
    () => parseDistributionPoint(parseDer(seq(name, tlv(contextTag(3, false), text("x")))), "dp"),
    /field/,
  );
  malformed(() => parseDistributionPoint(parseDer(seq(name, name)), "dp"), /field/);
  const reasons = tlv(contextTag(1, false), new Uint8Array([7, 0x80]));
  malformed(() => parseDistributionPoint(parseDer(seq(reasons, name)), "dp"), /field/);
  // RFC 5280 4.2.1.13: a point names where the CRL is or who issues it.
  malformed(() => parseDistributionPoint(parseDer(seq(reasons)), "dp"), /distributionPoint or cRLIssuer/);
  malformed(
    () => parseDistributionPoint(parseDer(seq(explicit(0, tlv(contextTag(2, true), uri)))), "dp"),
    /name/,
  );
});

test("parseCertificate reads a well-formed ediPartyName, with and without its nameAssigner", async () => {
  const edi = tlv(contextTag(5, true), explicit(0, utf8String("assigner")), explicit(1, utf8String("party")));
  const partyOnly = tlv(contextTag(5, true), explicit(1, utf8String("party")));
  const cert = parseCertificate(await leafWithSan(dnsName("a.example.org"), edi, partyOnly));
  assert.deepEqual(cert.subjectAltName?.map((n) => n.type), ["dns", "other", "other"]);
});

test("NameConstraints fields come once each and in order (found by the certificate fuzz target)", async () => {
  const subtrees = (n: number, ...names: Uint8Array[]) =>
    tlv(contextTag(n, true), ...names.map((g) => seq(g)));
  const nc = (...parts: Uint8Array[]) =>
    issueUnparsed({
      name: "CA",
      ca: true,
      extensions: [{ oid: OID.nameConstraints, critical: true, value: seq(...parts) }],
    });
  const evil = dnsName("evil.example.org");
  const spiffe = uriName(".example.org");
  // A second excludedSubtrees used to replace the first: evil.example.org was no longer excluded.
  for (const parts of [[subtrees(1, evil), subtrees(1, spiffe)], [subtrees(1, evil), subtrees(0, spiffe)]]) {
    const { der } = await nc(...parts);
    malformed(() => parseCertificate(der), /NameConstraints/);
  }
  const ok = parseCertificate((await nc(subtrees(0, spiffe), subtrees(1, evil))).der);
  assert.equal(ok.nameConstraints?.excluded?.length, 1);
  // GeneralSubtree: minimum (DEFAULT 0, so never encoded as 0) before maximum, each once.
  const subtree = (...fields: Uint8Array[]) => tlv(contextTag(1, true), seq(evil, ...fields));
  const int = (n: number, v: number) => tlv(contextTag(n, false), new Uint8Array([v]));
  for (const fields of [[int(0, 0)], [int(1, 2), int(0, 1)], [int(1, 2), int(1, 3)]]) {
    const { der } = await nc(subtree(...fields));
    malformed(() => parseCertificate(der), /GeneralSubtree/);
  }
});
