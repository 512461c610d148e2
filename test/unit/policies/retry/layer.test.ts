// The retry layer alone, over a fake `next`: each decision is checked through the layer's own
// counters. random = 0 makes every back-off 0 ms, so no test waits on a timer.
import { Readable } from 'node:stream';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RetryBudget } from '../../../../src/policies/retry/budget.ts';
import { declareRetryMetrics, retryLayer } from '../../../../src/policies/retry/layer.ts';
import { ReplayAllowance } from '../../../../src/policies/retry/replay-body.ts';
import type { RetryPolicy } from '../../../../src/policy/types.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import type { Handler, ProxyRequest, ProxyResponse } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const POLICY: RetryPolicy = {
  maxAttempts: 3,
  retryOn: ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'],
  retryOnStatuses: [502, 503, 504],
  retryOnGrpcStatuses: ['UNAVAILABLE'],
  backoff: { baseMs: 25, capMs: 1000 },
  retryAfterMaxMs: 5000,
  bufferLimitBytes: 16,
  retryNonIdempotent: false,
};

const ctx = testContext;

function request(over: Partial<ProxyRequest> = {}): ProxyRequest {
  return { method: 'GET', path: '/', authority: 'u', headers: [], body: null, bodyLength: undefined, ...over };
}

const answer = (statusCode: number, headers: Record<string, string> = {}): ProxyResponse => ({ statusCode, headers, body: null });

/** A fake upstream that answers from a script and records what each try received. */
function scripted(steps: (ProxyResponse | Error)[]) {
  const seen: ProxyRequest[] = [];
  const next: Handler = async (req) => {
    seen.push(req);
    const step = steps[Math.min(seen.length - 1, steps.length - 1)] as ProxyResponse | Error;
    if (step instanceof Error) throw step;
    return step;
  };
  return { next, seen };
}

function build(over: { policy?: Partial<RetryPolicy>; budget?: RetryBudget; allowance?: ReplayAllowance; clock?: FakeClock } = {}) {
  const registry = new Registry();
  const metrics = declareRetryMetrics(registry);
  const clock = over.clock ?? new FakeClock();
  const layer = retryLayer({
    direction: 'outbound',
    upstream: 'u',
    policy: { ...POLICY, ...over.policy },
    budget: over.budget,
    allowance: over.allowance ?? new ReplayAllowance(1 << 20),
    clock,
    random: () => 0,
    metrics,
  });
  const count = async (name: string, labels: Record<string, string>): Promise<number> => {
    const m = (await registry.getSingleMetric(name)?.get())?.values ?? [];
    return m.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
  };
  return { layer, count };
}

describe('retry layer', () => {
  it('retries a retryable status until success', async () => {
    const { layer, count } = build();
    const up = scripted([answer(503), answer(503), answer(200)]);
    const res = await layer(up.next)(request(), ctx());
    expect(res.statusCode).toBe(200);
    expect(up.seen).toHaveLength(3);
    expect(await count('sluice_retries_total', { reason: 'status_503' })).toBe(2);
  });

  it('returns the last upstream answer when attempts run out', async () => {
    const { layer, count } = build();
    const up = scripted([answer(503)]);
    const res = await layer(up.next)(request(), ctx());
    expect(res.statusCode).toBe(503);
    expect(up.seen).toHaveLength(3);
    expect(await count('sluice_retries_refused_total', { why: 'attempts' })).toBe(1);
  });

  it('retries connect failures and rethrows the last one', async () => {
    const { layer } = build();
    const up = scripted([new SluiceError('connect-failure', 'ECONNREFUSED')]);
    await expect(layer(up.next)(request(), ctx())).rejects.toMatchObject({ code: 'connect-failure' });
    expect(up.seen).toHaveLength(3);
  });

  it('never retries a non-idempotent request without an Idempotency-Key', async () => {
    const { layer } = build();
    const up = scripted([answer(503), answer(200)]);
    const res = await layer(up.next)(request({ method: 'POST' }), ctx());
    expect(res.statusCode).toBe(503);
    expect(up.seen).toHaveLength(1);
  });

  it('retries a POST that carries an Idempotency-Key, replaying its body', async () => {
    const { layer } = build();
    const up = scripted([answer(503), answer(200)]);
    const body = Readable.from([Buffer.from('abc'), Buffer.from('def')]);
    const res = await layer(up.next)(request({ method: 'POST', body, bodyLength: 6 }), ctx({ idempotencyKey: 'k' }));
    expect(res.statusCode).toBe(200);
    expect(up.seen.map((r) => String(r.body))).toEqual(['abcdef', 'abcdef']);
  });

  it('does not retry a body larger than bufferLimitBytes', async () => {
    const { layer, count } = build();
    const up = scripted([answer(503), answer(200)]);
    const body = Readable.from([Buffer.alloc(17)]);
    const res = await layer(up.next)(request({ method: 'PUT', body, bodyLength: 17 }), ctx());
    expect(res.statusCode).toBe(503);
    expect(up.seen).toHaveLength(1);
    expect(await count('sluice_retries_refused_total', { why: 'body' })).toBe(1);
  });

  it('does not buffer past the sidecar-wide allowance, and gives it back', async () => {
    const allowance = new ReplayAllowance(10);
    const { layer } = build({ allowance });
    const up = scripted([answer(503), answer(200)]);
    const res = await layer(up.next)(request({ method: 'PUT', body: Readable.from([Buffer.alloc(12)]), bodyLength: 12 }), ctx());
    expect(res.statusCode).toBe(503);
    const ok = await layer(scripted([answer(503), answer(200)]).next)(
      request({ method: 'PUT', body: Readable.from([Buffer.alloc(8)]), bodyLength: 8 }),
      ctx(),
    );
    expect(ok.statusCode).toBe(200);
    expect(allowance.usedBytes).toBe(0);
  });

  it('honours Retry-After up to retryAfterMaxMs and refuses a longer one', async () => {
    const { layer, count } = build();
    const up = scripted([answer(503, { 'retry-after': '10' }), answer(200)]);
    const res = await layer(up.next)(request(), ctx());
    expect(res.statusCode).toBe(503);
    expect(up.seen).toHaveLength(1);
    expect(await count('sluice_retries_refused_total', { why: 'retry_after' })).toBe(1);
  });

  it("a peer sidecar's precise hint wins over Retry-After's whole second", async () => {
    const clock = new FakeClock(1000);
    const { layer } = build({ clock });
    // Retry-After: 1 alone would not fit a 500 ms deadline; the 5 ms hint does.
    const up = scripted([answer(503, { 'retry-after': '1', 'sluice-retry-after-ms': '5', 'sluice-error': 'shed' }), answer(200)]);
    const res = await layer(up.next)(request(), ctx({ deadlineMs: 1500 }));
    expect(res.statusCode).toBe(200);
    expect(up.seen).toHaveLength(2);
  });

  it('does not start a retry that could not finish before the deadline', async () => {
    const clock = new FakeClock(1000);
    const { layer, count } = build({ clock });
    const up = scripted([answer(503, { 'retry-after': '1' }), answer(200)]);
    const res = await layer(up.next)(request(), ctx({ deadlineMs: 1500 }));
    expect(res.statusCode).toBe(503);
    expect(await count('sluice_retries_refused_total', { why: 'deadline' })).toBe(1);
  });

  it('stops retrying when the budget is spent and counts it', async () => {
    const clock = new FakeClock();
    const budget = new RetryBudget({ ratio: 0, windowMs: 10_000, minRetriesPerSecond: 1, maxConcurrentRetries: 10 }, clock);
    const { layer, count } = build({ budget, clock });
    const up = scripted([answer(503)]);
    const first = await layer(up.next)(request(), ctx());
    expect(first.statusCode).toBe(503);
    // One floor token: the first request got one retry, the second gets none.
    expect(up.seen).toHaveLength(2);
    await layer(up.next)(request(), ctx());
    expect(up.seen).toHaveLength(3);
    expect(await count('sluice_retries_refused_total', { why: 'budget' })).toBe(2);
    expect(budget.concurrent).toBe(0);
  });

  it('retries a failed probe of an ejected endpoint without charging the budget', async () => {
    const clock = new FakeClock();
    const budget = new RetryBudget({ ratio: 0, windowMs: 10_000, minRetriesPerSecond: 0, maxConcurrentRetries: 10 }, clock);
    const { layer, count } = build({ budget, clock });
    const replies = [503, 200];
    const next: Handler = async (_req, c) => {
      c.probed = c.attempt === 1; // the upstream client probed on the first try
      return answer(replies.shift() ?? 500);
    };
    expect((await layer(next)(request(), ctx())).statusCode).toBe(200);
    expect(await count('sluice_retries_refused_total', { why: 'budget' })).toBe(0);
    expect(budget.concurrent).toBe(0);
  });

  it('stops at once when the exchange is cancelled', async () => {
    const { layer } = build();
    const c = ctx();
    const next: Handler = async () => {
      c.cancelled = new SluiceError('deadline-exceeded');
      throw c.cancelled;
    };
    await expect(layer(next)(request(), c)).rejects.toMatchObject({ code: 'deadline-exceeded' });
  });
});

describe('ReplayTap', () => {
  it('stops copying once released, and the body still streams on to the try', async () => {
    const { PassThrough } = await import('node:stream');
    const { ReplayTap } = await import('../../../../src/policies/retry/replay-body.ts');
    const source = new PassThrough();
    const tap = new ReplayTap(source, 1000);
    const first = tap.next() as import('node:stream').Readable;
    const got: Buffer[] = [];
    first.on('data', (c: Buffer) => got.push(c));
    source.write(Buffer.from('abc'));
    await new Promise((r) => setImmediate(r));
    expect(tap.replayable).toBe(true);
    tap.release();
    expect(tap.replayable).toBe(false);
    source.end(Buffer.from('def'));
    await new Promise((r) => first.once('end', r));
    expect(Buffer.concat(got).toString()).toBe('abcdef');
  });
});
