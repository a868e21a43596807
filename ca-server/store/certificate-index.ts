/**
 * The file store's in-memory index of issued certificates: by serial number, by SPIFFE ID, and
 * in issue order. A certificate leaves it once it has been expired for the retention period
 * (the audit trail keeps it); until then it can be found, listed and revoked.
 *
 * @module
 */

import type { CertificateRecord } from "./store.ts";

/** A certificate as the index keeps it: times as milliseconds, repeated strings shared. */
export interface IndexedCertificate {
  serialNumber: string;
  spiffeId: string;
  notBefore: number;
  notAfter: number;
  issuedAt: number;
  requester: string;
  method: string;
  authorityId: string;
}

interface Identity {
  /** The one copy of this SPIFFE ID's text that every record of it points to. */
  id: string;
  serials: Set<string>;
}

/** Turns an indexed certificate back into the store's record. */
export function recordOf(c: IndexedCertificate): CertificateRecord {
  return {
    serialNumber: c.serialNumber,
    spiffeId: c.spiffeId,
    notBefore: new Date(c.notBefore),
    notAfter: new Date(c.notAfter),
    issuedAt: new Date(c.issuedAt),
    requester: c.requester,
    method: c.method,
    authorityId: c.authorityId,
  };
}

/** Issued certificates in memory. */
export class CertificateIndex {
  readonly #bySerial = new Map<string, IndexedCertificate>();
  readonly #byId = new Map<string, Identity>();
  /** Serial numbers in the order they were added (with holes where some left). */
  #order: string[] = [];
  /** Methods and authority ids: a handful of values shared by every record. */
  readonly #few = new Map<string, string>();

  constructor(readonly retainExpiredMs: number) {}

  get size(): number {
    return this.#bySerial.size;
  }

  #share(value: string): string {
    const known = this.#few.get(value);
    if (known !== undefined) return known;
    if (this.#few.size < 10_000) this.#few.set(value, value);
    return value;
  }

  /** Adds a certificate unless it is known already or long expired at `nowMs`. */
  add(c: IndexedCertificate, nowMs: number): void {
    if (c.notAfter + this.retainExpiredMs <= nowMs || this.#bySerial.has(c.serialNumber)) return;
    let identity = this.#byId.get(c.spiffeId);
    if (!identity) this.#byId.set(c.spiffeId, identity = { id: c.spiffeId, serials: new Set() });
    identity.serials.add(c.serialNumber);
    this.#bySerial.set(c.serialNumber, {
      serialNumber: c.serialNumber,
      spiffeId: identity.id,
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      issuedAt: c.issuedAt,
      requester: c.requester === identity.id ? identity.id : c.requester,
      method: this.#share(c.method),
      authorityId: this.#share(c.authorityId),
    });
    this.#order.push(c.serialNumber);
  }

  get(serialNumber: string): IndexedCertificate | undefined {
    return this.#bySerial.get(serialNumber);
  }

  /** Every certificate of `spiffeId`, oldest first. */
  ofIdentity(spiffeId: string): IndexedCertificate[] {
    return [...(this.#byId.get(spiffeId)?.serials ?? [])].map((s) => this.#bySerial.get(s)!);
  }

  /** The newest `limit`, optionally of one SPIFFE ID. */
  newest(limit: number, spiffeId?: string): IndexedCertificate[] {
    const serials = spiffeId === undefined ? this.#order : [...(this.#byId.get(spiffeId)?.serials ?? [])];
    const out: IndexedCertificate[] = [];
    for (let i = serials.length - 1; i >= 0 && out.length < limit; i--) {
      const c = this.#bySerial.get(serials[i]);
      if (c) out.push(c);
    }
    return out;
  }

  /** Every certificate, in the order added. */
  *all(): IterableIterator<IndexedCertificate> {
    yield* this.#bySerial.values();
  }

  /** Drops the certificates expired for longer than the retention at `nowMs`; answers how many. */
  evict(nowMs: number): number {
    const cutoff = nowMs - this.retainExpiredMs;
    let evicted = 0;
    for (const [serial, c] of this.#bySerial) {
      if (c.notAfter > cutoff) continue;
      this.#bySerial.delete(serial);
      const identity = this.#byId.get(c.spiffeId)!;
      identity.serials.delete(serial);
      if (identity.serials.size === 0) this.#byId.delete(c.spiffeId);
      evicted++;
    }
    if (evicted > 0 || this.#order.length > 2 * this.#bySerial.size + 1024) {
      this.#order = this.#order.filter((s) => this.#bySerial.has(s));
    }
    return evicted;
  }
}
