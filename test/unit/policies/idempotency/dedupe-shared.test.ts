// The layer's store: redis path over a fake shared store with Redis' semantics (SET NX, compare
// and set, compare and delete): two sidecars, one key, and what each does while the other holds
// it. Polls run on the layer's real back-off timers (5 ms first); tests wait for what the layer
// reports (its waiting gauge, its answers), never for a fixed time.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { declareIdempotencyMetrics, IdempotencyDedupe } from '../../../../src/policies/idempotency/dedupe.ts';
import { SharedStoreUnavailable, type Existing, type SharedStore } from '../../../../src/policies/idempotency/redis-store.ts';
import { REDIS_DEFAULTS } from '../../../../src/policy/ratelimits.ts';
import type { IdempotencyPolicy } from '../../../../src/policy/types.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import { cancel, type Handler, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const POLICY: IdempotencyPolicy = { ttlMs: 60_000, maxEntries: 100, maxBytes: 1 << 20, maxResponseBytes: 1024, store: 'redis' };

/** One Redis both sidecars talk to. */
class FakeRedis {
  readonly values = new Map<string, Buffer>();
  claims = 0;
}

class FakeSharedStore implements SharedStore {
  usable = true;
  /** Calls fail as a Redis that stopped answering would. */
  failing = false;
  readonly #redis: FakeRedis;
  constructor(redis: FakeRedis) {
    this.#redis = redis;
  }
  ready(): Promise<void> {
    return Promise.resolve();
  }
  #check(): void {
    if (!this.usable) throw new SharedStoreUnavailable('down');
    if (this.failing) throw new SharedStoreUnavailable('timeout');
  }
  async claim(key: string, marker: Buffer): Promise<Existing | null> {
    this.#check();
    this.#redis.claims++;
    const v = this.#redis.values.get(key);
    if (v !== undefined) return { value: v, pttlMs: 30_000 };
    this.#redis.values.set(key, marker);
    return null;
  }
  async complete(key: string, marker: Buffer, value: Buffer): Promise<boolean> {
    this.#check();
    const v = this.#redis.values.get(key);
    if (v !== undefined && !v.equals(marker)) return false;
    this.#redis.values.set(key, value);
    return true;
  }
  async release(key: string, marker: Buffer): Promise<void> {
    this.#check();
    if (this.#redis.values.get(key)?.equals(marker)) this.#redis.values.delete(key);
  }
  async close(): Promise<void> {}
}

interface Call {
  readonly req: ProxyRequest;
  resolve(r: ProxyResponse): void;
  reject(e: Error): void;
}

function sidecar(redis: FakeRedis, clock = new FakeClock()) {
  const registry = new Registry();
  const metrics = declareIdempotencyMetrics(registry);
  let store: FakeSharedStore | undefined;
  const dedupe = new IdempotencyDedupe(POLICY, {
    clock,
    metrics,
    log: { info: () => {}, warn: () => {} },
    redis: REDIS_DEFAULTS,
    openSharedStore: () => (store = new FakeSharedStore(redis)),
  });
  const calls: Call[] = [];
  const app: Handler = (req) => new Promise<ProxyResponse>((resolve, reject) => calls.push({ req, resolve, reject }));
  const handler = dedupe.layer()(app);
  const send = (key: string, path = '/orders', ctx: RequestContext = testContext({ direction: 'inbound' })) => {
    const c: RequestContext = { ...ctx, idempotencyKey: key };
    return { ctx: c, res: handler({ method: 'POST', path, authority: 'shop', headers: [], body: null, bodyLength: undefined }, c) };
  };
  const value = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const m = await registry.getSingleMetric(name)?.get();
    return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
  };
  /** Resolves once `n` requests wait on this sidecar (polling or queued behind one that polls). */
  const waiting = async (n: number): Promise<void> => {
    for (let i = 0; i < 10_000; i++) {
      if ((await value('sluice_idempotency_waiting')) === n) return;
      await new Promise((r) => setImmediate(r));
    }
    throw new Error(`never saw ${n} waiting`);
  };
  return { dedupe, calls, send, value, waiting, store: () => store!, clock };
}

const ok = (body: string, statusCode = 201): ProxyResponse => ({ statusCode, headers: { 'x-by': body }, body: Buffer.from(body) });
const settle = () => new Promise<void>((r) => setImmediate(r));

describe('IdempotencyDedupe with a shared store', () => {
  it('the other sidecar polls while the key is held, then replays: one app call in all', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    const original = a.send('k');
    await settle();
    expect(a.calls).toHaveLength(1);
    const polling = b.send('k');
    const queued = b.send('k'); // behind b's poller, not a second poller
    await b.waiting(2);
    a.calls[0]!.resolve(ok('from-a'));
    expect(((await original.res).body as Buffer).toString()).toBe('from-a');
    for (const r of [await polling.res, await queued.res]) {
      expect([(r.body as Buffer).toString(), r.headers['x-by'], r.headers['sluice-idempotent-replay']]).toEqual(['from-a', 'from-a', 'true']);
    }
    expect(b.calls).toHaveLength(0);
    expect(await b.value('sluice_idempotency_requests_total', { outcome: 'waited' })).toBe(2);
    // b keeps the outcome in memory: answered without the shared store.
    const claims = redis.claims;
    expect(((await b.send('k').res).body as Buffer).toString()).toBe('from-a');
    expect(redis.claims).toBe(claims);
  });

  it('a completed outcome is replayed from the shared store at once', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    const r = a.send('k');
    await settle();
    a.calls[0]!.resolve(ok('done'));
    await r.res;
    await settle();
    const replay = await b.send('k').res;
    expect((replay.body as Buffer).toString()).toBe('done');
    expect(await b.value('sluice_idempotency_requests_total', { outcome: 'replayed' })).toBe(1);
    await expect(b.send('k', '/refunds').res).rejects.toMatchObject({ code: 'idempotency-mismatch' });
  });

  it('the holder\'s 5xx frees the key in the shared store: the other sidecar runs it', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    const original = a.send('k');
    await settle();
    const dup = b.send('k');
    await b.waiting(1);
    a.calls[0]!.resolve(ok('busy', 503));
    expect((await original.res).statusCode).toBe(503);
    await b.waiting(0);
    expect(b.calls).toHaveLength(1);
    b.calls[0]!.resolve(ok('from-b'));
    expect(((await dup.res).body as Buffer).toString()).toBe('from-b');
    await settle();
    expect(((await a.send('k').res).body as Buffer).toString()).toBe('from-b');
    expect(a.calls).toHaveLength(1);
  });

  it('the shared store unusable before anything is known: decided in memory, counted', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    a.store().usable = false;
    const r = a.send('k');
    await settle();
    expect(a.calls).toHaveLength(1);
    a.calls[0]!.resolve(ok('local'));
    await r.res;
    expect(await a.value('sluice_idempotency_store_fallbacks_total')).toBe(1);
    expect(redis.values.size).toBe(0);
    expect(((await a.send('k').res).body as Buffer).toString()).toBe('local');
    expect(a.calls).toHaveLength(1);
  });

  it('the shared store failing while another sidecar holds the key: 409, never a second run', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    a.send('k');
    await settle();
    const dup = b.send('k');
    await b.waiting(1);
    b.store().failing = true;
    await expect(dup.res).rejects.toMatchObject({ code: 'idempotency-conflict', retryAfterS: 1, message: expect.stringContaining('another replica') });
    expect(b.calls).toHaveLength(0);
  });

  it('a poller leaves on cancellation, and at its deadline, without ever claiming the key', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    a.send('k');
    await settle();
    const gone = b.send('k');
    await b.waiting(1);
    const reason = new SluiceError('client-closed');
    cancel(gone.ctx, reason);
    await expect(gone.res).rejects.toBe(reason);

    const late = b.send('k', '/orders', testContext({ deadlineMs: b.clock.now() + 50 }));
    await b.waiting(1);
    b.clock.advance(50);
    await expect(late.res).rejects.toMatchObject({ code: 'deadline-exceeded' });
    expect(b.calls).toHaveLength(0);
    expect(await b.value('sluice_idempotency_waiting')).toBe(0);
  });

  it('an oversize outcome is shared as unreplayable', async () => {
    const redis = new FakeRedis();
    const a = sidecar(redis);
    const b = sidecar(redis);
    const r = a.send('k');
    await settle();
    a.calls[0]!.resolve({ statusCode: 200, headers: {}, body: Buffer.alloc(2000) });
    await r.res;
    await settle();
    await expect(b.send('k').res).rejects.toMatchObject({ code: 'idempotency-conflict' });
    expect(b.calls).toHaveLength(0);
  });
});
