/**
 * How the Kubernetes controllers sign: with the CA's active authority, and with the same
 * record and audit entry as an API issuance (the serial findable and revocable, the issuance
 * in the audit trail), before the certificate reaches the cluster.
 *
 * @module
 */

import {
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  type IssuedCertificate,
  type KeyAlgorithm,
  type SpiffeId,
} from "../../mod.ts";
import type { Logger } from "../../internal/mod.ts";
import type { Authorities } from "../authorities.ts";
import type { CaStore } from "../store/store.ts";

/** A certificate the controllers issued, with its key when the CA made it. */
export interface ControllerIssuance {
  /** The certificate issued. */
  issued: IssuedCertificate;
  /** PKCS#8 PEM, only when the CA made the key (service-account Secrets). */
  privateKeyPem?: string;
  /** The trust bundle at issuance (every published root). */
  trustBundlePem: string;
}

/** Options of {@link ControllerIssuer}. */
export interface ControllerIssuerOptions {
  /** The CA's signing authorities. */
  authorities: Authorities;
  /** Where each issuance is recorded, as the API's are. */
  store: CaStore;
  /** Where issuances are logged. */
  logger: Logger;
  /** The clock, for tests; the system's by default. */
  now?: () => Date;
}

/** Issues for the controllers and records what it issued. */
export class ControllerIssuer {
  /** An issuer over `options`' authorities and store. */
  constructor(readonly options: ControllerIssuerOptions) {}

  /** Makes a key here and issues for it (the service-account Secret case). */
  async issueWithNewKey(
    id: SpiffeId,
    ttlSeconds: number,
    keyAlgorithm: KeyAlgorithm,
    requester: string,
  ): Promise<ControllerIssuance> {
    const keys = await generateKeyPair(keyAlgorithm);
    const authority = this.options.authorities.active();
    const issued = await authority.ca.issue(await createCsr({ keys, id }), { id, ttlSeconds });
    await this.#record(issued, authority.record.id, requester);
    return {
      issued,
      privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
      trustBundlePem: this.options.authorities.bundlePem(),
    };
  }

  /** Issues to a public key whose possession the caller verified (the Pod Certificates case). */
  async issueToPublicKey(
    id: SpiffeId,
    spki: Uint8Array,
    ttlSeconds: number,
    requester: string,
  ): Promise<ControllerIssuance> {
    const authority = this.options.authorities.active();
    const issued = await authority.ca.issueToPublicKey(spki, { id, ttlSeconds });
    await this.#record(issued, authority.record.id, requester);
    return { issued, trustBundlePem: this.options.authorities.bundlePem() };
  }

  async #record(issued: IssuedCertificate, authorityId: string, requester: string): Promise<void> {
    const at = this.options.now?.() ?? new Date();
    await Promise.all([
      this.options.store.recordIssuance({
        serialNumber: issued.serialNumber,
        spiffeId: issued.id.toString(),
        notBefore: issued.notBefore,
        notAfter: issued.notAfter,
        issuedAt: at,
        requester,
        method: "kubernetes",
        authorityId,
      }),
      this.options.store.appendAudit({
        at,
        action: "issued",
        requester,
        details: {
          serialNumber: issued.serialNumber,
          spiffeId: issued.id.toString(),
          notAfter: issued.notAfter.toISOString(),
          method: "kubernetes",
        },
      }),
    ]);
    this.options.logger.info("issued", {
      serialNumber: issued.serialNumber,
      spiffeId: issued.id.toString(),
      requester,
      method: "kubernetes",
    });
  }
}
