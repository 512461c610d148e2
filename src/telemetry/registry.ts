// Metric families are declared by the layer that owns them, once per registry. Several sidecars
// can live in one process (tests, the bench), each with its own registry, so declaration is
// get-or-create on the registry rather than a module-level singleton.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

type Labels<T extends string> = readonly T[];

export function counter<T extends string>(registry: Registry, name: string, help: string, labelNames: Labels<T>): Counter<T> {
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Counter<T>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function gauge<T extends string>(registry: Registry, name: string, help: string, labelNames: Labels<T>): Gauge<T> {
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Gauge<T>;
  return new Gauge({ name, help, labelNames, registers: [registry] });
}

export function histogram<T extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: Labels<T>,
  buckets: number[],
): Histogram<T> {
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Histogram<T>;
  return new Histogram({ name, help, labelNames, buckets, registers: [registry] });
}
