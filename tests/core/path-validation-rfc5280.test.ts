// RFC 5280 section 6.1 and 4.2.1.10, rule by rule: each test names the step it checks and the
// outcome the RFC requires, including what path validation must NOT check (issue 18's audit).
import { test } from "node:test";
import assert from "node:assert/strict";
import { contextTag, Tag } from "../../lib/asn1/der.ts";
import { oid, seq, set, tlv, utf8String } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { VerificationError } from "../../lib/errors.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { dnsName, ipName, uriName } from "../../lib/x509/general-name.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { type CertSpec, issue, issueUnparsed, tamper } from "../support/cert-factory.ts";

const text = (s: string) => new TextEncoder().encode(s);
const email = (s: string) => tlv(contextTag(1, false), text(s));
const dirName = (...attrs: Array<[string, string]>) => tlv(contextTag(4, true), encodeName(attrs));
const ipNet = (...bytes: number[]) => ipName(new Uint8Array(bytes));
const otherName = () =>
  tlv(contextTag(0, true), oid("1.3.6.1.4.1.311.20.2.3"), tlv(contextTag(0, true), utf8String("x")));
const registeredId = () => tlv(contextTag(8, false), oid("1.2.3.4").subarray(2));

async function refused(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** root -> CA (with `constraints`) -> leaf (with `leaf`); verify the leaf. */
async function underConstraints(
  constraints: CertSpec["nameConstraints"],
  leaf: Partial<CertSpec>,
  at?: Date,
): Promise<unknown> {
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({ name: "Constrained CA", ca: true, issuer: root, nameConstraints: constraints });
  const cert = await issue({ name: "", ...leaf, issuer: ca });
  return verifyChain({ leaf: cert.der, intermediates: [ca.der], roots: [root.der], at });
}

const accepted = (promise: Promise<unknown>) => promise.then(() => undefined);

// 6.1.3 (a)(1)-(a)(4): basic certificate processing.

test("6.1.3(a)(1): a certificate whose signature does not verify with its issuer's key is refused", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root });
  await refused(verifyChain({ leaf: tamper(leaf), roots: [root.der] }), "ERR_CERT_SIGNATURE_INVALID");
});

test("6.1.3(a)(2): validity is inclusive at both ends, and one second past either end fails", async () => {
  const notBefore = new Date("2030-01-01T00:00:00Z");
  const notAfter = new Date("2030-02-01T00:00:00Z");
  const root = await issue({
    name: "Root",
    ca: true,
    notBefore: new Date("2029-01-01"),
    notAfter: new Date("2031-01-01"),
  });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root, notBefore, notAfter });
  const at = (d: Date, deltaMs = 0) =>
    verifyChain({ leaf: leaf.der, roots: [root.der], at: new Date(d.getTime() + deltaMs) });
  await at(notBefore);
  await at(notAfter);
  await at(notAfter, 999); // the encoding has whole seconds
  await refused(at(notBefore, -1000), "ERR_CERT_NOT_YET_VALID");
  await refused(at(notAfter, 1000), "ERR_CERT_EXPIRED");
});

test("6.1.3(a)(4): the issuer name must be the issuer's subject, even when its key signed", async () => {
  const root = await issue({ name: "Root", ca: true });
  const impostor = { ...root, subject: encodeName([[OID.commonName, "Someone Else"]]) };
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: impostor });
  await refused(verifyChain({ leaf: leaf.der, roots: [root.der] }), "ERR_CERT_UNTRUSTED");
});

// 6.1.4 (k)-(o): preparation for the next certificate.

test("6.1.4(k): an intermediate without basicConstraints cA is refused", async () => {
  const root = await issue({ name: "Root", ca: true });
  const notCa = await issue({
    name: "Not a CA",
    issuer: root,
    keyUsage: ["digitalSignature"],
    omit: ["basicConstraints"],
  });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: notCa });
  await refused(
    verifyChain({ leaf: leaf.der, intermediates: [notCa.der], roots: [root.der] }),
    "ERR_CERT_NOT_CA",
  );
});

test("6.1.4(k) note: a v1 intermediate is refused, a v1 self-signed trust anchor is accepted", async () => {
  const v1Root = await issue({ name: "Old Root", v1: true });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: v1Root });
  await verifyChain({ leaf: leaf.der, roots: [v1Root.der] });
  const root = await issue({ name: "Root", ca: true });
  const v1Ca = await issue({ name: "Old CA", v1: true, issuer: root });
  const below = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: v1Ca });
  await refused(
    verifyChain({ leaf: below.der, intermediates: [v1Ca.der], roots: [root.der] }),
    "ERR_CERT_MALFORMED",
  );
});

test("6.1.4(l)-(m): pathLenConstraint counts non-self-issued intermediates below the CA", async () => {
  const root = await issue({ name: "Root", ca: true, pathLen: 0 });
  const ca = await issue({ name: "CA", ca: true, issuer: root });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: ca });
  await refused(
    verifyChain({ leaf: leaf.der, intermediates: [ca.der], roots: [root.der] }),
    "ERR_PATH_LENGTH_EXCEEDED",
  );
  const direct = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root });
  await verifyChain({ leaf: direct.der, roots: [root.der] });
});

test("6.1.4(n): an intermediate whose key usage lacks keyCertSign is refused", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({ name: "CA", ca: true, issuer: root, keyUsage: ["cRLSign"] });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: ca });
  await refused(verifyChain({ leaf: leaf.der, intermediates: [ca.der], roots: [root.der] }), "ERR_KEY_USAGE");
});

test("6.1.4(o) and 6.1.5(f): an unrecognised critical extension fails an intermediate and the leaf", async () => {
  const unknown = [{ oid: "1.3.6.1.4.1.55738.666.1", critical: true, value: new Uint8Array([5, 0]) }];
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({ name: "CA", ca: true, issuer: root, extensions: unknown });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: ca });
  await refused(
    verifyChain({ leaf: leaf.der, intermediates: [ca.der], roots: [root.der] }),
    "ERR_UNHANDLED_CRITICAL_EXTENSION",
  );
  const badLeaf = await issue({
    name: "",
    sans: [dnsName("a.example.com")],
    issuer: root,
    extensions: unknown,
  });
  await refused(verifyChain({ leaf: badLeaf.der, roots: [root.der] }), "ERR_UNHANDLED_CRITICAL_EXTENSION");
});

// What path validation does not check.

test("6.1: the trust anchor's own signature is never checked", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({ name: "", sans: [dnsName("a.example.com")], issuer: root });
  await verifyChain({ leaf: leaf.der, roots: [tamper(root)] });
});

test("6.1.5: the target certificate may be a CA, lack basicConstraints, or lack key usage", async () => {
  const root = await issue({ name: "Root", ca: true });
  for (
    const spec of [
      { ca: true },
      // No rule of RFC 5280 makes a cA certificate assert keyCertSign; 6.1.4(n) asks it of CAs
      // that certify on the path, which the target does not (CABF 7.1.2.7.8 is Web PKI only).
      { ca: true, keyUsage: ["digitalSignature" as const] },
      { omit: ["basicConstraints" as const] },
      { keyUsage: null },
    ]
  ) {
    const leaf = await issue({ name: "Target", sans: [dnsName("a.example.com")], issuer: root, ...spec });
    await verifyChain({ leaf: leaf.der, roots: [root.der] });
  }
});

test("4.2.1.3 and 4.2.1.10 MUSTs on a certificate's own content hold for the target too", async () => {
  const root = await issue({ name: "Root", ca: true });
  const target = (spec: Partial<CertSpec>) =>
    issue({ name: "Target", sans: [dnsName("a.example.com")], issuer: root, ...spec });
  // keyCertSign MUST NOT be asserted without cA (x509-limbo rfc5280::leaf-ku-keycertsign).
  const signer = await target({ keyUsage: ["digitalSignature", "keyCertSign"] });
  await refused(verifyChain({ leaf: signer.der, roots: [root.der] }), "ERR_KEY_USAGE");
  // Name constraints MUST be used only in a CA certificate.
  const constrained = await target({ nameConstraints: { permitted: [dnsName("example.com")] } });
  await refused(verifyChain({ leaf: constrained.der, roots: [root.der] }), "ERR_NAME_CONSTRAINTS");
});

test("4.2.1.6: a critical SAN beside a non-empty subject is valid (non-critical is only a SHOULD)", async () => {
  const root = await issue({ name: "Root", ca: true });
  const leaf = await issue({
    name: "svc",
    sans: [dnsName("a.example.com")],
    sanCritical: true,
    issuer: root,
  });
  await verifyChain({ leaf: leaf.der, roots: [root.der] });
  // An empty subject without a critical SAN breaks a MUST.
  const bare = await issue({ name: "", sans: [dnsName("a.example.com")], sanCritical: false, issuer: root });
  await refused(verifyChain({ leaf: bare.der, roots: [root.der] }), "ERR_CERT_MALFORMED");
});

// 6.1.3(b)-(c) and 4.2.1.10: name constraints, every name form.

test("4.2.1.10 dNSName: a permitted subtree holds the name and names below it, not look-alikes", async () => {
  const permitted = { permitted: [dnsName("example.com")] };
  await accepted(underConstraints(permitted, { sans: [dnsName("example.com")] }));
  await accepted(underConstraints(permitted, { sans: [dnsName("a.b.example.com")] }));
  await refused(underConstraints(permitted, { sans: [dnsName("badexample.com")] }), "ERR_NAME_CONSTRAINTS");
  await refused(
    underConstraints({ permitted: [dnsName("example.com")], excluded: [dnsName("bad.example.com")] }, {
      sans: [dnsName("x.bad.example.com")],
    }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 iPAddress: CIDR subtrees for IPv4 and IPv6; an address of the other family is not inside", async () => {
  const v4 = { permitted: [ipNet(192, 0, 2, 0, 255, 255, 255, 0)] };
  await accepted(underConstraints(v4, { sans: [ipNet(192, 0, 2, 7)] }));
  await refused(underConstraints(v4, { sans: [ipNet(192, 0, 3, 7)] }), "ERR_NAME_CONSTRAINTS");
  const v6 = [0x20, 0x01, 0x0d, 0xb8, ...new Array(12).fill(0)];
  const v6Mask = [...new Array(4).fill(0xff), ...new Array(12).fill(0)];
  await refused(
    underConstraints({ permitted: [ipNet(...v6, ...v6Mask)] }, { sans: [ipNet(192, 0, 2, 7)] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await refused(
    underConstraints({ excluded: [ipNet(...v6, ...v6Mask)] }, { sans: [ipNet(...v6.slice(0, 15), 1)] }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 uniformResourceIdentifier: the host, exactly, or below a leading-period domain", async () => {
  await accepted(
    underConstraints({ permitted: [uriName("example.org")] }, { sans: [uriName("spiffe://example.org/w")] }),
  );
  await refused(
    underConstraints({ permitted: [uriName("example.org")] }, {
      sans: [uriName("spiffe://a.example.org/w")],
    }),
    "ERR_NAME_CONSTRAINTS",
  );
  await accepted(
    underConstraints({ permitted: [uriName(".example.org")] }, {
      sans: [uriName("spiffe://a.example.org/w")],
    }),
  );
  await refused(
    underConstraints({ permitted: [uriName(".example.org")] }, { sans: [uriName("spiffe://example.org/w")] }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 rfc822Name: a mailbox, a host, or a domain below which any host matches", async () => {
  await accepted(
    underConstraints({ permitted: [email("a@example.com")] }, { sans: [email("a@example.com")] }),
  );
  await refused(
    underConstraints({ permitted: [email("a@example.com")] }, { sans: [email("b@example.com")] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await accepted(underConstraints({ permitted: [email("example.com")] }, { sans: [email("b@example.com")] }));
  await refused(
    underConstraints({ permitted: [email("example.com")] }, { sans: [email("b@x.example.com")] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await accepted(
    underConstraints({ permitted: [email(".example.com")] }, { sans: [email("b@x.example.com")] }),
  );
  await refused(
    underConstraints({ permitted: [email(".example.com")] }, { sans: [email("b@example.com")] }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 rfc822Name: a quoted local part is the mailbox it quotes (RFC 5321 4.1.2)", async () => {
  await refused(
    underConstraints({ excluded: [email("x@good.com")] }, { sans: [email('"x"@good.com')] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await refused(
    underConstraints({ excluded: [email("x@good.com")] }, { sans: [email('"\\x"@good.com')] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await accepted(underConstraints({ permitted: [email("good.com")] }, { sans: [email('"a b"@good.com')] }));
  await accepted(underConstraints({ permitted: [email("good.com")] }, { sans: [email("a.b+c@good.com")] }));
});

test("4.2.1.10 rfc822Name: emailAddress attributes of the subject are checked as rfc822Names", async () => {
  const subject = seq(set(seq(oid(OID.emailAddress), tlv(Tag.IA5_STRING, text("x@evil.com")))));
  await refused(
    underConstraints({ excluded: [email("evil.com")] }, {
      raw: { subject },
      sans: [dnsName("a.example.com")],
    }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 directoryName: the subject and directoryName SANs, by RDN prefix", async () => {
  const constraint = { permitted: [dirName([OID.organizationName, "Example"])] };
  const inside = encodeName([[OID.organizationName, "Example"], [OID.commonName, "svc"]]);
  const outside = encodeName([[OID.organizationName, "Other"], [OID.commonName, "svc"]]);
  await accepted(
    underConstraints(constraint, { raw: { subject: inside }, sans: [dnsName("a.example.com")] }),
  );
  await refused(
    underConstraints(constraint, { raw: { subject: outside }, sans: [dnsName("a.example.com")] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await refused(
    underConstraints(constraint, { sans: [dirName([OID.organizationName, "Other"])] }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10 directoryName: the comparison budget counts every RDN compared, not every subtree", async () => {
  // 300 excluded subtrees and 300 names: 90,000 name-by-subtree pairs, under the 2^18 budget;
  // with 10 RDNs each, 900,000 RDN comparisons, over it.
  const rdns = (count: number, last: string) =>
    dirName(
      ...Array.from({ length: count - 1 }, () => [OID.organizationName, "A"] as [string, string]),
      [OID.organizationName, last],
    );
  const verify = async (rdnCount: number) => {
    const excluded = Array.from({ length: 300 }, (_, i) => rdns(rdnCount, `x${i}`));
    const sans = Array.from({ length: 300 }, (_, i) => rdns(rdnCount, `y${i}`));
    return await underConstraints({ excluded }, { sans });
  };
  await accepted(verify(1));
  await assert.rejects(verify(10), (err) => {
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.code, "ERR_NAME_CONSTRAINTS");
    assert.match(err.message, /900000 name constraint comparisons exceed/);
    return true;
  });
});

test("4.2.1.10: a constraint on a form not processed (otherName, registeredID) fails only names of that form", async () => {
  await refused(
    underConstraints({ excluded: [otherName()] }, { sans: [otherName(), dnsName("a.example.com")] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await refused(
    underConstraints({ permitted: [registeredId()] }, { sans: [registeredId()] }),
    "ERR_NAME_CONSTRAINTS",
  );
  await accepted(underConstraints({ excluded: [otherName()] }, { sans: [dnsName("a.example.com")] }));
});

test("6.1.3(b): a self-issued intermediate is exempt from the constraints above it; the target is not", async () => {
  const root = await issue({
    name: "Root",
    ca: true,
    nameConstraints: { permitted: [dirName([OID.commonName, "Inside"])] },
  });
  const ca = await issue({ name: "Inside", ca: true, issuer: root });
  // Self-issued (same subject as its issuer) key rollover certificate: not checked.
  const rolled = await issue({ name: "Inside", ca: true, issuer: ca });
  const leaf = await issue({ name: "Inside", sans: [dnsName("a.example.com")], issuer: rolled });
  await verifyChain({ leaf: leaf.der, intermediates: [ca.der, rolled.der], roots: [root.der] });
  const outside = await issue({ name: "Outside", sans: [dnsName("a.example.com")], issuer: rolled });
  await refused(
    verifyChain({ leaf: outside.der, intermediates: [ca.der, rolled.der], roots: [root.der] }),
    "ERR_NAME_CONSTRAINTS",
  );
});

test("4.2.1.10: the trust anchor's name constraints apply to the path", async () => {
  const root = await issue({ name: "Root", ca: true, nameConstraints: { excluded: [dnsName("evil.com")] } });
  const leaf = await issue({ name: "", sans: [dnsName("www.evil.com")], issuer: root });
  await refused(verifyChain({ leaf: leaf.der, roots: [root.der] }), "ERR_NAME_CONSTRAINTS");
});

// A SAN whose content is malformed is never accepted under a constraint of its form.

const MALFORMED_SANS: Array<[string, CertSpec["nameConstraints"], Uint8Array]> = [
  ["a dNSName with a leading period", { permitted: [dnsName("example.com")] }, dnsName(".example.com")],
  ["an empty dNSName", { permitted: [dnsName("example.com")] }, dnsName("")],
  ["a dNSName with an empty label", { excluded: [dnsName("evil.com")] }, dnsName("a..evil.com")],
  ["a dNSName with a trailing period", { excluded: [dnsName("evil.com")] }, dnsName("www.evil.com.")],
  ["a dNSName that is an IP address", { excluded: [dnsName("evil.com")] }, dnsName("192.0.2.1")],
  [
    "an iPAddress in CIDR form",
    { permitted: [ipNet(192, 0, 2, 0, 255, 255, 255, 0)] },
    ipNet(192, 0, 2, 0, 255, 255, 255, 0),
  ],
  [
    "an iPAddress in CIDR form under an excluded subtree",
    { excluded: [ipNet(10, 0, 0, 0, 255, 0, 0, 0)] },
    ipNet(10, 0, 0, 1, 255, 255, 255, 255),
  ],
  ["an rfc822Name without a mailbox", { excluded: [email("evil.com")] }, email("evil.com")],
  ["an rfc822Name with an empty local part", { permitted: [email("example.com")] }, email("@example.com")],
  // RFC 5280 4.2.1.6: an rfc822Name is an RFC 5321 Mailbox; each of these reads as a good.com
  // address to a suffix comparison, and as something else to a mail system.
  ["an rfc822Name with two @", { permitted: [email("good.com")] }, email("x@evil.com@good.com")],
  ["an rfc822Name with a space in its local part", { permitted: [email("good.com")] }, email("a b@good.com")],
  ["an rfc822Name with a NUL in its local part", { permitted: [email("good.com")] }, email("\0@good.com")],
  ["an rfc822Name with an empty atom", { permitted: [email("good.com")] }, email("a..b@good.com")],
  ["an rfc822Name with an unterminated quote", { permitted: [email("good.com")] }, email('"x@good.com')],
  ["a URI without an authority", { excluded: [uriName("evil.com")] }, uriName("spiffe:evil.com/w")],
  [
    "a URI whose host is an IP address",
    { permitted: [uriName("example.com")] },
    uriName("https://192.0.2.1/"),
  ],
  [
    "a URI with a backslash in its authority",
    { excluded: [uriName("evil.com")] },
    uriName("https://good.com\\@evil.com/"),
  ],
];
for (const [label, constraints, san] of MALFORMED_SANS) {
  test(`4.2.1.10: ${label} is refused under a constraint of its form`, async () => {
    await refused(
      underConstraints(constraints, { sans: [san] }),
      label.includes("CIDR") ? "ERR_CERT_MALFORMED" : "ERR_NAME_CONSTRAINTS",
    );
  });
}

test("4.2.1.10: a SAN with the wrong constructed bit is refused, never read as another form", async () => {
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({
    name: "CA",
    ca: true,
    issuer: root,
    nameConstraints: { excluded: [dnsName("evil.com")] },
  });
  const constructedDns = tlv(contextTag(2, true), tlv(Tag.IA5_STRING, text("www.evil.com")));
  const leaf = await issueUnparsed({ name: "", sans: [constructedDns], issuer: ca });
  await refused(
    verifyChain({ leaf: leaf.der, intermediates: [ca.der], roots: [root.der] }),
    "ERR_CERT_MALFORMED",
  );
});
