/**
 * Chain validation throughput: X509-SVID chains (root -> intermediate -> leaf, ECDSA P-256)
 * validated per second by verifySvid, without and with a SignatureCache holding the
 * intermediate's signature, next to node:crypto's X509Certificate doing the same signature
 * checks (`cert.verify(issuer.publicKey)`) and validity checks, as ratios in one run.
 *
 *   node --import tsx bench/verify.ts [--seconds 3] [--operations 20000] [--concurrency 8]
 *
 * Each meshauth iteration takes the chain as PEM, like a TLS handshake hands it over, and
 * does the whole validation (parsing, path building, both signatures, validity, constraints,
 * SVID rules). The peer parses the two presented certificates with X509Certificate and checks
 * issuance, both signatures and every validity window against a pre-parsed root: the floor
 * of what checking the same signatures costs on this runtime.
 * @module
 */

import { X509Certificate } from "node:crypto";
import { parseArgs } from "node:util";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  SignatureCache,
  SpiffeId,
  verifySvid,
} from "../mod.ts";
import { measure, printComparison } from "./support.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    operations: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "8" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log("usage: node --import tsx bench/verify.ts [--seconds N] [--operations N] [--concurrency N]");
  process.exit(0);
}
const bounds = {
  maxSeconds: Number(values.seconds),
  maxOperations: Number(values.operations),
  concurrency: Number(values.concurrency),
};

console.log(`meshauth chain verification bench on ${process.release.name} ${process.version}`);
const root = await CertificateAuthority.createRoot({
  trustDomain: "bench.local",
  keyAlgorithm: "ECDSA-P256",
});
const intermediate = await root.createIntermediate({ ttlSeconds: 86400, keyAlgorithm: "ECDSA-P256" });
const id = SpiffeId.fromServiceAccount("bench.local", "default", "bench");
const svid = await intermediate.issue(await createCsr({ keys: await generateKeyPair("ECDSA-P256"), id }), {
  id,
});
const bundle = root.bundle();
const chainPem = svid.chainPem;

// Sanity: the chain is the three certificates the bench claims, and it verifies.
const checked = await verifySvid(chainPem, bundle);
if (checked.chain.length !== 3 || checked.id.toString() !== id.toString()) {
  throw new Error("unexpected chain");
}

const uncached = await measure("verifySvid", () => verifySvid(chainPem, bundle), bounds);
const cache = new SignatureCache();
const cached = await measure(
  "verifySvid + SignatureCache",
  () => verifySvid(chainPem, bundle, { cache }),
  bounds,
);

const [leafPem, intermediatePem] = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
const anchor = new X509Certificate(bundle.toPem());
const peer = await measure("node:crypto X509Certificate", () => {
  const leaf = new X509Certificate(leafPem);
  const ica = new X509Certificate(intermediatePem);
  const now = Date.now();
  for (const c of [leaf, ica, anchor]) {
    if (Date.parse(c.validFrom) > now || Date.parse(c.validTo) < now) throw new Error("outside validity");
  }
  if (!leaf.checkIssued(ica) || !leaf.verify(ica.publicKey)) throw new Error("leaf signature");
  if (!ica.checkIssued(anchor) || !ica.verify(anchor.publicKey)) throw new Error("intermediate signature");
}, { ...bounds, concurrency: 1 });

console.log(`cache holds ${cache.size} signature(s) after the run\n`);
printComparison([
  { what: "3-cert SVID chain", ours: uncached, peer },
  { what: "3-cert SVID chain, cached", ours: cached, peer },
]);
console.log(`\ncache speed-up: ${(cached.perSecond / uncached.perSecond).toFixed(2)}x`);
