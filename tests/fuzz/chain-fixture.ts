/**
 * The fixed trust domain the chain fuzz target verifies against: a root and an intermediate
 * made at start-up (fresh keys each run), with constant subject key identifiers so the leaves
 * in the corpus (to-be-signed parts only) name their issuer the same way every run. The
 * intermediate is name-constrained, as the issue-18 bypass needed: URIs permitted under
 * example.org, excluded `dirName O=Evil` and DNS evil.example.org. The harness signs each
 * fuzzed to-be-signed leaf with the intermediate's key, so the validator's rules, not the
 * signature check, decide.
 * @module
 */

import { contextTag } from "../../lib/asn1/der.ts";
import { bitString, explicit, integer, octetString, oid, seq, time, tlv } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { dnsName, uriName } from "../../lib/x509/general-name.ts";
import { encodeName } from "../../lib/x509/name.ts";
import { issue, type Issued } from "../support/cert-factory.ts";

export const ROOT_KEY_ID = new Uint8Array(20).fill(0x52);
export const INTERMEDIATE_KEY_ID = new Uint8Array(20).fill(0x49);
/** When the chain target validates: inside every corpus certificate's validity. */
export const VALIDATION_TIME = new Date("2030-01-01T00:00:00Z");
const NOT_BEFORE = new Date("2020-01-01T00:00:00Z");
const NOT_AFTER = new Date("2040-01-01T00:00:00Z");

export interface ChainFixture {
  root: Issued;
  intermediate: Issued;
  bundle: TrustBundle;
}

let fixture: Promise<ChainFixture> | undefined;

/** The root and intermediate of this process (made once). */
export function chainFixture(): Promise<ChainFixture> {
  fixture ??= (async () => {
    const ski = (id: Uint8Array) => ({ oid: OID.subjectKeyIdentifier, value: octetString(id) });
    const root = await issue({
      name: "Fuzz Root",
      ca: true,
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      omit: ["ski"],
      extensions: [ski(ROOT_KEY_ID)],
    });
    root.ski = ROOT_KEY_ID;
    const intermediate = await issue({
      name: "Fuzz Intermediate",
      issuer: root,
      ca: true,
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      omit: ["ski"],
      extensions: [ski(INTERMEDIATE_KEY_ID)],
      nameConstraints: {
        permitted: [uriName("example.org"), dnsName("example.org")],
        excluded: [
          tlv(contextTag(4, true), encodeName([[OID.organizationName, "Evil"]])),
          dnsName("evil.example.org"),
        ],
      },
    });
    intermediate.ski = INTERMEDIATE_KEY_ID;
    return { root, intermediate, bundle: new TrustBundle("example.org", [root.der]) };
  })();
  return fixture;
}

/** A leaf certificate: `tbs` signed by the intermediate (whatever the bytes are). */
export async function signLeaf(tbs: Uint8Array): Promise<Uint8Array> {
  const { intermediate } = await chainFixture();
  const signer = intermediate.signer;
  return seq(tbs, signer.algorithmIdentifier, bitString(await signer.sign(tbs)));
}

/** The to-be-signed part of a leaf under the fixture's intermediate (for seeding the corpus). */
export async function leafTbs(options: {
  serial?: bigint;
  subject?: Uint8Array;
  spki: Uint8Array;
  extensions: Uint8Array[];
}): Promise<Uint8Array> {
  const { intermediate } = await chainFixture();
  return seq(
    explicit(0, integer(2)),
    integer(options.serial ?? 0x1234n),
    intermediate.signer.algorithmIdentifier,
    intermediate.subject,
    seq(time(new Date("2026-01-01T00:00:00Z")), time(new Date("2036-01-01T00:00:00Z"))),
    options.subject ?? seq(),
    options.spki,
    explicit(3, seq(...options.extensions)),
  );
}

export { oid };
