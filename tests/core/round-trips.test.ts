// Property tests (fast-check): what meshauth encodes, it parses back to the same value, for
// names, extensions, SPIFFE IDs, bundles and CRLs (issue 18).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseDer, readBigInt, readOid, readTime } from "../../lib/asn1/der.ts";
import { integer, oid, time } from "../../lib/asn1/der-writer.ts";
import { OID } from "../../lib/asn1/oids.ts";
import { CertificateAuthority } from "../../lib/ca.ts";
import { TrustBundle } from "../../lib/bundle.ts";
import { REVOCATION_REASONS } from "../../lib/certificate-template.ts";
import { generateKeyPair, type KeyPair } from "../../lib/keys.ts";
import { SpiffeId } from "../../lib/spiffeid.ts";
import { KeyUsage, type KeyUsageName } from "../../lib/x509/certificate.ts";
import { parseCrl } from "../../lib/x509/crl.ts";
import { dnsName, formatIp, ipName, parseIp, uriName } from "../../lib/x509/general-name.ts";
import { encodeName, parseName } from "../../lib/x509/name.ts";
import { issue } from "../support/cert-factory.ts";

const RUNS = { numRuns: 60 };
let sharedKeys: Promise<KeyPair> | undefined;
const keys = () => sharedKeys ??= generateKeyPair();

const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/);
const dns = fc.array(label, { minLength: 2, maxLength: 4 }).map((l) => l.join(".")).filter((n) =>
  !/^[\d.]+$/.test(n)
);
const printable = fc.stringMatching(/^[A-Za-z0-9 '()+,\-./:=?]{1,20}$/);

test("DER integers, OIDs and times read back as written", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 2040n) - 1n }), (n) => {
      assert.equal(readBigInt(parseDer(integer(n)), "INTEGER", 256), n);
    }),
  );
  const arc = fc.oneof(fc.nat(1000), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }));
  fc.assert(
    fc.property(fc.nat(2), fc.nat(39), fc.array(arc, { maxLength: 8 }), (first, second, rest) => {
      const dotted = [first, second, ...rest].join(".");
      assert.equal(readOid(parseDer(oid(dotted))), dotted);
    }),
  );
  fc.assert(
    fc.property(
      fc.date({
        min: new Date("0001-01-01T00:00:00Z"),
        max: new Date("9999-12-31T23:59:59Z"),
        noInvalidDate: true,
      }),
      (d) => {
        const seconds = new Date(Math.floor(d.getTime() / 1000) * 1000);
        assert.equal(readTime(parseDer(time(seconds)), "t", true).getTime(), seconds.getTime());
      },
    ),
  );
});

test("names: attributes encoded in order come back in order with their values", () => {
  const attribute = fc.oneof(
    fc.tuple(
      fc.constantFrom(OID.commonName, OID.organizationName, OID.organizationalUnitName),
      fc.string({ minLength: 1, maxLength: 30, unit: "grapheme" }),
    ),
    fc.tuple(fc.constant(OID.countryName), fc.stringMatching(/^[A-Z]{2}$/)),
    fc.tuple(fc.constant(OID.serialNumber), printable),
  );
  fc.assert(
    fc.property(fc.array(attribute, { minLength: 1, maxLength: 6 }), (attributes) => {
      const name = parseName(parseDer(encodeName(attributes)));
      assert.deepEqual(name.rdns.map((rdn) => rdn.map((a) => [a.type, a.value])), attributes.map((a) => [a]));
      assert.equal(parseName(parseDer(name.der)).key, name.key);
    }),
  );
});

test("extensions: SANs, key usage and pathLen read back from a signed certificate", async () => {
  const kp = await keys();
  const root = await issue({ name: "Root", ca: true, keys: kp });
  const san = fc.oneof(
    dns.map((n) => ({ type: "dns" as const, value: n })),
    fc.tuple(dns, fc.array(label, { maxLength: 3 })).map(([host, path]) => ({
      type: "uri" as const,
      value: `spiffe://${host}/${path.join("/")}`,
    })),
    fc.oneof(fc.ipV4(), fc.ipV6()).map((ip) => ({ type: "ip" as const, value: formatIp(parseIp(ip)!) })),
  );
  const usages = fc.subarray(Object.keys(KeyUsage) as KeyUsageName[], { minLength: 1 });
  await fc.assert(
    fc.asyncProperty(
      fc.array(san, { minLength: 1, maxLength: 5 }),
      usages,
      fc.option(fc.nat(0x7fffffff), { nil: undefined }),
      async (names, keyUsage, pathLen) => {
        const isCa = pathLen !== undefined || keyUsage.includes("keyCertSign");
        const leaf = await issue({
          name: "x",
          keys: kp,
          issuer: root,
          ca: isCa,
          pathLen: isCa ? pathLen : undefined,
          keyUsage,
          sans: names.map((n) =>
            n.type === "dns"
              ? dnsName(n.value)
              : n.type === "uri"
              ? uriName(n.value)
              : ipName(parseIp(n.value)!)
          ),
        });
        const parsed = leaf.cert.subjectAltName!.map((n) =>
          n.type === "ip"
            ? { type: n.type, value: formatIp(n.value) }
            : { type: n.type, value: "value" in n ? n.value : "" }
        );
        assert.deepEqual(parsed, names);
        assert.deepEqual([...leaf.cert.keyUsage!].sort(), [...keyUsage].sort());
        assert.equal(leaf.cert.basicConstraints?.ca ?? false, isCa);
        assert.equal(leaf.cert.basicConstraints?.pathLength, isCa ? pathLen : undefined);
      },
    ),
    { numRuns: 40 },
  );
});

test("SPIFFE IDs: text parses to an ID that prints the same text", () => {
  const trustDomain = fc.stringMatching(/^[a-z0-9._-]{1,40}$/).filter((td) => td !== "." && td !== "..");
  const segment = fc.stringMatching(/^[a-zA-Z0-9._-]{1,20}$/).filter((s) => s !== "." && s !== "..");
  fc.assert(
    fc.property(trustDomain, fc.array(segment, { maxLength: 5 }), (td, segments) => {
      const text = `spiffe://${td}${segments.map((s) => `/${s}`).join("")}`;
      const id = SpiffeId.parse(text);
      assert.equal(id.toString(), text);
      assert.ok(SpiffeId.parse(id.toString()).equals(id));
      assert.ok(SpiffeId.fromSegments(td, ...segments).equals(id));
    }),
    RUNS,
  );
});

test("bundles: toJwks then fromJwks gives the same authorities, sequence and refresh hint", async () => {
  const pool = await Promise.all(
    ["ECDSA-P256", "ECDSA-P384", "Ed25519"].map(async (k) =>
      (await CertificateAuthority.createRoot({ trustDomain: "example.org", keyAlgorithm: k as "Ed25519" }))
        .certificate
    ),
  );
  fc.assert(
    fc.property(
      fc.subarray(pool),
      fc.nat(2 ** 40),
      fc.option(fc.nat(86_400 * 365), { nil: undefined }),
      (authorities, sequence, refreshHintSeconds) => {
        const bundle = new TrustBundle("example.org", authorities, { sequence, refreshHintSeconds });
        const back = TrustBundle.fromJwks("example.org", JSON.stringify(bundle.toJwks()));
        assert.deepEqual(back.x509Authorities().map((c) => c.der), authorities.map((c) => c.der));
        assert.equal(back.sequence, sequence);
        assert.equal(back.refreshHintSeconds, refreshHintSeconds);
      },
    ),
    RUNS,
  );
});

test("CRLs: the revocations a CA signs are the ones parseCrl reads", async () => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
  const serial = fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => {
    const bytes = Uint8Array.from(b);
    bytes[0] = (bytes[0] & 0x7f) || 1; // positive and minimal
    return Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
  });
  const revocation = fc.record({
    serialNumber: serial,
    revokedAt: fc.date({
      min: new Date("1950-01-01T00:00:00Z"),
      max: new Date("2200-01-01T00:00:00Z"),
      noInvalidDate: true,
    })
      .map((d) => new Date(Math.floor(d.getTime() / 1000) * 1000)),
    reason: fc.option(fc.constantFrom(...REVOCATION_REASONS.filter((r) => r !== "removeFromCRL")), {
      nil: undefined,
    }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(revocation, { selector: (r) => r.serialNumber, maxLength: 8 }),
      async (revoked) => {
        const crl = parseCrl(await ca.createCrl({ revoked, nextUpdateSeconds: 3600 }));
        assert.deepEqual(
          crl.revoked.map((r) => ({
            serialNumber: r.serialNumber,
            revokedAt: r.revocationDate,
            reason: r.reason,
          })),
          // RFC 5280 5.3.1: "unspecified" is written as no reason code, and reads back as none.
          revoked.map((r) => ({ ...r, reason: r.reason === "unspecified" ? undefined : r.reason })),
        );
      },
    ),
    { numRuns: 40 },
  );
});

test("CRLs: a serial longer than a certificate's is refused when signing, not written unreadable", async () => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
  await assert.rejects(
    ca.createCrl({
      revoked: [{ serialNumber: "01".repeat(40), revokedAt: new Date() }],
      nextUpdateSeconds: 60,
    }),
    /serial number/,
  );
});
