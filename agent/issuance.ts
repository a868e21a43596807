/**
 * Getting one X509-SVID: make a key where the workload runs, send only a CSR, and accept the
 * answer only if it is an SVID for the identity asked, for the key just made, that the bundle
 * delivered with it verifies. The rotator and the node agent both issue through here.
 *
 * @module
 */

import {
  createCsr,
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  IdentityMismatch,
  InvalidKey,
  type KeyAlgorithm,
  parseCertificates,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../mod.ts";
import { bytesEqual } from "../internal/mod.ts";
import type { CaClient, CaCredential, IssuedSvid } from "./ca-client.ts";

/** An SVID with the private key that belongs to it. */
export interface HeldSvid extends IssuedSvid {
  /** The key made for this SVID, PKCS#8 PEM; it never left the process that made it. */
  privateKeyPem: string;
  /** The leaf's notBefore (the CA backdates it a little). */
  notBefore: Date;
  /**
   * When the agent received it: its usable life starts here, not at the backdated notBefore.
   * Unknown for records stored before the agent kept it.
   */
  obtainedAt?: Date;
}

/** What {@link obtainSvid} needs. */
export interface SvidRequest {
  /** The CA to ask. */
  client: CaClient;
  /** The identity to get; an answer for any other is refused. */
  id: SpiffeId;
  /** How to authenticate this request: a bearer token, or an SVID over mutual TLS. */
  credential: CaCredential;
  /** Algorithm of the new key. Default `ECDSA-P256`. */
  keyAlgorithm?: KeyAlgorithm;
  /** Lifetime to ask for, in seconds; the CA's default (24 h unless configured) when unset. */
  ttlSeconds?: number;
  /**
   * Parses the bundle the CA answers with, answering the parse and the PEM to keep: a caller
   * issuing many SVIDs reuses one parse and one string for all that carry the same bundle.
   */
  parseBundle?: (pem: string) => { bundle: TrustBundle; pem: string };
  /** Gives up (while waiting for a request slot, or on the wire) once aborted. */
  signal?: AbortSignal;
}

/** Makes a key, sends its CSR, and checks what comes back before anyone can use it. */
export async function obtainSvid(request: SvidRequest): Promise<HeldSvid> {
  const { client, id } = request;
  const keys = await generateKeyPair(request.keyAlgorithm ?? "ECDSA-P256");
  const csr = await createCsr({ keys, id });
  const issued = await client.requestCertificate(csr, request.credential, {
    ttlSeconds: request.ttlSeconds,
    signal: request.signal,
  });
  const obtainedAt = new Date();
  const { bundle, pem: trustBundlePem } = request.parseBundle?.(issued.trustBundlePem) ??
    { bundle: TrustBundle.fromPem(id.trustDomain, issued.trustBundlePem), pem: issued.trustBundlePem };
  if (!bundle.trustDomain.equals(id.trustDomain)) {
    throw new IdentityMismatch(bundle.trustDomain.name, id.trustDomain.name);
  }
  // Judged at a moment within the leaf's own validity: a node whose clock is off (reported by
  // CaClock) still takes a certificate the CA has just issued, which peers with right clocks
  // accept; the chain, the identity and the key are checked all the same.
  const [leafCertificate] = parseCertificates(issued.certificateChainPem);
  const nowMs = Date.now();
  const at = leafCertificate
    ? new Date(
      Math.min(
        Math.max(nowMs, leafCertificate.notBefore.getTime()),
        leafCertificate.notAfter.getTime() - 1000,
      ),
    )
    : undefined;
  const verified = await verifySvid(issued.certificateChainPem, bundle, { at });
  if (!issued.spiffeId.equals(id) || !verified.id.equals(id)) {
    throw new IdentityMismatch(verified.id.toString(), id.toString());
  }
  const leaf = verified.chain[0];
  if (!bytesEqual(leaf.spki, await exportSpki(keys.publicKey))) {
    throw new InvalidKey("the CA issued a certificate for a key other than the one this agent generated");
  }
  return {
    ...issued,
    trustBundlePem,
    spiffeId: SpiffeId.from(id),
    serialNumber: leaf.serialNumber,
    privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
    notBefore: leaf.notBefore,
    expiresAt: leaf.notAfter,
    obtainedAt,
  };
}
