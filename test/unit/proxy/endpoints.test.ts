// The ejected gauge across a replacement (policy update or DNS change): the retired set gives its
// share back once and moves the gauge no more, though tries that started on it still end there;
// the set that adopts its ejections counts them itself.
import { Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import { describe, expect, it } from 'vitest';
import type { Endpoint, OutlierDetectionPolicy } from '../../../src/policy/types.ts';
import { declareEndpointMetrics, EndpointSet } from '../../../src/proxy/endpoints.ts';
import { silentLogger } from '../../../src/telemetry/log.ts';
import { FakeClock } from '../../support/fake-clock.ts';
import { metricSum, parsePrometheus } from '../../support/metrics.ts';

const OUTLIER: OutlierDetectionPolicy = {
  mode: 'enforce',
  consecutiveFailures: 1,
  successRate: undefined,
  latency: undefined,
  baseEjectionMs: 1000,
  maxEjectionMs: 1000,
  maxEjectionPercent: 0.5,
  probeIntervalMs: undefined,
};

const eps = (...ports: number[]): Endpoint[] => ports.map((port) => ({ host: '127.0.0.1', port }));

function setup() {
  const registry = new Registry();
  const metrics = declareEndpointMetrics(registry);
  const clock = new FakeClock();
  const make = (endpoints: Endpoint[], previous?: EndpointSet) =>
    new EndpointSet({
      upstream: 'u',
      endpoints,
      dispatchers: endpoints.map(() => ({}) as Dispatcher),
      h2Dispatchers: endpoints.map(() => ({}) as Dispatcher),
      loadBalancer: { algorithm: 'round-robin', decayMs: 10_000, defaultRttMs: 1 },
      outlierDetection: OUTLIER,
      clock,
      random: () => 0,
      metrics,
      log: silentLogger,
      ...(previous === undefined ? {} : { previous }),
    });
  const gauge = async () => metricSum(parsePrometheus(await registry.metrics()), 'sluice_endpoints_ejected', { upstream: 'u' });
  return { clock, make, gauge };
}

/** One failed try on endpoint i (started now). */
function fail(set: EndpointSet, i: number, clock: FakeClock): void {
  set.start(i);
  set.settled(i, clock.now(), 503, undefined);
}

describe('EndpointSet ejected gauge across a replacement', () => {
  it('moves to the new set: no double count, never negative, back to 0 when the ejection ends', async () => {
    const { clock, make, gauge } = setup();
    const old = make(eps(1, 2, 3));
    fail(old, 0, clock);
    expect(await gauge()).toBe(1);
    old.retire();
    const next = make(eps(1, 2, 4), old);
    expect(await gauge()).toBe(1);
    clock.advance(1000);
    old.pick(-1); // a retry of a request that started on the old set
    next.pick(-1);
    expect(await gauge()).toBe(0);
  });

  it('a try that ends on the retired set after the swap moves nothing', async () => {
    const { clock, make, gauge } = setup();
    const old = make(eps(1, 2, 3));
    old.start(1);
    old.retire();
    make(eps(1, 2, 3, 4), old);
    old.settled(1, clock.now(), 503, undefined); // would eject on the old set
    expect(await gauge()).toBe(0);
  });

  it('an ejection that ended before the swap, not yet picked past, is given back too', async () => {
    const { clock, make, gauge } = setup();
    const old = make(eps(1, 2, 3));
    fail(old, 0, clock);
    clock.advance(1000);
    old.retire();
    expect(await gauge()).toBe(0);
  });
});
