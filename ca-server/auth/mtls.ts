/**
 * Mutual TLS: a caller presenting a currently valid, unrevoked X509-SVID from this CA may
 * renew that same identity. A node agent's SVID also lets it request its node's workloads,
 * and an administrator's SVID lets it use the administrative API.
 *
 * @example
 * ```ts
 * import { MtlsAuthenticator } from "meshauth/ca-server";
 * // authorities, store and nodeWorkloads come from the server's setup
 * const mtls = new MtlsAuthenticator({ authorities, store, nodeWorkloads, admins: [] });
 * ```
 * @module
 */

import { type Certificate, SignatureCache, verifySvid } from "../../mod.ts";
import { bytesEqual } from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";
import { Problem } from "../problems.ts";
import type { CaStore } from "../store/store.ts";
import type { Authenticator, Credentials, NodeWorkloadCheck, NodeWorkloads, Principal } from "./principal.ts";

/** Options of {@link MtlsAuthenticator}. */
export interface MtlsAuthenticatorOptions {
  /** The trust bundle client SVIDs must chain to. */
  authorities: Authorities;
  /** Where revocations are checked. */
  store: CaStore;
  /** Which workloads a node agent's SVID may obtain certificates for. */
  nodeWorkloads: NodeWorkloads;
  /** For an identity not among a node's workloads: one authoritative look (the API server's pods). */
  confirmNodeWorkload?: NodeWorkloadCheck;
  /** SPIFFE IDs allowed to use the administrative API. */
  admins: readonly string[];
  /** The validation time of client SVIDs; the system's clock by default. */
  now?: () => Date;
}

const NODE_PATH = /^\/node\/([^/]+)$/;

/**
 * Largest client certificate chain read, in PEM characters: an SVID and its intermediates are
 * a few KB (RSA-4096 ones under 2 KB each). A peer's bigger chain is refused by its size,
 * before any of it is parsed: it can only be there to cost the CA time.
 */
export const MAX_CLIENT_CHAIN_PEM = 32 * 1024;

/** Authenticates TLS client certificates issued by this CA. */
export class MtlsAuthenticator implements Authenticator {
  /** Credentials it takes: the TLS client certificate chain. */
  readonly method = "mtls" as const;
  // Renewals present the same CA certificates again and again: verify each signature once.
  readonly #signatures = new SignatureCache();
  /** An authenticator of client SVIDs of this CA's trust domain. */
  constructor(readonly options: MtlsAuthenticatorOptions) {}

  /** The certificates of the authorities published at `at` that are not trust anchors. */
  #intermediates(at: Date): Certificate[] {
    const published = this.options.authorities.published(at);
    const anchors = published.flatMap((authority) => authority.roots.x509Authorities());
    return published.flatMap((authority) => authority.ca.certificateChain)
      .filter((cert) => !anchors.some((anchor) => bytesEqual(anchor.der, cert.der)));
  }

  /** The principal of a valid, unrevoked client SVID; undefined without a client certificate. */
  async authenticate(credentials: Credentials): Promise<Principal | undefined> {
    const chainPem = credentials.clientCertificateChainPem;
    if (!chainPem) return undefined;
    if (chainPem.length > MAX_CLIENT_CHAIN_PEM) {
      throw new Problem(
        "ERR_CLIENT_CERT_INVALID",
        `the client certificate chain is ${chainPem.length} bytes of PEM, over the limit of ${MAX_CLIENT_CHAIN_PEM}`,
      );
    }
    const at = this.options.now?.() ?? new Date();
    let verified: Awaited<ReturnType<typeof verifySvid>>;
    try {
      // The chain as sent, then this CA's own intermediates: a client that sends only its leaf,
      // or a runtime that drops what it sent (Node 24.21 and 26.8 hand the server the leaf
      // alone, nodejs/node#65579), is still verified, as Envoy completes chains from its store.
      verified = await verifySvid(
        [chainPem, ...this.#intermediates(at)],
        this.options.authorities.bundle(at),
        {
          at,
          purpose: "clientAuth",
        },
      );
    } catch (err) {
      throw new Problem(
        "ERR_CLIENT_CERT_INVALID",
        `the client certificate is not a valid SVID of this trust domain: ${(err as Error).message}`,
      );
    }
    const leaf = verified.chain[0];
    if (await this.options.store.isRevoked(leaf.serialNumber)) {
      throw new Problem(
        "ERR_CLIENT_CERT_REVOKED",
        `the client certificate ${leaf.serialNumber} has been revoked`,
        {
          serialNumber: leaf.serialNumber,
        },
      );
    }
    const id = verified.id.toString();
    const isAdmin = this.options.admins.includes(id);
    const node = NODE_PATH.exec(verified.id.path)?.[1];
    const allowedIds = node ? [id, ...(await this.options.nodeWorkloads(node))] : [id];
    const confirm = this.options.confirmNodeWorkload;
    const confirmId = node && confirm ? (wanted: string) => confirm(node, wanted) : undefined;
    return { method: "mtls", requester: id, allowedIds, isAdmin, node, ...(confirmId ? { confirmId } : {}) };
  }
}
