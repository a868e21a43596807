/**
 * The CA's clock as this node sees it. Certificates carry the CA's times (notBefore backdated
 * by 30 s, notAfter), and a node whose clock is off misjudges them: behind by more than the
 * backdating, it sees every certificate the CA has just issued as not yet valid (and so do its
 * workloads, verifying peers); ahead, it sees every certificate as older than it is, and a
 * renewal scheduled on its own clock comes early, or, past the renewal margin, at once and
 * again and again. SPIRE and Istio users meet both as opaque TLS failures.
 *
 * Every CA answer carries the CA's `Date` (whole seconds): each gives one measure of the
 * offset, and the median of the last few is the agent's estimate. The agent schedules renewals
 * and judges expiry on the CA's clock ({@link CaClock.now}), so its own margins hold whatever
 * the skew, and it reports a skew past the backdating by name: one `clock skew` warning (code
 * `ERR_CLOCK_SKEW`) when it appears, with the offset and what it breaks on this node, and
 * `clock skew resolved` when it is gone. `meshauth_agent_clock_offset_seconds` shows the
 * offset.
 *
 * @module
 */

import { DEFAULT_BACKDATE_SECONDS } from "../../mod.ts";
import type { Logger } from "../../internal/mod.ts";

/** Offsets under this are the `Date` header's rounding and the request's own time, not skew. */
const NOISE_MS = 2000;
const SAMPLES = 5;

/** The CA's clock, estimated from the `Date` of its answers. */
export class CaClock {
  readonly #samples: number[] = [];
  #offsetMs = 0;
  #reported?: "behind" | "ahead";

  constructor(
    readonly logger: Logger,
    /** The CA's backdating of notBefore, the margin for a node behind it. */
    readonly backdateSeconds = DEFAULT_BACKDATE_SECONDS,
  ) {}

  /** The CA's clock minus this node's, in milliseconds (0 while within the noise). */
  get offsetMs(): number {
    return this.#offsetMs;
  }

  /** Now, on the CA's clock. */
  now(): number {
    return Date.now() + this.#offsetMs;
  }

  /** A moment on the CA's clock as this node's clock shows it. */
  toLocal(caTimeMs: number): number {
    return caTimeMs - this.#offsetMs;
  }

  /** One measure: the CA's clock minus this node's, from one answer. */
  observe(offsetMs: number): void {
    if (!Number.isFinite(offsetMs)) return;
    this.#samples.push(offsetMs);
    if (this.#samples.length > SAMPLES) this.#samples.shift();
    const sorted = [...this.#samples].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    this.#offsetMs = Math.abs(median) < NOISE_MS ? 0 : Math.round(median);
    this.#report();
  }

  #report(): void {
    const offsetSeconds = Math.round(this.#offsetMs / 1000);
    const direction = Math.abs(offsetSeconds) <= this.backdateSeconds
      ? undefined
      : offsetSeconds > 0
      ? "behind"
      : "ahead";
    if (direction === this.#reported) return;
    this.#reported = direction;
    if (!direction) {
      this.logger.info("clock skew resolved", { offsetSeconds });
      return;
    }
    const seconds = Math.abs(offsetSeconds);
    this.logger.warn("clock skew", {
      code: "ERR_CLOCK_SKEW",
      offsetSeconds,
      direction,
      backdateSeconds: this.backdateSeconds,
      detail: direction === "behind"
        ? `this node's clock is ${seconds} s behind the CA's, more than the ${this.backdateSeconds} s the CA ` +
          `backdates certificates: every certificate it issues looks not yet valid here for ${
            seconds - this.backdateSeconds
          } s, so workloads on this node refuse peers' new certificates; the agent renews on the CA's clock; ` +
          "fix this node's time (NTP)"
        : `this node's clock is ${seconds} s ahead of the CA's: every certificate looks ${seconds} s older ` +
          "here, so workloads on this node take peers' certificates for expired that much early, and one " +
          "with less than that left at its renewal already; the agent renews on the CA's clock; fix this " +
          "node's time (NTP)",
    });
  }
}
