// The idempotency layer alone over a fake app whose answers the test releases by hand, with
// streamed bodies it drives chunk by chunk: no sockets, no sleeps, TTL on a fake clock. Every
// decision is checked through the layer's own counters as well as what clients receive.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { declareIdempotencyMetrics, IdempotencyDedupe, type IdempotencyDeps } from '../../../../src/policies/idempotency/dedupe.ts';
import type { IdempotencyPolicy } from '../../../../src/policy/types.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import { cancel, type Handler, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { FakeClock } from '../../../support/fake-clock.ts';
import { CollectSink, FakeBody, readBody } from './fake-body.ts';

const POLICY: IdempotencyPolicy = { ttlMs: 60_000, maxEntries: 100, maxBytes: 1 << 20, maxResponseBytes: 64, store: 'memory' };

interface Call {
  readonly req: ProxyRequest;
  readonly ctx: RequestContext;
  resolve(r: ProxyResponse): void;
  reject(e: Error): void;
}

function build(policy: Partial<IdempotencyPolicy> = {}, deps: Partial<IdempotencyDeps> = {}) {
  const registry = new Registry();
  const metrics = declareIdempotencyMetrics(registry);
  const clock = new FakeClock();
  const warnings: string[] = [];
  const log = { info: () => {}, warn: (_o: object, msg: string) => warnings.push(msg) };
  const dedupe = new IdempotencyDedupe({ ...POLICY, ...policy }, { clock, metrics, log, redis: undefined, ...deps });
  const calls: Call[] = [];
  const app: Handler = (req, ctx) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      calls.push({ req, ctx, resolve, reject });
    });
  const handler = dedupe.layer()(app);
  const send = (key: string | undefined, over: Partial<ProxyRequest> = {}, ctx: RequestContext = testContext({ direction: 'inbound', upstream: 'app' })) => {
    const c: RequestContext = { ...ctx, idempotencyKey: key };
    const req: ProxyRequest = { method: 'POST', path: '/orders', authority: 'shop', headers: [], body: null, bodyLength: undefined, ...over };
    return { ctx: c, res: handler(req, c) };
  };
  const value = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const m = await registry.getSingleMetric(name)?.get();
    return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
  };
  const outcomes = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const o of ['first', 'replayed', 'waited', 'mismatch', 'conflict', 'not_stored']) {
      const n = await value('sluice_idempotency_requests_total', { outcome: o });
      if (n > 0) out[o] = n;
    }
    return out;
  };
  return { dedupe, calls, send, clock, value, outcomes, warnings };
}

/** A streamed answer from the app, and the body the test drives. */
function streamed(statusCode = 201, headers: Record<string, string> = { 'content-type': 'text/plain' }) {
  const body = new FakeBody();
  return { body, response: { statusCode, headers: { ...headers }, body } satisfies ProxyResponse };
}

/** The original's client: pipes the response as the listener would. */
function client(res: ProxyResponse): CollectSink {
  const sink = new CollectSink();
  const b = res.body;
  if (b !== null && !Buffer.isBuffer(b)) b.pipeTo(sink);
  return sink;
}

/** Lets pending promise callbacks run (the layer's awaits), without any timer. */
const settle = () => new Promise<void>((r) => setImmediate(r));

describe('IdempotencyDedupe layer', () => {
  it('passes requests without a key (or with an empty one) straight through', async () => {
    const t = build();
    const answer: ProxyResponse = { statusCode: 200, headers: {}, body: null };
    const a = t.send(undefined);
    const b = t.send('');
    expect(t.calls).toHaveLength(2);
    t.calls[0]!.resolve(answer);
    t.calls[1]!.resolve(answer);
    expect(await a.res).toBe(answer);
    expect(await b.res).toBe(answer);
    expect(await t.outcomes()).toEqual({});
  });

  it('concurrent duplicates wait for the original: the app runs once, every client gets the same bytes', async () => {
    const t = build();
    const original = t.send('k1');
    const dups = [t.send('k1'), t.send('k1')];
    await settle();
    expect(t.calls).toHaveLength(1);
    expect(await t.value('sluice_idempotency_waiting')).toBe(2);

    const { body, response } = streamed();
    t.calls[0]!.resolve(response);
    const first = await original.res;
    expect(first.headers['sluice-idempotent-replay']).toBeUndefined();
    const sink = client(first);
    body.write('order ');
    body.write('#7 ');
    await settle();
    // Not before the original's body is complete.
    let early = false;
    void Promise.race(dups.map((d) => d.res)).then(() => (early = true));
    await settle();
    expect(early).toBe(false);
    body.end(null, 'created');
    expect(sink.body.toString()).toBe('order #7 created');

    for (const d of dups) {
      const r = await d.res;
      expect(r.statusCode).toBe(201);
      expect(Buffer.isBuffer(r.body)).toBe(true);
      expect((r.body as Buffer).toString()).toBe('order #7 created');
      expect(r.headers).toEqual({ 'content-type': 'text/plain', 'content-length': '16', 'sluice-idempotent-replay': 'true' });
    }
    expect(t.calls).toHaveLength(1);
    expect(await t.outcomes()).toEqual({ first: 1, waited: 2 });
    expect(await t.value('sluice_idempotency_entries')).toBe(1);
    expect(await t.value('sluice_idempotency_waiting')).toBe(0);
  });

  it('a later duplicate within the TTL is replayed; after it, the request runs again', async () => {
    const t = build();
    const a = t.send('k');
    const { body, response } = streamed(200);
    t.calls[0]!.resolve(response);
    client(await a.res);
    body.end({ 'x-checksum': 'abc' }, 'done');

    t.clock.advance(59_999);
    const b = await t.send('k').res;
    expect(await readBody(b)).toEqual({ body: Buffer.from('done'), trailers: { 'x-checksum': 'abc' } });
    expect(b.headers['sluice-idempotent-replay']).toBe('true');
    expect(t.calls).toHaveLength(1);

    t.clock.advance(1);
    const c = t.send('k');
    expect(t.calls).toHaveLength(2);
    t.calls[1]!.resolve({ statusCode: 200, headers: {}, body: Buffer.from('again') });
    expect(((await c.res).body as Buffer).toString()).toBe('again');
    expect(await t.outcomes()).toEqual({ first: 2, replayed: 1 });
    expect(await t.value('sluice_idempotency_evictions_total', { reason: 'ttl' })).toBe(1);
  });

  it('stores Buffer and empty answers as they are', async () => {
    const t = build();
    const a = t.send('buf');
    t.calls[0]!.resolve({ statusCode: 200, headers: { etag: '"1"' }, body: Buffer.from('whole') });
    await a.res;
    const h = t.send('head', { method: 'HEAD' });
    t.calls[1]!.resolve({ statusCode: 200, headers: { 'content-length': '99' }, body: null });
    await h.res;
    expect(((await t.send('buf').res).body as Buffer).toString()).toBe('whole');
    const again = await t.send('head', { method: 'HEAD' }).res;
    expect(again).toEqual({ statusCode: 200, headers: { 'content-length': '99', 'sluice-idempotent-replay': 'true' }, body: null });
    expect(t.calls).toHaveLength(2);
  });

  it('replays the headers as they arrived, not what outer layers added to the original later', async () => {
    const t = build();
    const a = t.send('k');
    t.calls[0]!.resolve({ statusCode: 200, headers: { 'x-app': '1' }, body: Buffer.from('x') });
    const first = await a.res;
    (first.headers as Record<string, string>)['sluice-credit'] = '5';
    expect((await t.send('k').res).headers).toEqual({ 'x-app': '1', 'content-length': '1', 'sluice-idempotent-replay': 'true' });
  });

  it('a 5xx is not stored: the oldest waiter runs the request itself, the others wait for it', async () => {
    const t = build();
    const original = t.send('k');
    const w1 = t.send('k', { headers: ['x-try', '2'] });
    const w2 = t.send('k');
    await settle();
    t.calls[0]!.resolve({ statusCode: 503, headers: {}, body: Buffer.from('busy') });
    expect((await original.res).statusCode).toBe(503);
    await settle();
    expect(t.calls).toHaveLength(2);
    expect(t.calls[1]!.req.headers).toEqual(['x-try', '2']);

    t.calls[1]!.resolve({ statusCode: 201, headers: {}, body: Buffer.from('made') });
    expect((await w1.res).headers['sluice-idempotent-replay']).toBeUndefined();
    const r2 = await w2.res;
    expect([r2.statusCode, (r2.body as Buffer).toString(), r2.headers['sluice-idempotent-replay']]).toEqual([201, 'made', 'true']);
    expect(await t.outcomes()).toEqual({ first: 2, not_stored: 1, waited: 1 });
  });

  it.each([429, 408])('a %i (not processed, try later) is not stored either', async (status) => {
    const t = build();
    const a = t.send('k');
    t.calls[0]!.resolve({ statusCode: status, headers: {}, body: null });
    await a.res;
    t.send('k');
    expect(t.calls).toHaveLength(2);
  });

  it('a failure inside (error or local reply) is not stored and frees the key', async () => {
    const t = build();
    const a = t.send('k');
    t.calls[0]!.reject(new SluiceError('connect-failure'));
    await expect(a.res).rejects.toMatchObject({ code: 'connect-failure' });
    const b = t.send('k');
    expect(t.calls).toHaveLength(2);
    t.calls[1]!.resolve({ statusCode: 200, headers: {}, body: null });
    await b.res;
    expect(await t.outcomes()).toEqual({ first: 2, not_stored: 1 });
  });

  it('a body cut mid-stream is not stored: the waiter runs the request', async () => {
    const t = build();
    const a = t.send('k');
    const w = t.send('k');
    const { body, response } = streamed();
    t.calls[0]!.resolve(response);
    const sink = client(await a.res);
    body.write('half');
    body.fail(new Error('app reset'));
    expect(sink.failed?.message).toBe('app reset');
    await settle();
    expect(t.calls).toHaveLength(2);
    t.calls[1]!.resolve({ statusCode: 200, headers: {}, body: Buffer.from('whole') });
    expect(((await w.res).body as Buffer).toString()).toBe('whole');
  });

  it('a body thrown away (the client left before it) is not stored', async () => {
    const t = build();
    const a = t.send('k');
    const { body, response } = streamed();
    t.calls[0]!.resolve(response);
    const r = await a.res;
    (r.body as FakeBody).discard();
    expect(body.discarded).toBe(true);
    t.send('k');
    expect(t.calls).toHaveLength(2);
  });

  it('a body over maxResponseBytes streams whole to its client; duplicates get 409, waiting or later', async () => {
    const t = build({ maxResponseBytes: 8 });
    const a = t.send('k');
    const w = t.send('k');
    const { body, response } = streamed(200);
    t.calls[0]!.resolve(response);
    const sink = client(await a.res);
    body.write('0123456');
    body.write('789'); // passes the cap: the waiter is answered now
    await expect(w.res).rejects.toMatchObject({ code: 'idempotency-conflict', status: 409, message: expect.stringContaining('larger than maxResponseBytes (8 bytes)') });
    body.end(null, 'abc');
    expect(sink.body.toString()).toBe('0123456789abc');
    await expect(t.send('k').res).rejects.toMatchObject({ code: 'idempotency-conflict' });
    expect(t.calls).toHaveLength(1);
    expect(await t.outcomes()).toEqual({ first: 1, not_stored: 1, conflict: 2 });
  });

  it('a Content-Length over the cap is known unreplayable at the headers', async () => {
    const t = build({ maxResponseBytes: 8 });
    const a = t.send('k');
    const { response } = streamed(200, { 'content-length': '9' });
    t.calls[0]!.resolve(response);
    const r = await a.res;
    expect(r.body).toBe(response.body); // not even teed
    await expect(t.send('k').res).rejects.toMatchObject({ code: 'idempotency-conflict' });
  });

  it('the same key on another method or path is refused with 422, in flight or stored', async () => {
    const t = build();
    const a = t.send('k');
    await expect(t.send('k', { path: '/refunds' }).res).rejects.toMatchObject({ code: 'idempotency-mismatch', status: 422 });
    t.calls[0]!.resolve({ statusCode: 201, headers: {}, body: null });
    await a.res;
    await expect(t.send('k', { method: 'PUT' }).res).rejects.toMatchObject({ code: 'idempotency-mismatch' });
    await expect(t.send('k', { authority: 'other' }).res).rejects.toMatchObject({ code: 'idempotency-mismatch' });
    await expect(t.send('k', { path: '/orders?x=1' }).res).rejects.toMatchObject({ code: 'idempotency-mismatch' });
    expect(t.calls).toHaveLength(1);
    expect(await t.outcomes()).toEqual({ first: 1, mismatch: 4 });
  });

  it('a waiter that is cancelled leaves at once; the original goes on unharmed', async () => {
    const t = build();
    const a = t.send('k');
    const w = t.send('k');
    await settle();
    const gone = new SluiceError('client-closed');
    cancel(w.ctx, gone);
    await expect(w.res).rejects.toBe(gone);
    expect(await t.value('sluice_idempotency_waiting')).toBe(0);
    t.calls[0]!.resolve({ statusCode: 200, headers: {}, body: Buffer.from('ok') });
    expect((await a.res).statusCode).toBe(200);
    expect(t.calls).toHaveLength(1);
    expect(await t.outcomes()).toEqual({ first: 1 });
  });

  it('a duplicate whose deadline has passed is not kept waiting', async () => {
    const t = build();
    t.clock.set(5000);
    t.send('k');
    const w = t.send('k', {}, testContext({ deadlineMs: 5000 }));
    await expect(w.res).rejects.toMatchObject({ code: 'deadline-exceeded' });
  });

  it('refuses waiters beyond maxWaitersPerKey with 409', async () => {
    const t = build({}, { maxWaitersPerKey: 1 });
    t.send('k');
    const w1 = t.send('k');
    await settle();
    await expect(t.send('k').res).rejects.toMatchObject({ code: 'idempotency-conflict', retryAfterS: 1 });
    t.calls[0]!.resolve({ statusCode: 200, headers: {}, body: null });
    expect((await w1.res).statusCode).toBe(200);
    expect(await t.outcomes()).toEqual({ first: 1, waited: 1, conflict: 1 });
  });

  it('holds at most maxEntries and maxBytes of outcomes, least recently used out first', async () => {
    const t = build({ maxEntries: 2 });
    for (const k of ['a', 'b', 'c']) {
      const r = t.send(k);
      t.calls.at(-1)!.resolve({ statusCode: 200, headers: {}, body: Buffer.from(k) });
      await r.res;
    }
    expect(await t.value('sluice_idempotency_entries')).toBe(2);
    expect(await t.value('sluice_idempotency_evictions_total', { reason: 'lru' })).toBe(1);
    // 'a' was evicted: it runs again; 'c' is still there.
    await t.send('c').res;
    t.send('a');
    expect(t.calls).toHaveLength(4);

    const bytes = build({ maxBytes: 2 * (1 + 1 + 'POST shop/orders'.length) });
    for (const k of ['a', 'b', 'c']) {
      const r = bytes.send(k);
      bytes.calls.at(-1)!.resolve({ statusCode: 200, headers: {}, body: Buffer.from(k) });
      await r.res;
    }
    expect(await bytes.value('sluice_idempotency_entries')).toBe(2);
    expect(await bytes.value('sluice_idempotency_bytes')).toBe(36);
  });

  it('an outcome larger than the whole store is remembered as unreplayable, not forgotten', async () => {
    const t = build({ maxBytes: 40, maxResponseBytes: 64 });
    const a = t.send('k');
    const w = t.send('k');
    t.calls[0]!.resolve({ statusCode: 200, headers: {}, body: Buffer.alloc(30) });
    await a.res;
    // The waiter was there: it gets the outcome, which is at hand.
    expect(((await w.res).body as Buffer).length).toBe(30);
    await expect(t.send('k').res).rejects.toMatchObject({ code: 'idempotency-conflict' });
    expect(t.calls).toHaveLength(1);
  });

  it('a policy update keeps stored outcomes and applies new caps at once', async () => {
    const t = build();
    for (const k of ['a', 'b']) {
      const r = t.send(k);
      t.calls.at(-1)!.resolve({ statusCode: 200, headers: {}, body: Buffer.from(k) });
      await r.res;
    }
    t.dedupe.reconfigure({ ...POLICY, maxEntries: 1 }, undefined);
    expect(await t.value('sluice_idempotency_entries')).toBe(1);
    expect(((await t.send('b').res).body as Buffer).toString()).toBe('b');
    t.dedupe.reconfigure({ ...POLICY, store: 'redis' }, undefined);
    expect(t.warnings).toEqual([expect.stringContaining('redis needs spec.redis')]);
    expect(((await t.send('b').res).body as Buffer).toString()).toBe('b');
    await t.dedupe.close();
    expect(await t.value('sluice_idempotency_entries')).toBe(0);
  });
});
