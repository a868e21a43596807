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

import { SignatureCache, verifySvid } from "../../mod.ts";
import type { Authorities } from "../authorities.ts";
import { Problem } from "../problems.ts";
import type { CaStore } from "../store/store.ts";
import type { Authenticator, Credentials, NodeWorkloads, Principal } from "./principal.ts";

/** Options of {@link MtlsAuthenticator}. */
export interface MtlsAuthenticatorOptions {
  authorities: Authorities;
  store: CaStore;
  nodeWorkloads: NodeWorkloads;
  /** SPIFFE IDs allowed to use the administrative API. */
  admins: readonly string[];
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
  readonly method = "mtls" as const;
  // Renewals present the same CA certificates again and again: verify each signature once.
  readonly #signatures = new SignatureCache();
  constructor(readonly options: MtlsAuthenticatorOptions) {}

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
      // A leaf alone is what a resumed TLS session shows (OpenSSL keeps only the peer's leaf
      // in a session): its path is built through this CA's own intermediates, as any path may
      // be; the anchors are still the bundle's roots alone.
      const isLeafAlone = chainPem.indexOf("-----BEGIN CERTIFICATE-----", 1) < 0;
      const candidates = isLeafAlone ? chainPem + this.options.authorities.intermediatesPem(at) : chainPem;
      verified = await verifySvid(candidates, this.options.authorities.bundle(at), {
        at,
        purpose: "clientAuth",
      });
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
    return { method: "mtls", requester: id, allowedIds, isAdmin, node };
  }
}
