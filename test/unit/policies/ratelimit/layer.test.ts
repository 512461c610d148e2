// The rate-limit layer alone, over a fake `next`, with a fake clock for local buckets and a fake
// store for global rules. Every decision is checked through the layer's own counters.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  OUTCOMES,
  createRateLimitBuild,
  declareRateLimitMetrics,
  rateLimitLayer,
  type RateLimitBuild,
} from '../../../../src/policies/ratelimit/layer.ts';
import { StoreUnavailable, type GlobalBucket, type GlobalStore } from '../../../../src/policies/ratelimit/redis-link.ts';
import type { RateLimitPolicy } from '../../../../src/policy/ratelimits.ts';
import { SluiceError, toLocalReply } from '../../../../src/stack/errors.ts';
import type { Handler, ProxyRequest, RequestContext } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const ANY = { pathPrefix: undefined, methods: undefined, routes: undefined };

function rule(over: Partial<RateLimitPolicy> = {}): RateLimitPolicy {
  return {
    name: 'r',
    mode: 'enforce',
    ratePerSecond: 10,
    quota: 10,
    windowS: 1,
    burst: 5,
    by: { kind: 'none' },
    maxKeys: 100,
    scope: 'local',
    onRedisDown: 'local-share',
    match: ANY,
    ...over,
  };
}

function request(over: Partial<ProxyRequest> = {}): ProxyRequest {
  return { method: 'GET', path: '/', authority: 'u', headers: [], body: null, bodyLength: undefined, ...over };
}

/** A store that answers from a script: a global bucket of `burst` per key, or a failure. */
class FakeStore implements GlobalStore {
  readonly keyPrefix = 'p';
  usable = true;
  replicaCount = 1;
  readonly retryMs = 2500;
  readonly calls: { id: string; key: string; fresh: boolean }[] = [];
  readonly tokens = new Map<string, number>();
  fail: 'unavailable' | Error | undefined;
  burst = 3;

  replicas(): number {
    return this.replicaCount;
  }

  take(bucket: GlobalBucket, key: string, fresh: boolean): Promise<boolean> {
    this.calls.push({ id: bucket.baseId, key, fresh });
    if (this.fail === 'unavailable') return Promise.reject(new StoreUnavailable('timeout'));
    if (this.fail) return Promise.reject(this.fail);
    const left = this.tokens.get(key) ?? this.burst;
    if (left < 1) return Promise.resolve(false);
    this.tokens.set(key, left - 1);
    return Promise.resolve(true);
  }
}

function setup(rules: RateLimitPolicy[], o: { clock?: FakeClock; store?: FakeStore; previous?: RateLimitBuild; registry?: Registry } = {}) {
  const registry = o.registry ?? new Registry();
  const metrics = declareRateLimitMetrics(registry);
  const clock = o.clock ?? new FakeClock();
  const build = createRateLimitBuild({ direction: 'outbound', upstream: 'u', rules, store: o.store, clock, metrics, previous: o.previous });
  let passed = 0;
  const next: Handler = async () => {
    passed++;
    return { statusCode: 200, headers: {}, body: null };
  };
  const handler = rateLimitLayer(build)(next);
  const count = async (outcome: string, ruleName?: string): Promise<number> => {
    const values = (await metrics.decisions.get()).values;
    return values.filter((v) => v.labels.outcome === outcome && (ruleName === undefined || v.labels.rule === ruleName)).reduce((a, v) => a + v.value, 0);
  };
  const metric = async (name: string): Promise<number> => ((await registry.getSingleMetric(name)?.get())?.values ?? []).reduce((a, v) => a + v.value, 0);
  /** 200, or the status of the local reply. */
  const send = (req: ProxyRequest = request(), ctx: RequestContext = testContext()): Promise<number> =>
    handler(req, ctx).then(
      (r) => r.statusCode,
      (e: unknown) => toLocalReply(e).statusCode,
    );
  return { build, handler, clock, count, metric, send, passed: () => passed };
}

describe('local rate limits', () => {
  it('N concurrent requests against a burst of B admit exactly B', async () => {
    const t = setup([rule({ burst: 25 })]);
    const statuses = await Promise.all(Array.from({ length: 200 }, () => t.send()));
    expect(statuses.filter((s) => s === 200)).toHaveLength(25);
    expect(t.passed()).toBe(25);
    expect(await t.count('allowed')).toBe(25);
    expect(await t.count('refused')).toBe(175);
  });

  it('decides without a tick: next runs inside the handler call', () => {
    const t = setup([rule()]);
    void t.handler(request(), testContext());
    expect(t.passed()).toBe(1);
  });

  it('refills with time: one more request per 1/rate seconds', async () => {
    const t = setup([rule({ ratePerSecond: 10, burst: 1 })]);
    expect(await t.send()).toBe(200);
    expect(await t.send()).toBe(429);
    t.clock.advance(99);
    expect(await t.send()).toBe(429);
    t.clock.advance(1);
    expect(await t.send()).toBe(200);
  });

  it('refuses with 429, Retry-After and the RateLimit fields of the refusing rule', async () => {
    const t = setup([rule({ name: 'per-tenant', ratePerSecond: 0.5, quota: 1, windowS: 2, burst: 1 })]);
    await t.send();
    const err = await t.handler(request(), testContext()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).code).toBe('rate-limited');
    expect((err as SluiceError).retryAfterS).toBe(2);
    const reply = toLocalReply(err);
    expect(reply.statusCode).toBe(429);
    expect(reply.headers).toMatchObject({
      'retry-after': '2',
      'ratelimit-policy': '"per-tenant";q=1;w=2',
      ratelimit: '"per-tenant";r=0;t=2',
      'sluice-error': 'rate-limited',
    });
  });

  it('keeps a bucket per descriptor value; requests without one share a bucket', async () => {
    const t = setup([rule({ burst: 2, by: { kind: 'header', name: 'x-tenant' } })]);
    const as = (tenant?: string) => request({ headers: tenant === undefined ? [] : ['x-tenant', tenant] });
    expect([await t.send(as('a')), await t.send(as('a')), await t.send(as('a'))]).toEqual([200, 200, 429]);
    expect([await t.send(as('b')), await t.send(as('b'))]).toEqual([200, 200]);
    expect([await t.send(as()), await t.send(as()), await t.send(as())]).toEqual([200, 200, 429]);
  });

  it('counts by source address', async () => {
    const t = setup([rule({ burst: 1, by: { kind: 'source' } })]);
    expect(await t.send(request(), testContext({ source: '10.0.0.1' }))).toBe(200);
    expect(await t.send(request(), testContext({ source: '10.0.0.1' }))).toBe(429);
    expect(await t.send(request(), testContext({ source: '10.0.0.2' }))).toBe(200);
  });

  it('charges values beyond maxKeys to the overflow bucket and counts them', async () => {
    const t = setup([rule({ burst: 1, maxKeys: 2, by: { kind: 'header', name: 'x-tenant' } })]);
    const as = (tenant: string) => request({ headers: ['x-tenant', tenant] });
    for (const tenant of ['a', 'b']) expect(await t.send(as(tenant))).toBe(200);
    expect(await t.send(as('c'))).toBe(200); // overflow bucket, full
    expect(await t.send(as('d'))).toBe(429); // the same overflow bucket, now empty
    expect(await t.metric('sluice_ratelimit_overflow_total')).toBe(2);
  });

  it('applies a rule only where its match holds', async () => {
    const t = setup([rule({ burst: 1, match: { pathPrefix: '/api', methods: ['POST'], routes: undefined } })]);
    for (let i = 0; i < 3; i++) expect(await t.send(request({ path: '/api/x' }))).toBe(200); // GET: not matched
    expect(await t.send(request({ path: '/api/x', method: 'POST' }))).toBe(200);
    expect(await t.send(request({ path: '/api/x', method: 'POST' }))).toBe(429);
    expect(await t.send(request({ path: '/web', method: 'POST' }))).toBe(200);
  });

  it('needs every applicable rule; the first enforcing refusal ends the request', async () => {
    const t = setup([rule({ name: 'wide', burst: 3 }), rule({ name: 'narrow', burst: 1 })]);
    expect(await t.send()).toBe(200);
    expect(await t.send()).toBe(429); // refused by narrow; wide's token stays spent
    expect(await t.send()).toBe(429);
    expect(await t.send()).toBe(429); // wide is empty now and refuses first
    expect(await t.count('refused', 'narrow')).toBe(2);
    expect(await t.count('refused', 'wide')).toBe(1);
  });

  it('shadow: takes tokens like enforce, counts what it would refuse, lets everything through', async () => {
    const t = setup([rule({ mode: 'shadow', burst: 2 })]);
    const contexts = Array.from({ length: 4 }, () => testContext());
    for (const ctx of contexts) expect(await t.send(request(), ctx)).toBe(200);
    expect(await t.count('allowed')).toBe(2);
    expect(await t.count('shadow_refused')).toBe(2);
    expect(contexts.map((c) => (c as { shadowRefusals?: string[] }).shadowRefusals)).toEqual([
      undefined,
      undefined,
      ['rate-limited'],
      ['rate-limited'],
    ]);
  });

  it('a shadow refusal is noted once even when several rules would refuse', async () => {
    const t = setup([rule({ name: 'a', mode: 'shadow', burst: 1 }), rule({ name: 'b', mode: 'shadow', burst: 1 })]);
    await t.send();
    const ctx = testContext();
    expect(await t.send(request(), ctx)).toBe(200);
    expect((ctx as { shadowRefusals?: string[] }).shadowRefusals).toEqual(['rate-limited']);
  });

  it('off rules are not built; with none left the layer is no layer', () => {
    const t = setup([rule({ mode: 'off' })]);
    expect(t.build.limiters).toHaveLength(0);
    const next: Handler = async () => ({ statusCode: 200, headers: {}, body: null });
    expect(rateLimitLayer(t.build)(next)).toBe(next);
  });

  it('declares only bounded labels: rule names and fixed outcomes', async () => {
    const t = setup([rule({ burst: 1, by: { kind: 'header', name: 'x-tenant' } })]);
    for (let i = 0; i < 20; i++) await t.send(request({ headers: ['x-tenant', `tenant-${i}`] }));
    const labels = (await t.build.metrics.decisions.get()).values.map((v) => v.labels);
    expect(new Set(labels.map((l) => l.rule))).toEqual(new Set(['r']));
    expect(labels.every((l) => (OUTCOMES as readonly string[]).includes(String(l.outcome)))).toBe(true);
  });
});

describe('policy updates', () => {
  it('a rule whose buckets mean the same keeps them: an update grants no fresh burst', async () => {
    const clock = new FakeClock();
    const registry = new Registry();
    const first = setup([rule({ burst: 2 })], { clock, registry });
    await first.send();
    await first.send();
    // Only the match changed: the buckets mean the same.
    const second = setup([rule({ burst: 2, match: { ...ANY, pathPrefix: '/' } })], { clock, registry, previous: first.build });
    first.build.close();
    expect(await second.send()).toBe(429);
  });

  it('a rule with a new rate or burst starts afresh', async () => {
    const clock = new FakeClock();
    const first = setup([rule({ burst: 2 })], { clock });
    await first.send();
    await first.send();
    const second = setup([rule({ burst: 3 })], { clock, previous: first.build });
    expect(await second.send()).toBe(200);
  });
});

describe('global rate limits', () => {
  const global = (over: Partial<RateLimitPolicy> = {}) => rule({ scope: 'global', ratePerSecond: 1, quota: 1, windowS: 1, burst: 8, ...over });

  it('takes from the store: the first use of a key initialises it, later ones do not', async () => {
    const store = new FakeStore();
    const t = setup([global({ by: { kind: 'header', name: 'x-tenant' } })], { store });
    await t.send(request({ headers: ['x-tenant', 'a'] }));
    await t.send(request({ headers: ['x-tenant', 'a'] }));
    await t.send(request({ headers: ['x-tenant', 'b'] }));
    expect(store.calls).toEqual([
      { id: 'p:outbound:u:r:1per1s-b8', key: 'v:a', fresh: true },
      { id: 'p:outbound:u:r:1per1s-b8', key: 'v:a', fresh: false },
      { id: 'p:outbound:u:r:1per1s-b8', key: 'v:b', fresh: true },
    ]);
    expect(await t.count('allowed')).toBe(3);
  });

  it('refuses when the shared bucket is empty, with the time one token takes', async () => {
    const store = new FakeStore();
    store.burst = 1;
    const t = setup([global({ ratePerSecond: 0.25, quota: 1, windowS: 4 })], { store });
    expect(await t.send()).toBe(200);
    const reply = toLocalReply(await t.handler(request(), testContext()).catch((e: unknown) => e));
    expect(reply.statusCode).toBe(429);
    expect(reply.headers).toMatchObject({ 'retry-after': '4', ratelimit: '"r";r=0;t=4', 'ratelimit-policy': '"r";q=1;w=4' });
    expect(await t.count('refused')).toBe(1);
  });

  it('store down, local-share: a 1/replicas share of rate and burst, decided locally at once', async () => {
    const store = new FakeStore();
    store.usable = false;
    store.replicaCount = 4;
    const t = setup([global({ burst: 8, ratePerSecond: 4 })], { store });
    const statuses = await Promise.all(Array.from({ length: 10 }, () => t.send()));
    expect(statuses.filter((s) => s === 200)).toHaveLength(2);
    expect(store.calls).toHaveLength(0);
    expect(await t.count('fallback_allowed')).toBe(2);
    expect(await t.count('fallback_refused')).toBe(8);
    t.clock.advance(1000); // the share refills at 4 / 4 = 1 per second
    expect([await t.send(), await t.send()]).toEqual([200, 429]);
  });

  it('the local share follows the replica count it is given', async () => {
    const store = new FakeStore();
    store.usable = false;
    store.replicaCount = 4;
    const t = setup([global({ burst: 8 })], { store });
    await Promise.all(Array.from({ length: 10 }, () => t.send()));
    store.replicaCount = 1; // a scale-down seen while Redis was up between outages
    t.clock.advance(8000);
    const statuses = await Promise.all(Array.from({ length: 10 }, () => t.send()));
    expect(statuses.filter((s) => s === 200)).toHaveLength(8);
  });

  it('store down, allow: everything passes and is counted as fallback', async () => {
    const store = new FakeStore();
    store.usable = false;
    const t = setup([global({ burst: 1, onRedisDown: 'allow' })], { store });
    for (let i = 0; i < 5; i++) expect(await t.send()).toBe(200);
    expect(await t.count('fallback_allowed')).toBe(5);
  });

  it('store down, deny: everything is refused, told to come back when the store is tried again', async () => {
    const store = new FakeStore();
    store.usable = false;
    const t = setup([global({ onRedisDown: 'deny' })], { store });
    const reply = toLocalReply(await t.handler(request(), testContext()).catch((e: unknown) => e));
    expect(reply.statusCode).toBe(429);
    expect(reply.headers['retry-after']).toBe('3');
    expect(String(reply.body)).toContain('rate limit store unreachable');
    expect(await t.count('fallback_refused')).toBe(1);
  });

  it('a store call that fails falls back for that request', async () => {
    const store = new FakeStore();
    store.fail = 'unavailable';
    const t = setup([global({ onRedisDown: 'allow' })], { store });
    expect(await t.send()).toBe(200);
    expect(store.calls).toHaveLength(1);
    expect(await t.count('fallback_allowed')).toBe(1);
  });

  it('shadow with the store down counts fallback_shadow_refused and lets the request through', async () => {
    const store = new FakeStore();
    store.usable = false;
    const t = setup([global({ mode: 'shadow', onRedisDown: 'deny' })], { store });
    const ctx = testContext();
    expect(await t.send(request(), ctx)).toBe(200);
    expect(await t.count('fallback_shadow_refused')).toBe(1);
    expect((ctx as { shadowRefusals?: string[] }).shadowRefusals).toEqual(['rate-limited']);
  });

  it('a request cancelled while waiting for the store ends with the cancellation, not a decision', async () => {
    const store = new FakeStore();
    const cancelled = new SluiceError('deadline-exceeded');
    store.fail = cancelled;
    const t = setup([global()], { store });
    const err = await t.handler(request(), testContext()).catch((e: unknown) => e);
    expect(err).toBe(cancelled);
    for (const outcome of OUTCOMES) expect(await t.count(outcome)).toBe(0);
    expect(t.passed()).toBe(0);
  });

  it('local rules before and after a global one are all checked, in order', async () => {
    const store = new FakeStore();
    store.burst = 100;
    const t = setup([rule({ name: 'first', burst: 5 }), global({ name: 'mid' }), rule({ name: 'last', burst: 1 })], { store });
    expect(await t.send()).toBe(200);
    expect(await t.send()).toBe(429);
    expect(await t.count('refused', 'last')).toBe(1);
    expect(await t.count('allowed', 'mid')).toBe(2);
  });

  it('a global rule without a store is a wiring error, found at build time', () => {
    expect(() => setup([global()])).toThrow('rate limit r is global but the sidecar has no redis link');
  });
});
