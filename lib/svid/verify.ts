/**
 * `verifySvid`: X509-SVID validation (SPIFFE X509-SVID spec 4 and 5, as go-spiffe's
 * `x509svid.Verify` applies it) on top of {@link verifyChain}: the leaf carries exactly one
 * URI SAN holding a SPIFFE ID, is not a CA, may sign but not certify; the path is built to the
 * X.509 authorities of that ID's own trust domain and nowhere else.
 * @module
 */

import type { BundleSet, TrustBundle } from "../bundle.ts";
import { SpiffeId } from "../spiffeid.ts";
import { type Certificate, parseCertificates, uriSans } from "../x509/certificate.ts";
import type { Crl } from "../x509/crl.ts";
import { MeshAuthError, optionsOf, VerificationError } from "../errors.ts";
import { refuseUnexpected, verifyChain } from "../verify/chain.ts";
import { certificateLabel } from "../verify/certificate-label.ts";
import type { SignatureCache } from "../verify/signatures.ts";

/** An SVID chain as users have it: PEM (leaf first), DER of the leaf, or a list of those. */
export type SvidChainInput = string | Uint8Array | ReadonlyArray<string | Uint8Array | Certificate>;

/** Options of {@link verifySvid}. */
export interface VerifySvidOptions {
  /** Validation time; defaults to now. */
  at?: Date;
  /** CRLs (PEM or DER) to check revocation against. */
  crls?: ReadonlyArray<string | Uint8Array | Crl>;
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
    throw new VerificationError("ERR_CERT_MALFORMED", "the SVID chain holds no certificate");
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
    cache: options.cache,
  });
  // X509-SVID 3.2 and 4.3: a signing certificate the peer sent asserts keyCertSign.
  verified.path.slice(1, -1).forEach((ca, i) => {
    if (!ca.keyUsage?.has("keyCertSign")) {
      throw new VerificationError(
        "ERR_SVID_INVALID",
        `${certificateLabel(ca)}: an X509-SVID signing certificate must assert the keyCertSign key usage`,
        i + 1,
      );
    }
  });
  return { id, chain: verified.path, notAfter: verified.notAfter };
}

/** The SPIFFE ID of an X509-SVID leaf, after checking the leaf rules of X509-SVID 4 and 5. */
function svidId(leaf: Certificate): SpiffeId {
  const invalid = (why: string, cause?: unknown): never => {
    throw new VerificationError("ERR_SVID_INVALID", `${certificateLabel(leaf)}: ${why}`, 0, { cause });
  };
  const uris = uriSans(leaf);
  if (uris.length !== 1) invalid(`an X509-SVID has exactly one URI SAN, this one has ${uris.length}`);
  let id: SpiffeId | undefined;
  try {
    id = SpiffeId.parse(uris[0]);
  } catch (cause) {
    invalid(`URI SAN ${JSON.stringify(uris[0])} is not a SPIFFE ID`, cause);
  }
  // X509-SVID 5.2: a leaf names a workload, never the trust domain itself.
  if (id!.path === "") invalid(`SPIFFE ID ${id} of a leaf SVID must have a path`);
  // X509-SVID 4.1 and 4.3: a leaf SVID is not a CA and can neither certify nor sign CRLs.
  if (leaf.basicConstraints?.ca) invalid("a leaf SVID must not be a CA (basicConstraints cA is set)");
  if (!leaf.keyUsage?.has("digitalSignature")) {
    invalid("a leaf SVID must assert the digitalSignature key usage");
  }
  if (leaf.keyUsage?.has("keyCertSign")) invalid("a leaf SVID must not assert keyCertSign");
  if (leaf.keyUsage?.has("cRLSign")) invalid("a leaf SVID must not assert cRLSign");
  return id!;
}

function bundleFor(bundles: TrustBundle | BundleSet, id: SpiffeId): TrustBundle {
  const trustDomain = id.trustDomain;
  if (!bundles || typeof bundles !== "object") {
    throw new VerificationError("ERR_TRUST_DOMAIN_UNKNOWN", `no trust bundles given to verify ${id}`, 0);
  }
  const bundle = "x509Authorities" in bundles
    ? (bundles.trustDomain.equals(trustDomain) ? bundles : undefined)
    : bundles.get(trustDomain);
  if (!bundle) {
    throw new VerificationError(
      "ERR_TRUST_DOMAIN_UNKNOWN",
      `no trust bundle for trust domain ${JSON.stringify(trustDomain.name)} of ${id}`,
      0,
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
      if (item && typeof item === "object" && item.der instanceof Uint8Array) return [item];
      throw new VerificationError(
        "ERR_CERT_MALFORMED",
        "an SVID chain entry is not PEM, DER or a parsed certificate",
      );
    });
  } catch (cause) {
    if (cause instanceof VerificationError || !(cause instanceof MeshAuthError)) throw cause;
    throw new VerificationError("ERR_CERT_MALFORMED", cause.message, undefined, { cause });
  }
}
