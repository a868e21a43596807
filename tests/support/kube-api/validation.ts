// Validation the API server applies to the certificates.k8s.io objects the signer writes:
// a PodCertificateRequest's status (KEP-4317: chain, times, conditions, the key it names) and a
// ClusterTrustBundle's bundle. Certificates are read with node:crypto's X509Certificate and
// stub CSRs verified by OpenSSL, so the checks do not lean on meshauth's own parsers.

import { execFileSync } from "node:child_process";
import { constants, createPublicKey, verify, X509Certificate } from "node:crypto";
import type { KubeObject } from "./resources.ts";

export interface Cause {
  field: string;
  message: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END CERTIFICATE-----/g;

function certificatesOf(pem: string): { certs: X509Certificate[]; error?: string } {
  const certs: X509Certificate[] = [];
  const blocks = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)];
  if (blocks.length === 0) return { certs, error: "must contain at least one PEM block" };
  for (const block of blocks) {
    if (block[1] !== "CERTIFICATE") {
      return { certs, error: `unexpected PEM block type ${JSON.stringify(block[1])}` };
    }
    if (/:/.test(block[2])) return { certs, error: "PEM block headers are not allowed" };
    try {
      certs.push(new X509Certificate(block[0]));
    } catch {
      return { certs, error: "a PEM block does not parse as an X.509 certificate" };
    }
  }
  return { certs };
}

/** A ClusterTrustBundle's spec, as ValidateClusterTrustBundle checks it. */
export function validateClusterTrustBundle(object: KubeObject): Cause[] {
  const spec = (object.spec ?? {}) as { signerName?: string; trustBundle?: string };
  const name = object.metadata.name ?? "";
  const causes: Cause[] = [];
  if (spec.signerName) {
    const prefix = `${spec.signerName.replace("/", ":")}:`;
    if (!name.startsWith(prefix)) {
      causes.push({
        field: "metadata.name",
        message: `ClusterTrustBundle for signerName ${spec.signerName} must be named with prefix ${prefix}`,
      });
    }
  } else if (name.includes(":")) {
    causes.push({
      field: "metadata.name",
      message: 'ClusterTrustBundle without signer name must not have ":" in its name',
    });
  }
  const { certs, error } = certificatesOf(spec.trustBundle ?? "");
  if (error) causes.push({ field: "spec.trustBundle", message: error });
  const seen = new Set<string>();
  for (const cert of certs) {
    if (!cert.ca) {
      causes.push({ field: "spec.trustBundle", message: "trust anchor must have the CA bit set" });
    }
    if (seen.has(cert.fingerprint256)) {
      causes.push({ field: "spec.trustBundle", message: "duplicate trust anchor" });
    }
    seen.add(cert.fingerprint256);
  }
  return causes;
}

function derOf(base64: string | undefined): Buffer | undefined {
  return base64 ? Buffer.from(base64, "base64") : undefined;
}

/** The SPKI a request names: the stub CSR's key (checked by OpenSSL), else pkixPublicKey. */
export function requestedSpki(
  spec: Record<string, unknown>,
  verifySignature: boolean,
): { spki?: Buffer; error?: Cause } {
  const stub = derOf(spec.stubPKCS10Request as string | undefined);
  if (stub) {
    try {
      const pem = execFileSync("openssl", [
        "req",
        "-inform",
        "DER",
        ...(verifySignature ? ["-verify"] : []),
        "-noout",
        "-pubkey",
      ], {
        input: stub,
        stdio: ["pipe", "pipe", "pipe"],
      }).toString();
      return { spki: createPublicKey(pem).export({ format: "der", type: "spki" }) };
    } catch {
      return {
        error: {
          field: "spec.stubPKCS10Request",
          message: "must be a valid PKCS#10 request signed by its own key",
        },
      };
    }
  }
  const pkix = derOf(spec.pkixPublicKey as string | undefined);
  if (!pkix) return { error: { field: "spec.stubPKCS10Request", message: "Required value" } };
  return { spki: pkix };
}

/** kube-apiserver's proof-of-possession check on a v1beta1 request with pkixPublicKey. */
export function proofOfPossessionHolds(spec: Record<string, unknown>): boolean {
  const spki = derOf(spec.pkixPublicKey as string | undefined);
  const proof = derOf(spec.proofOfPossession as string | undefined);
  if (!spki || !proof) return false;
  try {
    const key = createPublicKey({ key: spki, format: "der", type: "spki" });
    const data = Buffer.from(String(spec.podUID));
    if (key.asymmetricKeyType === "ed25519") return verify(null, data, key, proof);
    if (key.asymmetricKeyType === "ec") return verify("sha256", data, { key, dsaEncoding: "der" }, proof);
    return verify("sha256", data, {
      key,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_AUTO,
    }, proof);
  } catch {
    return false;
  }
}

const seconds = (text: unknown) => typeof text === "string" ? Math.floor(Date.parse(text) / 1000) : NaN;

/** A PodCertificateRequest status update, as the status strategy validates it. */
export function validatePodCertificateRequestStatus(old: KubeObject, next: KubeObject): Cause[] {
  const oldStatus = (old.status ?? {}) as Record<string, unknown>;
  const status = (next.status ?? {}) as Record<string, unknown>;
  const conditions = (status.conditions ?? []) as Array<Record<string, unknown>>;
  const causes: Cause[] = [];
  const terminal = (list: Array<Record<string, unknown>>) =>
    list.filter((c) => ["Issued", "Denied", "Failed"].includes(String(c.type)));
  const oldTerminal = terminal((oldStatus.conditions ?? []) as Array<Record<string, unknown>>);
  if (oldTerminal.length > 0 || oldStatus.certificateChain) {
    if (JSON.stringify(oldStatus) !== JSON.stringify(status)) {
      causes.push({
        field: "status",
        message: "Forbidden: immutable after PodCertificateRequest is issued, denied, or failed",
      });
    }
    return causes;
  }
  const newTerminal = terminal(conditions);
  if (newTerminal.length > 1) {
    causes.push({ field: "status.conditions", message: "at most one of Issued, Denied, Failed" });
  }
  for (const c of conditions) {
    if (c.status !== "True" && newTerminal.includes(c)) {
      causes.push({ field: "status.conditions", message: `${c.type} condition must have status True` });
    }
    if (!c.reason || !/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/.test(String(c.reason))) {
      causes.push({ field: "status.conditions.reason", message: "must be CamelCase" });
    }
    if (Number.isNaN(seconds(c.lastTransitionTime))) {
      causes.push({ field: "status.conditions.lastTransitionTime", message: "Required value" });
    }
  }
  const chain = status.certificateChain as string | undefined;
  const timeFields = ["notBefore", "notAfter", "beginRefreshAt"].filter((f) => status[f] !== undefined);
  const isIssued = newTerminal.some((c) => c.type === "Issued");
  if (!chain) {
    if (timeFields.length) {
      causes.push({
        field: "status",
        message: "notBefore, notAfter and beginRefreshAt go with certificateChain",
      });
    }
    if (isIssued) {
      causes.push({ field: "status.certificateChain", message: "Required value with an Issued condition" });
    }
    return causes;
  }
  if (!isIssued) {
    causes.push({
      field: "status.conditions",
      message: "an Issued condition is required with certificateChain",
    });
  }
  const { certs, error } = certificatesOf(chain);
  if (error) return [...causes, { field: "status.certificateChain", message: error }];
  const leaf = certs[0];
  const spec = (old.spec ?? {}) as Record<string, unknown>;
  const { spki } = requestedSpki(spec, false);
  const leafSpki = leaf.publicKey.export({ format: "der", type: "spki" });
  if (!spki || !spki.equals(leafSpki)) {
    causes.push({
      field: "status.certificateChain",
      message: "leaf certificate was not issued to the requested public key",
    });
  }
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!certs[i].checkIssued(certs[i + 1]) || !certs[i].verify(certs[i + 1].publicKey)) {
      causes.push({
        field: "status.certificateChain",
        message: `certificate ${i} is not issued by certificate ${i + 1}`,
      });
    }
  }
  const leafNotBefore = seconds(new Date(leaf.validFrom).toISOString());
  const leafNotAfter = seconds(new Date(leaf.validTo).toISOString());
  const notBefore = seconds(status.notBefore);
  const notAfter = seconds(status.notAfter);
  const beginRefreshAt = seconds(status.beginRefreshAt);
  const now = Math.floor(Date.now() / 1000);
  if (notBefore !== leafNotBefore) {
    causes.push({
      field: "status.notBefore",
      message: "must be set to the NotBefore time encoded in the leaf certificate",
    });
  }
  if (Math.abs(notBefore - now) >= 300) {
    causes.push({
      field: "status.notBefore",
      message: "must be set to within 5 minutes of kube-apiserver's current time",
    });
  }
  if (notAfter !== leafNotAfter) {
    causes.push({
      field: "status.notAfter",
      message: "must be set to the NotAfter time encoded in the leaf certificate",
    });
  }
  const lifetime = leafNotAfter - leafNotBefore;
  if (lifetime < 3600) {
    causes.push({
      field: "status.certificateChain",
      message: `${lifetime}s: leaf certificate lifetime must be >= 1 hour`,
    });
  }
  const max = Number(spec.maxExpirationSeconds ?? 86400);
  if (lifetime > max) {
    causes.push({
      field: "status.certificateChain",
      message: `${lifetime}s: leaf certificate lifetime must be <= spec.maxExpirationSeconds (${max})`,
    });
  }
  if (!(beginRefreshAt >= notBefore + 600)) {
    causes.push({
      field: "status.beginRefreshAt",
      message: "must be at least 10 minutes after status.notBefore",
    });
  }
  if (!(beginRefreshAt <= notAfter - 600)) {
    causes.push({
      field: "status.beginRefreshAt",
      message: "must be at least 10 minutes before status.notAfter",
    });
  }
  return causes;
}

export { PEM_CERT };
