// The admission layer alone over a fake app (`next`), on fake timers, asserted through its own
// metrics and the replies its errors map to.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AdmissionControl, declareAdmissionMetrics } from '../../../../src/policies/admission/control.ts';
import type { AdmissionPolicy } from '../../../../src/policy/types.ts';
import { SluiceError, toLocalReply } from '../../../../src/stack/errors.ts';
import { cancel, releaseCancel, type Handler, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { metricSum, parsePrometheus } from '../../../support/metrics.ts';

const POLICY: AdmissionPolicy = {
  mode: 'enforce',
  adaptive: undefined,
  maxConcurrency: 2,
  queue: { maxWaiting: 2, maxWaitMs: 50 },
  priorityHeader: 'sluice-priority',
  sheddableShare: 0.5,
  deadlineAware: true,
};
const ADAPTIVE = { initialLimit: 10, minLimit: 2, sampleWindowMs: 100, minSamples: 10, minRttProbeIntervalMs: 10_000, probeRatio: 0.5 };

const silent = { info() {}, warn() {} };
const clock = { now: () => Date.now() };

let registry: Registry;
let controls: AdmissionControl[];

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  registry = new Registry();
  controls = [];
});

afterEach(() => {
  for (const c of controls) c.close();
  vi.useRealTimers();
});

function request(priority?: string): ProxyRequest {
  return { method: 'GET', path: '/', authority: 'app', headers: priority === undefined ? [] : ['Sluice-Priority', priority], body: null, bodyLength: undefined };
}

interface Call {
  readonly ctx: RequestContext;
  answer(status?: number): void;
  fail(err: Error): void;
}

/** An app whose answers the test gives; like the real client it ends a call on cancellation. */
function fakeApp() {
  const calls: Call[] = [];
  const next: Handler = (_req, ctx) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      const onCancel = (reason: Error): void => reject(reason);
      ctx.onCancel = onCancel;
      calls.push({
        ctx,
        answer: (status = 200) => {
          releaseCancel(ctx, onCancel);
          resolve({ statusCode: status, headers: {}, body: null });
        },
        fail: (err) => {
          releaseCancel(ctx, onCancel);
          reject(err);
        },
      });
    });
  return { calls, next };
}

function build(over: Partial<AdmissionPolicy> = {}, next?: Handler) {
  const policy = { ...POLICY, ...over };
  const control = new AdmissionControl(policy, { clock, random: () => 0.5, metrics: declareAdmissionMetrics(registry), log: silent });
  controls.push(control);
  const app = fakeApp();
  const handler = control.layer()(next ?? app.next);
  return { control, app, handler };
}

/** What a request came to, observed without awaiting it. */
function track(p: Promise<ProxyResponse>) {
  const o: { status?: number; error?: unknown; done: boolean } = { done: false };
  p.then(
    (r) => Object.assign(o, { status: r.statusCode, done: true }),
    (e: unknown) => Object.assign(o, { error: e, done: true }),
  );
  return o;
}

const code = (err: unknown) => (err instanceof SluiceError ? err.code : String(err));
const flush = () => vi.advanceTimersByTimeAsync(0);

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum(parsePrometheus(await registry.metrics()), name, labels);
}

describe('admission layer', () => {
  it('admits up to the limit; the next waits, and goes in when a slot frees at response headers', async () => {
    const { control, app, handler } = build();
    const a = track(handler(request(), testContext()));
    const b = track(handler(request(), testContext()));
    const c = track(handler(request(), testContext()));
    await flush();
    expect(app.calls).toHaveLength(2);
    expect(control.inFlight()).toBe(2);
    expect(control.waiting()).toBe(1);
    expect(await metric('sluice_admission_queue_depth')).toBe(1);
    app.calls[0]!.answer();
    await flush();
    expect(a.status).toBe(200);
    expect(app.calls).toHaveLength(3);
    expect(control.inFlight()).toBe(2);
    expect(control.waiting()).toBe(0);
    app.calls[1]!.answer();
    app.calls[2]!.answer();
    await flush();
    expect([b.status, c.status]).toEqual([200, 200]);
    expect(control.inFlight()).toBe(0);
  });

  it('serves critical waiters before default ones', async () => {
    const { app, handler } = build({ maxConcurrency: 1, queue: { maxWaiting: 3, maxWaitMs: 50 } });
    const order: string[] = [];
    handler(request(), testContext());
    for (const p of ['default', 'critical', 'default', 'critical'].map((p, i) => [p, i] as const)) {
      handler(request(p[0]), testContext()).then(
        () => order.push(`${p[0]}-${p[1]}`),
        () => order.push(`refused ${p[0]}-${p[1]}`),
      );
    }
    await flush();
    // The fourth waiter found the queue full: a critical one, so the newest default left for it.
    for (let i = 0; i < 4; i++) {
      app.calls[i]?.answer();
      await flush();
    }
    expect(order).toEqual(['refused default-2', 'critical-1', 'critical-3', 'default-0']);
  });

  it('refuses sheddable requests once in flight reaches floor(limit × sheddableShare), and never queues them', async () => {
    const { app, handler } = build({ maxConcurrency: 4, sheddableShare: 0.5 });
    const first = track(handler(request('sheddable'), testContext()));
    const second = track(handler(request('sheddable'), testContext()));
    const third = track(handler(request('sheddable'), testContext()));
    await flush();
    expect(app.calls).toHaveLength(2);
    expect(code(third.error)).toBe('shed');
    handler(request(), testContext());
    handler(request('critical'), testContext());
    const atLimit = track(handler(request('sheddable'), testContext()));
    await flush();
    expect(code(atLimit.error)).toBe('shed');
    expect(await metric('sluice_admission_shed_total', { priority: 'sheddable', reason: 'sheddable_share', mode: 'enforce' })).toBe(1);
    expect(await metric('sluice_admission_shed_total', { priority: 'sheddable', reason: 'limit', mode: 'enforce' })).toBe(1);
    expect(first.done || second.done).toBe(false);
  });

  it('refuses a default request when the queue is full; a critical one evicts the newest default waiter', async () => {
    const { app, handler } = build({ maxConcurrency: 1, queue: { maxWaiting: 2, maxWaitMs: 50 } });
    handler(request(), testContext());
    const d1 = track(handler(request(), testContext()));
    const d2 = track(handler(request(), testContext()));
    const d3 = track(handler(request(), testContext()));
    await flush();
    expect(code(d3.error)).toBe('shed');
    const c1 = track(handler(request('critical'), testContext()));
    await flush();
    expect(code(d2.error)).toBe('shed');
    expect(d1.done).toBe(false);
    expect(await metric('sluice_admission_shed_total', { priority: 'default', reason: 'queue_full' })).toBe(2);
    app.calls[0]!.answer();
    await flush();
    app.calls[1]!.answer();
    await flush();
    expect(c1.status).toBe(200);
    expect(d1.done).toBe(false);
    expect(app.calls).toHaveLength(3);
  });

  it('sheds a waiter that waited maxWaitMs, with Retry-After', async () => {
    const { control, handler } = build();
    handler(request(), testContext());
    handler(request(), testContext());
    const w = track(handler(request(), testContext()));
    await vi.advanceTimersByTimeAsync(49);
    expect(w.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(code(w.error)).toBe('shed');
    const reply = toLocalReply(w.error);
    expect(reply.statusCode).toBe(503);
    expect(reply.headers['sluice-error']).toBe('shed');
    expect(reply.headers['retry-after']).toBe('1');
    expect(control.waiting()).toBe(0);
    expect(await metric('sluice_admission_shed_total', { priority: 'default', reason: 'wait_timeout' })).toBe(1);
  });

  it('lets a waiter go with deadline-exceeded when its deadline comes before maxWaitMs', async () => {
    const { control, handler } = build();
    handler(request(), testContext());
    handler(request(), testContext());
    const ctx = testContext({ deadlineMs: 20 });
    const w = track(handler(request(), ctx));
    await vi.advanceTimersByTimeAsync(20);
    expect(code(w.error)).toBe('deadline-exceeded');
    expect(control.waiting()).toBe(0);
    expect(ctx.onCancel).toBeUndefined();
    expect(await metric('sluice_admission_shed_total')).toBe(0);
  });

  it('takes a cancelled waiter out of the queue with the cancellation reason', async () => {
    const { control, app, handler } = build();
    handler(request(), testContext());
    handler(request(), testContext());
    const ctx = testContext();
    const w = track(handler(request(), ctx));
    const after = track(handler(request(), testContext()));
    await flush();
    expect(ctx.onCancel).toBeDefined();
    cancel(ctx, new SluiceError('client-closed'));
    await flush();
    expect(code(w.error)).toBe('client-closed');
    expect(control.waiting()).toBe(1);
    // The slot that frees next goes to the one behind it; the cancelled one never reaches the app.
    app.calls[0]!.answer();
    await flush();
    expect(app.calls.map((c) => c.ctx)).not.toContain(ctx);
    expect(app.calls).toHaveLength(3);
    expect(after.done).toBe(false);
    // Its timer is gone too: nothing fires for it later.
    await vi.advanceTimersByTimeAsync(100);
    expect(await metric('sluice_admission_shed_total', { reason: 'wait_timeout' })).toBe(0);
  });

  describe('in flight returns to 0 on every path', () => {
    const paths: [string, (h: Handler, app: ReturnType<typeof fakeApp>) => Promise<void>][] = [
      ['an answer', async (h, app) => void (h(request(), testContext()), await flush(), app.calls[0]!.answer())],
      ['an app 503', async (h, app) => void (h(request(), testContext()), await flush(), app.calls[0]!.answer(503))],
      ['an app failure', async (h, app) => void (h(request(), testContext()).catch(() => {}), await flush(), app.calls[0]!.fail(new Error('reset')))],
      [
        'the client leaving mid-request',
        async (h) => {
          const ctx = testContext();
          h(request(), ctx).catch(() => {});
          await flush();
          cancel(ctx, new SluiceError('client-closed'));
        },
      ],
      [
        'a client already gone when admitted',
        async (h) => {
          const ctx = testContext();
          cancel(ctx, new SluiceError('client-closed'));
          await h(request(), ctx).catch(() => {});
        },
      ],
    ];
    it.each(paths)('%s', async (_name, run) => {
      const { control, app, handler } = build();
      await run(handler, app);
      await flush();
      expect(control.inFlight()).toBe(0);
      expect(await metric('sluice_admission_in_flight')).toBe(0);
    });

    it('a next() that throws synchronously', async () => {
      const { control, handler } = build({}, () => {
        throw new Error('bug');
      });
      await expect(handler(request(), testContext())).rejects.toThrow('bug');
      expect(control.inFlight()).toBe(0);
    });

    it('waiters timed out, deadlined, cancelled and evicted', async () => {
      const { control, app, handler } = build({ maxConcurrency: 1, queue: { maxWaiting: 3, maxWaitMs: 50 } });
      handler(request(), testContext());
      const cancelled = testContext();
      const outcomes = [
        track(handler(request(), cancelled)),
        track(handler(request(), testContext({ deadlineMs: 10 }))),
        track(handler(request(), testContext())),
        track(handler(request('critical'), testContext())),
      ];
      await flush();
      cancel(cancelled, new SluiceError('client-closed'));
      await vi.advanceTimersByTimeAsync(60);
      expect(outcomes.map((o) => code(o.error))).toEqual(['client-closed', 'deadline-exceeded', 'shed', 'shed']);
      app.calls[0]!.answer();
      await flush();
      expect(control.inFlight()).toBe(0);
      expect(control.waiting()).toBe(0);
    });
  });

  describe('deadline-aware', () => {
    /** One request that took `ms` at the app: the latency estimate. */
    async function learn(handler: Handler, app: ReturnType<typeof fakeApp>, ms: number) {
      const p = handler(request(), testContext());
      await flush();
      await vi.advanceTimersByTimeAsync(ms);
      app.calls.at(-1)!.answer();
      await p;
    }

    it('refuses at once a request with less time left than the app takes, once that is known', async () => {
      const { control, app, handler } = build({ maxConcurrency: 10 });
      // No estimate yet: admitted whatever its deadline.
      const early = track(handler(request(), testContext({ deadlineMs: Date.now() + 5 })));
      await flush();
      expect(early.error).toBeUndefined();
      app.calls[0]!.answer();
      await flush();
      await learn(handler, app, 50);
      expect(control.expectedLatencyMs()).toBeGreaterThan(5);
      const calls = app.calls.length;
      const short = track(handler(request('critical'), testContext({ deadlineMs: Date.now() + 5 })));
      await flush();
      expect(code(short.error)).toBe('deadline-too-short');
      expect(toLocalReply(short.error).statusCode).toBe(504);
      expect(app.calls).toHaveLength(calls);
      const enough = track(handler(request(), testContext({ deadlineMs: Date.now() + 5000 })));
      const none = track(handler(request(), testContext()));
      await flush();
      expect([enough.error, none.error]).toEqual([undefined, undefined]);
      expect(await metric('sluice_admission_shed_total', { priority: 'critical', reason: 'deadline', mode: 'enforce' })).toBe(1);
    });

    it('is off with deadlineAware: false', async () => {
      const { app, handler } = build({ deadlineAware: false, maxConcurrency: 10 });
      await learn(handler, app, 50);
      const short = track(handler(request(), testContext({ deadlineMs: Date.now() + 5 })));
      await flush();
      expect(short.error).toBeUndefined();
    });

    it('refuses a waiter whose time left has become too short by the time a slot frees', async () => {
      const { app, handler } = build({ maxConcurrency: 1, queue: { maxWaiting: 2, maxWaitMs: 1000 } });
      await learn(handler, app, 30);
      handler(request(), testContext());
      const w = track(handler(request(), testContext({ deadlineMs: Date.now() + 50 })));
      await vi.advanceTimersByTimeAsync(25);
      app.calls.at(-1)!.answer();
      await flush();
      expect(code(w.error)).toBe('deadline-too-short');
    });
  });

  describe('shadow mode', () => {
    it('admits everything, never queues, and counts and notes what it would have refused', async () => {
      const { control, app, handler } = build({ mode: 'shadow', maxConcurrency: 1 });
      const ctxs = [testContext(), testContext(), testContext()];
      handler(request(), ctxs[0]!);
      handler(request(), ctxs[1]!); // would wait: not a refusal
      handler(request('sheddable'), ctxs[2]!); // would be refused
      await flush();
      expect(app.calls).toHaveLength(3);
      expect(control.inFlight()).toBe(3);
      expect(control.waiting()).toBe(0);
      expect(ctxs.map((c) => c.shadowRefusals)).toEqual([undefined, undefined, ['shed']]);
      expect(await metric('sluice_admission_shed_total', { priority: 'sheddable', reason: 'limit', mode: 'shadow' })).toBe(1);
      expect(await metric('sluice_admission_shed_total', { mode: 'enforce' })).toBe(0);
    });
  });

  describe('what the limit learns', () => {
    it.each<[string, (call: Call) => void, number]>([
      ['an app 503 is a drop', (c) => c.answer(503), 9],
      ['a deadline while the app worked is a drop', (c) => c.fail(new SluiceError('deadline-exceeded')), 9],
      ['a per-try timeout while the app worked is a drop', (c) => c.fail(new SluiceError('per-try-timeout')), 9],
      ['a connection failure is nothing', (c) => c.fail(new SluiceError('connect-failure')), 10],
      ['an answer is a sample, not a drop', (c) => c.answer(200), 10],
    ])('%s', async (_name, end, learned) => {
      const { control, app, handler } = build({ adaptive: ADAPTIVE, maxConcurrency: 100 });
      handler(request(), testContext()).catch(() => {});
      await flush();
      await vi.advanceTimersByTimeAsync(100);
      end(app.calls[0]!);
      await flush();
      expect(control.learned().limit).toBe(learned);
    });

    it('takes no sample from a request whose client left', async () => {
      const { control, handler } = build({ adaptive: ADAPTIVE, maxConcurrency: 100 });
      const ctx = testContext();
      handler(request(), ctx).catch(() => {});
      await vi.advanceTimersByTimeAsync(100);
      // The client leaves; the app reports it as it would, with the reason.
      cancel(ctx, new SluiceError('client-closed'));
      await flush();
      expect(control.expectedLatencyMs()).toBeUndefined();
      expect(control.learned().limit).toBe(10);
    });

    it('nor when the app fails with its own error after the client left', async () => {
      const { control, app, handler } = build({ adaptive: ADAPTIVE, maxConcurrency: 100 });
      const ctx = testContext();
      handler(request(), ctx).catch(() => {});
      await vi.advanceTimersByTimeAsync(100);
      ctx.cancelled = new SluiceError('client-closed');
      app.calls[0]!.fail(new SluiceError('deadline-exceeded'));
      await flush();
      expect(control.learned().limit).toBe(10);
    });
  });

  describe('metrics', () => {
    it('report limit, in flight, queue depth and min RTT at scrape, and stop when closed', async () => {
      const { control, handler } = build();
      handler(request(), testContext());
      handler(request(), testContext());
      handler(request(), testContext()).catch(() => {});
      await flush();
      expect(await metric('sluice_admission_limit')).toBe(2);
      expect(await metric('sluice_admission_in_flight')).toBe(2);
      expect(await metric('sluice_admission_queue_depth')).toBe(1);
      expect(await metric('sluice_admission_min_rtt_seconds')).toBe(0);
      control.close();
      expect(await metric('sluice_admission_limit')).toBe(0);
      expect(await metric('sluice_admission_in_flight')).toBe(0);
    });

    it('report the adaptive limit’s min RTT, probes and changes', async () => {
      const { control, app, handler } = build({ adaptive: ADAPTIVE, maxConcurrency: 100 });
      // A window of answers at 20 ms: the baseline, and the start-up probe begins.
      for (let i = 0; i < 10; i++) handler(request(), testContext());
      await vi.advanceTimersByTimeAsync(20);
      for (const c of app.calls) c.answer();
      await vi.advanceTimersByTimeAsync(100);
      expect(control.limit()).toBe(5);
      expect(await metric('sluice_admission_min_rtt_seconds')).toBeCloseTo(0.02, 9);
      expect(await metric('sluice_admission_probes_total')).toBe(1);
      expect(await metric('sluice_admission_limit')).toBe(5);
      // Declaring again on the same registry (another owner) keeps the gauges reading this control.
      declareAdmissionMetrics(registry);
      expect(await metric('sluice_admission_limit')).toBe(5);
    });
  });

  describe('reconfigure and close', () => {
    it('a higher maxConcurrency lets waiters in at once', async () => {
      const { control, app, handler } = build();
      handler(request(), testContext());
      handler(request(), testContext());
      const w = track(handler(request(), testContext()));
      await flush();
      control.reconfigure({ ...POLICY, maxConcurrency: 3 });
      await flush();
      expect(app.calls).toHaveLength(3);
      expect(w.error).toBeUndefined();
      expect(control.limit()).toBe(3);
    });

    it('shadow mode lets waiters in at once', async () => {
      const { control, app, handler } = build();
      handler(request(), testContext());
      handler(request(), testContext());
      handler(request(), testContext());
      await flush();
      control.reconfigure({ ...POLICY, mode: 'shadow' });
      await flush();
      expect(app.calls).toHaveLength(3);
    });

    it('keeps the learned limit when the adaptive settings are unchanged', async () => {
      const { control } = build({ adaptive: ADAPTIVE, maxConcurrency: 100 });
      control.reconfigure({ ...POLICY, adaptive: ADAPTIVE, maxConcurrency: 6 });
      expect(control.limit()).toBe(6);
      control.reconfigure({ ...POLICY, adaptive: ADAPTIVE, maxConcurrency: 100 });
      // Clamped to 6, it stays 6 until it learns more.
      expect(control.limit()).toBe(6);
      control.reconfigure({ ...POLICY, adaptive: { ...ADAPTIVE, initialLimit: 8 }, maxConcurrency: 100 });
      expect(control.limit()).toBe(8);
    });

    it('refuses a bad policy with the value in the message', () => {
      expect(() => build({ sheddableShare: 2 })).toThrow('admission sheddableShare must be in [0, 1], got 2');
      const { control } = build();
      expect(() => control.reconfigure({ ...POLICY, queue: { maxWaiting: -1, maxWaitMs: 5 } })).toThrow(
        'admission queue.maxWaiting must be an integer >= 0, got -1',
      );
    });

    it('close lets waiters go ahead and admits everything after', async () => {
      const { control, app, handler } = build();
      handler(request(), testContext());
      handler(request(), testContext());
      handler(request(), testContext());
      await flush();
      control.close();
      await flush();
      handler(request('sheddable'), testContext());
      await flush();
      expect(app.calls).toHaveLength(4);
    });
  });
});
