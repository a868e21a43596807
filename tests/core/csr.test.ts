import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  CertificateAuthority,
  createCsr,
  type CsrRejection,
  decodePem,
  encodePem,
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  InvalidCsr,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type KeyPair,
  parseCsr,
  type Signer,
  SpiffeId,
} from "../../mod.ts";
import { keySigner } from "../../lib/x509/signature.ts";
import {
  buildCsr,
  extension,
  extensionRequest,
  fakeSpki,
  flipByte,
  nullValue,
  rsaSigner,
  sanExtension,
} from "../support/csr-builder.ts";
import { NIST_CURVES, smallPoint, uncompressedPoint } from "../support/ec-points.ts";

// Big RSA keys take seconds to make (more on a busy machine): above Bun's 5 s default.
const SLOW = { timeout: 120_000 };

const generated = new Map<KeyAlgorithm, Promise<KeyPair>>();
function keysFor(algorithm: KeyAlgorithm): Promise<KeyPair> {
  if (!generated.has(algorithm)) generated.set(algorithm, generateKeyPair(algorithm));
  return generated.get(algorithm)!;
}

const ID = "spiffe://cluster.local/ns/default/sa/photos";
const OTHER_ID = "spiffe://cluster.local/ns/default/sa/admin";

function rejection(reason: CsrRejection) {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidCsr, `expected InvalidCsr, got ${err}`);
    assert.equal(err.code, "ERR_CSR_INVALID");
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

async function signerFor(algorithm: KeyAlgorithm) {
  const keys = await keysFor(algorithm);
  return await keySigner(keys.privateKey, keys.publicKey);
}

function derOf(pem: string): Uint8Array {
  return decodePem(pem)[0].der;
}

describe("createCsr and parseCsr", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`round-trip a ${algorithm} CSR`, SLOW, async () => {
      const keys = await keysFor(algorithm);
      const request = await parseCsr(await createCsr({ keys, id: SpiffeId.parse(ID) }));
      assert.equal(request.id.toString(), ID);
      assert.deepEqual(request.dnsNames, []);
      assert.equal(request.keyAlgorithm, algorithm);
      assert.deepEqual(request.spki, await exportSpki(keys.publicKey));
    });
  }

  test("createCsr writes one PEM block labelled CERTIFICATE REQUEST", SLOW, async () => {
    const blocks = decodePem(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }));
    assert.deepEqual(blocks.map((b) => b.label), ["CERTIFICATE REQUEST"]);
  });

  test("createCsr accepts the ID as a string", SLOW, async () => {
    const request = await parseCsr(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }));
    assert.ok(request.id.equals(ID));
  });

  test("createCsr refuses an RSA key bound to another hash than SHA-256", SLOW, async () => {
    const keys = await keysFor("RSA-2048");
    const [block] = decodePem(await exportPrivateKeyPem(keys.privateKey));
    const sha384 = await crypto.subtle.importKey(
      "pkcs8",
      block.der.slice(),
      { name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" },
      true,
      ["sign"],
    );
    await assert.rejects(createCsr({ keys: { privateKey: sha384, publicKey: keys.publicKey }, id: ID }), {
      code: "ERR_ALGORITHM_UNSUPPORTED",
    });
  });

  for (
    const name of [
      "bücher.example",
      "two words.example",
      "",
      "a..b",
      "-lead.example",
      `${"a".repeat(64)}.example`,
    ]
  ) {
    test(`createCsr refuses the DNS name ${JSON.stringify(name)}`, SLOW, async () => {
      await assert.rejects(createCsr({ keys: await keysFor("ECDSA-P256"), id: ID, dnsNames: [name] }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    });
  }

  test("createCsr accepts a wildcard DNS name", SLOW, async () => {
    const csr = await createCsr({
      keys: await keysFor("ECDSA-P256"),
      id: ID,
      dnsNames: ["*.photos.example"],
    });
    assert.deepEqual((await parseCsr(csr)).dnsNames, ["*.photos.example"]);
  });

  test("createCsr refuses an invalid SPIFFE ID", SLOW, async () => {
    await assert.rejects(createCsr({ keys: await keysFor("ECDSA-P256"), id: "spiffe://cluster.local/" }), {
      code: "ERR_SPIFFE_ID_INVALID",
    });
  });

  test("round-trip DNS names next to the SPIFFE ID", SLOW, async () => {
    const dnsNames = ["photos.default.svc", "photos.default.svc.cluster.local"];
    const request = await parseCsr(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID, dnsNames }));
    assert.deepEqual(request.dnsNames, dnsNames);
    assert.equal(request.id.toString(), ID);
  });

  test("parseCsr accepts DER bytes", SLOW, async () => {
    const pem = await createCsr({ keys: await keysFor("Ed25519"), id: ID });
    const request = await parseCsr(derOf(pem));
    assert.equal(request.id.toString(), ID);
    assert.deepEqual(request.der, derOf(pem));
  });

  test("parseCsr accepts the legacy NEW CERTIFICATE REQUEST label", SLOW, async () => {
    const der = derOf(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }));
    const request = await parseCsr(encodePem("NEW CERTIFICATE REQUEST", der));
    assert.equal(request.id.toString(), ID);
  });

  test("parseCsr accepts a well-formed CSR from the test builder", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P384"),
      uris: [ID],
      dnsNames: ["a.example"],
    });
    const request = await parseCsr(der);
    assert.equal(request.id.toString(), ID);
    assert.deepEqual(request.dnsNames, ["a.example"]);
  });
});

describe("parseCsr rejects", () => {
  for (const algorithm of KEY_ALGORITHMS) {
    test(`a ${algorithm} CSR with a flipped signature byte`, SLOW, async () => {
      const der = derOf(await createCsr({ keys: await keysFor(algorithm), id: ID }));
      await assert.rejects(parseCsr(flipByte(der, -1)), rejection("signature"));
    });
  }

  test("a signature BIT STRING that claims unused bits", SLOW, async () => {
    // An Ed25519 signature is 64 bytes: BIT STRING 03 41 00 <64 bytes> ends the CSR. Find one
    // whose last bit is 0, so that "1 unused bit" is well-formed and the signature unchanged.
    let der: Uint8Array;
    let attempt = 0;
    do {
      const names = [`n${attempt++}.example`];
      der = derOf(await createCsr({ keys: await keysFor("Ed25519"), id: ID, dnsNames: names }));
    } while (der[der.length - 1] & 1);
    assert.deepEqual([...der.subarray(der.length - 67, der.length - 64)], [0x03, 0x41, 0x00]);
    const malleated = der.slice();
    malleated[der.length - 65] = 1;
    await assert.rejects(parseCsr(malleated), rejection("malformed"));
  });

  test("a CSR whose requested ID was changed after signing", SLOW, async () => {
    const der = derOf(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }));
    const text = new TextEncoder().encode("photos");
    const at = der.findIndex((_, i) => text.every((b, k) => der[i + k] === b));
    const tampered = der.slice();
    tampered[at] = "q".charCodeAt(0);
    await assert.rejects(parseCsr(tampered), rejection("signature"));
  });

  test("a CSR signed by a key other than the one it carries", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      spki: await exportSpki((await generateKeyPair("ECDSA-P256")).publicKey),
      uris: [ID],
    });
    await assert.rejects(parseCsr(der), rejection("signature"));
  });

  test("a CSR with no URI SAN (DNS names only)", SLOW, async () => {
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), dnsNames: ["photos.example"] });
    await assert.rejects(parseCsr(der), rejection("no-uri-san"));
  });

  test("a CSR with no attributes at all", SLOW, async () => {
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), attributes: [] });
    await assert.rejects(parseCsr(der), rejection("no-uri-san"));
  });

  test("a CSR whose extension request has no subjectAltName", SLOW, async () => {
    const keyUsage = extension("2.5.29.15", new Uint8Array([0x03, 0x02, 0x07, 0x80]));
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      attributes: [extensionRequest([keyUsage])],
    });
    await assert.rejects(parseCsr(der), rejection("no-uri-san"));
  });

  test("a CSR with two URI SANs", SLOW, async () => {
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), uris: [ID, OTHER_ID] });
    await assert.rejects(parseCsr(der), rejection("multiple-uri-sans"));
  });

  test("a CSR with a SPIFFE and a non-SPIFFE URI SAN", SLOW, async () => {
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), uris: [ID, "https://example.org/"] });
    await assert.rejects(parseCsr(der), rejection("multiple-uri-sans"));
  });

  test("a CSR with two extension requests, each naming one URI", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      attributes: [
        extensionRequest([sanExtension({ uris: [ID] })]),
        extensionRequest([sanExtension({ uris: [OTHER_ID] })]),
      ],
    });
    await assert.rejects(parseCsr(der), rejection("malformed"));
  });

  test("a CSR with an extension request holding two values, each naming one URI", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      attributes: [extensionRequest([sanExtension({ uris: [ID] })], [sanExtension({ uris: [OTHER_ID] })])],
    });
    await assert.rejects(parseCsr(der), rejection("malformed"));
  });

  test("a CSR with two subjectAltName extensions", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      attributes: [extensionRequest([sanExtension({ uris: [ID] }), sanExtension({ uris: [OTHER_ID] })])],
    });
    await assert.rejects(parseCsr(der), rejection("malformed"));
  });

  test("a CSR with a DNS SAN that is not a host name", SLOW, async () => {
    for (const name of ["two words.example", "*.*.example", "a..b", ""]) {
      const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), uris: [ID], dnsNames: [name] });
      await assert.rejects(parseCsr(der), rejection("malformed"), name);
    }
  });

  test("a CSR whose only URI is not a spiffe URI", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      uris: ["https://cluster.local/ns/default"],
    });
    await assert.rejects(parseCsr(der), rejection("not-spiffe"));
  });

  test("a CSR whose spiffe URI breaks the SPIFFE-ID rules", SLOW, async () => {
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      uris: ["spiffe://Cluster.local/x/"],
    });
    await assert.rejects(parseCsr(der), rejection("not-spiffe"));
  });

  test("a CSR whose public key BIT STRING claims unused bits", SLOW, async () => {
    // Ed25519 SubjectPublicKeyInfo: ... 03 21 00 <32 key bytes>. Find a key whose last bit is 0.
    let signer: Signer;
    do {
      const keys = await generateKeyPair("Ed25519");
      signer = await keySigner(keys.privateKey, keys.publicKey);
    } while (signer.spki[signer.spki.length - 1] & 1);
    const spki = signer.spki.slice();
    assert.deepEqual([...spki.subarray(spki.length - 35, spki.length - 32)], [0x03, 0x21, 0x00]);
    spki[spki.length - 33] = 1;
    await assert.rejects(parseCsr(await buildCsr({ signer, spki, uris: [ID] })), rejection("malformed"));
  });

  test("a CSR with a compressed EC point", SLOW, async () => {
    const signer = await signerFor("ECDSA-P256");
    const point = signer.spki.subarray(signer.spki.length - 65);
    const compressed = new Uint8Array([0x02 | (point[64] & 1), ...point.subarray(1, 33)]);
    const spki = fakeSpki("1.2.840.10045.2.1", "1.2.840.10045.3.1.7", compressed);
    await assert.rejects(
      parseCsr(await buildCsr({ signer, spki, uris: [ID] })),
      rejection("unsupported-algorithm"),
    );
  });

  for (
    const [algorithm, curveOid, size] of [
      ["ECDSA-P256", "1.2.840.10045.3.1.7", 32],
      ["ECDSA-P384", "1.3.132.0.34", 48],
    ] as const
  ) {
    test(`a CSR whose ${algorithm} point is not on the curve`, SLOW, async () => {
      // The signer's own point with the last bit of y flipped: the right form and length.
      const signer = await signerFor(algorithm);
      const point = signer.spki.slice(signer.spki.length - 1 - 2 * size);
      point[point.length - 1] ^= 1;
      const spki = fakeSpki("1.2.840.10045.2.1", curveOid, point);
      await assert.rejects(parseCsr(await buildCsr({ signer, spki, uris: [ID] })), rejection("malformed"));
    });

    test(
      `a CSR whose ${algorithm} point has x + p for x: the same point mod p, not a field element`,
      SLOW,
      async () => {
        // Deno's WebCrypto reduces such a coordinate and imports the point; the signature then
        // fails, so a provider that let it through would answer 'signature', not 'malformed'.
        const signer = await signerFor(algorithm);
        const curve = algorithm === "ECDSA-P256" ? "P-256" : "P-384";
        const { x, y } = smallPoint(curve);
        const spki = fakeSpki(
          "1.2.840.10045.2.1",
          curveOid,
          uncompressedPoint(curve, x + NIST_CURVES[curve].p, y),
        );
        await assert.rejects(parseCsr(await buildCsr({ signer, spki, uris: [ID] })), rejection("malformed"));
      },
    );
  }

  test("a CSR with an RSA key whose algorithm parameters are not NULL", SLOW, async () => {
    const signer = await signerFor("RSA-2048");
    // rsaEncryption SPKI: 30 82 01 22 30 0d 06 09 <oid> 05 00 03 82 01 0f 00 <RSAPublicKey>
    const rsaPublicKey = signer.spki.subarray(24);
    assert.equal(rsaPublicKey[0], 0x30);
    for (const parameters of [undefined, "1.2.840.10045.3.1.7"]) {
      const spki = fakeSpki("1.2.840.113549.1.1.1", parameters, rsaPublicKey);
      await assert.rejects(parseCsr(await buildCsr({ signer, spki, uris: [ID] })), rejection("malformed"));
    }
  });

  test("a CSR with an Ed25519 key that carries algorithm parameters", SLOW, async () => {
    const signer = await signerFor("Ed25519");
    const spki = fakeSpki("1.3.101.112", nullValue(), signer.spki.subarray(signer.spki.length - 32));
    await assert.rejects(parseCsr(await buildCsr({ signer, spki, uris: [ID] })), rejection("malformed"));
  });

  test("a CSR with a 1024-bit RSA key", SLOW, async () => {
    const keys = await crypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 1024,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["sign", "verify"],
    ) as CryptoKeyPair;
    const der = await buildCsr({ signer: await rsaSigner(keys), uris: [ID] });
    await assert.rejects(parseCsr(der), rejection("weak-key"));
  });

  test("a CSR signed with SHA-1", SLOW, async () => {
    const keys = await crypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-1",
      },
      true,
      ["sign", "verify"],
    ) as CryptoKeyPair;
    const der = await buildCsr({ signer: await rsaSigner(keys), uris: [ID] });
    await assert.rejects(parseCsr(der), rejection("unsupported-algorithm"));
  });

  test("a CSR with a P-521 key", SLOW, async () => {
    const spki = fakeSpki("1.2.840.10045.2.1", "1.3.132.0.35", new Uint8Array(133).fill(4, 0, 1));
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), spki, uris: [ID] });
    await assert.rejects(parseCsr(der), rejection("unsupported-algorithm"));
  });

  test("a CSR with an Ed448 key", SLOW, async () => {
    const spki = fakeSpki("1.3.101.113", undefined, new Uint8Array(57).fill(9));
    const der = await buildCsr({ signer: await signerFor("Ed25519"), spki, uris: [ID] });
    await assert.rejects(parseCsr(der), rejection("unsupported-algorithm"));
  });

  test("a CSR with an RSA key over 4096 bits", SLOW, async () => {
    const modulus = new Uint8Array(1025).fill(0xc3);
    modulus[0] = 0;
    // RSAPublicKey { modulus (8192 bits), publicExponent 65537 } written by hand.
    const rsaKey = new Uint8Array([
      0x30,
      0x82,
      0x04,
      0x0a,
      0x02,
      0x82,
      0x04,
      0x01,
      ...modulus,
      0x02,
      0x03,
      1,
      0,
      1,
    ]);
    const spki = fakeSpki("1.2.840.113549.1.1.1", nullValue(), rsaKey);
    const der = await buildCsr({ signer: await signerFor("RSA-2048"), spki, uris: [ID] });
    await assert.rejects(parseCsr(der), rejection("unsupported-algorithm"));
  });

  test("a CSR whose signature algorithm does not match its key", SLOW, async () => {
    const rsa = await signerFor("RSA-2048");
    const der = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      signatureAlgorithm: rsa.algorithmIdentifier,
      uris: [ID],
    });
    await assert.rejects(parseCsr(der), rejection("unsupported-algorithm"));
  });

  test("a CSR of a version other than v1", SLOW, async () => {
    const der = await buildCsr({ signer: await signerFor("ECDSA-P256"), uris: [ID], version: 1 });
    await assert.rejects(parseCsr(der), rejection("malformed"));
  });

  test("trailing bytes after the DER", SLOW, async () => {
    const der = derOf(await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID }));
    const padded = new Uint8Array([...der, 0x00, 0x00]);
    await assert.rejects(parseCsr(padded), rejection("malformed"));
    await assert.rejects(parseCsr(encodePem("CERTIFICATE REQUEST", padded)), rejection("malformed"));
  });

  test("text around the PEM block", SLOW, async () => {
    const pem = await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID });
    await assert.rejects(parseCsr(`Certificate Request:\n${pem}`), rejection("malformed"));
  });

  test("two CSRs in one PEM", SLOW, async () => {
    const pem = await createCsr({ keys: await keysFor("ECDSA-P256"), id: ID });
    await assert.rejects(parseCsr(pem + pem), rejection("malformed"));
  });

  test("a certificate, as PEM and as DER", SLOW, async () => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: "cluster.local" });
    await assert.rejects(parseCsr(ca.certificatePem), rejection("malformed"));
    await assert.rejects(parseCsr(derOf(ca.certificatePem)), rejection("malformed"));
  });

  test("random bytes", SLOW, async () => {
    const bytes = crypto.getRandomValues(new Uint8Array(300));
    bytes[0] = 0x30;
    await assert.rejects(parseCsr(bytes), rejection("malformed"));
    await assert.rejects(parseCsr(encodePem("CERTIFICATE REQUEST", bytes)), rejection("malformed"));
  });

  test("an empty string and empty bytes", SLOW, async () => {
    await assert.rejects(parseCsr(""), rejection("malformed"));
    await assert.rejects(parseCsr(new Uint8Array()), rejection("malformed"));
  });

  test("a PEM body that is not base64", SLOW, async () => {
    const pem = "-----BEGIN CERTIFICATE REQUEST-----\nMII=B\n-----END CERTIFICATE REQUEST-----\n";
    await assert.rejects(parseCsr(pem), rejection("malformed"));
  });

  test("a value that is neither text nor bytes", SLOW, async () => {
    await assert.rejects(parseCsr(42 as unknown as string), rejection("malformed"));
  });
});

describe("DNS names in CSRs", () => {
  test("parseCsr gives DNS names lowercase", async () => {
    const csr = await buildCsr({
      signer: await signerFor("ECDSA-P256"),
      uris: [ID],
      dnsNames: ["Photos.Example.COM"],
    });
    assert.deepEqual((await parseCsr(csr)).dnsNames, ["photos.example.com"]);
  });

  test("an IP address written as a DNS name is refused by createCsr and parseCsr", async () => {
    await assert.rejects(createCsr({ keys: await keysFor("ECDSA-P256"), id: ID, dnsNames: ["10.0.0.1"] }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    const csr = await buildCsr({ signer: await signerFor("ECDSA-P256"), uris: [ID], dnsNames: ["10.0.0.1"] });
    await assert.rejects(parseCsr(csr), { code: "ERR_CSR_INVALID" });
  });
});

describe("CSR subjects", () => {
  test("createCsr writes the subject it is given, for an intermediate CA's CSR", async () => {
    const csr = await createCsr({
      keys: await keysFor("ECDSA-P256"),
      id: "spiffe://cluster.local",
      subject: { O: "cluster.local", CN: "meshauth intermediate CA" },
    });
    const der = decodePem(csr)[0].der;
    const text = new TextDecoder().decode(der);
    assert.match(text, /meshauth intermediate CA/);
    assert.equal((await parseCsr(csr)).id.toString(), "spiffe://cluster.local");
  });

  test("createCsr refuses an unknown subject attribute", async () => {
    await assert.rejects(createCsr({ keys: await keysFor("ECDSA-P256"), id: ID, subject: { X: "y" } }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });
});
