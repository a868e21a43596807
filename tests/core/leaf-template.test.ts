// The CA signs its leaves from a precomputed template (lib/leaf-template.ts); the reference
// encoder (signCertificate) writes every certificate field by field. A leaf from the fast path
// must be the same certificate: for the same serial, validity, key and names, the same
// TBSCertificate byte for byte, whatever the key's algorithm, the names and the subject.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  type KeyAlgorithm,
  parseCsr,
  SpiffeId,
} from "../../mod.ts";
import { childrenOf, encodingOf, parseDer, readBitString } from "../../lib/asn1/der.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { type CertificateTemplate, keyIdentifier, signCertificate } from "../../lib/certificate-template.ts";
import { LeafTemplate } from "../../lib/leaf-template.ts";
import { LEAF_EXTENDED_KEY_USAGE, leafKeyUsage } from "../../lib/svid/profile.ts";
import { parseCertificates, uriSans } from "../../lib/x509/certificate.ts";
import { parseIp } from "../../lib/x509/general-name.ts";
import { fromHex } from "../../lib/encoding.ts";
import { encodeName, encodeSubject } from "../../lib/x509/name.ts";
import { keySigner } from "../../lib/x509/signature.ts";

async function caSigner() {
  const keys = await generateKeyPair("ECDSA-P256");
  return await keySigner(keys.privateKey, keys.publicKey);
}

/** The TBSCertificate of a certificate's DER. */
function tbsOf(der: Uint8Array): Uint8Array {
  return encodingOf(childrenOf(parseDer(der, "certificate"))[0]);
}

/** What both paths are given for one leaf. */
async function leafOf(
  keyAlgorithm: KeyAlgorithm,
  names: { dnsNames?: string[]; ipAddresses?: string[] } = {},
): Promise<Omit<CertificateTemplate, "issuer" | "subject" | "keyUsage">> {
  const keys = await generateKeyPair(keyAlgorithm);
  const id = SpiffeId.parse("spiffe://template.example/ns/a/sa/b");
  const request = await parseCsr(await createCsr({ keys, id, ...names }));
  const bits = childrenOf(parseDer(request.spki, "key"))[1];
  return {
    serial: new Uint8Array([0x4f, ...crypto.getRandomValues(new Uint8Array(15))]),
    notBefore: new Date("2026-03-01T10:00:00Z"),
    notAfter: new Date("2026-03-01T11:00:00Z"),
    spki: request.spki,
    uris: [id.toString()],
    dnsNames: request.dnsNames,
    ipAddresses: request.ipAddresses.map((ip) => parseIp(ip)!),
    subjectKeyIdentifier: await keyIdentifier(readBitString(bits).bytes),
    extendedKeyUsage: [...LEAF_EXTENDED_KEY_USAGE],
    authorityKeyIdentifier: crypto.getRandomValues(new Uint8Array(20)),
  };
}

describe("LeafTemplate", () => {
  const cases: [string, KeyAlgorithm, { dnsNames?: string[]; ipAddresses?: string[] }, boolean][] = [
    ["a P-256 key, the SPIFFE ID alone", "ECDSA-P256", {}, false],
    ["a P-384 key with DNS and IP SANs", "ECDSA-P384", {
      dnsNames: ["a.example"],
      ipAddresses: ["::1", "10.0.0.1"],
    }, false],
    ["an RSA key (two key usages)", "RSA-2048", {}, false],
    ["an Ed25519 key and an empty subject (critical SAN)", "Ed25519", { dnsNames: ["b.example"] }, true],
  ];
  for (const [what, keyAlgorithm, names, isSubjectEmpty] of cases) {
    it(`writes the reference encoder's TBSCertificate for ${what}`, async () => {
      const signer = await caSigner();
      const leaf = await leafOf(keyAlgorithm, names);
      const profile = {
        issuer: encodeSubject({ O: "template.example", CN: "issuer" }),
        subject: isSubjectEmpty
          ? new Uint8Array([0x30, 0])
          : encodeName([[OID.organizationName, "template.example"]]),
        keyUsage: leafKeyUsage(keyAlgorithm),
        extendedKeyUsage: leaf.extendedKeyUsage,
        authorityKeyIdentifier: leaf.authorityKeyIdentifier,
      };
      const fast = await new LeafTemplate(profile, signer).sign(leaf);
      const reference = await signCertificate({ ...leaf, ...profile }, signer);
      assert.deepEqual(tbsOf(fast), tbsOf(reference));
      // The rest is the algorithm and a signature over that TBS, in the same layout.
      const [, fastAlgorithm] = childrenOf(parseDer(fast, "certificate"));
      const [, referenceAlgorithm] = childrenOf(parseDer(reference, "certificate"));
      assert.deepEqual(encodingOf(fastAlgorithm), encodingOf(referenceAlgorithm));
    });
  }

  it("issues, through CertificateAuthority.issue, the leaf the reference encoder writes", async () => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: "template.example" });
    const id = SpiffeId.parse("spiffe://template.example/ns/a/sa/b");
    const issued = await ca.issue(await createCsr({ keys: await generateKeyPair(), id }), { id });
    const [leaf] = parseCertificates(issued.certificatePem);
    assert.deepEqual(uriSans(leaf), [id.toString()]);
    // The same leaf field by field, from what the issued certificate says is its own.
    const reference = await signCertificate({
      serial: fromHex(leaf.serialNumber),
      issuer: ca.certificate.subject.der,
      subject: leaf.subject.der,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      spki: leaf.spki,
      keyUsage: ["digitalSignature"],
      extendedKeyUsage: [...LEAF_EXTENDED_KEY_USAGE],
      uris: [id.toString()],
      subjectKeyIdentifier: leaf.subjectKeyIdentifier!,
      authorityKeyIdentifier: ca.certificate.subjectKeyIdentifier!,
    }, await caSigner());
    assert.deepEqual(tbsOf(issued.certificateDer), tbsOf(reference));
  });
});
