/**
 * Core throughput: X509-SVID issuances and SVID verifications per second, next to the same
 * cryptographic work done with node:crypto directly, as a ratio in one run.
 *
 *   node --import tsx bench/core.ts [--seconds 3] [--concurrency 8]
 *
 * The node:crypto peer does only the signature work (verify the CSR's signature, sign a
 * TBS of the same size; or parse and verify a three-certificate chain with X509Certificate):
 * it is the floor of what any issuance or verification costs on this runtime.
 * @module
 */

import { createPrivateKey, createPublicKey, sign, verify, X509Certificate } from "node:crypto";
import { parseArgs } from "node:util";
import {
  CertificateAuthority,
  createCsr,
  decodePem,
  exportPrivateKeyPem,
  generateKeyPair,
  parseCertificate,
  SpiffeId,
  verifySvid,
} from "../mod.ts";
import { measure, printComparison } from "./support.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "8" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log("usage: node --import tsx bench/core.ts [--seconds N] [--concurrency N]");
  process.exit(0);
}
const maxSeconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

console.log(`meshauth core bench on ${process.release.name} ${process.version}, concurrency ${concurrency}`);
const root = await CertificateAuthority.createRoot({ trustDomain: "bench.local" });
const ca = await root.createIntermediate({ ttlSeconds: 86400 });
const id = SpiffeId.fromServiceAccount("bench.local", "default", "bench");
const requests: string[] = [];
process.stdout.write("making 64 CSRs... ");
for (let i = 0; i < 64; i++) {
  requests.push(await createCsr({ keys: await generateKeyPair("ECDSA-P256"), id }));
}
console.log("done");

// The peer's inputs: a CSR-sized signed blob and its signature, and the CA key as a KeyObject.
const caKey = createPrivateKey((await ca.exportPem()).privateKeyPem);
const workloadKey = createPrivateKey(await exportPrivateKeyPem((await generateKeyPair()).privateKey));
const workloadPublicKey = createPublicKey(workloadKey);
const csrInfo = decodePem(requests[0])[0].der.subarray(0, 200);
const csrSignature = sign("sha256", csrInfo, workloadKey);
const sampleLeaf = await ca.issue(requests[0], { id });
const tbs = new Uint8Array(parseCertificate(sampleLeaf.certificateDer).tbs.length).fill(7);

const issuance = await measure("meshauth ca.issue", (i) => ca.issue(requests[i % requests.length], { id }), {
  maxSeconds,
  concurrency,
});
const issuancePeer = await measure(
  "node:crypto verify+sign",
  () =>
    new Promise<void>((resolve, reject) => {
      verify("sha256", csrInfo, workloadPublicKey, csrSignature, (err) => {
        if (err) return reject(err);
        sign("sha256", tbs, caKey, (err2) => (err2 ? reject(err2) : resolve()));
      });
    }),
  { maxSeconds, concurrency },
);

const bundle = root.bundle();
const chainPem = sampleLeaf.chainPem;
const at = new Date();
const verification = await measure("meshauth verifySvid", () => verifySvid(chainPem, bundle, { at }), {
  maxSeconds,
  concurrency,
});
const [leafPem, intermediatePem] = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
const rootPem = bundle.toPem();
const verificationPeer = await measure("node:crypto X509Certificate", () => {
  const leaf = new X509Certificate(leafPem);
  const intermediate = new X509Certificate(intermediatePem);
  const anchor = new X509Certificate(rootPem);
  const now = Date.now();
  for (const c of [leaf, intermediate, anchor]) {
    if (Date.parse(c.validFrom) > now || Date.parse(c.validTo) < now) throw new Error("invalid");
  }
  if (!leaf.checkIssued(intermediate) || !leaf.verify(intermediate.publicKey)) throw new Error("leaf");
  if (!intermediate.checkIssued(anchor) || !intermediate.verify(anchor.publicKey)) {
    throw new Error("intermediate");
  }
}, { maxSeconds, concurrency: 1 });

console.log();
printComparison([
  { what: "X509-SVID issuance", ours: issuance, peer: issuancePeer },
  { what: "SVID chain verification", ours: verification, peer: verificationPeer },
]);
