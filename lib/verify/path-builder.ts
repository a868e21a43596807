/**
 * Path building (RFC 4158 in spirit): from the leaf, depth-first with iterative deepening over
 * candidate issuers, each candidate matched by issuer name and, where both
 * sides carry one, by key identifier, its signature checked before the path is extended.
 * When a path reaches an anchor it is validated as a whole; on failure the builder backtracks
 * and tries the next candidate, so one bad cross-sign or expired intermediate does not hide a
 * good path ("chain of pain"). Loops are cut (no certificate, and no subject and key pair,
 * twice on a path) and the work is bounded by the signature-check budget and a visit cap.
 * @module
 */

import { type Certificate, isSelfIssued } from "../x509/certificate.ts";
import { bytesEqual } from "../encoding.ts";
import { UnsupportedAlgorithm, VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";
import type { SignatureChecker } from "./signatures.ts";

/** Longest path (leaf and anchor included) the builder will consider, whatever maxDepth says. */
const MAX_PATH_CERTIFICATES = 24;
/** Most candidate issuers the builder will look at in one call, over all deepening passes. */
const MAX_CANDIDATE_VISITS = 4096;

export interface BuildInput {
  leaf: Certificate;
  intermediates: readonly Certificate[];
  anchors: readonly Certificate[];
  atSeconds: number;
  /** Most non-self-issued intermediates on a path. */
  maxDepth: number;
  signatures: SignatureChecker;
  /** Validates a complete candidate path; throws a VerificationError to reject it. */
  validate(path: readonly Certificate[]): Promise<void>;
}

/**
 * Finds a path, leaf first and anchor last, that `validate` accepts, or throws why not.
 * Iterative deepening: all paths of two certificates are tried before any of three, and so
 * on, so the shortest valid path wins (fewest constraints, latest expiry) even when a
 * cross-signed detour is found first depth-first.
 */
export async function buildPath(input: BuildInput): Promise<Certificate[]> {
  const builder = new Builder(input);
  for (let length = 2; length <= MAX_PATH_CERTIFICATES; length++) {
    builder.truncated = false;
    const path = await builder.extend([input.leaf], 0, length);
    if (path) return path;
    if (!builder.truncated) break;
  }
  throw builder.failure();
}

class Builder {
  /** Whether the last pass left candidates unexplored because of its length. */
  truncated = false;
  #visits = 0;
  #rejected?: VerificationError;
  #badSignature?: VerificationError;
  #deadEnd?: Certificate;
  #deadEndLength = 0;

  constructor(readonly input: BuildInput) {}

  /** Paths of exactly `length` certificates that extend `path`. */
  async extend(path: Certificate[], depth: number, length: number): Promise<Certificate[] | undefined> {
    const current = path[path.length - 1];
    const anchors = this.candidates(current, this.input.anchors, path);
    const intermediates = this.candidates(current, this.input.intermediates, path);
    if (anchors.length === 0 && intermediates.length === 0 && path.length > this.#deadEndLength) {
      this.#deadEnd = current;
      this.#deadEndLength = path.length;
    }
    if (path.length + 1 === length) {
      if (intermediates.length) this.truncated = true;
      for (const anchor of anchors) {
        if (!(await this.signedBy(current, anchor, path.length - 1))) continue;
        const candidate = [...path, anchor];
        try {
          await this.input.validate(candidate);
          return candidate;
        } catch (err) {
          if (!(err instanceof VerificationError) || err.code === "ERR_PATH_BUILDING_LIMIT") throw err;
          this.#rejected ??= err;
        }
      }
      return undefined;
    }
    for (const next of intermediates) {
      const nextDepth = depth + (isSelfIssued(next) ? 0 : 1);
      if (nextDepth > this.input.maxDepth) {
        this.#rejected ??= new VerificationError(
          "ERR_CHAIN_TOO_LONG",
          `reaching a trust anchor needs more than the maximum depth of ${this.input.maxDepth} intermediates`,
          undefined,
          { rule: "max-depth", limit: this.input.maxDepth, count: nextDepth },
        );
        continue;
      }
      if (!(await this.signedBy(current, next, path.length - 1))) continue;
      const result = await this.extend([...path, next], nextDepth, length);
      if (result) return result;
    }
    return undefined;
  }

  /** Certificates in `pool` that may have issued `cert`, best first, none already on `path`. */
  candidates(cert: Certificate, pool: readonly Certificate[], path: readonly Certificate[]): Certificate[] {
    const out = pool.filter((c) => {
      if (c.subject.key !== cert.issuer.key) return false;
      if (cert.authorityKeyIdentifier && c.subjectKeyIdentifier) {
        if (!bytesEqual(cert.authorityKeyIdentifier, c.subjectKeyIdentifier)) return false;
      }
      // RFC 4158 5.2: a loop repeats a certificate, or the same subject with the same key.
      return !path.some((p) => p === c || (p.subject.key === c.subject.key && bytesEqual(p.spki, c.spki)));
    });
    this.#visits += out.length;
    if (this.#visits > MAX_CANDIDATE_VISITS) {
      throw new VerificationError(
        "ERR_PATH_BUILDING_LIMIT",
        `path building gave up after considering ${MAX_CANDIDATE_VISITS} candidate issuers`,
        undefined,
        { rule: "path-building", limit: MAX_CANDIDATE_VISITS, count: this.#visits },
      );
    }
    // Prefer issuers that are currently valid (the expired cross-sign goes last).
    const at = this.input.atSeconds * 1000;
    const current = (c: Certificate) => c.notBefore.getTime() <= at && at <= c.notAfter.getTime() ? 0 : 1;
    return out.sort((a, b) => current(a) - current(b));
  }

  async signedBy(cert: Certificate, issuer: Certificate, index: number): Promise<boolean> {
    if (await this.input.signatures.verifies(cert, issuer)) return true;
    const unsupported = this.input.signatures.unsupported(cert, issuer);
    const details = {
      rule: "signature",
      certificate: certificateSummary(cert),
      issuer: certificateSummary(issuer),
    } as const;
    this.#badSignature ??= unsupported
      ? new VerificationError(
        "ERR_ALGORITHM_UNSUPPORTED",
        `${certificateLabel(cert)}: its signature cannot be checked with the key of ${
          certificateLabel(issuer)
        }: ${unsupported.message}`,
        index,
        {
          ...details,
          algorithm: unsupported instanceof UnsupportedAlgorithm
            ? unsupported.algorithm
            : cert.signatureAlgorithm.oid,
          cause: unsupported,
        },
      )
      : new VerificationError(
        "ERR_CERT_SIGNATURE_INVALID",
        `${certificateLabel(cert)}: signature does not verify with the key of ${certificateLabel(issuer)}`,
        index,
        details,
      );
    return false;
  }

  /** The most telling reason no path was found. */
  failure(): VerificationError {
    if (this.#rejected) return this.#rejected;
    if (this.#badSignature) return this.#badSignature;
    const cert = this.#deadEnd ?? this.input.leaf;
    return new VerificationError(
      "ERR_CERT_UNTRUSTED",
      `no path to a trust anchor: no trusted or intermediate certificate issued ${certificateLabel(cert)}`,
      cert === this.input.leaf ? 0 : undefined,
      { rule: "trust-anchor", certificate: certificateSummary(cert) },
    );
  }
}
