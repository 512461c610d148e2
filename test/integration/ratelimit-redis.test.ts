// Global rate limits through a real redis-server: two sidecars (two links, two connections, two
// registries) share one rule. Assertions are counts, read through each sidecar's own metrics, and
// bounds that hold however fast the machine is; waits are for events (a state change, a probe),
// never for time to pass.
import { EventEmitter, once } from 'node:events';
import Bottleneck from 'bottleneck';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { declareRateLimitMetrics, createRateLimitBuild, rateLimitLayer, type RateLimitMetrics } from '../../src/policies/ratelimit/layer.ts';
import { globalBucket } from '../../src/policies/ratelimit/limiter.ts';
import { RedisLink } from '../../src/policies/ratelimit/redis-link.ts';
import { REDIS_DEFAULTS, type RateLimitPolicy, type RedisPolicy } from '../../src/policy/ratelimits.ts';
import { toLocalReply } from '../../src/stack/errors.ts';
import { systemClock, type Handler, type ProxyRequest } from '../../src/stack/types.ts';
import { testContext } from '../support/context.ts';
import { redisAvailable, startRedis, type RedisServer } from '../support/redis.ts';

const ANY = { pathPrefix: undefined, methods: undefined, routes: undefined };

/** A global rule that refills one token a minute: within a test, only the burst is ever admitted. */
function rule(over: Partial<RateLimitPolicy> = {}): RateLimitPolicy {
  return {
    name: 'shared',
    mode: 'enforce',
    ratePerSecond: 1 / 60,
    quota: 1,
    windowS: 60,
    burst: 20,
    by: { kind: 'none' },
    maxKeys: 1000,
    scope: 'global',
    onRedisDown: 'local-share',
    match: ANY,
    ...over,
  };
}

interface Sidecar {
  readonly name: string;
  readonly link: RedisLink;
  readonly registry: Registry;
  readonly metrics: RateLimitMetrics;
  readonly handler: Handler;
  readonly events: EventEmitter;
}

let server: RedisServer;
let prefixes = 0;
const sidecars: Sidecar[] = [];

function sidecar(name: string, rules: RateLimitPolicy[], keyPrefix: string, over: Partial<RedisPolicy> = {}): Sidecar {
  const registry = new Registry();
  const metrics = declareRateLimitMetrics(registry);
  const events = new EventEmitter();
  const policy: RedisPolicy = { ...REDIS_DEFAULTS, port: server.port, keyPrefix, commandTimeoutMs: 2000, probeIntervalMs: 100, ...over };
  const link = new RedisLink({
    policy,
    metrics,
    sidecarId: name,
    onStateChange: (s) => events.emit('state', s),
    onProbe: (ok, replicas) => events.emit('probe', ok, replicas),
  });
  const build = createRateLimitBuild({ direction: 'outbound', upstream: 'u', rules, store: link, clock: systemClock, metrics });
  const handler = rateLimitLayer(build)(async () => ({ statusCode: 200, headers: {}, body: null }));
  const s = { name, link, registry, metrics, handler, events };
  sidecars.push(s);
  return s;
}

/** Two sidecars of one service: same rules, same key prefix, separate connections. */
function pair(rules: RateLimitPolicy[], over: Partial<RedisPolicy> = {}): [Sidecar, Sidecar] {
  const prefix = `t${++prefixes}`;
  return [sidecar('a', rules, prefix, over), sidecar('b', rules, prefix, over)];
}

async function state(s: Sidecar, want: 'up' | 'down'): Promise<void> {
  while (s.link.state !== want) await once(s.events, 'state');
}

/** Until a probe of `s` has counted `n` sidecars live. */
async function replicas(s: Sidecar, n: number): Promise<void> {
  while (s.link.replicas() !== n) await once(s.events, 'probe');
}

function request(path = '/'): ProxyRequest {
  return { method: 'GET', path, authority: 'u', headers: [], body: null, bodyLength: undefined };
}

/** Status the client would see: 200 from the fake upstream, or the local reply's. */
async function send(s: Sidecar, path = '/'): Promise<number> {
  try {
    return (await s.handler(request(path), testContext())).statusCode;
  } catch (err) {
    return toLocalReply(err).statusCode;
  }
}

async function decisions(s: Sidecar, outcome: string, rule?: string): Promise<number> {
  const values = (await s.metrics.decisions.get()).values;
  return values.filter((v) => v.labels.outcome === outcome && (rule === undefined || v.labels.rule === rule)).reduce((a, v) => a + v.value, 0);
}

async function metric(s: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await s.registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

describe.skipIf(!redisAvailable())('global rate limits through Redis', () => {
  beforeAll(async () => {
    server = await startRedis();
  });
  afterEach(async () => {
    for (const s of sidecars.splice(0)) await s.link.close();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('two sidecars admit exactly the burst between them, however many requests race', async () => {
    const [a, b] = pair([rule({ burst: 20 })]);
    await Promise.all([state(a, 'up'), state(b, 'up')]);
    const statuses = await Promise.all(Array.from({ length: 100 }, (_, i) => send(i % 2 ? a : b)));
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    expect(statuses.filter((s) => s === 429)).toHaveLength(80);
    expect((await decisions(a, 'allowed')) + (await decisions(b, 'allowed'))).toBe(20);
    expect((await decisions(a, 'refused')) + (await decisions(b, 'refused'))).toBe(80);
    expect((await decisions(a, 'fallback_allowed')) + (await decisions(b, 'fallback_allowed'))).toBe(0);
  });

  it('refuses with 429, Retry-After and the RateLimit fields of the rule', async () => {
    const [a] = pair([rule({ burst: 1 })]);
    await state(a, 'up');
    expect(await send(a)).toBe(200);
    const refusal = await a.handler(request(), testContext()).then(
      () => undefined,
      (err: unknown) => toLocalReply(err),
    );
    expect(refusal?.statusCode).toBe(429);
    expect(refusal?.headers).toMatchObject({
      'retry-after': '60',
      'ratelimit-policy': '"shared";q=1;w=60',
      ratelimit: '"shared";r=0;t=60',
      'sluice-error': 'rate-limited',
    });
  });

  it('together admit no more than rate × elapsed + burst while both keep sending', async () => {
    const policy = rule({ ratePerSecond: 200, quota: 200, windowS: 1, burst: 10 });
    const [a, b] = pair([policy]);
    await Promise.all([state(a, 'up'), state(b, 'up')]);
    const startMs = Date.now();
    // 4 senders per sidecar, 150 requests each: a fixed amount of work, however long it takes.
    const senders = [a, b].flatMap((s) =>
      Array.from({ length: 4 }, async () => {
        let ok = 0;
        for (let i = 0; i < 150; i++) if ((await send(s)) === 200) ok++;
        return ok;
      }),
    );
    const admitted = (await Promise.all(senders)).reduce((x, y) => x + y, 0);
    const elapsedMs = Date.now() - startMs;
    // bottleneck refills from the callers' Date.now(), so the same clock bounds it here.
    expect(admitted).toBeLessThanOrEqual(policy.burst + (policy.ratePerSecond * elapsedMs) / 1000);
    expect(admitted).toBeGreaterThanOrEqual(policy.burst);
    expect((await decisions(a, 'fallback_allowed')) + (await decisions(b, 'fallback_allowed'))).toBe(0);
  });

  it('costs one script call (one round trip) per decision; bottleneck.schedule() costs three', async () => {
    const policy = rule({ burst: 1000 });
    const [a] = pair([policy]);
    await state(a, 'up');
    expect(await send(a)).toBe(200); // the first call initialises the limiter (3 scripts, 1 pipeline)
    await server.command('CONFIG', 'RESETSTAT');
    for (let i = 0; i < 20; i++) expect(await send(a)).toBe(200);
    expect(await server.scriptCalls()).toBe(20);

    // The same id through bottleneck's own API sees the reservoir sluice spends: it is bottleneck state.
    const id = globalBucket(a.link.keyPrefix, 'outbound', 'u', policy).baseId;
    const limiter = new Bottleneck({ id, datastore: 'ioredis', heartbeatInterval: 600_000, clientOptions: { host: '127.0.0.1', port: server.port } });
    limiter.on('error', () => {});
    await limiter.ready();
    expect(await limiter.currentReservoir()).toBe(1000 - 21);
    await server.command('CONFIG', 'RESETSTAT');
    for (let i = 0; i < 10; i++) await limiter.schedule(() => Promise.resolve());
    // submit.lua, register.lua and free.lua per job, each awaited before the next.
    expect(await server.scriptCalls()).toBe(30);
    await limiter.disconnect();
  });

  it('re-initialises keys Redis lost without falling back (bottleneck misses Redis 7 "ERR SETTINGS_KEY_NOT_FOUND")', async () => {
    const [a] = pair([rule({ burst: 5 })]);
    await state(a, 'up');
    expect(await send(a)).toBe(200);
    await server.command('FLUSHALL');
    for (let i = 0; i < 5; i++) expect(await send(a)).toBe(200);
    expect(await send(a)).toBe(429);
    expect(await decisions(a, 'allowed')).toBe(6);
    expect(await metric(a, 'sluice_ratelimit_redis_failures_total')).toBe(0);
  });

  it('per-descriptor global buckets: each tenant has its own burst across both sidecars', async () => {
    const [a, b] = pair([rule({ burst: 3, by: { kind: 'header', name: 'x-tenant' } })]);
    await Promise.all([state(a, 'up'), state(b, 'up')]);
    const as = (tenant: string) => ({ ...request(), headers: ['X-Tenant', tenant] });
    const status = (s: Sidecar, r: ProxyRequest) =>
      s.handler(r, testContext()).then(
        (x) => x.statusCode,
        (e: unknown) => toLocalReply(e).statusCode,
      );
    const t1 = await Promise.all(Array.from({ length: 10 }, (_, i) => status(i % 2 ? a : b, as('t1'))));
    const t2 = await Promise.all(Array.from({ length: 10 }, (_, i) => status(i % 2 ? a : b, as('t2'))));
    expect(t1.filter((s) => s === 200)).toHaveLength(3);
    expect(t2.filter((s) => s === 200)).toHaveLength(3);
  });

  it('Redis stopped: each sidecar falls back by onRedisDown and counts it; restarted: global again', async () => {
    const rules = [
      rule({ name: 'share', burst: 20, match: { ...ANY, pathPrefix: '/share' } }),
      rule({ name: 'open', burst: 1, onRedisDown: 'allow', match: { ...ANY, pathPrefix: '/allow' } }),
      rule({ name: 'closed', burst: 1000, onRedisDown: 'deny', match: { ...ANY, pathPrefix: '/deny' } }),
    ];
    const [a, b] = pair(rules);
    await Promise.all([replicas(a, 2), replicas(b, 2)]);
    expect(await send(a, '/share')).toBe(200); // one global token spent while up

    await server.stop();
    await Promise.all([state(a, 'down'), state(b, 'down')]);
    // local-share: burst 20 over 2 live sidecars = 10 each, whatever the global bucket held.
    for (const s of [a, b]) {
      const statuses = await Promise.all(Array.from({ length: 30 }, () => send(s, '/share')));
      expect(statuses.filter((x) => x === 200)).toHaveLength(10);
      expect(await decisions(s, 'fallback_allowed', 'share')).toBe(10);
      expect(await decisions(s, 'fallback_refused', 'share')).toBe(20);
      // allow: everything passes (the global burst of 1 would have refused); deny: nothing does.
      for (let i = 0; i < 5; i++) expect(await send(s, '/allow')).toBe(200);
      for (let i = 0; i < 5; i++) expect(await send(s, '/deny')).toBe(429);
      expect(await decisions(s, 'fallback_allowed', 'open')).toBe(5);
      expect(await decisions(s, 'fallback_refused', 'closed')).toBe(5);
      expect(await metric(s, 'sluice_ratelimit_fallback_activations_total')).toBe(1);
      expect(await metric(s, 'sluice_ratelimit_redis_up')).toBe(0);
    }

    await server.restart();
    await Promise.all([state(a, 'up'), state(b, 'up')]);
    // Global again: the restarted Redis is empty, so the shared bucket starts at its burst of 20.
    const statuses = await Promise.all(Array.from({ length: 30 }, (_, i) => send(i % 2 ? a : b, '/share')));
    expect(statuses.filter((x) => x === 200)).toHaveLength(20);
    expect((await decisions(a, 'allowed', 'share')) + (await decisions(b, 'allowed', 'share'))).toBe(1 + 20);
    for (const s of [a, b]) {
      expect(await metric(s, 'sluice_ratelimit_redis_up')).toBe(1);
      expect(await metric(s, 'sluice_ratelimit_fallback_activations_total')).toBe(1);
    }
  });

  it('a hung Redis costs at most one timeout; later requests fall back at once until it answers', async () => {
    const [a] = pair([rule({ burst: 1000 })], { commandTimeoutMs: 200, probeIntervalMs: 100 });
    await state(a, 'up');
    expect(await send(a)).toBe(200);
    server.pause();
    try {
      for (let i = 0; i < 50; i++) expect(await send(a)).toBe(200);
      // Only a request that found Redis up asked it (and waited out the timeout); once one call or
      // a probe had timed out, every request was decided locally without a Redis call.
      expect(await metric(a, 'sluice_ratelimit_redis_failures_total', { why: 'timeout' })).toBeLessThanOrEqual(1);
      expect(await decisions(a, 'fallback_allowed')).toBe(50);
      expect(a.link.state).toBe('down');
    } finally {
      server.resume();
    }
    await state(a, 'up');
    expect(await send(a)).toBe(200);
    expect(await decisions(a, 'allowed')).toBe(2);
  });
});
