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
import { isRevocationReason } from "./store/records.ts";
import { type CaStore, type Revocation, REVOCATION_REASONS, type RevocationSelector } from "./store/store.ts";

/** What a revocation request names, as the API and the CLI take it. */
export interface RevocationRequest {
  serialNumber?: string;
  spiffeId?: string;
  reason?: string;
}

/**
 * Checks a revocation request: exactly one of a serial number (hex, with or without the colons
 * OpenSSL prints) and a SPIFFE ID of `trustDomain`, and a CRL reason. A typo must fail loudly:
 * a request that names nothing this CA could have issued would otherwise revoke nothing, quietly.
 */
export function revocationSelector(request: RevocationRequest, trustDomain: TrustDomain): RevocationSelector {
  const { serialNumber, spiffeId, reason } = request;
  if (reason === undefined || !isRevocationReason(reason)) {
    throw new Problem("ERR_INVALID_FIELD", `reason must be one of ${REVOCATION_REASONS.join(", ")}`, {
      field: "reason",
    });
  }
  if ((serialNumber === undefined) === (spiffeId === undefined)) {
    throw new Problem(
      serialNumber === undefined ? "ERR_MISSING_FIELD" : "ERR_INVALID_FIELD",
      "give exactly one of serialNumber and spiffeId",
      { field: "serialNumber|spiffeId" },
    );
  }
  if (serialNumber !== undefined) {
    const hex = serialNumber.replaceAll(":", "").toLowerCase();
    if (!/^[0-9a-f]{2,64}$/.test(hex) || hex.length % 2) {
      throw new Problem("ERR_INVALID_FIELD", "serialNumber must be the certificate's serial number in hex", {
        field: "serialNumber",
      });
    }
    return { serialNumber: hex, reason };
  }
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
  authorities: Authorities;
  store: CaStore;
  logger: Logger;
  metrics: CaMetrics;
  /** CRL validity; a new CRL is signed after half of it, or when a revocation happens. Default 1 h. */
  crlNextUpdateSeconds?: number;
  /** DNS names an identity may have in its certificate; none by default (deny by default). */
  allowedDnsNames?: (spiffeId: string) => readonly string[];
  now?: () => Date;
}

/** A signed certificate, as the API answers it. */
export interface IssuanceResult {
  spiffeId: string;
  serialNumber: string;
  notAfter: Date;
  chainPem: string;
  /** The same chain, one PEM per certificate. */
  chainPems: string[];
  trustBundlePem: string;
}

interface CachedCrl {
  key: string;
  der: Uint8Array;
  thisUpdate: number;
}

/** The CA's operations. */
export class CaService {
  readonly #o: CaServiceOptions;
  readonly #crls = new Map<string, Promise<CachedCrl>>();

  constructor(options: CaServiceOptions) {
    this.#o = options;
  }

  #now(): Date {
    return this.#o.now?.() ?? new Date();
  }

  /** Appends an audit event. A request whose audit entry cannot be written fails with it. */
  async audit(action: string, requester: string, details: Record<string, unknown>): Promise<void> {
    await this.#o.store.appendAudit({ at: this.#now(), action, requester, details });
  }

  /** Signs `csrPem` for `principal` if the CSR names an identity the principal may obtain. */
  async issue(principal: Principal, csrPem: string, ttlSeconds?: number): Promise<IssuanceResult> {
    const started = performance.now();
    const authority = this.#o.authorities.active();
    let authorizedId: string;
    try {
      if (principal.allowedIds.length === 1 && !principal.consume) {
        // The common case: one identity; the core checks the CSR names it while signing.
        authorizedId = principal.allowedIds[0];
      } else {
        const request = await parseCsr(csrPem);
        authorizedId = request.id.toString();
        if (!principal.allowedIds.includes(authorizedId)) {
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

  /** Revokes what `selector` names; answers the entries newly revoked. */
  async revoke(principal: Principal, selector: RevocationSelector): Promise<Revocation[]> {
    if ("serialNumber" in selector && !(await this.#o.store.findCertificate(selector.serialNumber))) {
      throw new Problem(
        "ERR_NOT_FOUND",
        `this CA issued no certificate with serial number ${selector.serialNumber}`,
      );
    }
    const revoked = await this.#o.store.revoke(selector, this.#now());
    await this.audit("revoked", principal.requester, {
      selector,
      serialNumbers: revoked.map((r) => r.serialNumber),
    });
    this.#o.metrics.revoked(revoked.length);
    this.#o.logger.info("revoked", {
      requester: principal.requester,
      count: revoked.length,
      reason: selector.reason,
    });
    return revoked;
  }

  /** The CRL (DER) of one authority, the active one by default; signed anew when stale. */
  async crl(authorityId?: string): Promise<{ der: Uint8Array; maxAgeSeconds: number }> {
    const authority = authorityId ? this.#o.authorities.get(authorityId) : this.#o.authorities.active();
    if (!authority) throw new Problem("ERR_NOT_FOUND", `no CA authority ${authorityId}`);
    const nextUpdateSeconds = this.#o.crlNextUpdateSeconds ?? 3600;
    const revision = await this.#o.store.revocationRevision();
    const key = `${authority.record.id}:${revision}`;
    const id = authority.record.id;
    const current = this.#crls.get(id);
    let crl = current ? await current.catch(() => undefined) : undefined;
    const now = this.#now().getTime();
    if (!crl || crl.key !== key || now - crl.thisUpdate >= (nextUpdateSeconds * 1000) / 2) {
      // Requests arriving together share one signing.
      let next = this.#crls.get(id);
      if (next === current) {
        next = this.#signCrl(authority, key, nextUpdateSeconds);
        this.#crls.set(id, next);
      }
      crl = await next!;
    }
    const age = (now - crl.thisUpdate) / 1000;
    return {
      der: crl.der,
      maxAgeSeconds: Math.max(0, Math.floor(Math.min(60, nextUpdateSeconds / 2 - age))),
    };
  }

  async #signCrl(
    authority: ReturnType<Authorities["active"]>,
    key: string,
    nextUpdateSeconds: number,
  ): Promise<CachedCrl> {
    const thisUpdate = this.#now();
    const revoked = (await this.#o.store.listRevocations(thisUpdate))
      .filter((r) => r.authorityId === authority.record.id)
      .map((r) => ({ serialNumber: r.serialNumber, revokedAt: r.revokedAt, reason: r.reason }));
    const crlNumber = await this.#o.store.nextCrlNumber();
    const pem = await authority.ca.createCrl({ revoked, nextUpdateSeconds, crlNumber, thisUpdate });
    this.#o.logger.info("CRL signed", {
      authority: authority.record.id,
      crlNumber: crlNumber.toString(),
      entries: revoked.length,
    });
    return { key, der: decodePem(pem)[0].der, thisUpdate: thisUpdate.getTime() };
  }
}
