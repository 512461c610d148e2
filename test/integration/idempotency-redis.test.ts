// store: redis through a real redis-server: two sidecars (two replicas of one service, each with
// its own app) share keys. A key is run by one replica's app only; the other replica's duplicate
// polls the claim and replays the outcome. With Redis gone, requests are served from memory at
// once (counted), never held. Waits are for events or state read from each sidecar's metrics.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send, type SendResult } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';
import { redisAvailable, startRedis, type RedisServer } from '../support/redis.ts';
import { startScriptedUpstream, type ScriptedUpstream, type Step } from '../support/scripted-upstream.ts';
import { startTestSidecar, type TestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();
let server: RedisServer;
let prefixes = 0;

function gate(): { opened: Promise<void>; open(): void } {
  let open = (): void => {};
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

async function sample(sc: TestSidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum(parsePrometheus(await sc.sidecar.metrics.metrics()), name, labels);
}

/** Two replicas of one service: same key prefix, each its own app; resolves once both reach Redis. */
async function replicas(appA: ScriptedUpstream, appB: ScriptedUpstream, commandTimeoutMs = 1000): Promise<[TestSidecar, TestSidecar]> {
  const redis = { address: '127.0.0.1', port: server.port, keyPrefix: `idem${++prefixes}`, commandTimeoutMs, probeIntervalMs: 100 };
  const start = async (app: ScriptedUpstream): Promise<TestSidecar> =>
    track(await startTestSidecar({ redis, inbound: { app: { address: '127.0.0.1', port: app.port }, idempotency: { store: 'redis' } } }));
  const pair: [TestSidecar, TestSidecar] = [await start(appA), await start(appB)];
  for (const sc of pair) await eventually('idempotency store up', async () => (await sample(sc, 'sluice_idempotency_redis_up')) === 1, 5000);
  return pair;
}

function post(sc: TestSidecar, key: string, path = '/orders'): Promise<SendResult> {
  return send({ port: sc.inboundPort, method: 'POST', path, host: 'shop', headers: { 'idempotency-key': key }, body: '{"item":"tea"}' });
}

/** An app whose every answer names it and its count, held until `g` opens when given. */
async function app(name: string, g?: { opened: Promise<void> }): Promise<ScriptedUpstream> {
  let n = 0;
  return track(
    await startScriptedUpstream((): Step => {
      const reply: Step = { status: 201, headers: { 'x-made-by': name }, body: `${name} made order ${++n}` };
      return g === undefined ? reply : { after: g.opened, then: reply };
    }),
  );
}

describe.skipIf(!redisAvailable())('idempotency shared through redis', () => {
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('a duplicate on another replica waits for the original and replays it; the key runs once', async () => {
    const g = gate();
    const appA = await app('a', g);
    const appB = await app('b', g);
    const [a, b] = await replicas(appA, appB);

    const original = post(a, 'shared-1');
    await appA.waitForHead(1);
    const dup = post(b, 'shared-1');
    await eventually('replica b polling the claim', async () => (await sample(b, 'sluice_idempotency_waiting')) === 1);
    g.open();
    const [ra, rb] = await Promise.all([original, dup]);
    expect([ra.status, ra.text]).toEqual([201, 'a made order 1']);
    expect([rb.status, rb.text, rb.headers['x-made-by'], rb.headers['sluice-idempotent-replay']]).toEqual([201, 'a made order 1', 'a', 'true']);
    expect(appA.count + appB.count).toBe(1);
    expect(await sample(b, 'sluice_idempotency_requests_total', { outcome: 'waited' })).toBe(1);

    // Later duplicates: b from Redis (now also its memory), a from its own memory.
    const later = await Promise.all([post(b, 'shared-1'), post(a, 'shared-1')]);
    expect(later.map((r) => r.text)).toEqual(['a made order 1', 'a made order 1']);
    expect(appA.count + appB.count).toBe(1);
    expect(await sample(a, 'sluice_idempotency_store_fallbacks_total')).toBe(0);
    expect(await sample(b, 'sluice_idempotency_store_fallbacks_total')).toBe(0);
  });

  it('a completed outcome is replayed by the other replica; another path is refused there too', async () => {
    const appA = await app('a');
    const appB = await app('b');
    const [a, b] = await replicas(appA, appB);
    expect((await post(a, 'shared-2')).text).toBe('a made order 1');
    const replay = await post(b, 'shared-2');
    expect([replay.status, replay.text, replay.headers['sluice-idempotent-replay']]).toEqual([201, 'a made order 1', 'true']);
    expect(await sample(b, 'sluice_idempotency_requests_total', { outcome: 'replayed' })).toBe(1);
    const wrong = await post(b, 'shared-2', '/refunds');
    expect([wrong.status, wrong.headers['sluice-error']]).toEqual([422, 'idempotency-mismatch']);
    expect(appA.count + appB.count).toBe(1);
  });

  it('with Redis gone, requests are decided in memory at once and counted; Redis back, keys are shared again', async () => {
    const appA = await app('a');
    const appB = await app('b');
    const [a, b] = await replicas(appA, appB);
    await server.stop();
    await eventually('a sees redis down', async () => (await sample(a, 'sluice_idempotency_redis_up')) === 0, 5000);

    const first = await post(a, 'while-down');
    expect([first.status, first.text]).toEqual([201, 'a made order 1']);
    const again = await post(a, 'while-down');
    expect([again.text, again.headers['sluice-idempotent-replay']]).toEqual(['a made order 1', 'true']);
    expect(appA.count).toBe(1);
    expect(await sample(a, 'sluice_idempotency_store_fallbacks_total')).toBeGreaterThanOrEqual(1);

    await server.restart();
    for (const sc of [a, b]) await eventually('idempotency store up again', async () => (await sample(sc, 'sluice_idempotency_redis_up')) === 1, 5000);
    expect((await post(a, 'after-restart')).text).toBe('a made order 2');
    expect((await post(b, 'after-restart')).text).toBe('a made order 2');
    expect(appB.count).toBe(0);
  });

  it('a Redis that hangs costs a request at most commandTimeoutMs, then memory decides at once', async () => {
    const appA = await app('a');
    const appB = await app('b');
    const [a] = await replicas(appA, appB, 100);
    server.pause();
    try {
      const first = await post(a, 'while-hung');
      expect([first.status, first.text]).toEqual([201, 'a made order 1']);
      // One command timeout (100 ms) at most, far inside the 5 s request deadline.
      expect(first.totalMs).toBeLessThan(2500);
      expect(await sample(a, 'sluice_idempotency_redis_up')).toBe(0);
      const next = await post(a, 'while-hung-2');
      expect(next.text).toBe('a made order 2');
      expect(await sample(a, 'sluice_idempotency_store_fallbacks_total')).toBe(2);
      expect((await post(a, 'while-hung')).text).toBe('a made order 1');
    } finally {
      server.resume();
    }
  });
});
