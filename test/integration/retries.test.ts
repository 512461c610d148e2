// Retries recover transient failures without multiplying load: which failures are retried (503,
// Retry-After, reset before a response, connection refused), which never are (bytes already sent
// to the client, non-idempotent requests without a key, bodies too large to replay), and the
// retry budget that caps total upstream attempts when an upstream fails every request.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricNames, metricSum } from '../support/metrics.ts';
import { RawConnection } from '../support/raw-client.ts';
import { deadPort } from '../support/raw-upstream.ts';
import { startScriptedUpstream, type Script } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type SpecOverrides } from '../support/sidecar.ts';

const track = closeAfterEach();

/** Fast, deterministic-enough retry settings; the budget is off unless a test turns it on. */
const FAST_RETRY = { maxAttempts: 3, backoff: { baseMs: 1, capMs: 5 }, retryAfterMaxMs: 3000 };

async function setup(script: Script, extra: SpecOverrides = {}) {
  const up = track(await startScriptedUpstream(script));
  const sc = track(
    await startTestSidecar({
      outbound: { upstreams: [upstream('orders', up.endpoint, { retry: FAST_RETRY, ...extra })] },
    }),
  );
  return { up, sc };
}

describe('retried failures', () => {
  it('503 twice, then success: the client sees the success after 3 attempts', async () => {
    const { up, sc } = await setup([{ status: 503 }, { status: 503 }, { status: 200, body: 'third time' }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('third time');
    expect(up.count).toBe(3);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_retries_total', { upstream: 'orders' }), metricNames(m).join(' ')).toBe(2);
  });

  it('gives up after maxAttempts and returns the last upstream answer', async () => {
    const { up, sc } = await setup({ queue: [], otherwise: { status: 503, body: 'still down' } });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(503);
    expect(r.text).toBe('still down');
    expect(r.headers['sluice-error']).toBeUndefined();
    expect(up.count).toBe(3);
  });

  it('honours a small Retry-After on a 503 before retrying', async () => {
    const { up, sc } = await setup([{ status: 503, headers: { 'retry-after': '1' } }, { status: 200, body: 'later' }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(200);
    expect(up.count).toBe(2);
    const gap = up.requests[1]!.arrivedAt - up.requests[0]!.arrivedAt;
    // Retry-After is whole seconds; the back-off alone would be a few ms.
    expect(gap).toBeGreaterThanOrEqual(950);
  });

  it('does not wait past retryAfterMaxMs: a long Retry-After is passed back instead', async () => {
    const { up, sc } = await setup([{ status: 503, headers: { 'retry-after': '120' } }, { status: 200 }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('120');
    expect(up.count).toBe(1);
  });

  it('retries a connection reset before any response', async () => {
    const { up, sc } = await setup(['reset', { status: 200, body: 'recovered' }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('recovered');
    expect(up.count).toBe(2);
  });

  it('connection refused: retried, then 503 connect-failure', async () => {
    const port = await deadPort();
    const sc = track(
      await startTestSidecar({ outbound: { upstreams: [upstream('orders', `127.0.0.1:${port}`, { retry: FAST_RETRY })] } }),
    );
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(503);
    expect(r.headers['sluice-error']).toBe('connect-failure');
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_retries_total', { upstream: 'orders' }), metricNames(m).join(' ')).toBe(2);
  });

  it('upstream process death mid-request: the reset is retried, the refusals end in 503 connect-failure', async () => {
    const { up, sc } = await setup(['die']);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(503);
    expect(r.headers['sluice-error']).toBe('connect-failure');
    expect(up.count).toBe(1);
  });
});

describe('retries and time', () => {
  it('no retry is started that the deadline cannot fit: a Retry-After past it returns the 503 at once', async () => {
    const { up, sc } = await setup([{ status: 503, headers: { 'retry-after': '2' } }, { status: 200 }], {
      timeouts: { requestMs: 500, perTryMs: 500 },
    });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(503);
    expect(r.headMs).toBeLessThan(500);
    expect(up.count).toBe(1);
  });

  it('a client that leaves during a back-off wait gets no further attempts made for it', async () => {
    // Retry-After 1 s holds the retry; the client leaves at once; by 2 s a retry would have run.
    const { up, sc } = await setup([{ status: 503, headers: { 'retry-after': '1' } }, { status: 200 }]);
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('GET /r HTTP/1.1\r\nHost: orders\r\n\r\n');
    await up.waitForRequest(1);
    c.destroy();
    await expect(up.waitForHead(2, 2000)).rejects.toThrow(/timed out/);
    expect(up.count).toBe(1);
  });
});

describe('failures never retried', () => {
  it('a reset mid-body after bytes reached the client: no retry, the client sees a broken body', async () => {
    const { up, sc } = await setup([{ resetMidBody: 4096, declaredBytes: 100_000 }, { status: 200, body: 'must not be used' }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/r' });
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe('100000');
    expect(r.bodyError).toBeDefined();
    expect(r.bodyBytes).toBeLessThan(100_000);
    expect(up.count).toBe(1);
  });

  it('POST without Idempotency-Key is never retried', async () => {
    const { up, sc } = await setup([{ status: 503 }, { status: 200 }]);
    const r = await send({ port: sc.outboundPort, host: 'orders', method: 'POST', path: '/p', body: 'once' });
    expect(r.status).toBe(503);
    expect(up.count).toBe(1);
  });

  it('POST with Idempotency-Key is retried, with the same body', async () => {
    const { up, sc } = await setup([{ status: 503 }, { status: 200, body: 'stored' }]);
    const r = await send({
      port: sc.outboundPort,
      host: 'orders',
      method: 'POST',
      path: '/p',
      body: 'payload-123',
      headers: { 'idempotency-key': 'k-1' },
    });
    expect(r.status).toBe(200);
    expect(up.count).toBe(2);
    expect(up.requests.map((q) => q.body.toString())).toEqual(['payload-123', 'payload-123']);
    expect(up.requests[1]!.headers['idempotency-key']).toBe('k-1');
  });

  it('a body larger than bufferLimitBytes is not retried; a smaller one is', async () => {
    // Every path fails its first attempt and succeeds on the next.
    const seen = new Map<string, number>();
    const firstFails = (url: string) => {
      seen.set(url, (seen.get(url) ?? 0) + 1);
      return seen.get(url) === 1 ? { status: 503 } : { status: 200 };
    };
    const { up, sc } = await setup((req) => firstFails(req.url), {
      retry: { ...FAST_RETRY, bufferLimitBytes: 1024 },
    });
    const big = await send({ port: sc.outboundPort, host: 'orders', method: 'PUT', path: '/big', body: Buffer.alloc(4096, 1) });
    expect(big.status).toBe(503);
    expect(up.requests.map((q) => [q.url, q.bodyLength])).toEqual([['/big', 4096]]);
    const small = await send({ port: sc.outboundPort, host: 'orders', method: 'PUT', path: '/small', body: Buffer.alloc(512, 2) });
    expect(small.status).toBe(200);
    expect(up.requests.slice(1).map((q) => [q.url, q.bodyLength])).toEqual([
      ['/small', 512],
      ['/small', 512],
    ]);
  });

  it('a chunked body that grows past bufferLimitBytes is not retried, and arrives intact', async () => {
    const { up, sc } = await setup([{ status: 503 }, { status: 200 }], { retry: { ...FAST_RETRY, bufferLimitBytes: 1024 } });
    const { Readable } = await import('node:stream');
    // No Content-Length: the sidecar only learns the size by reading.
    const body = Readable.from([Buffer.alloc(800, 3), Buffer.alloc(800, 4), Buffer.alloc(800, 5)]);
    const r = await send({ port: sc.outboundPort, host: 'orders', method: 'PUT', path: '/chunked', body });
    expect(r.status).toBe(503);
    expect(up.count).toBe(1);
    expect(up.requests[0]!.bodyLength).toBe(2400);
  });
});

describe('retry budget', () => {
  it('caps total attempts when the upstream fails every request, and counts the exhaustion', async () => {
    const ratio = 0.2;
    const minRetriesPerSecond = 2;
    const { up, sc } = await setup({ queue: [], otherwise: { status: 503 } }, {
      retryBudget: { ratio, minRetriesPerSecond, windowMs: 10_000, maxConcurrentRetries: 100 },
      // The breaker would open on these failures and refuse before the budget is tested.
      circuitBreaker: 'off',
    });
    const requests = 60;
    const started = performance.now();
    // Ten clients in parallel, six requests each.
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        for (let i = 0; i < requests / 10; i++) {
          const r = await send({ port: sc.outboundPort, host: 'orders', path: '/b' });
          expect(r.status).toBe(503);
        }
      }),
    );
    const elapsedS = (performance.now() - started) / 1000;
    const bound = requests * (1 + ratio) + minRetriesPerSecond * (elapsedS + 1);
    expect(up.count).toBeLessThanOrEqual(Math.floor(bound));
    // Without the budget it would be requests × maxAttempts.
    expect(up.count).toBeLessThan(requests * FAST_RETRY.maxAttempts);
    const m = await sc.metrics();
    // Budget exhaustion is counted as a refused retry with why="budget".
    const exhausted = metricSum(m, 'sluice_retries_refused_total', { upstream: 'orders', why: 'budget' });
    expect(exhausted, metricNames(m).join(' ')).toBeGreaterThan(0);
    const retries = metricSum(m, 'sluice_retries_total', { upstream: 'orders' });
    expect(retries).toBe(up.count - requests);
  });
});
