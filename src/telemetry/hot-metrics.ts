// Metrics touched on every request. prom-client's child metrics re-validate and re-hash all
// label values on each observe()/inc() (a string built per call); measured at about twice the
// per-request allocation of a bare proxy. Here a child is bound once, at build time, and
// recording is plain arithmetic on numbers it owns. prom-client still owns the registry and the
// exposition format: these classes implement the metric contract its Registry reads at scrape.
import type { Registry } from 'prom-client';

type LabelValues<T extends string> = Readonly<Record<T, string>>;

interface MetricValue {
  readonly labels: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

interface MetricData {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly values: MetricValue[];
  readonly aggregator: 'sum';
}

/** The counter's bound child: one number. */
export class CounterChild {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

/** The histogram's bound child: cumulative buckets are built at scrape, not per observation. */
export class HistogramChild {
  readonly #upperBounds: readonly number[];
  /** counts[i]: observations in (bound[i-1], bound[i]]; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(upperBounds: readonly number[]) {
    this.#upperBounds = upperBounds;
    this.counts = new Float64Array(upperBounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.#upperBounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count++;
  }
}

abstract class HotMetric<T extends string, C> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly T[];
  protected readonly children = new Map<string, { labels: LabelValues<T>; child: C }>();

  constructor(name: string, help: string, labelNames: readonly T[]) {
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  protected abstract create(): C;

  /** Binds a child once (build time); the same labels always give the same child. */
  labels(values: LabelValues<T>): C {
    const key = this.labelNames.map((n) => values[n]).join('\u0000');
    let entry = this.children.get(key);
    if (entry === undefined) {
      const labels = Object.fromEntries(this.labelNames.map((n) => [n, values[n]])) as LabelValues<T>;
      entry = { labels, child: this.create() };
      this.children.set(key, entry);
    }
    return entry.child;
  }

  reset(): void {
    this.children.clear();
  }
}

export class HotCounter<T extends string> extends HotMetric<T, CounterChild> {
  protected create(): CounterChild {
    return new CounterChild();
  }

  async get(): Promise<MetricData> {
    const values = [...this.children.values()].map(({ labels, child }) => ({ labels: { ...labels }, value: child.value }));
    return { name: this.name, help: this.help, type: 'counter', values, aggregator: 'sum' };
  }
}

export class HotHistogram<T extends string> extends HotMetric<T, HistogramChild> {
  readonly #upperBounds: readonly number[];

  constructor(name: string, help: string, labelNames: readonly T[], upperBounds: readonly number[]) {
    super(name, help, labelNames);
    this.#upperBounds = [...upperBounds].sort((a, b) => a - b);
  }

  protected create(): HistogramChild {
    return new HistogramChild(this.#upperBounds);
  }

  async get(): Promise<MetricData> {
    const values: MetricValue[] = [];
    for (const { labels, child } of this.children.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.#upperBounds.length; i++) {
        cumulative += child.counts[i] as number;
        const le = i < this.#upperBounds.length ? (this.#upperBounds[i] as number) : '+Inf';
        values.push({ labels: { le, ...labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...labels }, value: child.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: child.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}

/** Get-or-create on the registry, as ./registry.ts does for prom-client's own classes. */
export function hotCounter<T extends string>(registry: Registry, name: string, help: string, labelNames: readonly T[]): HotCounter<T> {
  const existing = registry.getSingleMetric(name) as unknown;
  if (existing instanceof HotCounter) return existing as HotCounter<T>;
  const metric = new HotCounter(name, help, labelNames);
  registry.registerMetric(metric as never);
  return metric;
}

export function hotHistogram<T extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly T[],
  upperBounds: readonly number[],
): HotHistogram<T> {
  const existing = registry.getSingleMetric(name) as unknown;
  if (existing instanceof HotHistogram) return existing as HotHistogram<T>;
  const metric = new HotHistogram(name, help, labelNames, upperBounds);
  registry.registerMetric(metric as never);
  return metric;
}
