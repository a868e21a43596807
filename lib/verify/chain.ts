/**
 * `verifyChain`: RFC 5280 path building and validation for a leaf certificate against a
 * set of trust anchors, with the intermediates the peer sent. See `path-builder.ts` for how
 * candidate paths are found and `validate-path.ts` for what makes one valid.
 * @module
 */

import { latin1 } from "../asn1/der.ts";
import { scanPem } from "../pem.ts";
import { EKU_BY_NAME, OID } from "../asn1/oids.ts";
import { type Certificate, isParsedCertificate, parseCertificates } from "../x509/certificate.ts";
import { type Crl, parseCrl } from "../x509/crl.ts";
import { InvalidArgument, MeshAuthError, VerificationError } from "../errors.ts";
import { ComparisonBudget } from "./name-constraints.ts";
import { buildPath } from "./path-builder.ts";
import { type SignatureCache, SignatureChecker } from "./signatures.ts";
import { type PathRequirements, validatePath } from "./validate-path.ts";
import { staleCrlsOf } from "./revocation.ts";

/** A certificate as users have it: PEM text (one or more blocks), DER bytes, or parsed. */
export type CertificateInput = string | Uint8Array | Certificate;

/** Options of {@link verifyChain}. */
export interface VerifyChainOptions {
  /** The certificate to validate. PEM with several blocks: the first is the leaf, the rest intermediates. */
  leaf: CertificateInput;
  /** Untrusted certificates the path may use (what the peer sent after its leaf). */
  intermediates?: CertificateInput | readonly CertificateInput[];
  /** Trust anchors. */
  roots: CertificateInput | readonly CertificateInput[];
  /** Validation time; defaults to now. Compared at whole seconds, as certificates encode it. */
  at?: Date;
  /** TLS role the leaf must be fit for: its EKU (if any) must allow it, and its key usage. */
  purpose?: "serverAuth" | "clientAuth";
  /** DNS name the leaf must carry in its subjectAltName (wildcards per RFC 6125 / CABF). */
  dnsName?: string;
  /** IP address (v4 or v6 text) the leaf must carry in its subjectAltName. */
  ipAddress?: string;
  /** Most non-self-issued intermediates between leaf and anchor; default 8. */
  maxDepth?: number;
  /** Further EKUs the leaf must allow, by name (`"serverAuth"`, ...) or OID. */
  extendedKeyUsage?: readonly string[];
  /** CRLs (PEM or DER) to check revocation against. */
  crls?: ReadonlyArray<string | Uint8Array | Crl>;
  /**
   * Use a CRL past its nextUpdate instead of failing the path with ERR_CRL_INVALID: its
   * signature, issuer and scope are still checked and a certificate it lists is still refused;
   * only its age is forgiven, and {@link VerifiedChain.staleCrls} names it. For a caller that
   * must keep working while the CRL's issuer cannot be reached, and reports that it does.
   * Default false.
   */
  acceptStaleCrls?: boolean;
  /** Remembers verified signatures across calls (see {@link SignatureCache}). */
  cache?: SignatureCache;
}

/** A validated path. */
export interface VerifiedChain {
  /** Leaf first, trust anchor last. */
  path: Certificate[];
  /** The certificate that was verified, `path[0]`. */
  leaf: Certificate;
  /** The trust anchor the path ends at. */
  root: Certificate;
  /** Earliest notAfter on the path: when this validation stops holding. */
  notAfter: Date;
  /** The CRLs in scope for the path that were past their nextUpdate (only with `acceptStaleCrls`). */
  staleCrls: Crl[];
}

const DEFAULT_MAX_DEPTH = 8;
/** Signature checks one call may make (Go's crypto/x509 allows 100). */
const SIGNATURE_BUDGET = 100;

/**
 * Builds and validates a path from `leaf` to one of `roots`. Resolves with the path or
 * throws a {@link VerificationError} whose `code` says why no valid path exists.
 *
 * @example
 * ```ts
 * import { verifyChain } from "meshauth";
 * const { path, notAfter } = await verifyChain({
 *   leaf: serverPem, intermediates: chainPem, roots: rootsPem,
 *   purpose: "serverAuth", dnsName: "api.example.com",
 * });
 * ```
 */
export function verifyChain(options: VerifyChainOptions): Promise<VerifiedChain> {
  return verifyChainUnguarded(options).catch(refuseUnexpected);
}

/**
 * The last line of defence: an error that is not a MeshAuthError (a TypeError from a parser
 * that missed a case on hostile input) still reaches the caller as a refused certificate,
 * so a peer can never turn a handshake into a crash or a 500.
 */
export function refuseUnexpected(err: unknown): never {
  if (err instanceof MeshAuthError) throw err;
  throw new VerificationError(
    "ERR_CERT_MALFORMED",
    `a certificate could not be processed: ${messageOf(err)}`,
    undefined,
    { rule: "parse", cause: err },
  );
}

async function verifyChainUnguarded(options: VerifyChainOptions): Promise<VerifiedChain> {
  if (!options || typeof options !== "object") {
    throw new InvalidArgument("options", "verifyChain needs an options object with leaf and roots");
  }
  const leafCerts = parseInput(options.leaf, "leaf certificate", true);
  const leaf = leafCerts[0];
  const unparsed: string[] = [];
  const intermediates = dedupe([
    ...leafCerts.slice(1),
    ...parseList(options.intermediates, "intermediate", unparsed),
  ]);
  const anchors = dedupe(parseList(options.roots, "trusted root", unparsed));
  if (anchors.length === 0) {
    throw new VerificationError(
      "ERR_CERT_UNTRUSTED",
      `no usable trust anchors were given${note(unparsed)}`,
      undefined,
      { rule: "trust-anchor" },
    );
  }
  const req = requirements(options);
  const signatures = new SignatureChecker(SIGNATURE_BUDGET, options.cache);
  const comparisons = new ComparisonBudget();
  const path = await buildPath({
    leaf,
    intermediates,
    anchors,
    atSeconds: req.atSeconds,
    maxDepth: req.maxDepth,
    signatures,
    validate: (candidate) => validate(candidate, req, signatures, comparisons),
  }).catch((err) => {
    // Say which inputs were left out: a certificate that did not parse may be the missing link.
    if (err instanceof VerificationError && err.code === "ERR_CERT_UNTRUSTED" && unparsed.length) {
      throw new VerificationError(err.code, `${err.message}${note(unparsed)}`, err.certificateIndex, {
        rule: err.rule,
        certificate: err.certificate,
        cause: err,
      });
    }
    throw err;
  });
  const notAfter = new Date(Math.min(...path.map((c) => c.notAfter.getTime())));
  const staleCrls = req.acceptStaleCrls ? staleCrlsOf(path, req.crls, req.atSeconds) : [];
  return { path, leaf, root: path[path.length - 1], notAfter, staleCrls };
}

/** validatePath, with a lazily read field that turns out malformed reported as a malformed certificate. */
async function validate(
  candidate: readonly Certificate[],
  req: PathRequirements,
  signatures: SignatureChecker,
  comparisons: ComparisonBudget,
): Promise<void> {
  try {
    await validatePath(candidate, req, signatures, comparisons);
  } catch (err) {
    if (err instanceof VerificationError || !(err instanceof MeshAuthError)) throw err;
    throw new VerificationError("ERR_CERT_MALFORMED", err.message, undefined, { rule: "parse", cause: err });
  }
}

function requirements(options: VerifyChainOptions): PathRequirements {
  const at = options.at ?? new Date();
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) {
    throw new InvalidArgument("at", "must be a valid Date");
  }
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0) {
    throw new InvalidArgument("maxDepth", `must be a whole number from 0, got ${maxDepth}`);
  }
  const requiredEkus = new Set<string>();
  if (options.purpose === "serverAuth") requiredEkus.add(OID.serverAuth);
  else if (options.purpose === "clientAuth") requiredEkus.add(OID.clientAuth);
  else if (options.purpose !== undefined) {
    throw new InvalidArgument(
      "purpose",
      `must be serverAuth or clientAuth, got ${JSON.stringify(options.purpose)}`,
    );
  }
  if (options.extendedKeyUsage !== undefined && !Array.isArray(options.extendedKeyUsage)) {
    throw new InvalidArgument("extendedKeyUsage", "must be a list of EKU names or OIDs");
  }
  for (const name of options.extendedKeyUsage ?? []) {
    const oid = EKU_BY_NAME[name] ?? (/^\d+(\.\d+)+$/.test(name) ? name : undefined);
    if (!oid) {
      throw new InvalidArgument("extendedKeyUsage", `unknown extended key usage ${JSON.stringify(name)}`);
    }
    // Requiring anyExtendedKeyUsage asks for no particular purpose.
    if (oid !== OID.anyExtendedKeyUsage) requiredEkus.add(oid);
  }
  if (options.crls !== undefined && !Array.isArray(options.crls)) {
    throw new InvalidArgument("crls", "must be a list of CRLs (PEM, DER or parsed)");
  }
  const crls = (options.crls ?? []).map((input, i) => {
    if (typeof input !== "string" && !(input instanceof Uint8Array)) {
      if (!isParsedCrl(input)) {
        throw new InvalidArgument(`crls[${i}]`, "must be PEM text, DER bytes or a parsed CRL");
      }
      return input;
    }
    try {
      return parseCrl(input, `CRL #${i}`);
    } catch (cause) {
      throw new VerificationError("ERR_CRL_INVALID", messageOf(cause), undefined, { rule: "crl", cause });
    }
  });
  return {
    atSeconds: Math.floor(at.getTime() / 1000),
    purpose: options.purpose,
    requiredEkus: [...requiredEkus],
    maxDepth,
    dnsName: options.dnsName,
    ipAddress: options.ipAddress,
    crls,
    acceptStaleCrls: options.acceptStaleCrls === true,
  };
}

/** Parses one input; a failure is ERR_CERT_MALFORMED. */
function parseInput(input: CertificateInput, what: string, isLeaf: boolean): Certificate[] {
  if (typeof input !== "string" && !(input instanceof Uint8Array)) {
    if (isParsedCertificate(input)) return [input];
    throw new VerificationError(
      "ERR_CERT_MALFORMED",
      `${what}: expected PEM text, DER bytes or a parsed certificate`,
      isLeaf ? 0 : undefined,
      { rule: "parse" },
    );
  }
  try {
    return parseCertificates(input, what);
  } catch (cause) {
    throw new VerificationError("ERR_CERT_MALFORMED", messageOf(cause), isLeaf ? 0 : undefined, {
      rule: "parse",
      cause,
    });
  }
}

/**
 * Parses a list of untrusted or trusted certificates. One that does not parse is left out
 * rather than failing the call: it cannot be on a valid path, and an unrelated bad
 * certificate must not stop a good path from being found.
 */
function parseList(
  input: VerifyChainOptions["intermediates"],
  what: string,
  unparsed: string[],
): Certificate[] {
  if (input === undefined) return [];
  const items = Array.isArray(input) ? input : [input as CertificateInput];
  return items.flatMap((item, i) => {
    if (typeof item === "string") {
      // Each PEM block on its own, so one bad block does not drop its neighbours.
      const blocks = scanPem(item);
      if (blocks.length > 1) {
        return blocks.flatMap((b, j) => tryParse(b.text, `${what} #${i}.${j}`, unparsed));
      }
    }
    return tryParse(item, `${what} #${i}`, unparsed);
  });
}

function tryParse(item: CertificateInput, what: string, unparsed: string[]): Certificate[] {
  try {
    return parseInput(item, what, false);
  } catch (err) {
    unparsed.push(messageOf(err));
    return [];
  }
}

function note(unparsed: readonly string[]): string {
  if (unparsed.length === 0) return "";
  return ` (${unparsed.length} given certificate(s) could not be parsed and were left out: ${unparsed[0]})`;
}

function dedupe(certs: Certificate[]): Certificate[] {
  const seen = new Set<string>();
  return certs.filter((c) => {
    const key = latin1(c.der);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The shape `parseCrl` answers, checked where a caller hands one in already parsed. */
function isParsedCrl(value: unknown): value is Crl {
  const crl = value as Partial<Crl> | null;
  return typeof crl === "object" && crl !== null && crl.der instanceof Uint8Array &&
    crl.tbs instanceof Uint8Array && crl.signature instanceof Uint8Array && Array.isArray(crl.revoked) &&
    crl.thisUpdate instanceof Date && typeof crl.issuer === "object" && crl.issuer !== null;
}
