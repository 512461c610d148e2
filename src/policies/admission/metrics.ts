// Admission's metric families, declared once per registry. The gauges are read from the live
// admission controls when Prometheus scrapes, so nothing is set per request. There is one
// control per sidecar; should a registry ever hold several, in-flight, queue depth and limit
// add up and min RTT is the lowest known.
import type { Counter, Gauge, Registry } from 'prom-client';
import { counter, gauge } from '../../telemetry/registry.ts';

/** What the gauges read at scrape time. */
export interface AdmissionGauges {
  limit(): number;
  inFlight(): number;
  queueDepth(): number;
  /** undefined: not known (static limit, or nothing measured yet). */
  minRttMs(): number | undefined;
}

export interface AdmissionMetrics {
  readonly shed: Counter<'priority' | 'reason' | 'mode'>;
  readonly limitChanges: Counter<'direction'>;
  readonly probes: Counter<never>;
  /** The controls the gauges read; a control joins when built and leaves on close(). */
  readonly live: Set<AdmissionGauges>;
}

/** One live set per registry, so declaring twice does not hide the first declarer's controls. */
const LIVE = new WeakMap<Registry, Set<AdmissionGauges>>();

function scraped(g: Gauge<never>, read: (live: Set<AdmissionGauges>) => number, live: Set<AdmissionGauges>): void {
  // prom-client calls collect() on the gauge before each scrape.
  (g as unknown as { collect?: () => void }).collect = () => g.set(read(live));
}

function sum(live: Set<AdmissionGauges>, f: (c: AdmissionGauges) => number): number {
  let total = 0;
  for (const c of live) total += f(c);
  return total;
}

export function declareAdmissionMetrics(registry: Registry): AdmissionMetrics {
  let live = LIVE.get(registry);
  if (live === undefined) {
    live = new Set();
    LIVE.set(registry, live);
  }
  scraped(
    gauge(registry, 'sluice_admission_limit', 'Requests the app is given at once now (the adaptive limit, lowered during a min RTT probe).', []),
    (l) => sum(l, (c) => c.limit()),
    live,
  );
  scraped(
    gauge(registry, 'sluice_admission_in_flight', 'Requests admitted to the app whose response headers have not come yet.', []),
    (l) => sum(l, (c) => c.inFlight()),
    live,
  );
  scraped(
    gauge(registry, 'sluice_admission_queue_depth', 'Requests waiting for the app to have room (critical and default).', []),
    (l) => sum(l, (c) => c.queueDepth()),
    live,
  );
  scraped(
    gauge(registry, 'sluice_admission_min_rtt_seconds', 'The no-load latency the adaptive limit is judged against; 0 when not known.', []),
    (l) => {
      let min = Infinity;
      for (const c of l) min = Math.min(min, c.minRttMs() ?? Infinity);
      return min === Infinity ? 0 : min / 1000;
    },
    live,
  );
  return {
    shed: counter(
      registry,
      'sluice_admission_shed_total',
      'Requests admission refused (mode="enforce") or would have (mode="shadow"), by priority and reason: limit (the app is at its limit and the request may not wait), queue_full, wait_timeout, sheddable_share, deadline (less time left than the app takes now).',
      ['priority', 'reason', 'mode'],
    ),
    limitChanges: counter(registry, 'sluice_admission_limit_changes_total', 'Moves of the learned adaptive limit, by direction (up, down).', [
      'direction',
    ]),
    probes: counter(registry, 'sluice_admission_probes_total', 'Min RTT probes started (the limit lowered for one window to re-measure the no-load latency).', []),
    live,
  };
}

