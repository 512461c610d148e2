// The hedge layer alone, over a fake `next` whose tries the test answers by hand. Timers are
// vitest's fake ones and the clock reads the faked Date, so a delay passes only when the test
// advances time: no sleeps, no timing luck. Decisions are checked through the layer's counters.
import { Readable } from 'node:stream';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RetryBudget } from '../../../../src/policies/retry/budget.ts';
import { HEDGE_LOST } from '../../../../src/policies/retry/hedge-race.ts';
import { declareHedgeMetrics, hedgeLayer, LatencyTracker, type HedgeBuild } from '../../../../src/policies/retry/hedge.ts';
import type { HedgePolicy, RetryBudgetPolicy } from '../../../../src/policy/types.ts';
import { upstreamFailure } from '../../../../src/proxy/upstream-client.ts';
import { classifyError } from '../../../../src/stack/classify.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import {
  cancel,
  noteShadowRefusal,
  type Clock,
  type Handler,
  type ProxyRequest,
  type ProxyResponse,
  type RequestContext,
  type ResponseBody,
} from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';

const clock: Clock = { now: () => Date.now() };

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

const FIXED: HedgePolicy = { delayMs: 50, minDelayMs: 5, maxHedges: 1 };
const ROOMY_BUDGET: RetryBudgetPolicy = { ratio: 1, windowMs: 10_000, minRetriesPerSecond: 10, maxConcurrentRetries: 100 };

function request(over: Partial<ProxyRequest> = {}): ProxyRequest {
  return { method: 'GET', path: '/', authority: 'u', headers: ['accept', '*/*'], body: null, bodyLength: undefined, ...over };
}

/** A streamed body that only notes whether it was thrown away. */
function body(): ResponseBody & { discarded: boolean } {
  return {
    discarded: false,
    pipeTo() {},
    discard() {
      this.discarded = true;
    },
  };
}

const answer = (statusCode: number, b: ProxyResponse['body'] = null): ProxyResponse => ({ statusCode, headers: {}, body: b });

interface Call {
  readonly req: ProxyRequest;
  readonly ctx: RequestContext;
  /** ctx.lastEndpoint as the try was given it: the endpoint its pick must avoid. */
  readonly avoid: number;
  /** The reason its onCancel heard, as an upstream exchange would. */
  cancelledWith: Error | undefined;
  answer(res: ProxyResponse): void;
  fail(err: Error): void;
}

/** The tries below the layer: each registers on its context's slot, as the upstream client does. */
function fakeUpstream(endpointOf: (n: number) => number = (n) => n) {
  const calls: Call[] = [];
  const next: Handler = (req, ctx) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      const n = calls.length;
      const avoid = ctx.lastEndpoint;
      ctx.lastEndpoint = endpointOf(n);
      const onCancel = (reason: Error): void => {
        call.cancelledWith = reason;
        reject(reason);
      };
      const release = (): void => {
        if (ctx.onCancel === onCancel) ctx.onCancel = undefined;
      };
      const call: Call = {
        req,
        ctx,
        avoid,
        cancelledWith: undefined,
        answer: (res) => {
          release();
          resolve(res);
        },
        fail: (err) => {
          release();
          reject(err);
        },
      };
      ctx.onCancel = onCancel;
      calls.push(call);
    });
  return { next, calls };
}

function build(over: Partial<HedgeBuild> = {}) {
  const registry = new Registry();
  const metrics = declareHedgeMetrics(registry);
  const latency = over.latency ?? new LatencyTracker({ capacity: 100, minSamples: 5 });
  const b: HedgeBuild = { direction: 'outbound', upstream: 'u', policy: FIXED, budget: undefined, latency, clock, metrics, ...over };
  const layer = hedgeLayer(b);
  const hedges = async (outcome: string): Promise<number> => {
    const values = (await registry.getSingleMetric('sluice_hedges_total')?.get())?.values ?? [];
    return values.filter((v) => v.labels['outcome'] === outcome).reduce((a, v) => a + v.value, 0);
  };
  return { layer, hedges, latency, registry };
}

/** Lets promise callbacks run without moving time. */
const flush = () => vi.advanceTimersByTimeAsync(0);

describe('hedge layer', () => {
  it('sends a hedge to another endpoint when the first try is slow; the hedge wins, the first is cancelled', async () => {
    const budget = new RetryBudget(ROOMY_BUDGET, clock);
    const { layer, hedges, latency } = build({ budget });
    const up = fakeUpstream((n) => [3, 1][n]!);
    const parent = testContext();
    const pending = layer(up.next)(request(), parent);

    await vi.advanceTimersByTimeAsync(49);
    expect(up.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(up.calls).toHaveLength(2);
    const [first, hedge] = up.calls as [Call, Call];
    // Its own context: own cancellation slot, a later attempt that avoids the first's endpoint.
    expect(hedge.ctx).not.toBe(parent);
    expect(hedge.ctx).not.toBe(first.ctx);
    expect(hedge.ctx.attempt).toBe(2);
    expect(first.avoid).toBe(-1);
    expect(hedge.avoid).toBe(3);
    expect(hedge.req.headers).not.toBe(first.req.headers);
    expect(hedge.req.headers).toEqual(first.req.headers);
    expect(budget.concurrent).toBe(1);
    expect(await hedges('sent')).toBe(1);

    await vi.advanceTimersByTimeAsync(10);
    hedge.answer(answer(200));
    const res = await pending;
    expect(res.statusCode).toBe(200);
    expect(first.cancelledWith).toBe(HEDGE_LOST);
    expect(budget.concurrent).toBe(0);
    expect(await hedges('won')).toBe(1);
    expect(await hedges('lost')).toBe(0);
    // The parent now tells of the try that answered.
    expect(parent.lastEndpoint).toBe(1);
    expect(parent.onCancel).toBeUndefined();
    // The hedge's 10 ms, and the first try's 60 ms as a lower bound (it ran longer than the winner).
    expect(latency.count).toBe(2);
  });

  it('sends no hedge when the first try answers within the delay', async () => {
    const { layer, hedges, latency } = build();
    const up = fakeUpstream();
    const parent = testContext();
    const pending = layer(up.next)(request(), parent);
    await vi.advanceTimersByTimeAsync(20);
    up.calls[0]!.answer(answer(200));
    expect((await pending).statusCode).toBe(200);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(up.calls).toHaveLength(1);
    expect(await hedges('sent')).toBe(0);
    expect(latency.count).toBe(1);
    expect(parent.lastEndpoint).toBe(0);
  });

  it('sends no hedge when the budget is spent, and counts the refusal', async () => {
    const budget = new RetryBudget({ ratio: 0, windowMs: 10_000, minRetriesPerSecond: 0, maxConcurrentRetries: 100 }, clock);
    const { layer, hedges } = build({ budget });
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(200);
    expect(up.calls).toHaveLength(1);
    expect(await hedges('budget_refused')).toBe(1);
    expect(await hedges('sent')).toBe(0);
    up.calls[0]!.answer(answer(200));
    expect((await pending).statusCode).toBe(200);
  });

  it('never hedges a request that is not safe to send twice', async () => {
    const { layer, hedges } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request({ method: 'POST', body: Buffer.from('x') }), testContext());
    await vi.advanceTimersByTimeAsync(200);
    expect(up.calls).toHaveLength(1);
    up.calls[0]!.answer(answer(201));
    expect((await pending).statusCode).toBe(201);
    expect(await hedges('sent')).toBe(0);
  });

  it('hedges a POST that carries an Idempotency-Key', async () => {
    const { layer } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request({ method: 'POST', body: Buffer.from('x') }), testContext({ idempotencyKey: 'k1' }));
    await vi.advanceTimersByTimeAsync(50);
    expect(up.calls).toHaveLength(2);
    expect(up.calls[1]!.req.body).toEqual(Buffer.from('x'));
    up.calls[1]!.answer(answer(201));
    expect((await pending).statusCode).toBe(201);
  });

  it('never hedges a streamed body: it can be read once', async () => {
    const { layer } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request({ method: 'PUT', body: Readable.from(['x']) }), testContext());
    await vi.advanceTimersByTimeAsync(200);
    expect(up.calls).toHaveLength(1);
    up.calls[0]!.answer(answer(200));
    expect((await pending).statusCode).toBe(200);
  });

  it('passes the parent cancellation to every live try and ends the attempt with it', async () => {
    const budget = new RetryBudget(ROOMY_BUDGET, clock);
    const { layer, hedges } = build({ budget, policy: { ...FIXED, maxHedges: 2 } });
    const up = fakeUpstream();
    const parent = testContext();
    const pending = layer(up.next)(request(), parent);
    const outcome = pending.then(
      () => undefined,
      (err: unknown) => err,
    );
    await vi.advanceTimersByTimeAsync(100);
    expect(up.calls).toHaveLength(3);
    expect(budget.concurrent).toBe(2);
    const reason = new SluiceError('deadline-exceeded');
    cancel(parent, reason);
    expect(await outcome).toBe(reason);
    for (const c of up.calls) expect(c.cancelledWith).toBe(reason);
    await flush();
    expect(budget.concurrent).toBe(0);
    expect(await hedges('lost')).toBe(2);
    // No hedge after the end.
    await vi.advanceTimersByTimeAsync(500);
    expect(up.calls).toHaveLength(3);
  });

  it('keeps the winner cancellable while its body streams', async () => {
    const { layer } = build();
    const up = fakeUpstream();
    const parent = testContext();
    const pending = layer(up.next)(request(), parent);
    await vi.advanceTimersByTimeAsync(50);
    const streamed = body();
    // The winner's exchange keeps its slot while the body streams.
    const winnerCtx = up.calls[1]!.ctx;
    up.calls[1]!.answer(answer(200, streamed));
    let heard: Error | undefined;
    winnerCtx.onCancel = (r) => (heard = r);
    await pending;
    const gone = new SluiceError('client-closed');
    cancel(parent, gone);
    expect(heard).toBe(gone);
  });

  it('waits in p95 mode until the upstream has enough samples, then hedges at the p95', async () => {
    const latency = new LatencyTracker({ capacity: 100, minSamples: 5 });
    const { layer, hedges } = build({ latency, policy: { delayMs: 'p95', minDelayMs: 5, maxHedges: 1 } });
    const up = fakeUpstream();
    const handler = layer(up.next);

    // Warm-up: unhedged, each timed into the tracker.
    for (let i = 0; i < 5; i++) {
      const pending = handler(request(), testContext());
      await vi.advanceTimersByTimeAsync(i === 4 ? 80 : 20);
      expect(up.calls).toHaveLength(i + 1);
      up.calls[i]!.answer(answer(200));
      await pending;
    }
    expect(await hedges('sent')).toBe(0);
    expect(latency.p95()).toBe(80);

    const pending = handler(request(), testContext());
    await vi.advanceTimersByTimeAsync(79);
    expect(up.calls).toHaveLength(6);
    await vi.advanceTimersByTimeAsync(1);
    expect(up.calls).toHaveLength(7);
    up.calls[6]!.answer(answer(200));
    await pending;
    expect(await hedges('won')).toBe(1);
  });

  it('waits at least minDelayMs in p95 mode', async () => {
    const latency = new LatencyTracker({ capacity: 100, minSamples: 1 });
    latency.record(2);
    const { layer } = build({ latency, policy: { delayMs: 'p95', minDelayMs: 30, maxHedges: 1 } });
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(29);
    expect(up.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(up.calls).toHaveLength(2);
    up.calls[0]!.answer(answer(200));
    await pending;
  });

  it('sends no hedge without time left before the deadline', async () => {
    const latency = new LatencyTracker({ capacity: 100, minSamples: 1 });
    latency.record(40); // a typical try takes 40 ms
    const { layer, hedges } = build({ latency });
    const up = fakeUpstream();
    // At the hedge (50 ms) 30 ms are left: less than a typical try.
    const pending = layer(up.next)(request(), testContext({ deadlineMs: 80 }));
    await vi.advanceTimersByTimeAsync(50);
    expect(up.calls).toHaveLength(1);
    expect(await hedges('no_time')).toBe(1);
    up.calls[0]!.answer(answer(200));
    await pending;
  });

  it('sends up to maxHedges, one per delay, each avoiding the endpoint of the try before', async () => {
    const { layer, hedges } = build({ policy: { ...FIXED, maxHedges: 3 } });
    const up = fakeUpstream((n) => 10 + n);
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(150);
    expect(up.calls).toHaveLength(4);
    expect(up.calls.map((c) => c.ctx.attempt)).toEqual([1, 2, 2, 2]);
    await vi.advanceTimersByTimeAsync(500);
    expect(up.calls).toHaveLength(4);
    expect(up.calls.map((c) => c.avoid)).toEqual([-1, 10, 11, 12]);
    up.calls[0]!.answer(answer(200));
    await pending;
    expect(await hedges('sent')).toBe(3);
    expect(await hedges('lost')).toBe(3);
    expect(up.calls.slice(1).every((c) => c.cancelledWith === HEDGE_LOST)).toBe(true);
  });

  it('a 5xx does not end the race while another try is out', async () => {
    const { layer, hedges } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(50);
    const failedBody = body();
    up.calls[1]!.answer(answer(503, failedBody));
    await flush();
    up.calls[0]!.answer(answer(200));
    expect((await pending).statusCode).toBe(200);
    expect(failedBody.discarded).toBe(true);
    expect(await hedges('lost')).toBe(1);
  });

  it('a status the retry policy retries does not win either', async () => {
    const { layer } = build({ retryOnStatuses: [429] });
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(50);
    up.calls[0]!.answer(answer(429));
    await flush();
    up.calls[1]!.answer(answer(200));
    expect((await pending).statusCode).toBe(200);
  });

  it('a failure with no other try out ends the attempt at once: retrying is the retry layer’s job', async () => {
    const { layer, hedges } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(10);
    up.calls[0]!.answer(answer(503));
    expect((await pending).statusCode).toBe(503);
    expect(vi.getTimerCount()).toBe(0);
    expect(await hedges('sent')).toBe(0);
  });

  it('when every try fails, returns the first failed response and discards the others', async () => {
    const { layer } = build();
    const up = fakeUpstream((n) => [4, 7][n]!);
    const parent = testContext();
    const pending = layer(up.next)(request(), parent);
    await vi.advanceTimersByTimeAsync(50);
    up.calls[0]!.fail(new SluiceError('per-try-timeout'));
    await flush();
    const b503 = body();
    up.calls[1]!.answer(answer(503, b503));
    const res = await pending;
    expect(res.statusCode).toBe(503);
    expect(b503.discarded).toBe(false);
    expect(parent.lastEndpoint).toBe(7);
  });

  it('when every try fails with an error, fails with the first try’s', async () => {
    const { layer } = build();
    const up = fakeUpstream();
    const pending = layer(up.next)(request(), testContext());
    const outcome = pending.then(
      () => undefined,
      (err: unknown) => err,
    );
    await vi.advanceTimersByTimeAsync(50);
    const second = new SluiceError('upstream-reset');
    up.calls[1]!.fail(second);
    await flush();
    const first = new SluiceError('per-try-timeout');
    up.calls[0]!.fail(first);
    expect(await outcome).toBe(first);
  });

  it('discards the body of a loser that answers after the race is decided', async () => {
    const budget = new RetryBudget(ROOMY_BUDGET, clock);
    const { layer } = build({ budget });
    // A try that does not hear cancellation (already past its slot): it answers anyway.
    const calls: ((r: ProxyResponse) => void)[] = [];
    const next: Handler = () => new Promise((resolve) => calls.push(resolve));
    const pending = layer(next)(request(), testContext());
    await vi.advanceTimersByTimeAsync(50);
    calls[0]!(answer(200));
    await pending;
    expect(budget.concurrent).toBe(1);
    const late = body();
    calls[1]!(answer(200, late));
    await flush();
    expect(late.discarded).toBe(true);
    expect(budget.concurrent).toBe(0);
  });

  it('keeps the shadow refusals of every try', async () => {
    const { layer } = build();
    const next: Handler = (_req, ctx) => {
      noteShadowRefusal(ctx, ctx.attempt === 1 ? 'circuit-open' : 'overloaded');
      return ctx.attempt === 1 ? new Promise(() => {}) : Promise.resolve(answer(200));
    };
    const parent = testContext();
    const pending = layer(next)(request(), parent);
    await vi.advanceTimersByTimeAsync(50);
    await pending;
    expect(parent.shadowRefusals).toEqual(['circuit-open', 'overloaded']);
  });

  it('records requests in the budget only when told to (no retry layer outside)', async () => {
    const budget = new RetryBudget(ROOMY_BUDGET, clock);
    const on = build({ budget, recordRequests: true });
    const off = build({ budget });
    const next: Handler = () => Promise.resolve(answer(200));
    await on.layer(next)(request(), testContext());
    await off.layer(next)(request(), testContext());
    expect(budget.requestsInWindow()).toBe(1);
  });

  it('ends losers with an abort: no failure for the breaker or ejection, however the client maps it', () => {
    for (const err of [HEDGE_LOST, upstreamFailure(HEDGE_LOST)]) {
      expect(classifyError(err)).toMatchObject({ failure: false, kind: 'aborted' });
    }
  });

  it('refuses a bad policy with the value in the message', () => {
    expect(() => build({ policy: { ...FIXED, maxHedges: 0 } })).toThrow('hedge maxHedges must be an integer from 1 to 3, got 0');
  });

  it('reports the delay it hedges at, once the p95 is known', async () => {
    const latency = new LatencyTracker({ capacity: 100, minSamples: 1 });
    const { registry } = build({ latency, policy: { delayMs: 'p95', minDelayMs: 5, maxHedges: 1 } });
    const read = async () => (await registry.getSingleMetric('sluice_hedge_delay_seconds')?.get())?.values ?? [];
    expect(await read()).toEqual([]);
    latency.record(120);
    expect((await read()).map((v) => [v.labels['upstream'], v.value])).toEqual([['u', 0.12]]);
  });
});
