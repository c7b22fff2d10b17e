/** Counters, gauges and histograms with Prometheus text exposition (format 0.0.4); combining isolates. */

export type Labels = Record<string, string>;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const parts = Object.keys(labels).sort().map((k) =>
    `${k}="${labels[k].replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`
  );
  return parts.length ? `{${parts.join(",")}}` : "";
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/**
 * How one metric of several isolates (GATEWAY_WORKERS) combines into the process's value:
 * counters and connection counts add up; the others say which isolate's value stands.
 */
export type Aggregation = "sum" | "min" | "max";

/** One metric's values, plain data that crosses between isolates with postMessage. */
export interface MetricSnapshot {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  readonly aggregation: Aggregation;
  /** [rendered label set, value] pairs (a histogram's keys start with _bucket, _sum, _count). */
  readonly values: readonly (readonly [string, number])[];
}

export abstract class Metric {
  protected readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    readonly aggregation: Aggregation,
    /** Reads the unlabelled value from elsewhere (e.g. the OS) instead of keeping it here. */
    private readonly collect?: () => number,
  ) {}

  /**
   * The sum over every series whose labels include `labels` (all series when none are given):
   * `get({ reason: "x" })` counts reason x on every route.
   */
  get(labels?: Labels): number {
    if (this.collect && !labels) return this.collect();
    const exact = this.values.get(labelKey(labels));
    if (exact !== undefined) return exact;
    const parts = labelKey(labels).slice(1, -1).split(",").filter((p) => p !== "");
    let sum = 0;
    for (const [key, value] of this.values) {
      const have = key.slice(1, -1).split(",");
      if (parts.every((p) => have.includes(p))) sum += value;
    }
    return sum;
  }

  snapshot(): MetricSnapshot {
    // A collected total stands alone; beside labelled series it would be counted twice.
    if (this.collect && (this.values.size === 0 || this.values.has(""))) {
      this.values.set("", this.collect());
    }
    const { name, help, type, aggregation } = this;
    return { name, help, type, aggregation, values: [...this.values] };
  }
}

export class Counter extends Metric {
  constructor(
    name: string,
    help: string,
    initialLabels: Labels[] = [{}],
    aggregation: Aggregation = "sum",
    collect?: () => number,
  ) {
    super(name, help, "counter", aggregation, collect);
    for (const labels of initialLabels) this.values.set(labelKey(labels), 0);
  }
  inc(labels?: Labels, by = 1): void {
    const key = labelKey(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
}

/** A constant 1 whose labels carry facts, Prometheus' `*_info` idiom (e.g. the version). */
export class Info extends Metric {
  constructor(name: string, help: string, labels: Labels) {
    super(name, help, "gauge", "max");
    this.values.set(labelKey(labels), 1);
  }
}

export class Gauge extends Metric {
  constructor(
    name: string,
    help: string,
    aggregation: Aggregation,
    collect?: () => number,
    initialLabels: Labels[] = [{}],
  ) {
    super(name, help, "gauge", aggregation, collect);
    for (const labels of initialLabels) this.values.set(labelKey(labels), 0);
  }
  set(value: number, labels?: Labels): void {
    this.values.set(labelKey(labels), value);
  }
}

/** Seconds-scale buckets: a relay delay is milliseconds when all is well, seconds when not. */
const DELAY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A Prometheus histogram: cumulative `_bucket{le}` counts, `_sum` and `_count` per label set. */
export class Histogram extends Metric {
  constructor(
    name: string,
    help: string,
    initialLabels: Labels[],
    aggregation: Aggregation,
    readonly buckets: readonly number[] = DELAY_BUCKETS,
  ) {
    super(name, help, "histogram", aggregation);
    for (const labels of initialLabels) this.#series(labels);
  }

  observe(value: number, labels: Labels = {}): void {
    const keys = this.#series(labels);
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) this.#add(keys.buckets[i], 1);
    }
    this.#add(keys.inf, 1);
    this.#add(keys.sum, value);
    this.#add(keys.count, 1);
  }

  /** Observations so far with these labels. */
  count(labels: Labels = {}): number {
    return this.values.get(`_count${labelKey(labels)}`) ?? 0;
  }

  readonly #keys = new Map<
    string,
    { buckets: string[]; inf: string; sum: string; count: string }
  >();
  #series(labels: Labels) {
    const id = labelKey(labels);
    let keys = this.#keys.get(id);
    if (keys === undefined) {
      const withLe = (le: string) => `_bucket${labelKey({ ...labels, le })}`;
      keys = {
        buckets: this.buckets.map((b) => withLe(String(b))),
        inf: withLe("+Inf"),
        sum: `_sum${id}`,
        count: `_count${id}`,
      };
      for (const key of [...keys.buckets, keys.inf, keys.sum, keys.count]) this.values.set(key, 0);
      this.#keys.set(id, keys);
    }
    return keys;
  }

  #add(key: string, by: number): void {
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
}

/**
 * Prometheus text (format 0.0.4) for the metrics of one or more isolates, combined metric by
 * metric and label set by label set according to each metric's aggregation.
 */
export function renderMetrics(isolates: readonly (readonly MetricSnapshot[])[]): string {
  const merged = new Map<string, { first: MetricSnapshot; values: Map<string, number> }>();
  for (const snapshots of isolates) {
    for (const metric of snapshots) {
      let entry = merged.get(metric.name);
      if (!entry) merged.set(metric.name, entry = { first: metric, values: new Map() });
      for (const [key, value] of metric.values) {
        const seen = entry.values.get(key);
        entry.values.set(
          key,
          seen === undefined ? value : combine(metric.aggregation, seen, value),
        );
      }
    }
  }
  const blocks = [];
  for (const { first, values } of merged.values()) {
    const lines = [`# HELP ${first.name} ${first.help}`, `# TYPE ${first.name} ${first.type}`];
    for (const [key, value] of values) lines.push(`${first.name}${key} ${formatValue(value)}`);
    blocks.push(lines.join("\n"));
  }
  return blocks.join("\n") + "\n";
}

function combine(aggregation: Aggregation, a: number, b: number): number {
  switch (aggregation) {
    case "sum":
      return a + b;
    case "min":
      return Math.min(a, b);
    case "max":
      return Math.max(a, b);
  }
}
