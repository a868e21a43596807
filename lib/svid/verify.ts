/**
 * `verifySvid`: X509-SVID validation (SPIFFE X509-SVID spec 4 and 5, as go-spiffe's
 * `x509svid.Verify` applies it) on top of {@link verifyChain}: the leaf follows the profile of
 * `profile.ts` (exactly one URI SAN holding a SPIFFE ID with a path, not a CA, may sign but
 * not certify); the path is built to the X.509 authorities of that ID's own trust domain and
 * nowhere else. These SPIFFE rules live here, not in verifyChain, which is plain RFC 5280.
 * @module
 */

import type { BundleSet, TrustBundle } from "../bundle.ts";
import { SpiffeId } from "../spiffeid.ts";
import { type Certificate, isParsedCertificate, parseCertificates, uriSans } from "../x509/certificate.ts";
import type { Crl } from "../x509/crl.ts";
import { MeshAuthError, optionsOf, VerificationError } from "../errors.ts";
import { refuseUnexpected, verifyChain } from "../verify/chain.ts";
import { certificateLabel, certificateSummary } from "../verify/certificate-label.ts";
import type { SignatureCache } from "../verify/signatures.ts";
import { leafIdProblem, leafProfileProblem, signingCertificateProblem, svidIdOf } from "./profile.ts";

/** An SVID chain as users have it: PEM (leaf first), DER of the leaf, or a list of those. */
export type SvidChainInput = string | Uint8Array | ReadonlyArray<string | Uint8Array | Certificate>;

/** Options of {@link verifySvid}. */
export interface VerifySvidOptions {
  /** Validation time; defaults to now. */
  at?: Date;
  /** CRLs (PEM or DER) to check revocation against. */
  crls?: ReadonlyArray<string | Uint8Array | Crl>;
  /** Use a CRL past its nextUpdate rather than refuse the SVID (see `VerifyChainOptions.acceptStaleCrls`). */
  acceptStaleCrls?: boolean;
  /** TLS role the SVID must be fit for; none beyond the SVID rules when absent. */
  purpose?: "serverAuth" | "clientAuth";
  /** Remembers verified signatures across calls. */
  cache?: SignatureCache;
}

/** A verified X509-SVID. */
export interface VerifiedSvid {
  /** The SPIFFE ID the SVID proves. */
  id: SpiffeId;
  /** The validated path: leaf first, the trust domain's authority last. */
  chain: Certificate[];
  /** Earliest notAfter on the path. */
  notAfter: Date;
  /** The CRLs in scope that were past their nextUpdate (only with `acceptStaleCrls`). */
  staleCrls: Crl[];
}

/**
 * Verifies an X509-SVID chain against the bundle of the leaf's trust domain. Throws a
 * {@link VerificationError}: ERR_SVID_INVALID for a leaf that breaks the SVID rules,
 * ERR_TRUST_DOMAIN_UNKNOWN when no bundle is held for its trust domain, or any code of
 * {@link verifyChain}.
 *
 * @example
 * ```ts
 * import { verifySvid } from "meshauth";
 * const { id, notAfter } = await verifySvid(peerChainPem, bundleSet, { purpose: "clientAuth" });
 * console.log(id.toString()); // spiffe://cluster.local/ns/default/sa/photos
 * ```
 */
export function verifySvid(
  chain: SvidChainInput,
  bundles: TrustBundle | BundleSet,
  options: VerifySvidOptions = {},
): Promise<VerifiedSvid> {
  return verifySvidUnguarded(chain, bundles, options).catch(refuseUnexpected);
}

async function verifySvidUnguarded(
  chain: SvidChainInput,
  bundles: TrustBundle | BundleSet,
  options: VerifySvidOptions,
): Promise<VerifiedSvid> {
  optionsOf(options);
  const certs = parseChain(chain);
  if (certs.length === 0) {
    throw new VerificationError("ERR_CERT_MALFORMED", "the SVID chain holds no certificate", undefined, {
      rule: "parse",
    });
  }
  const leaf = certs[0];
  const id = svidId(leaf);
  const bundle = bundleFor(bundles, id);
  const verified = await verifyChain({
    leaf,
    intermediates: certs.slice(1),
    roots: bundle.x509Authorities(),
    at: options.at,
    purpose: options.purpose,
    crls: options.crls,
    acceptStaleCrls: options.acceptStaleCrls,
    cache: options.cache,
  });
  // A signing certificate the peer sent follows the profile too.
  verified.path.slice(1, -1).forEach((ca, i) => {
    const problem = signingCertificateProblem(ca);
    if (problem) {
      throw new VerificationError("ERR_SVID_INVALID", `${certificateLabel(ca)}: ${problem}`, i + 1, {
        rule: "svid-profile",
        certificate: certificateSummary(ca),
        ...(ca.basicConstraints?.ca ? { required: ["keyCertSign"], present: [...(ca.keyUsage ?? [])] } : {}),
      });
    }
  });
  return { id, chain: verified.path, notAfter: verified.notAfter, staleCrls: verified.staleCrls };
}

/** The SPIFFE ID of an X509-SVID leaf, after checking the leaf rules of the profile. */
function svidId(leaf: Certificate): SpiffeId {
  const uris = uriSans(leaf);
  const invalid = (why: string, present: readonly string[], cause?: unknown): never => {
    throw new VerificationError("ERR_SVID_INVALID", `${certificateLabel(leaf)}: ${why}`, 0, {
      rule: "svid-profile",
      certificate: certificateSummary(leaf),
      present,
      cause,
    });
  };
  const id = svidIdOf(uris);
  if (!(id instanceof SpiffeId)) return invalid(id.message, uris, id.cause);
  const idProblem = leafIdProblem(id);
  if (idProblem) invalid(idProblem, uris);
  const profileProblem = leafProfileProblem(leaf);
  if (profileProblem) invalid(profileProblem, [...(leaf.keyUsage ?? [])]);
  return id;
}

function bundleFor(bundles: TrustBundle | BundleSet, id: SpiffeId): TrustBundle {
  const trustDomain = id.trustDomain;
  if (!bundles || typeof bundles !== "object") {
    throw new VerificationError("ERR_TRUST_DOMAIN_UNKNOWN", `no trust bundles given to verify ${id}`, 0, {
      rule: "trust-domain",
      trustDomain: trustDomain.name,
    });
  }
  const bundle = "x509Authorities" in bundles
    ? (bundles.trustDomain.equals(trustDomain) ? bundles : undefined)
    : bundles.get(trustDomain);
  if (!bundle) {
    throw new VerificationError(
      "ERR_TRUST_DOMAIN_UNKNOWN",
      `no trust bundle for trust domain ${JSON.stringify(trustDomain.name)} of ${id}`,
      0,
      { rule: "trust-domain", trustDomain: trustDomain.name },
    );
  }
  return bundle;
}

function parseChain(chain: SvidChainInput): Certificate[] {
  const items = Array.isArray(chain) ? chain : [chain as string | Uint8Array];
  try {
    return items.flatMap((item) => {
      if (typeof item === "string" || item instanceof Uint8Array) {
        return parseCertificates(item, "SVID certificate");
      }
      if (isParsedCertificate(item)) return [item];
      throw new VerificationError(
        "ERR_CERT_MALFORMED",
        "an SVID chain entry is not PEM, DER or a parsed certificate",
        undefined,
        { rule: "parse" },
      );
    });
  } catch (cause) {
    if (cause instanceof VerificationError || !(cause instanceof MeshAuthError)) throw cause;
    throw new VerificationError("ERR_CERT_MALFORMED", cause.message, undefined, { rule: "parse", cause });
  }
}
