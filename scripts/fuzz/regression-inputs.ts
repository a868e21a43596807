/**
 * Writes the regression inputs that fuzzing did not find but probing did, into the repository
 * corpora as `crash-<sha1>` (kept by every merge, replayed by tests/fuzz/regression.test.ts):
 * each makes its target report a finding if the fix it stands for is undone.
 *
 * - GeneralName constructed bit (issue 18): a SAN whose dNSName is constructed, or whose
 *   directoryName is primitive, was read as "other"; OpenSSL refuses the SAN. For the
 *   `certificate` target such a certificate parses in meshauth and not in OpenSSL (the oracle
 *   fails); for `chain`, a leaf with a constructed URI beside its SPIFFE ID passes verifySvid
 *   as an SVID with one URI SAN, and OpenSSL cannot parse it.
 *
 * Run: node --import tsx scripts/fuzz/regression-inputs.ts
 * @module
 */
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { contextTag, Tag } from "../../lib/asn1/der.ts";
import { bool, octetString, oid, seq, tlv } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { exportSpki, generateKeyPair } from "../../lib/keys.ts";
import { uriName } from "../../lib/x509/general-name.ts";
import { leafTbs } from "../../tests/fuzz/chain-fixture.ts";
import { issue, issueUnparsed } from "../../tests/support/cert-factory.ts";

const root = new URL("../../", import.meta.url).pathname;
const text = (s: string) => new TextEncoder().encode(s);

function save(target: string, what: string, data: Uint8Array): void {
  const dir = join(root, "tests/fuzz/corpus", target);
  mkdirSync(dir, { recursive: true });
  const name = `crash-${createHash("sha1").update(data).digest("hex")}`;
  writeFileSync(join(dir, name), data);
  console.log(`${target}/${name}: ${what}`);
}

const ca = await issue({ name: "Regression CA", ca: true });
const constructedDns = tlv(contextTag(2, true), tlv(Tag.IA5_STRING, text("www.evil.example")));
const primitiveDirectory = tlv(contextTag(4, false), text("O=Evil"));
for (
  const [what, san] of [["constructed dNSName", constructedDns], [
    "primitive directoryName",
    primitiveDirectory,
  ]]
) {
  const leaf = await issueUnparsed({ name: "leaf", issuer: ca, sans: [san as Uint8Array] });
  save("certificate", `a SAN with a ${what}`, leaf.der);
}

const spki = await exportSpki((await generateKeyPair()).publicKey);
const ext = (id: string, critical: boolean, value: Uint8Array) =>
  critical ? seq(oid(id), bool(true), octetString(value)) : seq(oid(id), octetString(value));
const constructedUri = tlv(contextTag(6, true), tlv(Tag.IA5_STRING, text("spiffe://evil.example/x")));
save(
  "chain",
  "an SVID leaf with a constructed URI SAN beside its SPIFFE ID",
  await leafTbs({
    spki,
    extensions: [
      ext(OID.basicConstraints, true, seq()),
      ext(OID.keyUsage, true, tlv(0x03, new Uint8Array([7, 0x80]))),
      ext(OID.authorityKeyIdentifier, false, seq(tlv(contextTag(0, false), new Uint8Array(20).fill(0x49)))),
      ext(OID.subjectAltName, true, seq(constructedUri, uriName("spiffe://example.org/w"))),
    ],
  }),
);
