/**
 * What the proxy needs from whoever holds a workload's certificates (the node agent, or a
 * test): the SVID to present, the trust bundle and CRLs to verify peers with, and a signal when
 * any of them changes. The proxy reads the three again on every `change`, swaps its TLS context
 * when the SVID changed, and verifies every open connection again when the bundle or CRLs did.
 *
 * The agent's own is `AgentCredentialSource` (`agent-credentials.ts`); a test or another holder implements the
 * interface directly:
 *
 * @example
 * ```ts
 * import { EventEmitter } from "node:events";
 * import type { CredentialSource } from "meshauth/agent";
 * const source: CredentialSource = Object.assign(new EventEmitter(), {
 *   current: () => ({ certificateChainPem, privateKeyPem }),
 *   trustBundle: () => bundle,
 *   crls: () => [],
 * });
 * // later, with a new SVID: source.emit("change")
 * ```
 * @module
 */

import type { BundleSet, Crl, TrustBundle } from "../../mod.ts";

/** A workload's X509-SVID with its key, as PEM. */
export interface SvidCredential {
  /** The SVID, leaf first, then the intermediates to send (not the root). */
  certificateChainPem: string;
  /** The leaf's private key (PKCS#8 PEM). */
  privateKeyPem: string;
}

/** One workload's credentials and verification material, kept current by its holder. */
export interface CredentialSource {
  /** The SVID to present now; undefined while the workload has none (its listeners refuse connections). */
  current(): SvidCredential | undefined;
  /** The roots peers' SVIDs must chain to: one trust domain's, or several (federation). */
  trustBundle(): TrustBundle | BundleSet;
  /** The CRLs in force (parsed with `parseCrl`); `verifySvid` checks each one's signature and freshness. */
  crls(): readonly Crl[];
  /**
   * Optional: fetches the CRLs of the authority that issued a peer's chain (PEM, leaf first),
   * which the holder does not follow yet; resolves once they are in `crls()` (a `change` is
   * signalled), or once that failed. The proxy asks when a peer's certificate comes from an
   * authority it has no CRL for, a new root or intermediate after a rotation, say.
   */
  fetchCrlsFor?(peerChainPem: string): Promise<void>;
  /** Subscribes to changes of any of the three. */
  on(event: "change", listener: () => void): unknown;
  /** Unsubscribes. */
  off(event: "change", listener: () => void): unknown;
}
