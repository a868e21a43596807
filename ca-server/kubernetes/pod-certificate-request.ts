/**
 * Reading a KEP-4317 PodCertificateRequest (`certificates.k8s.io` v1beta1 or v1) for the
 * signer: which key it asks a certificate for, and the proof that the requester holds it.
 *
 * In v1 the key comes from `stubPKCS10Request`, an otherwise empty PKCS#10 request signed with
 * the pod's key. A v1beta1 request from a 1.35 kubelet carries `pkixPublicKey` and
 * `proofOfPossession` (the pod UID's ASCII bytes signed with that key: ECDSA over SHA-256 in
 * ASN.1 form, RSASSA-PSS over SHA-256, or Ed25519); from 1.36 on it also carries the stub
 * request. The API server checks these on creation; the signer checks them again, so a request
 * written past admission still cannot obtain a certificate for a key nobody proved.
 *
 * @module
 */

import { constants, createPublicKey, type KeyObject, verify } from "node:crypto";
import {
  bytesEqual,
  type KeyRequest,
  type ObjectMeta,
  parseKeyRequest,
  publicKeyAlgorithm,
} from "../../internal/mod.ts";
import { InvalidCsr, type KeyAlgorithm, MeshAuthError } from "../../mod.ts";

/** The `certificates.k8s.io` versions that serve PodCertificateRequests. */
/** The `certificates.k8s.io` versions of PodCertificateRequest the signer watches. */
export type PodCertificateApiVersion = "v1beta1" | "v1";

/** A PodCertificateRequest as the API server sends it (both versions' fields). */
export interface PodCertificateRequest {
  /** `certificates.k8s.io/v1beta1` or `certificates.k8s.io/v1`. */
  apiVersion?: string;
  /** `PodCertificateRequest`. */
  kind?: string;
  /** The request's name, namespace and UID. */
  metadata: ObjectMeta;
  /** What the kubelet asks for: the signer, the pod and its service account, the key. */
  spec: {
    signerName: string;
    podName: string;
    podUID: string;
    serviceAccountName: string;
    serviceAccountUID: string;
    nodeName: string;
    nodeUID: string;
    maxExpirationSeconds?: number;
    /** base64 DER (v1, and v1beta1 from Kubernetes 1.36). */
    stubPKCS10Request?: string;
    /** base64 DER SubjectPublicKeyInfo (v1beta1 only). */
    pkixPublicKey?: string;
    /** base64 signature of the pod UID (v1beta1 only). */
    proofOfPossession?: string;
    unverifiedUserAnnotations?: Record<string, string>;
  };
  /** The signer's answer: an Issued, Denied or Failed condition and the chain. */
  status?: {
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    certificateChain?: string;
  };
}

/** A reason to deny, as the condition's `reason` says it. */
export class RequestDenied extends MeshAuthError {
  /** Stable code of this class: `ERR_POD_CERTIFICATE_DENIED`. */
  static override code: string = "ERR_POD_CERTIFICATE_DENIED";
  /** `reason` is the Denied condition's reason (`UnsupportedKeyType`...); `message` its message. */
  constructor(readonly reason: string, message: string) {
    super(message);
    this.name = "RequestDenied";
  }
}

/** The key types KEP-4317 names, as meshauth names them (undefined: not issued for). */
const KEY_TYPES: Record<string, string> = {
  "ECDSA-P256": "ECDSAP256",
  "ECDSA-P384": "ECDSAP384",
  "RSA-3072": "RSA3072",
  "RSA-4096": "RSA4096",
  "Ed25519": "ED25519",
};

const SUPPORTED_MESSAGE = "this signer issues for ECDSAP256, ECDSAP384, RSA3072, RSA4096 and ED25519 keys; " +
  "ECDSAP256 is suggested";

/** True once the request has an Issued, Denied or Failed condition (or a chain). */
export function isFinished(request: Pick<PodCertificateRequest, "status">): boolean {
  return Boolean(request.status?.certificateChain) ||
    (request.status?.conditions ?? []).some((c) =>
      (c.type === "Issued" || c.type === "Denied" || c.type === "Failed") && c.status === "True"
    );
}

function decodeBase64(field: string, value: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
    throw new RequestDenied("InvalidRequest", `spec.${field} is not base64`);
  }
  const binary = atob(value);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The algorithm of a key the signer issues for; a Denied UnsupportedKeyType for a key of another
 * algorithm or size, and a Denied `malformedReason` for bytes that are no key at all (kube-apiserver
 * should have refused them, but a request the signer cannot read is the requester's to fix, not
 * the signer's to retry).
 */
function supportedAlgorithm(read: () => KeyAlgorithm, malformedReason: string, field: string): KeyAlgorithm {
  let algorithm: KeyAlgorithm;
  try {
    algorithm = read();
  } catch (err) {
    if (err instanceof InvalidCsr && (err.reason === "unsupported-algorithm" || err.reason === "weak-key")) {
      throw new RequestDenied("UnsupportedKeyType", `${err.message}; ${SUPPORTED_MESSAGE}`);
    }
    if (err instanceof MeshAuthError) {
      throw new RequestDenied(malformedReason, `spec.${field}: ${err.message}`);
    }
    throw err;
  }
  // KEP-4317 allows no RSA key under 3072 bits.
  if (!KEY_TYPES[algorithm]) {
    throw new RequestDenied("UnsupportedKeyType", `${algorithm} keys: ${SUPPORTED_MESSAGE}`);
  }
  return algorithm;
}

/**
 * `spki` as node:crypto's key, or why it cannot read it: the core's reading checks an EC point's
 * form and size, not that it is on its curve, which OpenSSL's decoder does.
 */
function nodePublicKey(spki: Uint8Array): KeyObject | Error {
  try {
    return createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Verifies `proofOfPossession`: the pod UID's ASCII bytes signed with the key of `spki`; false
 * for a key node:crypto cannot read (a point off its curve), which proves nothing.
 */
export function verifyProofOfPossession(
  spki: Uint8Array,
  algorithm: KeyAlgorithm,
  podUid: string,
  signature: Uint8Array,
): boolean {
  const key = nodePublicKey(spki);
  if (key instanceof Error) return false;
  const data = new TextEncoder().encode(podUid);
  try {
    if (algorithm === "Ed25519") return verify(null, data, key, signature);
    if (algorithm.startsWith("ECDSA")) {
      // Go's ecdsa.SignASN1 over sha256(podUID), whatever the curve.
      return verify("sha256", data, { key, dsaEncoding: "der" }, signature);
    }
    // Go's rsa.SignPSS with nil options signs with the longest salt; verify accepts any.
    return verify("sha256", data, {
      key,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_AUTO,
    }, signature);
  } catch {
    return false;
  }
}

/**
 * The key a request asks a certificate for, with its proof checked: a {@link RequestDenied}
 * (`InvalidStubPKCS10Request`, `InvalidProofOfPossession`, `UnsupportedKeyType`,
 * `InvalidRequest`) when it is not proven.
 */
export async function requestedKey(
  request: PodCertificateRequest,
  version: PodCertificateApiVersion,
): Promise<{ spki: Uint8Array; keyAlgorithm: KeyAlgorithm }> {
  const spec = request.spec;
  let stub: KeyRequest | undefined;
  if (spec.stubPKCS10Request) {
    const der = decodeBase64("stubPKCS10Request", spec.stubPKCS10Request);
    try {
      stub = await parseKeyRequest(der);
    } catch (err) {
      if (err instanceof InvalidCsr && err.reason === "signature") {
        throw new RequestDenied(
          "InvalidStubPKCS10Request",
          "spec.stubPKCS10Request is not signed by the key it carries",
        );
      }
      supportedAlgorithm(
        () => {
          throw err;
        },
        "InvalidStubPKCS10Request",
        "stubPKCS10Request",
      );
    }
    supportedAlgorithm(() => stub!.keyAlgorithm, "InvalidStubPKCS10Request", "stubPKCS10Request");
  }
  if (version === "v1") {
    if (!stub) throw new RequestDenied("InvalidRequest", "spec.stubPKCS10Request is required");
    return { spki: stub.spki, keyAlgorithm: stub.keyAlgorithm };
  }
  if (!spec.pkixPublicKey) {
    if (!stub) {
      throw new RequestDenied("InvalidRequest", "spec.pkixPublicKey or spec.stubPKCS10Request is required");
    }
    return { spki: stub.spki, keyAlgorithm: stub.keyAlgorithm };
  }
  const spki = decodeBase64("pkixPublicKey", spec.pkixPublicKey);
  const keyAlgorithm = supportedAlgorithm(() => publicKeyAlgorithm(spki), "InvalidRequest", "pkixPublicKey");
  // Denied with the reason, not thrown out of the handler and retried for ever.
  const unreadable = nodePublicKey(spki);
  if (unreadable instanceof Error) {
    throw new RequestDenied(
      "InvalidRequest",
      `spec.pkixPublicKey: node:crypto cannot read the key (an EC point off its curve?): ${
        unreadable.message.split("\n")[0]
      }`,
    );
  }
  const proof = decodeBase64("proofOfPossession", spec.proofOfPossession ?? "");
  if (!verifyProofOfPossession(spki, keyAlgorithm, spec.podUID, proof)) {
    throw new RequestDenied(
      "InvalidProofOfPossession",
      "spec.proofOfPossession is not the pod UID signed with spec.pkixPublicKey's key",
    );
  }
  if (stub && !bytesEqual(stub.spki, spki)) {
    throw new RequestDenied(
      "InvalidRequest",
      "spec.stubPKCS10Request and spec.pkixPublicKey carry different keys",
    );
  }
  return { spki, keyAlgorithm };
}
