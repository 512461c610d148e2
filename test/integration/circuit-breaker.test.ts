// The circuit breaker over real sockets: an upstream that fails everything opens it, the open
// breaker answers locally without touching the upstream, probes close it once the upstream
// recovers; shadow mode lets everything through and says what it would have refused; a route
// can own a breaker apart from its upstream's.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { startScriptedUpstream, type Step } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type TestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();
const OK: Step = { status: 200, body: 'ok' };
const DOWN: Step = { status: 503, body: 'down' };

// Retries off: every request is one try, so counts are exact. Ejection off: one endpoint.
const BASE = { retry: 'off', outlierDetection: { mode: 'off' } };

async function sidecarFor(step: () => Step, circuitBreaker: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const up = track(await startScriptedUpstream(() => step()));
  const sc = track(
    await startTestSidecar({ outbound: { upstreams: [upstream('svc', up.endpoint, { ...BASE, circuitBreaker, ...extra })] } }),
  );
  return { up, sc };
}

const get = (sc: TestSidecar, path = '/x') => send({ port: sc.outboundPort, host: 'svc', path });

/** Polls the metrics until the breaker is in `state` (the transition is the sidecar's timer). */
async function until(sc: TestSidecar, state: string, route = ''): Promise<void> {
  for (;;) {
    const m = await sc.metrics();
    if (metricSum(m, 'sluice_circuit_breaker_state', { upstream: 'svc', route, state }) === 1) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('circuit breaker', () => {
  it('opens on failures, answers 503 circuit-open with Retry-After without calling the upstream', async () => {
    const { up, sc } = await sidecarFor(() => DOWN, { minRequests: 5, openMs: 30_000 });
    for (let i = 0; i < 5; i++) expect((await get(sc)).text).toBe('down');
    await until(sc, 'open');
    const refused = await get(sc);
    expect(refused.status).toBe(503);
    expect(refused.headers['sluice-error']).toBe('circuit-open');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(29);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(30);
    expect(up.count).toBe(5);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_circuit_breaker_refusals_total', { upstream: 'svc', reason: 'open', mode: 'enforce' })).toBe(1);
    expect(metricSum(m, 'sluice_local_replies_total', { code: 'circuit-open' })).toBe(1);
  });

  it('half-opens after the open period; probes that succeed close it again', async () => {
    let healthy = false;
    const { up, sc } = await sidecarFor(() => (healthy ? OK : DOWN), { minRequests: 5, openMs: 100, halfOpenProbes: 2 });
    for (let i = 0; i < 5; i++) await get(sc);
    await until(sc, 'open');
    healthy = true;
    await until(sc, 'half_open');
    expect((await get(sc)).status).toBe(200);
    expect((await get(sc)).status).toBe(200);
    await until(sc, 'closed');
    expect(up.count).toBe(7);
    const m = await sc.metrics();
    for (const to of ['open', 'half_open', 'closed']) {
      expect(metricSum(m, 'sluice_circuit_breaker_transitions_total', { upstream: 'svc', to })).toBe(1);
    }
  });

  it('a failed probe re-opens it for twice as long', async () => {
    // The re-open lasts 2 × 500 ms: ample time for the request that must find it open.
    const { sc } = await sidecarFor(() => DOWN, { minRequests: 5, openMs: 500, maxOpenMs: 60_000 });
    for (let i = 0; i < 5; i++) await get(sc);
    await until(sc, 'half_open');
    expect((await get(sc)).text).toBe('down');
    const refused = await get(sc);
    expect(refused.headers['sluice-error']).toBe('circuit-open');
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_circuit_breaker_transitions_total', { upstream: 'svc', to: 'open' })).toBe(2);
  });

  it('shadow mode lets every request through, counts and annotates what it would have refused', async () => {
    const { up, sc } = await sidecarFor(() => DOWN, { mode: 'shadow', minRequests: 5, openMs: 30_000 });
    for (let i = 0; i < 5; i++) await get(sc);
    await until(sc, 'open');
    const passed = await get(sc);
    expect(passed.text).toBe('down');
    expect(passed.headers['sluice-shadow']).toBe('circuit-open');
    expect(up.count).toBe(6);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_circuit_breaker_refusals_total', { upstream: 'svc', reason: 'open', mode: 'shadow' })).toBe(1);
    expect(metricSum(m, 'sluice_circuit_breaker_refusals_total', { mode: 'enforce' })).toBe(0);
  });

  it('a route with a breaker of its own opens alone', async () => {
    const { sc } = await sidecarFor(
      () => DOWN,
      { minRequests: 50 },
      { routes: [{ name: 'bulk', match: { pathPrefix: '/bulk' }, circuitBreaker: { minRequests: 3, openMs: 30_000 } }] },
    );
    for (let i = 0; i < 3; i++) await get(sc, '/bulk/1');
    await until(sc, 'open', 'bulk');
    expect((await get(sc, '/bulk/2')).headers['sluice-error']).toBe('circuit-open');
    expect((await get(sc, '/other')).text).toBe('down');
  });

  it('caps tries in flight per upstream: beyond maxRequests, 503 overloaded at once', async () => {
    const { up, sc } = await sidecarFor(() => 'hang', { maxRequests: 2 }, { timeouts: { perTryMs: 'off', requestMs: 10_000 } });
    const held = [get(sc), get(sc)];
    await up.waitForHead(2);
    const refused = await get(sc);
    expect(refused.status).toBe(503);
    expect(refused.headers['sluice-error']).toBe('overloaded');
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_circuit_breaker_refusals_total', { upstream: 'svc', reason: 'max_requests' })).toBe(1);
    expect(metricSum(m, 'sluice_upstream_tries_in_flight', { upstream: 'svc' })).toBe(2);
    await sc.close();
    await Promise.allSettled(held);
  });
});
