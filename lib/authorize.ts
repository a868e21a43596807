/**
 * Authorizers in the go-spiffe style (`spiffetls/tlsconfig`): after a peer's chain verifies,
 * an authorizer decides whether that identity may be talked to. Secure naming is one such
 * authorizer, built from a table of which identities may run which service.
 *
 * @example
 * ```ts
 * import { authorizeOneOf, SecureNaming, SpiffeId } from "meshauth";
 * const naming = new SecureNaming({
 *   "photos.default.svc.cluster.local": ["spiffe://cluster.local/ns/default/sa/photos"],
 * });
 * naming.check("photos.default.svc.cluster.local", SpiffeId.parse("spiffe://cluster.local/ns/default/sa/photos"));
 * const onlyFrontend = authorizeOneOf("spiffe://cluster.local/ns/web/sa/frontend");
 * ```
 * @module
 */

import { InvalidArgument, SecureNamingError, UnauthorizedPeer } from "./errors.ts";
import { SpiffeId, TrustDomain } from "./spiffeid.ts";
import type { Certificate } from "./x509/certificate.ts";

/**
 * Decides whether a verified peer may be talked to; throws {@link UnauthorizedPeer} when
 * not. `chain` is the verified chain, leaf first, for authorizers that look further.
 */
export type Authorizer = (peerId: SpiffeId, chain?: readonly Certificate[]) => void;

/** A SPIFFE ID, parsed or as text (parsed, and refused when invalid, when the authorizer is made). */
export type IdLike = SpiffeId | string;

/** Allows any verified peer. Use only where verification of the chain is all you need. */
export function authorizeAny(): Authorizer {
  return () => {};
}

/** Allows exactly one identity. */
export function authorizeId(allowed: IdLike): Authorizer {
  const id = SpiffeId.from(allowed);
  return (peer) => {
    if (!SpiffeId.from(peer).equals(id)) throw new UnauthorizedPeer(String(peer), `expected ${id}`);
  };
}

/** Allows any of the listed identities. */
export function authorizeOneOf(...allowed: IdLike[]): Authorizer {
  const ids = new Set(allowed.map((a) => SpiffeId.from(a).toString()));
  return (peer) => {
    if (!ids.has(SpiffeId.from(peer).toString())) {
      throw new UnauthorizedPeer(String(peer), "not in the allowed set");
    }
  };
}

/** Allows any identity of a trust domain. */
export function authorizeMemberOf(trustDomain: TrustDomain | string): Authorizer {
  const td = TrustDomain.from(trustDomain);
  return (peer) => {
    if (!SpiffeId.from(peer).memberOf(td)) {
      throw new UnauthorizedPeer(peer.toString(), `not a member of trust domain ${td.name}`);
    }
  };
}

/**
 * Secure naming: which SPIFFE IDs may run which service. A client about to talk to a
 * service checks that the server's identity is one of these; a service missing from the
 * table has no allowed identity (deny by default).
 */
export class SecureNaming {
  #table = new Map<string, Set<string>>();

  /** A table of service name to the identities allowed to run it, as an object or a Map. */
  constructor(table: Record<string, readonly IdLike[]> | Map<string, readonly IdLike[]> = {}) {
    const entries = table instanceof Map ? [...table.entries()] : Object.entries(table);
    for (const [service, ids] of entries) this.set(service, ids);
  }

  /** Replaces the identities allowed to run `service`. */
  set(service: string, ids: readonly IdLike[]): void {
    if (!Array.isArray(ids)) {
      throw new InvalidArgument(`identities of ${JSON.stringify(service)}`, "expected a list of SPIFFE IDs");
    }
    this.#table.set(service, new Set(ids.map((id) => SpiffeId.from(id).toString())));
  }

  /** Removes a service from the table. */
  delete(service: string): boolean {
    return this.#table.delete(service);
  }

  /** The identities allowed to run `service`. */
  allowedIds(service: string): SpiffeId[] {
    return [...(this.#table.get(service) ?? [])].map((s) => SpiffeId.parse(s));
  }

  /** True when `peerId` may run `service`. */
  allows(service: string, peerId: IdLike): boolean {
    return this.#table.get(service)?.has(SpiffeId.from(peerId).toString()) ?? false;
  }

  /** Throws {@link SecureNamingError} unless `peerId` may run `service`. */
  check(service: string, peerId: IdLike): void {
    const id = SpiffeId.from(peerId);
    if (!this.allows(service, id)) throw new SecureNamingError(service, id.toString());
  }

  /** The authorizer a TLS client uses when it dials `service`. */
  authorizerFor(service: string): Authorizer {
    return (peer) => this.check(service, peer);
  }
}
