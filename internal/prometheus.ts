/**
 * Prometheus metrics in the text exposition format (version 0.0.4): counters, gauges and
 * histograms with labels, and gauges read at scrape time from a callback, so a value such as
 * "seconds until expiry" is computed when asked rather than kept fresh by a timer.
 *
 * The agent's metrics and the CA's are both written with it; the CA adds up the counts of its
 * worker processes first and hands the totals over ({@link Histogram.add}).
 *
 * @example
 * ```ts
 * const registry = new MetricsRegistry();
 * const renewals = registry.counter("meshauth_agent_renewals_total", "Certificates renewed.");
 * renewals.inc({ kind: "workload" });
 * console.log(registry.render());
 * ```
 * @module
 */

/** Label values by label name. */
export type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  return entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** What a {@link MetricsRegistry} holds: a metric that writes itself in the text format. */
export interface Metric {
  /** Appends the metric's `# HELP`, `# TYPE` and sample lines to `lines`. */
  render(lines: string[]): void;
}

/**
 * A value that only goes up, per label set. With `labelNames`, a series is found from its
 * values in that order (cheap enough for a counter bumped on every connection) and written
 * with its labels in that order, whatever order the caller gave them in.
 */
export class Counter implements Metric {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  /** `name` and `help` as Prometheus shows them; `labelNames` fixes the labels and their order. */
  constructor(readonly name: string, readonly help: string, readonly labelNames?: readonly string[]) {}

  #key(labels: Labels): string {
    if (!this.labelNames) return labelText(labels);
    let key = "";
    for (const name of this.labelNames) key += `${labels[name] ?? ""}\u0000`;
    return key;
  }

  /** Adds `amount` (default 1) to the series of `labels`. */
  inc(labels: Labels = {}, amount = 1): void {
    const key = this.#key(labels);
    const series = this.#values.get(key);
    if (series) series.value += amount;
    else this.#values.set(key, { labels: this.#ordered(labels), value: amount });
  }

  #ordered(labels: Labels): Labels {
    if (!this.labelNames) return labels;
    const ordered: Labels = {};
    for (const name of this.labelNames) ordered[name] = labels[name] ?? "";
    return ordered;
  }

  /** The current value of one series (0 if never incremented). */
  value(labels: Labels = {}): number {
    return this.#values.get(this.#key(labels))?.value ?? 0;
  }

  /** The sum over every series whose labels include `match`. */
  sum(match: Labels = {}): number {
    let total = 0;
    for (const { labels, value } of this.#values.values()) {
      if (Object.entries(match).every(([k, v]) => labels[k] === v)) total += value;
    }
    return total;
  }

  /** Appends the counter's lines in the text format to `lines`. */
  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    for (const { labels, value } of this.#values.values()) {
      lines.push(`${this.name}${labelText(labels)} ${formatNumber(value)}`);
    }
  }
}

/** A value read at scrape time: `collect` answers every series. */
export class Gauge implements Metric {
  /** `name` and `help` as Prometheus shows them; `collect` is called at every render. */
  constructor(
    readonly name: string,
    readonly help: string,
    readonly collect: () => Iterable<{ labels?: Labels; value: number }>,
  ) {}

  /** Appends the gauge's lines in the text format to `lines`, from a fresh `collect()`. */
  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`);
    for (const { labels, value } of this.collect()) {
      lines.push(`${this.name}${labelText(labels ?? {})} ${formatNumber(value)}`);
    }
  }
}

/** Observations counted into fixed buckets, per label set. */
export class Histogram implements Metric {
  readonly #series = new Map<string, { labels: Labels; buckets: number[]; sum: number; count: number }>();
  /** `name` and `help` as Prometheus shows them; `bucketBounds` are the buckets' upper bounds, ascending. */
  constructor(readonly name: string, readonly help: string, readonly bucketBounds: readonly number[]) {}

  #seriesOf(labels: Labels) {
    const key = labelText(labels);
    let series = this.#series.get(key);
    if (!series) {
      series = { labels, buckets: new Array<number>(this.bucketBounds.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    return series;
  }

  /** Records one observation of `value`. */
  observe(labels: Labels, value: number): void {
    const series = this.#seriesOf(labels);
    for (let i = 0; i < this.bucketBounds.length; i++) {
      if (value <= this.bucketBounds[i]) series.buckets[i]++;
    }
    series.sum += value;
    series.count++;
  }

  /**
   * Adds observations counted elsewhere (another process): `buckets` holds, for each bound, how
   * many were at or under it (cumulative, as Prometheus has them). The series is shown even
   * when everything is 0.
   */
  add(labels: Labels, counted: { buckets: readonly number[]; sum: number; count: number }): void {
    const series = this.#seriesOf(labels);
    this.bucketBounds.forEach((_, i) => series.buckets[i] += counted.buckets[i] ?? 0);
    series.sum += counted.sum;
    series.count += counted.count;
  }

  /** Appends the histogram's lines in the text format to `lines`: buckets, `+Inf`, sum and count. */
  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const { labels, buckets, sum, count } of this.#series.values()) {
      this.bucketBounds.forEach((le, i) => {
        lines.push(`${this.name}_bucket${labelText({ ...labels, le: String(le) })} ${buckets[i]}`);
      });
      lines.push(
        `${this.name}_bucket${labelText({ ...labels, le: "+Inf" })} ${count}`,
        `${this.name}_sum${labelText(labels)} ${formatNumber(sum)}`,
        `${this.name}_count${labelText(labels)} ${count}`,
      );
    }
  }
}

/** The metrics of one process, rendered together on `GET /metrics`. */
export class MetricsRegistry {
  readonly #metrics: Metric[] = [];

  /** A new counter; `labelNames` fixes its labels and their order (see {@link Counter}). */
  counter(name: string, help: string, labelNames?: readonly string[]): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  /** A new gauge read from `collect` at every scrape. */
  gauge(name: string, help: string, collect: Gauge["collect"]): Gauge {
    return this.#add(new Gauge(name, help, collect));
  }

  /** A new histogram with the given upper bounds. */
  histogram(name: string, help: string, bucketBounds: readonly number[]): Histogram {
    return this.#add(new Histogram(name, help, bucketBounds));
  }

  #add<M extends Metric>(metric: M): M {
    this.#metrics.push(metric);
    return metric;
  }

  /** Every metric in the text exposition format. */
  render(): string {
    const lines: string[] = [];
    for (const metric of this.#metrics) metric.render(lines);
    return `${lines.join("\n")}\n`;
  }
}
