/**
 * The node agent's own identity, `spiffe://<td>/node/<name>`: bootstrapped once with a node
 * join token (`meshauth ca token create --node <name>`), then renewed over mutual TLS with the
 * SVID itself, and stored in the state directory so a restart needs no token. Every workload
 * request the agent makes is authenticated with it; the CA issues a workload's identity only
 * if it is placed on this node.
 *
 * If the CA refuses the node SVID (revoked, or expired while the agent was down), the agent
 * bootstraps again with the token, which it re-reads each time, so an operator can drop a new
 * token in the file without restarting it.
 *
 * @module
 */

import { type KeyAlgorithm, MeshAuthError, type RenewalOptions, type SpiffeId } from "../../mod.ts";
import type { Logger } from "../../internal/mod.ts";
import type { CaClient, CaCredential } from "../ca-client.ts";
import { type HeldSvid, obtainSvid } from "../issuance.ts";
import type { AgentMetrics } from "../metrics.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import type { CaClock } from "./ca-clock.ts";
import { causeOf, isRefusal, messageOf, retryAfterMs } from "./failure.ts";
import { renewalMoment, usableFrom } from "./renewal.ts";
import type { StateStore } from "./state-store.ts";
import { callAfter, callAt, type Timer } from "./timer.ts";

/** Options of {@link NodeIdentity}. */
export interface NodeIdentityOptions {
  client: CaClient;
  id: SpiffeId;
  /** The join token, read each time it is needed (undefined when none is configured). */
  bootstrapToken: () => Promise<string | undefined>;
  state: StateStore;
  keyAlgorithm?: KeyAlgorithm;
  ttlSeconds?: number;
  renewal?: RenewalOptions;
  backoff?: BackoffOptions;
  logger: Logger;
  metrics: AgentMetrics;
  /** Checks a stored SVID against the current trust bundle before reusing it. */
  isTrusted: (svid: HeldSvid) => Promise<boolean>;
  onChange: (svid: HeldSvid) => void;
  /** The CA's clock, on which certificates' times are judged; this node's by default. */
  clock?: CaClock;
}

/** The agent could not obtain its node identity and cannot without an operator. */
export class NodeBootstrapFailed extends MeshAuthError {
  /** Stable code of this class: `ERR_NODE_BOOTSTRAP_FAILED`. */
  static override code: string = "ERR_NODE_BOOTSTRAP_FAILED";
  /** `message` names the node's SPIFFE ID and why it cannot be had (the CA refused, or no join token). */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NodeBootstrapFailed";
  }
}

/** Holds and renews the node's SVID. */
export class NodeIdentity {
  readonly #o: NodeIdentityOptions;
  #current?: HeldSvid;
  #timer?: Timer;
  #isStopped = false;
  readonly #backoff: Backoff;
  #waiters: { resolve: (c: CaCredential) => void; reject: (e: unknown) => void }[] = [];
  #renewing?: Promise<void>;
  /** Until start() has the first SVID, callers of credential() wait for it rather than race it. */
  #isStarting = true;
  /** Ends the wait between bootstrap attempts. */
  #wake?: () => void;

  constructor(options: NodeIdentityOptions) {
    this.#o = options;
    this.#backoff = new Backoff(options.backoff);
  }

  /** The node SVID held now. */
  get current(): HeldSvid | undefined {
    return this.#current;
  }

  /**
   * Reuses a stored, still-valid node SVID, or bootstraps with the token. A refusal of the
   * token (spent, expired, unknown, or none configured) throws {@link NodeBootstrapFailed}:
   * nothing works without the node identity and only an operator can fix that. A CA that
   * cannot be reached is retried until it answers or the agent stops (which ends the wait
   * between attempts at once; start() then resolves without an identity).
   */
  async start(): Promise<void> {
    try {
      const stored = await this.#o.state.loadNode();
      if (
        stored && stored.spiffeId.equals(this.#o.id) && this.#isValid(stored) &&
        await this.#o.isTrusted(stored)
      ) {
        this.#set(stored);
        this.#o.logger.info("node identity restored", {
          spiffeId: stored.spiffeId.toString(),
          serialNumber: stored.serialNumber,
          notAfter: stored.expiresAt.toISOString(),
        });
        this.#scheduleRenewal();
        return;
      }
      await this.#bootstrap();
    } finally {
      this.#isStarting = false;
    }
  }

  async #bootstrap(): Promise<void> {
    for (;;) {
      if (this.#isStopped) return;
      try {
        await this.#obtain("initial");
        return;
      } catch (err) {
        if (this.#isStopped) return;
        if (isRefusal(err) || causeOf(err) === "ERR_TOKEN_MISSING") {
          throw new NodeBootstrapFailed(`cannot obtain the node identity ${this.#o.id}: ${messageOf(err)}`);
        }
        const wait = this.#backoff.next(retryAfterMs(err));
        this.#o.logger.warn("node bootstrap failed; retrying", {
          spiffeId: this.#o.id.toString(),
          cause: causeOf(err),
          error: err,
          retryInSeconds: Math.round(wait / 1000),
        });
        // stop() ends the wait at once.
        await new Promise<void>((resolve) => {
          this.#timer = callAfter(wait, resolve);
          this.#wake = resolve;
        });
        this.#wake = undefined;
      }
    }
  }

  /** The credential for workload requests: mTLS with the node SVID, once one is valid. */
  credential(): Promise<CaCredential> {
    const svid = this.#current;
    if (svid && this.#isValid(svid)) {
      return Promise.resolve({
        kind: "mtls",
        certificateChainPem: svid.certificateChainPem,
        privateKeyPem: svid.privateKeyPem,
      });
    }
    if (this.#isStopped) return Promise.reject(new Error("the agent is stopping"));
    // Expired (the agent was down, or renewal failed for its whole life): get a new one.
    if (!this.#isStarting) this.renewNow("expired");
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Renews now (the node SVID was revoked, or expired), unless a renewal is under way. */
  renewNow(reason: string): void {
    if (this.#renewing || this.#isStopped) return;
    this.#timer?.cancel();
    this.#renewing = this.#renew(reason).finally(() => this.#renewing = undefined);
  }

  stop(): void {
    this.#isStopped = true;
    this.#timer?.cancel();
    this.#wake?.();
    for (const w of this.#waiters.splice(0)) w.reject(new Error("the agent is stopping"));
  }

  // Usable to authenticate while more than 5 s of it remain, or a tenth of its life for a short
  // one: an 8-second SVID renewed at half-life still has 4 s, time enough for one request.
  #isValid(svid: HeldSvid): boolean {
    const life = svid.expiresAt.getTime() - usableFrom(svid).getTime();
    return svid.expiresAt.getTime() > (this.#o.clock?.now() ?? Date.now()) + Math.min(5000, life / 10);
  }

  #set(svid: HeldSvid): void {
    this.#current = svid;
    for (const w of this.#waiters.splice(0)) {
      w.resolve({
        kind: "mtls",
        certificateChainPem: svid.certificateChainPem,
        privateKeyPem: svid.privateKeyPem,
      });
    }
    this.#o.onChange(svid);
  }

  async #obtain(reason: string): Promise<void> {
    const current = this.#current;
    // Renew over mTLS with the SVID held; bootstrap with the token when there is none valid.
    const useToken = !current || !this.#isValid(current);
    const credential: CaCredential = useToken ? { kind: "token", token: this.#o.bootstrapToken } : {
      kind: "mtls",
      certificateChainPem: current.certificateChainPem,
      privateKeyPem: current.privateKeyPem,
    };
    let svid: HeldSvid;
    try {
      svid = await this.#request(credential);
    } catch (err) {
      // A refused node SVID (revoked): a reusable or new token still gets the node back. With
      // no token to be had, the refusal is what the operator needs to hear.
      const token = !useToken && causeOf(err).startsWith("ERR_CLIENT_CERT")
        ? await this.#o.bootstrapToken().catch(() => undefined)
        : undefined;
      if (!token) throw err;
      this.#o.logger.warn("the CA refused the node SVID; bootstrapping again with the join token", {
        cause: causeOf(err),
      });
      svid = await this.#request({ kind: "token", token });
    }
    await this.#o.state.saveNode(svid);
    this.#backoff.reset();
    this.#o.metrics.renewals.inc({ kind: "node", reason });
    this.#o.logger.info("node identity obtained", {
      spiffeId: svid.spiffeId.toString(),
      serialNumber: svid.serialNumber,
      notAfter: svid.expiresAt.toISOString(),
      reason,
    });
    this.#set(svid);
    this.#scheduleRenewal();
  }

  #request(credential: CaCredential): Promise<HeldSvid> {
    return obtainSvid({
      client: this.#o.client,
      id: this.#o.id,
      credential,
      keyAlgorithm: this.#o.keyAlgorithm,
      ttlSeconds: this.#o.ttlSeconds,
    });
  }

  async #renew(reason: string): Promise<void> {
    try {
      await this.#obtain(reason);
    } catch (err) {
      if (this.#isStopped) return;
      const cause = causeOf(err);
      this.#o.metrics.renewalFailures.inc({ kind: "node", cause });
      const wait = isRefusal(err)
        ? this.#backoff.next(this.#o.backoff?.maxMs ?? 60_000)
        : this.#backoff.next(retryAfterMs(err));
      const left = this.#current ? Math.round((this.#current.expiresAt.getTime() - Date.now()) / 1000) : 0;
      (isRefusal(err) ? this.#o.logger.error : this.#o.logger.warn)("node identity renewal failed", {
        spiffeId: this.#o.id.toString(),
        cause,
        error: err,
        certificateSecondsLeft: left,
        retryInSeconds: Math.round(wait / 1000),
        ...(isRefusal(err) ? { hint: "put a new node join token where node.joinToken(File) points" } : {}),
      });
      this.#timer = callAfter(wait, () => this.renewNow(reason));
    }
  }

  #scheduleRenewal(): void {
    const svid = this.#current!;
    this.#timer?.cancel();
    const at = renewalMoment(svid, this.#o.renewal, Date.now(), this.#o.clock?.offsetMs);
    this.#timer = callAt(at, () => this.renewNow("renewal"));
  }
}
