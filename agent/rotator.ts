/**
 * Keeps one identity's X509-SVID fresh, for a program that holds its own identity (the node
 * agent does this for every workload on a node): makes a key where it runs, sends only a CSR,
 * delivers the result (atomically into a directory, and to a callback, e.g. to reload a TLS
 * context), and renews at the moment {@link renewalMoment} picks, retrying with capped
 * exponential backoff on failure. After the first issuance, renewals authenticate with the
 * current SVID over mutual TLS, so a single-use join token is enough to bootstrap.
 *
 * While started, the rotator keeps the process alive (like a server does) so that a script
 * that only starts it goes on renewing; call {@link SvidRotator.stop} to let it exit, or pass
 * `keepAlive: false` when something else keeps the process alive.
 *
 * @module
 */

import { type KeyAlgorithm, type RenewalOptions, SpiffeId } from "../mod.ts";
import { type CaClient, type CaCredential, checkCredential } from "./ca-client.ts";
import { writeGeneration } from "./delivery/atomic-writer.ts";
import { credentialFiles, type LayoutName } from "./delivery/layouts.ts";
import { type HeldSvid, obtainSvid } from "./issuance.ts";
import { Backoff } from "./lifecycle/backoff.ts";
import { retryAfterMs } from "./lifecycle/failure.ts";
import { renewalMoment } from "./lifecycle/renewal.ts";
import { callAt, holdProcessOpen, type Timer } from "./lifecycle/timer.ts";

export type { HeldSvid };

/** What the rotator wrote before the `..data` layout: plain files, replaced or removed now. */
const LEGACY_FILES = ["svid.pem", "svid_key.pem", "bundle.pem"];

/** Options of {@link SvidRotator}. */
export interface SvidRotatorOptions {
  /** The identity to keep, as a SpiffeId or its `spiffe://` string. */
  id: SpiffeId | string;
  /** The CA that issues and renews it. */
  client: CaClient;
  /** How to authenticate the first request (and later ones if `renewWithSvid` is false). */
  credential: CaCredential;
  /** Renew by presenting the current SVID over mTLS. Default true. */
  renewWithSvid?: boolean;
  /** Algorithm of each new key (a fresh key every rotation). Default `ECDSA-P256`. */
  keyAlgorithm?: KeyAlgorithm;
  /** Lifetime to ask for, in seconds; the CA's default (24 h unless configured) when unset. */
  ttlSeconds?: number;
  /** When in its life to renew: half-life less up to a tenth at random by default. */
  renewal?: RenewalOptions;
  /**
   * Deliver the files here on every rotation, a whole generation at a time (a `..data`
   * symlink swapped to it, as Kubernetes does): `svid.pem`, `svid_key.pem` (0600) and
   * `svid_bundle.pem` by default. The directory must belong to this process's user (or root)
   * and be writable by neither its group nor others.
   *
   * Earlier versions wrote plain files `svid.pem`, `svid_key.pem` and `bundle.pem` here. The
   * first write replaces the first two with the links through `..data` and removes
   * `bundle.pem`, so that no stale bundle stays behind after a root rotation: read the bundle
   * from `svid_bundle.pem`.
   */
  directory?: string;
  /** File names in `directory`: the SPIFFE helper's by default, or Istio's. */
  layout?: LayoutName;
  /** Called after every rotation (for example to reload a TLS context). */
  onRotate?: (svid: HeldSvid) => void | Promise<void>;
  /** Called when a rotation attempt fails; it will be retried. */
  onError?: (error: unknown, retryInMs: number) => void;
  /** Longest wait before the first retry of a failed attempt, in ms; doubles per failure. Default 1000. */
  retryInitialMs?: number;
  /** Longest wait between retries, in ms. Default 60000. */
  retryMaxMs?: number;
  /** Keep the process alive while started (default true). */
  keepAlive?: boolean;
}

/** Keeps one SVID current until stopped. */
export class SvidRotator {
  /** The identity this rotator keeps. */
  readonly id: SpiffeId;
  #options: SvidRotatorOptions;
  #current?: HeldSvid;
  #timer?: Timer;
  #stopped = false;
  #rotation: Promise<unknown> = Promise.resolve();
  readonly #backoff: Backoff;
  #release?: () => void;

  /** Checks the ID and the credential (an unset token throws here); sends nothing before `start()`. */
  constructor(options: SvidRotatorOptions) {
    this.id = SpiffeId.from(options.id);
    // An unset token fails here, naming what is missing, not at the first request.
    checkCredential(options.credential);
    this.#options = options;
    this.#backoff = new Backoff({ initialMs: options.retryInitialMs, maxMs: options.retryMaxMs });
  }

  /** The SVID held now, if any. */
  get current(): HeldSvid | undefined {
    return this.#current;
  }

  /** Gets the first SVID (throwing if that fails) and schedules renewals. */
  async start(): Promise<HeldSvid> {
    this.#stopped = false;
    const svid = await this.rotate();
    if ((this.#options.keepAlive ?? true) && !this.#release && !this.#stopped) {
      this.#release = holdProcessOpen();
    }
    return svid;
  }

  /** Stops renewing and lets the process exit. The files already written stay. */
  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#release?.();
    this.#release = undefined;
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
    const held = await obtainSvid({
      client: this.#options.client,
      id: this.id,
      credential: this.#credential(),
      keyAlgorithm: this.#options.keyAlgorithm,
      ttlSeconds: this.#options.ttlSeconds,
    });
    if (this.#options.directory) {
      await writeGeneration(
        this.#options.directory,
        credentialFiles(held, { layout: this.#options.layout ?? "spiffe-helper", keyFileMode: 0o600 }),
        {},
        { legacyFiles: LEGACY_FILES },
      );
    }
    this.#current = held;
    this.#backoff.reset();
    await this.#options.onRotate?.(held);
    this.#schedule(renewalMoment(held, this.#options.renewal));
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
    this.#timer?.cancel();
    this.#timer = callAt(at, () => {
      this.rotate().catch((error) => {
        const retryIn = this.#backoff.next(retryAfterMs(error));
        this.#options.onError?.(error, retryIn);
        this.#schedule(new Date(Date.now() + retryIn));
      });
    });
  }
}
