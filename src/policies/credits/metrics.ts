// Credit metrics, both sides. Balances and ledgers are read when Prometheus scrapes (nothing is
// counted per request for the gauges); refusals, waits and fetches are counted as they happen.
import type { Counter, Gauge, Registry } from 'prom-client';
import { counter, gauge } from '../../telemetry/registry.ts';
import type { CreditGrants } from './grant-layer.ts';
import type { CreditPool } from './pool.ts';

export interface CreditMetrics {
  readonly refusals: Counter<'upstream' | 'reason'>;
  readonly waits: Counter<'upstream'>;
  readonly fetches: Counter<'upstream' | 'result'>;
  readonly livePools: Set<CreditPool>;
  readonly liveGrants: Set<CreditGrants>;
}

type Collectable = { collect?: () => void };

/** A gauge whose value per label set is summed over live objects at scrape time. */
function scraped<T>(g: Gauge<string>, live: Set<T>, read: (x: T) => [Record<string, string>, number]): void {
  (g as unknown as Collectable).collect = () => {
    g.reset();
    for (const x of live) {
      const [labels, v] = read(x);
      g.labels(labels).inc(v);
    }
  };
}

export function declareCreditMetrics(registry: Registry): CreditMetrics {
  const livePools = new Set<CreditPool>();
  const liveGrants = new Set<CreditGrants>();
  const perUpstream = (name: string, help: string, read: (p: CreditPool) => number): void => {
    scraped(gauge(registry, name, help, ['upstream']), livePools, (p) => [{ upstream: p.upstream }, read(p)]);
  };
  perUpstream('sluice_credits_granted', 'Outbound: credits the upstream\'s endpoints granted this sidecar (valid windows, summed).', (p) => p.granted());
  perUpstream('sluice_credits_in_flight', 'Outbound: tries in flight on spent credits.', (p) => p.inFlight());
  perUpstream(
    'sluice_credits_available',
    'Outbound: credits free to spend now (endpoints that grant none are not counted).',
    (p) => Math.max(0, Math.min(p.granted() - p.inFlight() - p.reserved, p.available())),
  );
  perUpstream('sluice_credit_waiting', 'Outbound: requests waiting for a credit now (the bounded queue).', (p) => p.waiting);

  const sidecar = (name: string, help: string, read: (g: CreditGrants) => number): void => {
    scraped(gauge(registry, name, help, []), liveGrants, (g) => [{}, read(g)]);
  };
  sidecar('sluice_credit_grant_capacity', 'Inbound: the admission limit shared out as credits.', (g) => g.refresh().capacity);
  sidecar('sluice_credit_grant_committed', 'Inbound: credits producers hold (a shrink counts until acknowledged or lapsed).', (g) => g.ledger.committedTotal());
  sidecar('sluice_credit_grant_producers', 'Inbound: producer sidecars holding a lease.', (g) => g.ledger.size);
  sidecar('sluice_credit_grant_uncredited_in_flight', 'Inbound: requests in flight from producers without credits (plain admission).', (g) => g.ledger.uncreditedInFlight);
  sidecar('sluice_credit_grant_leases_expired', 'Inbound: producer leases that lapsed since start (their credits came back).', (g) => g.ledger.expired);
  sidecar('sluice_credit_grant_over_window', 'Inbound: requests since start that arrived beyond their producer\'s window (races, or a producer ignoring grants).', (g) => g.ledger.overGrant);

  return {
    refusals: counter(
      registry,
      'sluice_credit_refusals_total',
      'Outbound: requests refused for want of a credit (503 no-credit), by reason: queue_full, expected_wait (none would come back within maxWaitMs: refused at once), wait_timeout, deadline.',
      ['upstream', 'reason'],
    ),
    waits: counter(registry, 'sluice_credit_waits_total', 'Outbound: requests that found no free credit and waited in the queue.', ['upstream']),
    fetches: counter(
      registry,
      'sluice_credit_fetches_total',
      'Outbound: grant fetches by result: granted, uncredited (the endpoint grants none), failed (unreachable).',
      ['upstream', 'result'],
    ),
    livePools,
    liveGrants,
  };
}
