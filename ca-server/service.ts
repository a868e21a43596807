/**
 * What the CA does, apart from HTTP: authorize and sign a CSR for a principal, revoke, keep
 * the CRL current, and write the audit trail. The Hono app is a thin layer over this.
 *
 * @module
 */

import {
  decodePem,
  IdentityMismatch,
  InvalidCsr,
  IssuanceRefused,
  MalformedInput,
  parseCsr,
  SpiffeId,
  type TrustDomain,
  TtlExceedsMaximum,
} from "../mod.ts";
import type { Authorities } from "./authorities.ts";
import type { Principal } from "./auth/principal.ts";
import type { Logger } from "../internal/mod.ts";
import type { CaMetrics } from "./metrics.ts";
import { Problem } from "./problems.ts";
import { isAcceptedReason } from "./store/records.ts";
import {
  ACCEPTED_REVOCATION_REASONS,
  type CaStore,
  type RevocationOutcome,
  type RevocationSelector,
  type SignedCrl,
} from "./store/store.ts";

/** What a revocation request names, as the API and the CLI take it. */
export interface RevocationRequest {
  serialNumber?: string;
  spiffeId?: string;
  reason?: string;
}

/**
 * A serial number as the store keeps it (lowercase hex) from hex with or without the colons
 * OpenSSL prints; anything else is a `400 ERR_INVALID_FIELD` naming `serialNumber`.
 */
export function parseSerialNumber(serialNumber: string): string {
  const hex = serialNumber.replaceAll(":", "").toLowerCase();
  if (!/^[0-9a-f]{2,64}$/.test(hex) || hex.length % 2) {
    throw new Problem("ERR_INVALID_FIELD", "serialNumber must be the certificate's serial number in hex", {
      field: "serialNumber",
    });
  }
  return hex;
}

/**
 * Checks a revocation request: exactly one of a serial number (hex, with or without the colons
 * OpenSSL prints) and a SPIFFE ID of `trustDomain`, and a CRL reason. A typo must fail loudly:
 * a request that names nothing this CA could have issued would otherwise revoke nothing, quietly.
 */
export function revocationSelector(request: RevocationRequest, trustDomain: TrustDomain): RevocationSelector {
  const { serialNumber, spiffeId, reason } = request;
  if (reason === undefined || !isAcceptedReason(reason)) {
    throw new Problem(
      "ERR_INVALID_FIELD",
      `reason must be one of ${ACCEPTED_REVOCATION_REASONS.join(", ")}`,
      {
        field: "reason",
      },
    );
  }
  if ((serialNumber === undefined) === (spiffeId === undefined)) {
    throw new Problem(
      serialNumber === undefined ? "ERR_MISSING_FIELD" : "ERR_INVALID_FIELD",
      "give exactly one of serialNumber and spiffeId",
      { field: "serialNumber|spiffeId" },
    );
  }
  if (serialNumber !== undefined) return { serialNumber: parseSerialNumber(serialNumber), reason };
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(spiffeId!);
  } catch (err) {
    throw new Problem("ERR_INVALID_FIELD", `spiffeId: ${(err as Error).message}`, { field: "spiffeId" });
  }
  if (!id.memberOf(trustDomain)) {
    throw new Problem("ERR_INVALID_FIELD", `spiffeId must be in this CA's trust domain ${trustDomain.name}`, {
      field: "spiffeId",
    });
  }
  return { spiffeId: id.toString(), reason };
}

/** Options of {@link CaService}. */
export interface CaServiceOptions {
  /** The CA's signing authorities and trust bundle. */
  authorities: Authorities;
  /** Where issuances, revocations, CRLs and audit events are kept. */
  store: CaStore;
  /** Where issuance and audit lines are logged. */
  logger: Logger;
  /** Counts of issuances and refusals. */
  metrics: CaMetrics;
  /** CRL validity; a new CRL is signed after half of it, or when a revocation happens. Default 1 h. */
  crlNextUpdateSeconds?: number;
  /** DNS names an identity may have in its certificate; none by default (deny by default). */
  allowedDnsNames?: (spiffeId: string) => readonly string[];
  /** The clock, for tests; the system's by default. */
  now?: () => Date;
}

/** A signed certificate, as the API answers it. */
export interface IssuanceResult {
  /** The SPIFFE ID the certificate proves. */
  spiffeId: string;
  /** Lowercase hex of the serial number. */
  serialNumber: string;
  /** When the certificate expires. */
  notAfter: Date;
  /** The leaf followed by the CA's intermediates, PEM. */
  chainPem: string;
  /** The same chain, one PEM per certificate. */
  chainPems: string[];
  /** The CA's trust bundle (its roots), PEM. */
  trustBundlePem: string;
}

/** Longest string an audit entry keeps of a field: what a client sent is bounded, however long it was. */
export const AUDIT_FIELD_CHARS = 256;

/** `details` with every string cut to 256 characters (at any depth), so an entry stays small. */
export function boundedDetails(details: Record<string, unknown>): Record<string, unknown> {
  const bound = (value: unknown, depth: number): unknown => {
    if (typeof value === "string") {
      return value.length <= AUDIT_FIELD_CHARS
        ? value
        : `${value.slice(0, AUDIT_FIELD_CHARS)}... (${value.length - AUDIT_FIELD_CHARS} more characters)`;
    }
    if (value === null || typeof value !== "object") return value;
    if (depth > 3) return "(nested too deep)";
    if (Array.isArray(value)) return value.map((v) => bound(v, depth + 1));
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.slice(0, 64), bound(v, depth + 1)]));
  };
  return bound(details, 0) as Record<string, unknown>;
}

/** The CA's operations. */
export class CaService {
  readonly #o: CaServiceOptions;
  /** The newest CRL this process has, per authority. */
  readonly #crls = new Map<string, SignedCrl>();
  readonly #signing = new Map<string, Promise<SignedCrl>>();

  /** The CA's issuance, revocation and CRL logic over `options`' authorities and store. */
  constructor(options: CaServiceOptions) {
    this.#o = options;
  }

  #now(): Date {
    return this.#o.now?.() ?? new Date();
  }

  /**
   * Appends an audit event, its strings bounded (each cut to 256 characters, at any depth). A
   * request whose audit entry cannot be written fails with it.
   */
  async audit(action: string, requester: string, details: Record<string, unknown>): Promise<void> {
    await this.#o.store.appendAudit({
      at: this.#now(),
      action,
      requester: requester.slice(0, AUDIT_FIELD_CHARS),
      details: boundedDetails(details),
    });
  }

  /**
   * Signs `csrPem` for `principal` if the CSR names an identity the principal may obtain.
   * `admit`, when given, is called with that identity once the request is authorized and before
   * anything is spent or signed (a single-use token included); it throws to refuse.
   */
  async issue(
    principal: Principal,
    csrPem: string,
    ttlSeconds?: number,
    admit?: (spiffeId: string) => Promise<void>,
  ): Promise<IssuanceResult> {
    const started = performance.now();
    const authority = this.#o.authorities.active();
    let authorizedId: string;
    try {
      if (principal.allowedIds.length === 1 && !principal.consume && !principal.confirmId) {
        // The common case: one identity; the core checks the CSR names it while signing.
        authorizedId = principal.allowedIds[0];
        await admit?.(authorizedId);
      } else {
        const request = await parseCsr(csrPem);
        authorizedId = request.id.toString();
        if (!principal.allowedIds.includes(authorizedId) && !(await principal.confirmId?.(authorizedId))) {
          throw new IdentityMismatch(authorizedId, principal.allowedIds.join(", ") || "no identity");
        }
        // Everything the signing could refuse is checked before a single-use token is spent.
        const maxTtlSeconds = this.#o.authorities.maxTtlSeconds;
        if (ttlSeconds !== undefined && ttlSeconds > maxTtlSeconds) {
          throw new TtlExceedsMaximum(ttlSeconds, maxTtlSeconds);
        }
        const allowedDns = this.#o.allowedDnsNames?.(authorizedId) ?? [];
        const extraDns = request.dnsNames.filter((n) => !allowedDns.includes(n));
        if (extraDns.length) {
          throw new IssuanceRefused(`the CSR asks for DNS names it may not have: ${extraDns.join(", ")}`);
        }
        await admit?.(authorizedId);
        await principal.consume?.();
      }
    } catch (err) {
      throw this.#problemOf(err);
    }
    let issued;
    try {
      issued = await authority.ca.issue(csrPem, {
        id: authorizedId,
        ttlSeconds,
        dnsNames: [...(this.#o.allowedDnsNames?.(authorizedId) ?? [])],
      });
    } catch (err) {
      throw this.#problemOf(err);
    }
    const record = {
      serialNumber: issued.serialNumber,
      spiffeId: issued.id.toString(),
      notBefore: issued.notBefore,
      notAfter: issued.notAfter,
      issuedAt: this.#now(),
      requester: principal.requester,
      method: principal.method,
      authorityId: authority.record.id,
    };
    // Answer only once both are durable: a certificate the CA cannot later list or revoke,
    // or one missing from the audit trail, must never reach a client.
    await Promise.all([
      this.#o.store.recordIssuance(record),
      this.audit("issued", principal.requester, {
        serialNumber: record.serialNumber,
        spiffeId: record.spiffeId,
        notAfter: record.notAfter.toISOString(),
        method: principal.method,
      }),
    ]);
    this.#o.metrics.issued(principal.method, (performance.now() - started) / 1000);
    this.#o.logger.info("issued", {
      serialNumber: record.serialNumber,
      spiffeId: record.spiffeId,
      requester: principal.requester,
      method: principal.method,
    });
    return {
      spiffeId: record.spiffeId,
      serialNumber: record.serialNumber,
      notAfter: issued.notAfter,
      chainPem: issued.chainPem,
      chainPems: issued.chainPems,
      trustBundlePem: this.#o.authorities.bundlePem(),
    };
  }

  #problemOf(err: unknown): unknown {
    if (err instanceof Problem) return err;
    if (err instanceof IdentityMismatch) {
      return new Problem("ERR_IDENTITY_MISMATCH", err.message, { requested: err.requested });
    }
    if (err instanceof TtlExceedsMaximum) {
      return new Problem("ERR_TTL_EXCEEDS_MAXIMUM", err.message, { maximumSeconds: err.maximumSeconds });
    }
    if (err instanceof InvalidCsr) return new Problem("ERR_CSR_INVALID", err.message, { reason: err.reason });
    if (err instanceof MalformedInput) {
      return new Problem("ERR_CSR_INVALID", err.message, { reason: "malformed" });
    }
    if (err instanceof IssuanceRefused) return new Problem("ERR_FORBIDDEN", err.message);
    if ((err as { code?: string })?.code === "ERR_INVALID_ARGUMENT") {
      return new Problem("ERR_INVALID_FIELD", (err as Error).message);
    }
    return err;
  }

  /** Revokes what `selector` names; answers the entries newly revoked and those revoked before. */
  async revoke(principal: Principal, selector: RevocationSelector): Promise<RevocationOutcome> {
    const store = this.#o.store;
    if (
      "serialNumber" in selector && !(await store.findCertificate(selector.serialNumber)) &&
      !(await store.isRevoked(selector.serialNumber))
    ) {
      throw new Problem(
        "ERR_NOT_FOUND",
        `this CA has no certificate with serial number ${selector.serialNumber} (it never issued it, or it expired long ago)`,
      );
    }
    const outcome = await store.revoke(selector, this.#now());
    await this.audit("revoked", principal.requester, {
      selector,
      serialNumbers: outcome.revoked.map((r) => r.serialNumber),
      alreadyRevoked: outcome.alreadyRevoked.map((r) => r.serialNumber),
    });
    this.#o.logger.info("revoked", {
      requester: principal.requester,
      count: outcome.revoked.length,
      alreadyRevoked: outcome.alreadyRevoked.length,
      reason: selector.reason,
    });
    return outcome;
  }

  /**
   * The CRL (DER) of one authority, the active one by default: the newest stored CRL, which any
   * process of the CA signs anew (and stores) when a revocation happened since (the store's
   * revision tells, exactly) or after half of its validity. Every process serves that one CRL,
   * so a client never gets a lower CRL number after a higher one.
   */
  async crl(authorityId?: string): Promise<{ der: Uint8Array; maxAgeSeconds: number }> {
    const authority = authorityId ? this.#o.authorities.get(authorityId) : this.#o.authorities.active();
    if (!authority) throw new Problem("ERR_NOT_FOUND", `no CA authority ${authorityId}`);
    const id = authority.record.id;
    const halfLifeMs = ((this.#o.crlNextUpdateSeconds ?? 3600) * 1000) / 2;
    const { revision, latest } = await this.#o.store.crlStatus(id);
    let crl: SignedCrl | undefined;
    if (
      latest && latest.revision >= revision &&
      this.#now().getTime() - latest.thisUpdate.getTime() < halfLifeMs
    ) {
      crl = this.#crls.get(id);
      if (!crl || crl.crlNumber < latest.crlNumber) {
        crl = await this.#o.store.latestCrl(id);
        if (crl) this.#crls.set(id, crl);
      }
    }
    // Signed again until it holds the revocations that completed before this request (a
    // signing already under way may have read them before the last one).
    for (let attempt = 0; !crl || crl.revision < revision; attempt++) {
      if (attempt === 3) throw new Problem("ERR_NOT_READY", "the CRL changes faster than it can be signed");
      // Requests arriving together share one signing.
      let signing = this.#signing.get(id);
      if (!signing) {
        signing = this.#signCrl(authority).finally(() => this.#signing.delete(id));
        this.#signing.set(id, signing);
      }
      crl = await signing;
      this.#crls.set(id, crl);
    }
    const ageSeconds = (this.#now().getTime() - crl.thisUpdate.getTime()) / 1000;
    return {
      der: crl.der,
      maxAgeSeconds: Math.max(0, Math.floor(Math.min(60, halfLifeMs / 1000 - ageSeconds))),
    };
  }

  async #signCrl(authority: ReturnType<Authorities["active"]>): Promise<SignedCrl> {
    const thisUpdate = this.#now();
    // The number and the entries together: a later number never lacks an earlier one's entry.
    const claim = await this.#o.store.nextCrl(thisUpdate);
    const revoked = claim.revocations
      .filter((r) => r.authorityId === authority.record.id)
      .map((r) => ({ serialNumber: r.serialNumber, revokedAt: r.revokedAt, reason: r.reason }));
    const pem = await authority.ca.createCrl({
      revoked,
      nextUpdateSeconds: this.#o.crlNextUpdateSeconds ?? 3600,
      crlNumber: claim.crlNumber,
      thisUpdate,
    });
    this.#o.logger.info("CRL signed", {
      authority: authority.record.id,
      crlNumber: claim.crlNumber.toString(),
      entries: revoked.length,
    });
    // Another process may have stored a newer one meanwhile: then that one is served.
    return await this.#o.store.saveCrl({
      authorityId: authority.record.id,
      crlNumber: claim.crlNumber,
      revision: claim.revision,
      thisUpdate,
      der: decodePem(pem)[0].der,
    });
  }
}
