// The caps-and-breaker layer alone over a fake `next`, asserted through its own counters.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Breaker } from '../../../../src/policies/breaker/breaker.ts';
import { breakerLayer, declareBreakerMetrics, newBreaker, UpstreamCaps } from '../../../../src/policies/breaker/layer.ts';
import type { CircuitBreakerPolicy } from '../../../../src/policy/types.ts';
import { SluiceError, toLocalReply } from '../../../../src/stack/errors.ts';
import type { Handler, ProxyRequest, ProxyResponse } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { metricSum, parsePrometheus } from '../../../support/metrics.ts';

const POLICY: CircuitBreakerPolicy = {
  mode: 'enforce',
  windowMs: 10_000,
  minRequests: 4,
  failureRatio: 0.5,
  slowCall: undefined,
  openMs: 5000,
  maxOpenMs: 60_000,
  halfOpenProbes: 1,
  maxRequests: undefined,
  maxPending: undefined,
};

const REQ: ProxyRequest = { method: 'GET', path: '/', authority: 'u', headers: [], body: null, bodyLength: undefined };
const reply = (statusCode: number): ProxyResponse => ({ statusCode, headers: {}, body: null });

let registry: Registry;
let breakers: Breaker[];
const silent = { warn() {}, info() {} };

function build(over: Partial<CircuitBreakerPolicy>, next: Handler, slots = 0) {
  const policy = { ...POLICY, ...over };
  const metrics = declareBreakerMetrics(registry);
  const clock = { now: () => Date.now() };
  const breaker = newBreaker(policy, { upstream: 'u', route: '', clock, metrics, log: silent, stateGauge: true });
  breakers.push(breaker);
  const caps = new UpstreamCaps('u', metrics);
  const layer = breakerLayer({ upstream: 'u', policy, breaker, caps, connectionSlots: () => slots, clock, metrics });
  if (layer === undefined) throw new Error('layer is off');
  return { handler: layer(next), breaker, caps };
}

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum(parsePrometheus(await registry.metrics()), name, labels);
}

/** A `next` whose tries stay pending until released, to hold slots in flight. */
function pendingNext() {
  const waiting: (() => void)[] = [];
  const next: Handler = () => new Promise((resolve) => waiting.push(() => resolve(reply(200))));
  return { next, releaseAll: () => waiting.splice(0).forEach((r) => r()) };
}

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  registry = new Registry();
  breakers = [];
});

afterEach(() => {
  for (const b of breakers) b.close();
  vi.useRealTimers();
});

describe('circuit breaker layer', () => {
  it('is absent when off', () => {
    const metrics = declareBreakerMetrics(registry);
    const policy = { ...POLICY, mode: 'off' as const };
    const breaker = newBreaker(policy, { upstream: 'u', route: '', clock: { now: () => 0 }, metrics, log: silent, stateGauge: true });
    breakers.push(breaker);
    const caps = new UpstreamCaps('u', metrics);
    expect(breakerLayer({ upstream: 'u', policy, breaker, caps, connectionSlots: () => 0, clock: { now: () => 0 }, metrics })).toBeUndefined();
  });

  it('opens on 5xx answers and then refuses at once with 503 circuit-open and the time left', async () => {
    let calls = 0;
    const { handler } = build({}, async () => {
      calls++;
      return reply(503);
    });
    for (let i = 0; i < 4; i++) expect((await handler(REQ, testContext())).statusCode).toBe(503);
    await vi.advanceTimersByTimeAsync(2000);
    const err = await handler(REQ, testContext()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    const local = toLocalReply(err);
    expect(local.statusCode).toBe(503);
    expect(local.headers['sluice-error']).toBe('circuit-open');
    expect(local.headers['retry-after']).toBe('3');
    expect(calls).toBe(4);
    expect(await metric('sluice_circuit_breaker_refusals_total', { reason: 'open', mode: 'enforce' })).toBe(1);
    expect(await metric('sluice_circuit_breaker_state', { state: 'open' })).toBe(1);
    expect(await metric('sluice_circuit_breaker_state', { state: 'closed' })).toBe(0);
    expect(await metric('sluice_circuit_breaker_transitions_total', { to: 'open' })).toBe(1);
  });

  it('does not count our own refusals or a client leaving as upstream failures', async () => {
    const errors = [new SluiceError('overloaded'), new SluiceError('client-closed'), new SluiceError('deadline-exceeded')];
    let i = 0;
    const { handler, breaker } = build({ minRequests: 1 }, () => Promise.reject(errors[i++ % errors.length]));
    for (let k = 0; k < 9; k++) await handler(REQ, testContext()).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(0);
    expect(breaker.state).toBe('closed');
  });

  it('counts connect failures, resets and per-try timeouts', async () => {
    const { handler, breaker } = build({ minRequests: 3 }, () => Promise.reject(new SluiceError('per-try-timeout')));
    for (let k = 0; k < 3; k++) await handler(REQ, testContext()).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(0);
    expect(breaker.state).toBe('open');
  });

  it('does not count probes of ejected endpoints: ejection already knows that endpoint is sick', async () => {
    const { handler, breaker } = build({ minRequests: 3 }, async (_req, c) => {
      c.probed = true;
      return reply(503);
    });
    for (let k = 0; k < 5; k++) await handler(REQ, testContext());
    await vi.advanceTimersByTimeAsync(0);
    expect(breaker.state).toBe('closed');
  });

  it('caps tries in flight: the next is refused with 503 overloaded, and the slot comes back', async () => {
    const { next, releaseAll } = pendingNext();
    const { handler, caps } = build({ maxRequests: 2 }, next);
    const held = [handler(REQ, testContext()), handler(REQ, testContext())];
    expect(caps.inFlight).toBe(2);
    const err = await handler(REQ, testContext()).catch((e: unknown) => e);
    expect(toLocalReply(err).headers['sluice-error']).toBe('overloaded');
    expect(await metric('sluice_circuit_breaker_refusals_total', { reason: 'max_requests' })).toBe(1);
    expect(await metric('sluice_upstream_tries_in_flight', { upstream: 'u' })).toBe(2);
    releaseAll();
    await Promise.all(held);
    expect(caps.inFlight).toBe(0);
    expect((await Promise.race([handler(REQ, testContext()), Promise.resolve('pending')])) === 'pending').toBe(true);
    releaseAll();
  });

  it('caps tries waiting for a connection: in flight beyond the connection slots', async () => {
    const { next, releaseAll } = pendingNext();
    const { handler } = build({ maxPending: 1 }, next, 2);
    const held = [0, 1, 2].map(() => handler(REQ, testContext()));
    const err = await handler(REQ, testContext()).catch((e: unknown) => e);
    expect(toLocalReply(err).headers['sluice-error']).toBe('overloaded');
    expect(await metric('sluice_circuit_breaker_refusals_total', { reason: 'max_pending' })).toBe(1);
    releaseAll();
    await Promise.all(held);
  });

  it('shadow mode lets every try through, counts and annotates what it would have refused', async () => {
    let calls = 0;
    const { next, releaseAll } = pendingNext();
    const failing: Handler = async () => {
      calls++;
      return reply(500);
    };
    const { handler: shadowed } = build({ mode: 'shadow', maxRequests: 1 }, (req, ctx) => (calls < 4 ? failing(req, ctx) : next(req, ctx)));
    for (let i = 0; i < 4; i++) await shadowed(REQ, testContext());
    await vi.advanceTimersByTimeAsync(0);
    const ctx = testContext();
    const held = shadowed(REQ, ctx); // breaker open: would refuse
    const ctx2 = testContext();
    const held2 = shadowed(REQ, ctx2); // open, and one already in flight
    expect(ctx.shadowRefusals).toEqual(['circuit-open']);
    expect(ctx2.shadowRefusals).toEqual(['overloaded', 'circuit-open']);
    releaseAll();
    expect((await held).statusCode).toBe(200);
    expect((await held2).statusCode).toBe(200);
    expect(await metric('sluice_circuit_breaker_refusals_total', { reason: 'open', mode: 'shadow' })).toBe(2);
    expect(await metric('sluice_circuit_breaker_refusals_total', { reason: 'max_requests', mode: 'shadow' })).toBe(1);
    expect(await metric('sluice_circuit_breaker_refusals_total', { mode: 'enforce' })).toBe(0);
  });
});
