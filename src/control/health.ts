// The health a sidecar reports on its control stream, read from its own metrics registry: the
// same numbers Prometheus scrapes, so the fleet view and the dashboards never disagree.
import type { Registry } from 'prom-client';
import type { BreakerState, CreditState, Health } from './protocol.ts';

interface MetricJson {
  readonly name: string;
  readonly values: readonly { readonly value: number; readonly labels: Readonly<Record<string, string | number>>; readonly metricName?: string }[];
}

/** Local replies that are the sidecar refusing work on purpose, not failing. */
const REFUSALS = new Set(['shed', 'no-credit', 'rate-limited', 'overloaded', 'circuit-open', 'deadline-too-short', 'draining']);

function sum(metrics: readonly MetricJson[], name: string, keep: (labels: Readonly<Record<string, string | number>>) => boolean = () => true, valueName?: string): number {
  let total = 0;
  for (const m of metrics) {
    if (m.name !== name) continue;
    for (const v of m.values) if ((valueName === undefined || v.metricName === valueName) && keep(v.labels)) total += v.value;
  }
  return total;
}

/** Rates over the time between calls; the first call's rates are since start. */
export function healthReader(registry: Registry, state: () => string, now: () => number = () => performance.now()) {
  let last: { atMs: number; requests: number; errors: number; refusals: number } | undefined;
  const startMs = now();
  return async (): Promise<Health> => {
    const metrics = (await registry.getMetricsAsJSON()) as unknown as MetricJson[];
    // Every request the sidecar received, both directions; its tries are the client histogram.
    const name = 'http_server_request_duration_seconds';
    const requests = sum(metrics, name, () => true, `${name}_count`);
    const errors = sum(metrics, name, (l) => Number(l['http_response_status_code']) >= 500 || (l['error_type'] !== undefined && l['error_type'] !== ''), `${name}_count`);
    const refusals = sum(metrics, 'sluice_local_replies_total', (l) => REFUSALS.has(String(l['code'])));
    const atMs = now();
    const base = last ?? { atMs: startMs, requests: 0, errors: 0, refusals: 0 };
    const seconds = Math.max(0.001, (atMs - base.atMs) / 1000);
    last = { atMs, requests, errors, refusals };
    const breakers: BreakerState[] = [];
    for (const m of metrics) {
      if (m.name !== 'sluice_circuit_breaker_state') continue;
      for (const v of m.values) {
        if (v.value === 1) breakers.push({ upstream: String(v.labels['upstream']), route: String(v.labels['route'] ?? ''), state: String(v.labels['state']) });
      }
    }
    const credits = new Map<string, { granted: number; available: number; waiting: number }>();
    const credit = (name: string, field: 'granted' | 'available' | 'waiting'): void => {
      for (const m of metrics) {
        if (m.name !== name) continue;
        for (const v of m.values) {
          const upstream = String(v.labels['upstream']);
          const c = credits.get(upstream) ?? { granted: 0, available: 0, waiting: 0 };
          c[field] += v.value;
          credits.set(upstream, c);
        }
      }
    };
    credit('sluice_credits_granted', 'granted');
    credit('sluice_credits_available', 'available');
    credit('sluice_credit_waiting', 'waiting');
    return {
      requestsPerSecond: (requests - base.requests) / seconds,
      errorsPerSecond: (errors - base.errors) / seconds,
      refusalsPerSecond: (refusals - base.refusals) / seconds,
      breakers,
      credits: [...credits].map(([upstream, c]): CreditState => ({ upstream, ...c })),
      budgetExhaustedTotal: sum(metrics, 'sluice_retries_refused_total', (l) => l['why'] === 'budget'),
      state: state(),
      budgets: metrics
        .filter((m) => m.name === 'sluice_retry_budget_available')
        .flatMap((m) => m.values.map((v) => ({ upstream: String(v.labels['upstream']), available: v.value }))),
    };
  };
}
