// Distinguished names compare as RFC 5280 7.1 prescribes: values prepared by RFC 4518 (mapped,
// case folded, NFKC, insignificant spaces removed, prohibited code points refused), so a look-
// alike of an excluded name is the excluded name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { contextTag, parseDer, Tag } from "../../lib/asn1/der.ts";
import { oid, seq, set, tlv, utf8String } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { VerificationError } from "../../lib/errors.ts";
import { verifyChain } from "../../lib/verify/chain.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import { encodeName, parseName } from "../../lib/x509/name.ts";
import { prepareString } from "../../lib/x509/string-prep.ts";
import { issue, issueUnparsed } from "../support/cert-factory.ts";

/** Name with O = `value` (a UTF8String unless `tag` says otherwise), then CN=leaf. */
const organization = (value: string, tag: number = Tag.UTF8_STRING) =>
  seq(
    set(seq(oid(OID.organizationName), tlv(tag, new TextEncoder().encode(value)))),
    set(seq(oid(OID.commonName), utf8String("leaf"))),
  );

const LOOK_ALIKES: Array<[string, string]> = [
  ["fullwidth letters (NFKC)", "\uFF25\uFF56\uFF49\uFF4C"],
  ["a soft hyphen (mapped to nothing)", "Ev\u00ADil"],
  ["a zero-width space (mapped to nothing)", "Evil\u200B"],
  ["a zero-width joiner (mapped to nothing)", "E\u200Dvil"],
  ["a byte order mark (mapped to nothing)", "\uFEFFEvil"],
  ["a variation selector (mapped to nothing)", "Evil\uFE0F"],
  ["a combining grapheme joiner (mapped to nothing)", "Ev\u034Fil"],
  ["a Hangul filler (default ignorable, mapped to nothing)", "Evil\u3164"],
  ["a no-break space and an ideographic space (mapped to space, insignificant)", "\u3000Evil\u00A0"],
  ["a tab and a line feed (mapped to space, insignificant)", "\tEvil\n"],
  ["upper case", "EVIL"],
  ["mathematical bold letters (NFKC)", "\u{1D404}\u{1D42F}\u{1D422}\u{1D425}"],
];

test("prepareString maps, folds, normalises and removes insignificant spaces (RFC 4518 2.2-2.6)", () => {
  for (const [label, value] of LOOK_ALIKES) assert.equal(prepareString(value), "evil", label);
  assert.equal(prepareString("  Evil   Corp  "), "evil corp");
  assert.equal(prepareString("Stra\u00DFe"), prepareString("STRASSE"), "full case folding: ß is ss");
  assert.equal(prepareString("E\u0301vil"), prepareString("\u00C9vil"), "NFKC composes");
  assert.notEqual(prepareString("\u00C9vil"), "evil", "an accent is significant");
  // A space that carries a combining mark is not insignificant.
  assert.equal(prepareString("a \u0301b"), "a \u0301b");
  assert.equal(prepareString(""), "");
  assert.equal(prepareString("   "), "");
});

test("prepareString refuses prohibited code points (RFC 4518 2.4)", () => {
  for (
    const value of [
      "Evil\uE000", // private use
      "Evil\u{F0000}", // supplementary private use
      "Evil\uFDD0", // non-character
      "Evil\uFFFF", // non-character
      "Evil\uFFFD", // replacement character
    ]
  ) {
    assert.equal(prepareString(value), undefined, JSON.stringify(value));
  }
});

test("names with look-alike values have the same comparison key", () => {
  const plain = parseName(parseDer(organization("Evil")));
  for (const [label, value] of LOOK_ALIKES) {
    assert.equal(parseName(parseDer(organization(value))).key, plain.key, label);
  }
  assert.deepEqual(plain.rdnKeys.length, 2);
  assert.equal(plain.key, plain.rdnKeys.join(","));
});

async function constrainedChain(constraint: Uint8Array, kind: "permitted" | "excluded") {
  const root = await issue({ name: "Root", ca: true });
  const ca = await issue({ name: "CA", ca: true, issuer: root, nameConstraints: { [kind]: [constraint] } });
  return {
    verify: async (subject: Uint8Array) => {
      const leaf = await issueUnparsed({
        name: "",
        issuer: ca,
        raw: { subject },
        sans: [uriName("spiffe://example.org/w")],
      });
      return verifyChain({ leaf: leaf.der, intermediates: [ca.der], roots: [root.der] });
    },
  };
}

const excludedEvil = () =>
  constrainedChain(tlv(contextTag(4, true), encodeName([[OID.organizationName, "Evil"]])), "excluded");

for (const [label, value] of LOOK_ALIKES) {
  test(`an excluded dirName O=Evil refuses O=Evil written with ${label}`, async () => {
    const chain = await excludedEvil();
    await assert.rejects(chain.verify(organization(value)), (err) => {
      assert.ok(err instanceof VerificationError, String(err));
      assert.equal(err.code, "ERR_NAME_CONSTRAINTS", err.message);
      return true;
    });
  });
}

test("an excluded dirName O=Evil still accepts another organization", async () => {
  const chain = await excludedEvil();
  await chain.verify(organization("Evil Twin"));
  await chain.verify(organization("\u00C9vil"));
});

test("a subject value RFC 4518 prohibits is refused under a dirName constraint, compared exactly elsewhere", async () => {
  const chain = await excludedEvil();
  await assert.rejects(chain.verify(organization("Evil\uE000")), (err) => {
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.code, "ERR_NAME_CONSTRAINTS");
    assert.match(err.message, /U\+E000/);
    return true;
  });
  // Without a directoryName constraint the name is just a name: a CA with it chains to itself.
  const root = await issue({ name: "", ca: true, raw: { subject: organization("Root\uE000") } });
  const leaf = await issue({ name: "leaf", issuer: root, sans: [uriName("spiffe://example.org/w")] });
  await verifyChain({ leaf: leaf.der, roots: [root.der] });
});

test("a dirName constraint holding a prohibited code point makes the CA refused", async () => {
  const constraint = tlv(
    contextTag(4, true),
    seq(set(seq(oid(OID.organizationName), utf8String("Evil\uFFFD")))),
  );
  const chain = await constrainedChain(constraint, "permitted");
  await assert.rejects(chain.verify(organization("Evil")), (err) => {
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.code, "ERR_NAME_CONSTRAINTS");
    assert.match(err.message, /malformed directory constraint/);
    return true;
  });
});

test("a permitted dirName O=Example accepts the same organization in any case, form or string type", async () => {
  const chain = await constrainedChain(
    tlv(contextTag(4, true), encodeName([[OID.organizationName, "Example"]])),
    "permitted",
  );
  await chain.verify(organization("EXAMPLE", Tag.PRINTABLE_STRING));
  await chain.verify(organization("\uFF25xample"));
  await assert.rejects(chain.verify(organization("Examples")), /outside the names permitted/);
});
