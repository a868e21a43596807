/**
 * One workload's certificate, from first issuance to removal: issue (key made here, CSR sent
 * as the node), store, deliver, renew at {@link renewalMoment}, retry failures with capped
 * exponential backoff while the current files stay in place, warn when the certificate nears
 * its end, re-deliver when the trust bundle changes, re-issue at once when revoked, and delete
 * the files when the workload goes. Operations on one workload run one at a time.
 *
 * @module
 */

import { verifySvid } from "../../mod.ts";
import { DeliveryRefused } from "../delivery/errors.ts";
import type { Logger } from "../../internal/mod.ts";
import type { CaClient, CaCredential } from "../ca-client.ts";
import type { ConcurrencyLimit } from "../concurrency.ts";
import { isDelivered, removeDelivery, writeGeneration } from "../delivery/atomic-writer.ts";
import { credentialFiles } from "../delivery/layouts.ts";
import { type HeldSvid, obtainSvid } from "../issuance.ts";
import { type AgentMetrics, EXPIRY_WARNING_FRACTION } from "../metrics.ts";
import type { WorkloadSpec } from "../sources/source.ts";
import { Backoff, type BackoffOptions, renewalRetryWait } from "./backoff.ts";
import type { CaClock } from "./ca-clock.ts";
import { causeOf, isRefusal, messageOf, retryAfterMs } from "./failure.ts";
import { renewalMoment, usableFrom } from "./renewal.ts";
import type { StateStore, WorkloadRecord } from "./state-store.ts";
import { callAfter, callAt, type Timer } from "./timer.ts";
import type { RenewalOptions, TrustBundle } from "../../mod.ts";

/** How long a new workload's refusals are retried at the normal backoff rather than the slowest. */
const JUST_ADDED_MS = 30_000;

/** What every workload's lifecycle shares. */
export interface LifecycleContext {
  client: CaClient;
  /** The node's credential; waits while the node has none. */
  nodeCredential: () => Promise<CaCredential>;
  /** The delivery root `directory` is in (undefined: none, and nothing is written there). */
  deliveryRoot: (directory: string) => string | undefined;
  /** True when a CRL the agent holds lists `serialNumber`. */
  isRevoked: (serialNumber: string) => boolean;
  /** The trust bundle now, as PEM and parsed. */
  trustBundlePem: () => string;
  trustBundle: () => TrustBundle;
  state: StateStore;
  /** Bounds how many workloads write files at once. */
  writes: ConcurrencyLimit;
  /**
   * Bounds how many issuances (key, CSR, request, checks) are under way at once, so that a
   * thousand workloads starting together wait as closures, not as a thousand keys and CSRs.
   */
  issuances: ConcurrencyLimit;
  /** Parses a trust bundle, reusing the last parse (and string) of the same PEM. */
  parseBundle?: (pem: string) => { bundle: TrustBundle; pem: string };
  renewal?: RenewalOptions;
  backoff?: BackoffOptions;
  logger: Logger;
  metrics: AgentMetrics;
  /** A new SVID is held (in memory and in the state directory). */
  onSvid: (credential: WorkloadCredential, svid: HeldSvid) => void;
  /** The workload's files changed (delivered, or removed). */
  onDelivered: (credential: WorkloadCredential) => void;
  /** An issuance failed (it is retried on the backoff). */
  onIssueFailed?: (credential: WorkloadCredential, cause: string, message: string) => void;
  /** The CA's clock, on which certificates' times are judged; this node's by default. */
  clock?: CaClock;
}

/** What the workload's files hold now. */
export interface DeliveredCertificate {
  serialNumber: string;
  /** The start of its usable life (when obtained; not the CA's backdated notBefore). */
  notBefore: Date;
  notAfter: Date;
}

/** One workload's certificate lifecycle. */
export class WorkloadCredential {
  #spec: WorkloadSpec;
  readonly #ctx: LifecycleContext;
  #held?: HeldSvid;
  #delivered?: DeliveredCertificate;
  #queue: Promise<void> = Promise.resolve();
  #renewTimer?: Timer;
  #retryTimer?: Timer;
  #deliveryTimer?: Timer;
  #warnTimer?: Timer;
  readonly #issueBackoff: Backoff;
  readonly #deliveryBackoff: Backoff;
  #isStopped = false;
  /** Aborted when the workload stops: a wait for the node identity or the CA gives up. */
  readonly #stopping = new AbortController();
  /** An issuance is queued and not yet started: more triggers join it rather than pile up. */
  #isIssueQueued = false;
  #lastFailure?: string;
  readonly #addedAt = Date.now();

  constructor(spec: WorkloadSpec, context: LifecycleContext) {
    this.#spec = spec;
    this.#ctx = context;
    this.#issueBackoff = new Backoff(context.backoff);
    this.#deliveryBackoff = new Backoff(context.backoff);
  }

  get spec(): WorkloadSpec {
    return this.#spec;
  }

  get name(): string {
    return this.#spec.name;
  }

  /** The newest SVID held, delivered or not. */
  get held(): HeldSvid | undefined {
    return this.#held;
  }

  /** What the files hold now. */
  get delivered(): DeliveredCertificate | undefined {
    return this.#delivered;
  }

  /** Why the last issuance or delivery failed (`cause: message`), until one succeeds. */
  get lastFailure(): string | undefined {
    return this.#lastFailure;
  }

  /** True when the files hold a certificate that is valid now and not revoked. */
  get isReady(): boolean {
    const delivered = this.#delivered;
    return !!delivered && delivered.notAfter.getTime() > this.#caNow() &&
      !this.#ctx.isRevoked(delivered.serialNumber);
  }

  /** Now on the CA's clock, on which certificates' times are set. */
  #caNow(): number {
    return this.#ctx.clock?.now() ?? Date.now();
  }

  /** A moment on the CA's clock, on this node's. */
  #local(caTimeMs: number): number {
    return this.#ctx.clock?.toLocal(caTimeMs) ?? caTimeMs;
  }

  /**
   * Starts from a stored record when it still serves (delivering it if the files do not hold
   * it), else issues. Resolves once the record is restored or refused; an issuance goes on.
   */
  start(record?: WorkloadRecord): Promise<void> {
    return new Promise((resolve) => {
      this.#enqueue(async () => {
        try {
          if (!(record && await this.#restore(record))) this.issueNow("initial");
        } finally {
          resolve();
        }
      });
    });
  }

  /** The workload's definition changed. */
  update(spec: WorkloadSpec): void {
    const before = this.#spec;
    this.#spec = spec;
    const reissue = !before.spiffeId.equals(spec.spiffeId) || before.keyAlgorithm !== spec.keyAlgorithm;
    if (before.directory !== spec.directory) {
      this.#enqueue(async () => {
        await this.#removeFiles(before.directory).catch((err) =>
          this.#ctx.logger.warn("removing files from the old directory failed", {
            workload: this.name,
            directory: before.directory,
            error: err,
          })
        );
        this.#delivered = undefined;
        // The stored record names where the files are, for a restart to clean up after.
        const held = this.#held;
        if (held && !reissue) {
          await this.#ctx.state.saveWorkload({
            name: spec.name,
            directory: spec.directory,
            keyAlgorithm: spec.keyAlgorithm,
            svid: held,
          });
        }
      });
    }
    if (reissue) this.issueNow("changed");
    else this.#enqueue(() => this.#deliver());
  }

  /** The trust bundle changed: the files get it too. */
  trustBundleChanged(): void {
    this.#enqueue(() => this.#deliver());
  }

  /** Re-issues now (revoked, or asked), unless an issuance is already pending. */
  issueNow(reason: string): void {
    if (this.#isStopped || this.#isIssueQueued) return;
    this.#renewTimer?.cancel();
    this.#retryTimer?.cancel();
    this.#isIssueQueued = true;
    this.#enqueue(() => {
      this.#isIssueQueued = false;
      return this.#issue(reason);
    });
  }

  /**
   * A CRL lists `serialNumber`. If it is the SVID held, a new one is issued at once. If it is
   * only the one in the files (a newer SVID is held and its delivery failed), that delivery is
   * retried now: a new certificate for every CRL would change nothing while writes fail.
   */
  revoked(serialNumber: string): void {
    const isHeld = this.#held?.serialNumber === serialNumber;
    if (!isHeld && this.#delivered?.serialNumber !== serialNumber) return;
    this.#ctx.metrics.revocations.inc();
    this.#ctx.logger.warn(
      isHeld ? "certificate revoked; re-issuing" : "delivered certificate revoked; delivering the newer one",
      {
        workload: this.name,
        spiffeId: this.#spec.spiffeId.toString(),
        serialNumber,
      },
    );
    // Readiness counts revocation: the files no longer hold a certificate that serves.
    if (this.#delivered?.serialNumber === serialNumber) this.#ctx.onDelivered(this);
    if (isHeld) this.issueNow("revoked");
    else {
      this.#deliveryTimer?.cancel();
      this.#enqueue(() => this.#deliver());
    }
  }

  /**
   * Stops the schedules, and any wait for the node identity or the CA; waits for a write under
   * way. Files and state stay (the agent is stopping, not the workload).
   */
  async stop(): Promise<void> {
    this.#isStopped = true;
    this.#stopping.abort();
    for (const t of [this.#renewTimer, this.#retryTimer, this.#deliveryTimer, this.#warnTimer]) t?.cancel();
    await this.#queue;
  }

  /**
   * The workload is gone: its files and its stored record are deleted. Nothing is written for
   * it afterwards, whatever was waiting (the node identity, the CA) when it went.
   */
  async remove(): Promise<void> {
    await this.stop();
    await this.#removeFiles(this.#spec.directory);
    await this.#ctx.state.removeWorkload(this.name);
    this.#delivered = undefined;
    this.#held = undefined;
  }

  #removeFiles(directory: string): Promise<void> {
    const root = this.#ctx.deliveryRoot(directory);
    // Outside every delivery root nothing was written, and nothing is touched.
    return root === undefined ? Promise.resolve() : removeDelivery(directory, { root });
  }

  #enqueue(operation: () => Promise<void>): void {
    this.#queue = this.#queue.then(() => (this.#isStopped ? undefined : operation())).catch((err) => {
      this.#ctx.logger.error("workload operation failed", { workload: this.name, error: err });
    });
  }

  /**
   * Serves a stored SVID if it still can; answers whether it did. The files are written again
   * unless they are exactly what a delivery would write now: the same certificate, key and
   * bundle, and the spec's layout, combined file, modes and owner (any of which may have
   * changed while the agent was down).
   */
  async #restore(record: WorkloadRecord): Promise<boolean> {
    if (await this.#reusable(record)) {
      this.#held = record.svid;
      this.#ctx.onSvid(this, record.svid);
      const spec = this.#spec;
      const root = this.#ctx.deliveryRoot(spec.directory);
      const trustBundlePem = this.#ctx.trustBundlePem();
      const files = credentialFiles({ ...record.svid, trustBundlePem }, spec);
      if (root !== undefined && await isDelivered(spec.directory, files, spec.owner, { root })) {
        this.#markDelivered(record.svid);
      } else {
        await this.#deliver();
      }
      this.#ctx.logger.info("certificate restored from the state directory", {
        workload: this.name,
        spiffeId: this.#spec.spiffeId.toString(),
        serialNumber: record.svid.serialNumber,
        notAfter: record.svid.expiresAt.toISOString(),
      });
      this.#scheduleRenewal();
      return true;
    }
    return false;
  }

  /** A stored SVID serves if it is this identity's, unexpired, and the current bundle verifies it. */
  async #reusable(record: WorkloadRecord): Promise<boolean> {
    const svid = record.svid;
    if (!svid.spiffeId.equals(this.#spec.spiffeId) || svid.expiresAt.getTime() <= this.#caNow() + 1000) {
      return false;
    }
    if ((record.keyAlgorithm ?? this.#spec.keyAlgorithm) !== this.#spec.keyAlgorithm) return false;
    try {
      await verifySvid(svid.certificateChainPem, this.#ctx.trustBundle(), { at: new Date(this.#caNow()) });
      return true;
    } catch {
      return false;
    }
  }

  async #issue(reason: string): Promise<void> {
    const spec = this.#spec;
    const signal = this.#stopping.signal;
    let svid: HeldSvid;
    try {
      // The wait for the node identity ends when the workload goes: a removal never waits for
      // a CA that does not answer.
      const credential = await untilAborted(this.#ctx.nodeCredential(), signal);
      // The certificate closest to running out goes first (none held: first of all), so a
      // node's queue after a CA outage renews in order of need, not of the backoff's draw.
      const priority = this.#delivered?.notAfter.getTime() ?? this.#held?.expiresAt.getTime() ?? 0;
      svid = await this.#ctx.issuances.run(
        () =>
          obtainSvid({
            client: this.#ctx.client,
            id: spec.spiffeId,
            credential,
            keyAlgorithm: spec.keyAlgorithm,
            ttlSeconds: spec.ttlSeconds,
            parseBundle: this.#ctx.parseBundle,
            signal,
          }),
        { priority, signal },
      );
    } catch (err) {
      if (this.#isStopped) return;
      this.#issueFailed(reason, err);
      return;
    }
    // Removed (or the agent stopping) while the CA answered: nothing is stored or written.
    if (this.#isStopped) return;
    this.#issueBackoff.reset();
    this.#lastFailure = undefined;
    this.#held = svid;
    this.#ctx.metrics.renewals.inc({ kind: "workload", reason });
    // In-memory consumers (the proxy) hear of it as soon as svid() answers it, not an fsync later:
    // until then a proxy would go on presenting the certificate it replaces, perhaps a revoked one.
    this.#ctx.onSvid(this, svid);
    try {
      // Stored before delivery: after a crash in between, the restart delivers this one.
      await this.#ctx.state.saveWorkload({
        name: spec.name,
        directory: spec.directory,
        keyAlgorithm: spec.keyAlgorithm,
        svid,
      });
    } catch (err) {
      this.#ctx.logger.error("storing the certificate in the state directory failed", {
        workload: spec.name,
        cause: causeOf(err),
        error: err,
      });
    }
    await this.#deliver();
    this.#scheduleRenewal();
  }

  #issueFailed(reason: string, err: unknown): void {
    const cause = causeOf(err);
    this.#ctx.metrics.renewalFailures.inc({ kind: "workload", cause });
    const refused = isRefusal(err);
    this.#lastFailure = `${cause}: ${messageOf(err)}`;
    // A refusal needs an operator (the workload not placed on this node, say): ask at the
    // slowest pace so the fix is picked up, without hammering the CA meanwhile. Except for a
    // workload just added: a pod the agent saw scheduled may reach the CA's view of the node
    // a moment later, and its first certificate should not wait half a minute for that.
    const isJustAdded = !this.#held && Date.now() - this.#addedAt < JUST_ADDED_MS;
    const current = this.#delivered;
    const validUntil = current?.notAfter.getTime() ?? this.#held?.expiresAt.getTime();
    const wait = renewalRetryWait(this.#issueBackoff, {
      retryAfterMs: retryAfterMs(err),
      isRefusal: refused,
      atLeastMs: refused && !isJustAdded ? (this.#ctx.backoff?.maxMs ?? 60_000) / 2 : 0,
      certificateMsLeft: validUntil === undefined ? undefined : validUntil - this.#caNow(),
    });
    const fields = {
      workload: this.name,
      spiffeId: this.#spec.spiffeId.toString(),
      reason,
      cause,
      error: err,
      certificateSecondsLeft: current
        ? Math.round((current.notAfter.getTime() - this.#caNow()) / 1000)
        : null,
      retryInSeconds: Math.round(wait / 1000),
    };
    if (refused) this.#ctx.logger.error("the CA refused the workload's certificate", fields);
    else this.#ctx.logger.warn("obtaining the workload's certificate failed", fields);
    this.#ctx.onIssueFailed?.(this, cause, messageOf(err));
    this.#retryTimer = callAfter(wait, () => this.issueNow(reason));
  }

  async #deliver(): Promise<void> {
    const svid = this.#held;
    if (!svid || this.#isStopped) return;
    this.#deliveryTimer?.cancel();
    const spec = this.#spec;
    const trustBundlePem = this.#ctx.trustBundlePem();
    const files = credentialFiles(
      { certificateChainPem: svid.certificateChainPem, privateKeyPem: svid.privateKeyPem, trustBundlePem },
      spec,
    );
    try {
      const root = this.#ctx.deliveryRoot(spec.directory);
      if (root === undefined) {
        throw new DeliveryRefused(spec.directory, "it is not inside any delivery root");
      }
      await this.#ctx.writes.run(() => writeGeneration(spec.directory, files, spec.owner, { root }));
    } catch (err) {
      const cause = causeOf(err);
      this.#ctx.metrics.deliveryFailures.inc({ cause });
      this.#lastFailure = `${cause}: ${messageOf(err)}`;
      const wait = this.#deliveryBackoff.next();
      this.#ctx.logger.error("delivering the workload's files failed; previous files kept", {
        workload: this.name,
        directory: spec.directory,
        cause,
        error: err,
        certificateSecondsLeft: this.#delivered
          ? Math.round((this.#delivered.notAfter.getTime() - this.#caNow()) / 1000)
          : null,
        retryInSeconds: Math.round(wait / 1000),
      });
      this.#deliveryTimer = callAfter(wait, () => this.#enqueue(() => this.#deliver()));
      return;
    }
    this.#deliveryBackoff.reset();
    this.#lastFailure = undefined;
    this.#ctx.logger.info("delivered", {
      workload: this.name,
      spiffeId: spec.spiffeId.toString(),
      directory: spec.directory,
      serialNumber: svid.serialNumber,
      notAfter: svid.expiresAt.toISOString(),
    });
    this.#markDelivered(svid);
  }

  #markDelivered(svid: HeldSvid): void {
    this.#delivered = {
      serialNumber: svid.serialNumber,
      notBefore: usableFrom(svid),
      notAfter: svid.expiresAt,
    };
    this.#scheduleWarning();
    this.#ctx.onDelivered(this);
  }

  #scheduleRenewal(): void {
    const svid = this.#held;
    if (!svid || this.#isStopped) return;
    this.#renewTimer?.cancel();
    const at = renewalMoment(svid, this.#ctx.renewal, Date.now(), this.#ctx.clock?.offsetMs);
    this.#renewTimer = callAt(at, () => this.issueNow("renewal"));
  }

  /** A warning (and a metric) when the delivered certificate has 20% of its life left, and at expiry. */
  #scheduleWarning(): void {
    const delivered = this.#delivered;
    this.#warnTimer?.cancel();
    if (!delivered || this.#isStopped) return;
    const lifetime = delivered.notAfter.getTime() - delivered.notBefore.getTime();
    const warnAt = delivered.notAfter.getTime() - lifetime * EXPIRY_WARNING_FRACTION;
    this.#warnTimer = callAt(this.#local(warnAt), () => {
      if (this.#delivered !== delivered) return;
      this.#ctx.metrics.expiryWarnings.inc();
      this.#ctx.logger.warn("certificate expires soon and is not yet renewed", {
        workload: this.name,
        spiffeId: this.#spec.spiffeId.toString(),
        serialNumber: delivered.serialNumber,
        notAfter: delivered.notAfter.toISOString(),
        certificateSecondsLeft: Math.round((delivered.notAfter.getTime() - this.#caNow()) / 1000),
      });
      this.#warnTimer = callAt(this.#local(delivered.notAfter.getTime()), () => {
        if (this.#delivered !== delivered) return;
        this.#ctx.logger.error("certificate expired; the workload has no valid certificate", {
          workload: this.name,
          spiffeId: this.#spec.spiffeId.toString(),
          serialNumber: delivered.serialNumber,
          notAfter: delivered.notAfter.toISOString(),
        });
        this.#ctx.onDelivered(this);
      });
    });
  }
}

/** `promise`, or the abort reason once `signal` aborts first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
