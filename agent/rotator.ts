/**
 * Keeps one identity's X509-SVID fresh: makes a key where the workload runs, sends only a CSR
 * to the CA, delivers the result (files, or a callback for the proxy), and renews at the
 * moment {@link renewalTime} picks, retrying with capped exponential backoff on failure.
 * After the first issuance, renewals authenticate with the current SVID over mutual TLS, so
 * a single-use join token is enough to bootstrap.
 * @module
 */

import {
  createCsr,
  exportPrivateKeyPem,
  exportSpki,
  generateKeyPair,
  IdentityMismatch,
  InvalidKey,
  type KeyAlgorithm,
  type RenewalOptions,
  renewalTime,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../mod.ts";
import type { CaClient, CaCredential, IssuedSvid } from "./ca-client.ts";
import { writeSvidFiles } from "./svid-files.ts";

/** An SVID with the private key that belongs to it. */
export interface HeldSvid extends IssuedSvid {
  privateKeyPem: string;
  /** The leaf's notBefore (the CA backdates it a little). */
  notBefore: Date;
}

/** Options of {@link SvidRotator}. */
export interface SvidRotatorOptions {
  id: SpiffeId | string;
  client: CaClient;
  /** How to authenticate the first request (and later ones if `renewWithSvid` is false). */
  credential: CaCredential;
  /** Renew by presenting the current SVID over mTLS. Default true. */
  renewWithSvid?: boolean;
  keyAlgorithm?: KeyAlgorithm;
  ttlSeconds?: number;
  renewal?: RenewalOptions;
  /** Write svid.pem, svid_key.pem and bundle.pem here on every rotation. */
  directory?: string;
  /** Called after every rotation (for example to reload a TLS context). */
  onRotate?: (svid: HeldSvid) => void | Promise<void>;
  /** Called when a rotation attempt fails; it will be retried. */
  onError?: (error: unknown, retryInMs: number) => void;
  /** Backoff bounds for failed attempts. Default 1 s to 60 s. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

/** Keeps one SVID current until stopped. */
export class SvidRotator {
  readonly id: SpiffeId;
  #options: SvidRotatorOptions;
  #current?: HeldSvid;
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;
  #rotation: Promise<unknown> = Promise.resolve();
  #failures = 0;

  constructor(options: SvidRotatorOptions) {
    this.id = SpiffeId.from(options.id);
    this.#options = options;
  }

  /** The SVID held now, if any. */
  get current(): HeldSvid | undefined {
    return this.#current;
  }

  /** Gets the first SVID (throwing if that fails) and schedules renewals. */
  async start(): Promise<HeldSvid> {
    this.#stopped = false;
    const svid = await this.rotate();
    return svid;
  }

  /** Stops renewing. The files already written stay. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Gets a new SVID now, delivers it, and schedules the next renewal. Calls are serialized,
   * so a timer and a manual rotation never interleave their writes.
   */
  rotate(): Promise<HeldSvid> {
    const next = this.#rotation.catch(() => undefined).then(() => this.#rotateOnce());
    this.#rotation = next;
    return next;
  }

  async #rotateOnce(): Promise<HeldSvid> {
    const keys = await generateKeyPair(this.#options.keyAlgorithm ?? "ECDSA-P256");
    const csr = await createCsr({ keys, id: this.id });
    const issued = await this.#options.client.requestCertificate(csr, this.#credential(), {
      ttlSeconds: this.#options.ttlSeconds,
    });
    // Nothing is delivered unless it is an SVID for this identity, for this key, that the
    // bundle delivered with it verifies.
    const verified = await verifySvid(
      issued.certificateChainPem,
      TrustBundle.fromPem(this.id.trustDomain, issued.trustBundlePem),
    );
    if (!issued.spiffeId.equals(this.id) || !verified.id.equals(this.id)) {
      throw new IdentityMismatch(verified.id.toString(), this.id.toString());
    }
    const leaf = verified.chain[0];
    const spki = await exportSpki(keys.publicKey);
    if (leaf.spki.length !== spki.length || leaf.spki.some((b, i) => b !== spki[i])) {
      throw new InvalidKey("the CA issued a certificate for a key other than the one this agent generated");
    }
    const held: HeldSvid = {
      ...issued,
      privateKeyPem: await exportPrivateKeyPem(keys.privateKey),
      notBefore: leaf.notBefore,
      expiresAt: leaf.notAfter,
    };
    if (this.#options.directory) {
      await writeSvidFiles(this.#options.directory, {
        certificateChainPem: held.certificateChainPem,
        privateKeyPem: held.privateKeyPem,
        trustBundlePem: held.trustBundlePem,
      });
    }
    this.#current = held;
    this.#failures = 0;
    await this.#options.onRotate?.(held);
    this.#schedule(
      renewalTime({ notBefore: held.notBefore, notAfter: held.expiresAt }, this.#options.renewal),
    );
    return held;
  }

  #credential(): CaCredential {
    const current = this.#current;
    if ((this.#options.renewWithSvid ?? true) && current && current.expiresAt.getTime() > Date.now()) {
      return {
        kind: "mtls",
        certificateChainPem: current.certificateChainPem,
        privateKeyPem: current.privateKeyPem,
      };
    }
    return this.#options.credential;
  }

  #schedule(at: Date): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    // setTimeout's delay is a 32-bit millisecond count; longer waits are re-armed.
    const delay = Math.min(Math.max(0, at.getTime() - Date.now()), 0x7fffffff);
    this.#timer = setTimeout(() => {
      if (Date.now() < at.getTime()) return this.#schedule(at);
      this.rotate().catch((error) => {
        const initial = this.#options.retryInitialMs ?? 1000;
        const max = this.#options.retryMaxMs ?? 60_000;
        const backoff = Math.min(max, initial * 2 ** this.#failures++);
        const retryIn = Math.floor(backoff / 2 + Math.random() * backoff / 2);
        this.#options.onError?.(error, retryIn);
        this.#schedule(new Date(Date.now() + retryIn));
      });
    }, delay);
    (this.#timer as { unref?: () => void }).unref?.();
  }
}
