/**
 * The CA's Prometheus metrics, written in the text exposition format (version 0.0.4):
 * issuances, denials by reason, revocations, an issuance latency histogram and the expiry of
 * each CA certificate.
 *
 * @example
 * ```ts
 * import { CaMetrics } from "meshauth/ca-server";
 * const metrics = new CaMetrics();
 * metrics.issued("join-token", 0.0012);
 * console.log(metrics.render());
 * ```
 * @module
 */

const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

/** Counters and the histogram the server updates, rendered on `GET /metrics`. */
export class CaMetrics {
  readonly #issued = new Map<string, number>();
  readonly #denied = new Map<string, number>();
  #revoked = 0;
  #requests = new Map<string, number>();
  readonly #bucketCounts = new Array<number>(LATENCY_BUCKETS_SECONDS.length).fill(0);
  #latencySum = 0;
  #latencyCount = 0;
  #caExpiry: { id: string; notAfter: Date }[] = [];

  /** One certificate issued to a caller authenticated by `method`, taking `seconds`. */
  issued(method: string, seconds: number): void {
    this.#issued.set(method, (this.#issued.get(method) ?? 0) + 1);
    for (let i = 0; i < LATENCY_BUCKETS_SECONDS.length; i++) {
      if (seconds <= LATENCY_BUCKETS_SECONDS[i]) this.#bucketCounts[i]++;
    }
    this.#latencySum += seconds;
    this.#latencyCount++;
  }

  /** One request denied, by problem code. */
  denied(code: string): void {
    this.#denied.set(code, (this.#denied.get(code) ?? 0) + 1);
  }

  /** `count` certificates revoked. */
  revoked(count: number): void {
    this.#revoked += count;
  }

  /** One HTTP response with `status`. */
  request(status: number): void {
    const key = String(status);
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** The CA certificates whose expiry is reported. */
  setCaCertificates(certificates: { id: string; notAfter: Date }[]): void {
    this.#caExpiry = certificates;
  }

  /** The metrics in Prometheus text format. */
  render(): string {
    const lines: string[] = [];
    const counter = (name: string, help: string, label: string, values: Map<string, number>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [k, v] of values) lines.push(`${name}{${label}="${escapeLabel(k)}"} ${v}`);
    };
    counter("meshauth_ca_certificates_issued_total", "Certificates issued.", "method", this.#issued);
    counter("meshauth_ca_denials_total", "Requests denied, by reason.", "reason", this.#denied);
    counter("meshauth_ca_http_responses_total", "HTTP responses, by status.", "status", this.#requests);
    lines.push(
      "# HELP meshauth_ca_revocations_total Certificates revoked.",
      "# TYPE meshauth_ca_revocations_total counter",
      `meshauth_ca_revocations_total ${this.#revoked}`,
      "# HELP meshauth_ca_issuance_duration_seconds Time to authenticate, sign and record one certificate.",
      "# TYPE meshauth_ca_issuance_duration_seconds histogram",
    );
    LATENCY_BUCKETS_SECONDS.forEach((le, i) => {
      lines.push(`meshauth_ca_issuance_duration_seconds_bucket{le="${le}"} ${this.#bucketCounts[i]}`);
    });
    lines.push(
      `meshauth_ca_issuance_duration_seconds_bucket{le="+Inf"} ${this.#latencyCount}`,
      `meshauth_ca_issuance_duration_seconds_sum ${this.#latencySum}`,
      `meshauth_ca_issuance_duration_seconds_count ${this.#latencyCount}`,
      "# HELP meshauth_ca_certificate_expiry_timestamp_seconds When each CA certificate in the bundle expires.",
      "# TYPE meshauth_ca_certificate_expiry_timestamp_seconds gauge",
    );
    for (const { id, notAfter } of this.#caExpiry) {
      lines.push(
        `meshauth_ca_certificate_expiry_timestamp_seconds{authority="${escapeLabel(id)}"} ${
          Math.floor(notAfter.getTime() / 1000)
        }`,
      );
    }
    return `${lines.join("\n")}\n`;
  }
}
