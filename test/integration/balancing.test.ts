// Three endpoints, one goes bad: with retries on, clients see no errors, the bad endpoint is
// ejected after a few failures and comes back once it recovers. Shadow mode ejects nothing and
// counts what it would have done.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { STALL_MIN_TRIES } from '../../src/policies/outlier/detector.ts';
import { metricSum } from '../support/metrics.ts';
import { startScriptedUpstream, type Step } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type TestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();
const OK: Step = { status: 200, body: 'ok' };

/** Sends `count` requests, `concurrency` at a time; returns the statuses. */
async function load(sc: TestSidecar, count: number, concurrency: number): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const r = await send({ port: sc.outboundPort, host: 'svc', path: '/work' });
      statuses.push(r.status);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return statuses;
}

async function threeEndpoints(badStep: () => Step, outlierDetection: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const good1 = track(await startScriptedUpstream({ queue: [], otherwise: OK }));
  const good2 = track(await startScriptedUpstream({ queue: [], otherwise: OK }));
  const bad = track(await startScriptedUpstream(() => badStep()));
  const sc = track(
    await startTestSidecar({
      outbound: {
        upstreams: [upstream('svc', [good1.endpoint, bad.endpoint, good2.endpoint], { outlierDetection, ...extra })],
      },
    }),
  );
  return { good1, good2, bad, sc };
}

describe('outlier ejection', () => {
  it('ejects an endpoint that fails 5 times in a row; clients see no errors', async () => {
    const { bad, sc } = await threeEndpoints(() => ({ status: 503, body: 'down' }), { baseEjectionMs: 60_000, maxEjectionMs: 60_000 });
    const statuses = await load(sc, 200, 4);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Five failures eject it; requests already on their way when it happened may add a few.
    expect(bad.requests.length).toBeGreaterThanOrEqual(5);
    expect(bad.requests.length).toBeLessThanOrEqual(5 + 4);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_outlier_ejections_total', { upstream: 'svc', reason: 'consecutive_failures', mode: 'enforce' })).toBe(1);
    expect(metricSum(m, 'sluice_endpoints_ejected', { upstream: 'svc' })).toBe(1);
  });

  it('brings a recovered endpoint back after its ejection time', async () => {
    let healthy = false;
    const { bad, sc } = await threeEndpoints(() => (healthy ? OK : { status: 503, body: 'down' }), { baseEjectionMs: 200 });
    expect((await load(sc, 60, 2)).every((s) => s === 200)).toBe(true);
    const whileEjected = bad.requests.length;
    healthy = true;
    // Keep traffic flowing until the endpoint gets requests again (bounded by the test timeout).
    while (bad.requests.length === whileEjected) await load(sc, 10, 2);
    expect(bad.requests.at(-1)).toBeDefined();
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_endpoints_ejected', { upstream: 'svc' })).toBe(0);
  });

  it('probes an ejected endpoint: back as soon as it answers, long before its ejection ends; no client errors', async () => {
    let healthy = false;
    const { bad, sc } = await threeEndpoints(() => (healthy ? OK : { status: 503, body: 'down' }), {
      baseEjectionMs: 60_000,
      maxEjectionMs: 60_000,
      probeIntervalMs: 20,
    });
    // Traffic until probes went out while it was down (five failures eject it; every request
    // after those reached it as a probe): counted, not timed, so a slow machine only takes longer.
    const statuses = await load(sc, 20, 2);
    while (bad.requests.length <= 7) statuses.push(...(await load(sc, 10, 2)));
    const probedWhileDown = bad.requests.length;
    healthy = true;
    while ((await sc.metrics()).some((m) => m.name === 'sluice_endpoints_ejected' && m.value > 0)) statuses.push(...(await load(sc, 10, 2)));
    // Failed probes were retried elsewhere: the clients saw nothing of them.
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(probedWhileDown).toBeGreaterThan(5);
    const before = bad.requests.length;
    await load(sc, 30, 2);
    expect(bad.requests.length).toBeGreaterThan(before);
  });

  it.each([
    ['500', (): Step => ({ status: 500, body: 'boom' })],
    ['reset', (): Step => 'reset'],
  ])('probes of an endpoint failing with %s are retried elsewhere: clients never see its errors', async (_kind, step) => {
    const { sc } = await threeEndpoints(step, { consecutiveFailures: 3, baseEjectionMs: 60_000, maxEjectionMs: 60_000, probeIntervalMs: 20 }, {
      retry: { retryOnStatuses: [502, 503, 504] },
    });
    const ejected = async () => metricSum(await sc.metrics(), 'sluice_endpoints_ejected', { upstream: 'svc' });
    // Before the ejection a 500 is the upstream's answer to give; after it, probes must not leak.
    while ((await ejected()) === 0) await send({ port: sc.outboundPort, host: 'svc', path: '/' });
    const probesBefore = metricSum(await sc.metrics(), 'sluice_retries_total', { upstream: 'svc' });
    const statuses = await load(sc, 150, 1);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Probes did go out (and were retried) while the clients saw only 200s.
    expect(metricSum(await sc.metrics(), 'sluice_retries_total', { upstream: 'svc' })).toBeGreaterThan(probesBefore);
  });

  it('a probe of a still-hung endpoint is given up after the stall allowance and retried elsewhere', async () => {
    const perTryMs = 3000;
    const { bad, sc } = await threeEndpoints(() => 'hang', { baseEjectionMs: 60_000, maxEjectionMs: 60_000, probeIntervalMs: 20 }, {
      timeouts: { perTryMs, requestMs: 20_000 },
    });
    const ejected = async () =>
      metricSum(await sc.metrics(), 'sluice_outlier_ejections_total', { upstream: 'svc', reason: 'stalled', mode: 'enforce' });
    // Requests whose first try went to it before the ejection wait out their per-try timeout.
    const early: Promise<unknown>[] = [];
    while ((await ejected()) === 0) early.push(send({ port: sc.outboundPort, host: 'svc', path: '/early' }));
    const probesBefore = bad.requests.length;
    const slowest: number[] = [];
    for (let i = 0; i < 60; i++) {
      const r = await send({ port: sc.outboundPort, host: 'svc', path: '/work' });
      expect(r.status).toBe(200);
      slowest.push(r.headMs);
    }
    // Probes went out, and none held its request for a per-try timeout.
    expect(bad.requests.length).toBeGreaterThan(probesBefore);
    expect(Math.max(...slowest)).toBeLessThan(perTryMs);
    await Promise.allSettled(early);
  });

  it('ejects a hanging endpoint as stalled, before its tries time out; clients see no errors', async () => {
    // Round-robin keeps sending to it until ejection does its job (p2c would steer away sooner).
    const { bad, sc } = await threeEndpoints(() => 'hang', { baseEjectionMs: 60_000, maxEjectionMs: 60_000 }, {
      loadBalancer: { algorithm: 'round-robin' },
      timeouts: { perTryMs: 150, requestMs: 5000 },
    });
    const statuses = await load(sc, 120, 4);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Three unanswered tries and the latency check's allowance (~50 ms here) eject it; each of
    // the 4 workers may have a try on its way, and on a loaded machine the next round too. Far
    // below the 40 round-robin would send it, and below the 5 per-try timeouts (150 ms each)
    // consecutive failures would need: the stall check did the ejecting.
    expect(bad.requests.length).toBeGreaterThanOrEqual(STALL_MIN_TRIES);
    expect(bad.requests.length).toBeLessThanOrEqual(STALL_MIN_TRIES + 2 * 4);
    expect(metricSum(await sc.metrics(), 'sluice_outlier_ejections_total', { upstream: 'svc', reason: 'consecutive_failures' })).toBe(0);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_outlier_ejections_total', { upstream: 'svc', reason: 'stalled', mode: 'enforce' })).toBe(1);
  });

  it('with the default policy (p2c + ejection) a hanging endpoint costs clients nothing', async () => {
    // Timed-out tries teach the balancer no latency (that would starve the endpoint long after
    // it recovers). p2c steers around its outstanding tries, and once a few went unanswered
    // the stall check ejects it, long before five per-try timeouts could.
    const { bad, sc } = await threeEndpoints(() => 'hang', { baseEjectionMs: 60_000, maxEjectionMs: 60_000 }, {
      timeouts: { perTryMs: 1000, requestMs: 5000 },
    });
    const ejected = async (reason: string) =>
      metricSum(await sc.metrics(), 'sluice_outlier_ejections_total', { upstream: 'svc', reason, mode: 'enforce' });
    const statuses: number[] = [];
    // Traffic until the stall is seen (bounded by the test timeout).
    while ((await ejected('stalled')) === 0) statuses.push(...(await load(sc, 20, 4)));
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(bad.requests.length).toBeLessThanOrEqual(STALL_MIN_TRIES + 4);
    expect(await ejected('consecutive_failures')).toBe(0);
  });

  it('shadow mode ejects nothing and counts what it would have ejected', async () => {
    // The retry budget is off so that every failure on the bad endpoint is retried elsewhere:
    // what this shows is that shadow mode takes nothing out of rotation.
    // Short would-be ejections, so would-be returns happen during the test too.
    const { bad, sc } = await threeEndpoints(
      () => ({ status: 503, body: 'down' }),
      { mode: 'shadow', baseEjectionMs: 20, maxEjectionMs: 40 },
      { retryBudget: 'off' },
    );
    const statuses = await load(sc, 150, 3);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Still in rotation: it keeps getting first tries well past the 5 that would eject it.
    expect(bad.requests.length).toBeGreaterThan(15);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_outlier_ejections_total', { upstream: 'svc', mode: 'shadow' })).toBeGreaterThanOrEqual(1);
    // Nothing was really ejected, so nothing really returned: the gauge never went below zero.
    expect(metricSum(m, 'sluice_outlier_ejections_total', { upstream: 'svc', mode: 'enforce' })).toBe(0);
    expect(metricSum(m, 'sluice_endpoints_ejected', { upstream: 'svc' })).toBe(0);
  });
});

describe('load balancing', () => {
  it('round-robin spreads evenly over healthy endpoints', async () => {
    const { good1, good2, bad, sc } = await threeEndpoints(() => OK, { mode: 'off' }, { loadBalancer: { algorithm: 'round-robin' } });
    await load(sc, 90, 1);
    expect([good1.requests.length, bad.requests.length, good2.requests.length]).toEqual([30, 30, 30]);
  });

  it('p2c-ewma sends less to a slow endpoint', async () => {
    const { good1, good2, bad, sc } = await threeEndpoints(() => ({ delayMs: 40, then: OK }), { mode: 'off' });
    await load(sc, 150, 3);
    expect(good1.requests.length + good2.requests.length + bad.requests.length).toBe(150);
    expect(bad.requests.length).toBeLessThan(Math.min(good1.requests.length, good2.requests.length));
  });
});
