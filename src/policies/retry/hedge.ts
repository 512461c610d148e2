// Hedged requests. STUB: no hedging yet; being built.
import type { Registry } from 'prom-client';
import type { HedgePolicy } from '../../policy/types.ts';
import type { Clock, Direction, Layer } from '../../stack/types.ts';
import type { RetryBudget } from './budget.ts';

export interface HedgeMetrics {
  readonly registry: Registry;
}

export function declareHedgeMetrics(registry: Registry): HedgeMetrics {
  return { registry };
}

/** An upstream's observed latency to response headers (build lifetime, shared by its routes). */
export class LatencyTracker {
  /** A try got its response headers after `ms`. */
  record(_ms: number): void {}
  /** The p95 latency now, or undefined before enough samples. */
  p95(): number | undefined {
    return undefined;
  }
}

export interface HedgeBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly policy: HedgePolicy;
  readonly budget: RetryBudget | undefined;
  readonly latency: LatencyTracker;
  readonly clock: Clock;
  readonly metrics: HedgeMetrics;
}

export function hedgeLayer(_b: HedgeBuild): Layer {
  return (next) => next;
}
