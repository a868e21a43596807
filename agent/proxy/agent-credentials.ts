/**
 * The proxy's credentials from the node agent: one {@link CredentialSource} per workload over
 * {@link NodeAgent}'s in-memory SVIDs, trust bundle and CRLs, signalling `change` on each of the
 * agent's events that touches them. This is how `meshauth agent` feeds its `proxy:` section;
 * a program that runs a `NodeAgent` and a `MeshProxy` of its own uses it the same way.
 *
 * @example
 * ```ts
 * import { AgentCredentialSource, MeshProxy } from "meshauth/agent";
 * const proxy = new MeshProxy({
 *   config: proxyConfig,
 *   sources: { "photo-backend": new AgentCredentialSource(agent, "photo-backend") },
 * });
 * ```
 * @module
 */

import { EventEmitter } from "node:events";
import type { Crl, TrustBundle } from "../../mod.ts";
import type { NodeAgent } from "../node-agent.ts";
import type { CredentialSource, SvidCredential } from "./credentials.ts";

/** One workload's credentials, as the agent holds them now. */
export class AgentCredentialSource extends EventEmitter implements CredentialSource {
  readonly #unsubscribe: () => void;

  /** Follows `workload`'s SVID, and the bundle and CRLs, as `agent` holds them. */
  constructor(readonly agent: NodeAgent, readonly workload: string) {
    super();
    this.#unsubscribe = agent.subscribe((event) => {
      const isChange = event.type === "bundle" || event.type === "crl" ||
        ((event.type === "svid" || event.type === "removed") && event.workload === workload);
      if (isChange) this.emit("change");
    });
  }

  /** The workload's newest SVID (held before its files are written: the proxy need not wait for them). */
  current(): SvidCredential | undefined {
    return this.agent.svid(this.workload);
  }

  trustBundle(): TrustBundle {
    return this.agent.trustBundle();
  }

  crls(): readonly Crl[] {
    return [...this.agent.crls().values()];
  }

  /** Has the agent follow the CRLs of the authority that issued a peer's chain. */
  fetchCrlsFor(peerChainPem: string): Promise<void> {
    return this.agent.fetchCrlsFor(peerChainPem);
  }

  /** Stops following the agent. */
  close(): void {
    this.#unsubscribe();
    this.removeAllListeners();
  }
}
