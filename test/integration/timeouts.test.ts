// Every request ends: a hung upstream costs the deadline (or one try), never more; the remaining
// deadline travels to the next hop and shrinks on the way; a request that arrives already late is
// refused before it costs the app anything; a body that stops flowing is cut; a client that
// dribbles its request head is cut off. These are properties about time, so the assertions use
// wall-clock bounds, with generous slack on the late side (a loaded CI box runs late, never early).
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { RawConnection } from '../support/raw-client.ts';
import { startScriptedUpstream, type Script } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type SpecOverrides } from '../support/sidecar.ts';

const track = closeAfterEach();
/** Timers fire late under load, never early; this is how late we tolerate. */
const LATE_SLACK_MS = 1000;
/** Timer granularity: a timer may appear to fire this much early when measured from outside. */
const EARLY_SLACK_MS = 30;

async function setup(script: Script, upstreamExtra: SpecOverrides = {}, spec: SpecOverrides = {}) {
  const up = track(await startScriptedUpstream(script));
  const sc = track(
    await startTestSidecar({
      ...spec,
      outbound: { upstreams: [upstream('orders', up.endpoint, upstreamExtra)] },
    }),
  );
  return { up, sc };
}

describe('deadlines on a hung upstream', () => {
  it('answers 504 deadline-exceeded at requestMs', async () => {
    const requestMs = 400;
    const { up, sc } = await setup(['hang'], { timeouts: { requestMs, perTryMs: 10_000 }, retry: 'off' });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/hang', timeoutMs: 5000 });
    expect(r.status).toBe(504);
    expect(r.headers['sluice-error']).toBe('deadline-exceeded');
    expect(r.headMs).toBeGreaterThanOrEqual(requestMs - EARLY_SLACK_MS);
    expect(r.headMs).toBeLessThan(requestMs + LATE_SLACK_MS);
    // The hung upstream request is abandoned, not left open.
    expect(await up.requests[0]!.ended).toBe('closed');
  });

  it('answers 504 per-try-timeout at perTryMs when no retry is allowed', async () => {
    const perTryMs = 300;
    const { sc } = await setup(['hang'], { timeouts: { requestMs: 5000, perTryMs }, retry: { maxAttempts: 1 } });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/hang' });
    expect(r.status).toBe(504);
    expect(r.headers['sluice-error']).toBe('per-try-timeout');
    expect(r.headMs).toBeGreaterThanOrEqual(perTryMs - EARLY_SLACK_MS);
    expect(r.headMs).toBeLessThan(perTryMs + LATE_SLACK_MS);
  });

  it('retries after a per-try timeout and succeeds on the next try', async () => {
    const perTryMs = 200;
    const { up, sc } = await setup(['hang', { status: 200, body: 'second' }], {
      timeouts: { requestMs: 5000, perTryMs },
      retry: { maxAttempts: 3, backoff: { baseMs: 1, capMs: 2 } },
    });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/x' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('second');
    expect(up.count).toBe(2);
    expect(await up.requests[0]!.ended).toBe('closed');
  });

  it('a caller deadline shorter than the policy wins', async () => {
    const { sc } = await setup(['hang'], { timeouts: { requestMs: 10_000, perTryMs: 10_000 }, retry: 'off' });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/x', headers: { 'sluice-timeout-ms': '300' } });
    expect(r.status).toBe(504);
    expect(r.headers['sluice-error']).toBe('deadline-exceeded');
    expect(r.headMs).toBeLessThan(300 + LATE_SLACK_MS);
  });
});

describe('deadline propagation', () => {
  it('sends the remaining deadline to the upstream, capped by the caller and decreasing per try', async () => {
    const { up, sc } = await setup([{ delayMs: 150, then: { status: 503 } }, { echo: true }], {
      timeouts: { requestMs: 10_000, perTryMs: 5000 },
      retry: { maxAttempts: 2, backoff: { baseMs: 1, capMs: 2 } },
    });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/d', headers: { 'sluice-timeout-ms': '2000' } });
    expect(r.status).toBe(200);
    const first = Number(up.requests[0]!.headers['sluice-timeout-ms']);
    const second = Number(up.requests[1]!.headers['sluice-timeout-ms']);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThanOrEqual(2000);
    // The second try started at least 150 ms (the first try's delay) later.
    expect(second).toBeLessThanOrEqual(first - 150 + EARLY_SLACK_MS);
    expect(second).toBeGreaterThan(0);
  });

  it('sends the policy deadline when the caller gave none', async () => {
    const { up, sc } = await setup([{ echo: true }], { timeouts: { requestMs: 3000, perTryMs: 3000 }, retry: 'off' });
    await send({ port: sc.outboundPort, host: 'orders', path: '/d' });
    const v = Number((await up.waitForRequest(1)).headers['sluice-timeout-ms']);
    expect(v).toBeGreaterThan(3000 - LATE_SLACK_MS);
    expect(v).toBeLessThanOrEqual(3000);
  });

  it('inbound: a request arriving with an expired deadline is refused at once; the app never sees it', async () => {
    const app = track(await startScriptedUpstream());
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }));
    const r = await send({ port: sc.inboundPort, path: '/work', headers: { 'sluice-timeout-ms': '0' } });
    expect(r.status).toBe(504);
    expect(r.headers['sluice-error']).toBe('deadline-exceeded');
    expect(r.headMs).toBeLessThan(LATE_SLACK_MS);
    // Control: the same request with time left does reach the app.
    const ok = await send({ port: sc.inboundPort, path: '/work', headers: { 'sluice-timeout-ms': '2000' } });
    expect(ok.status).toBe(200);
    expect(app.requests.map((q) => q.url)).toEqual(['/work']);
  });
});

describe('inbound deadlines', () => {
  it('caps a caller deadline at maxDeadlineMs and passes the remainder to the app', async () => {
    const app = track(await startScriptedUpstream([{ echo: true }]));
    const sc = track(
      await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port }, maxDeadlineMs: 1000 } }),
    );
    const r = await send({ port: sc.inboundPort, path: '/work', headers: { 'sluice-timeout-ms': '600000' } });
    expect(r.status).toBe(200);
    const v = Number((await app.waitForRequest(1)).headers['sluice-timeout-ms']);
    expect(v).toBeGreaterThan(0);
    expect(v).toBeLessThanOrEqual(1000);
  });

  it('a hung app gets 504 deadline-exceeded at the inbound requestMs', async () => {
    const app = track(await startScriptedUpstream(['hang']));
    const requestMs = 300;
    const sc = track(
      await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port }, timeouts: { requestMs, idleMs: 5000 } } }),
    );
    const r = await send({ port: sc.inboundPort, path: '/work' });
    expect(r.status).toBe(504);
    expect(r.headers['sluice-error']).toBe('deadline-exceeded');
    expect(r.headMs).toBeGreaterThanOrEqual(requestMs - EARLY_SLACK_MS);
    expect(r.headMs).toBeLessThan(requestMs + LATE_SLACK_MS);
    expect(await app.requests[0]!.ended).toBe('closed');
  });
});

describe('idle bodies and slow clients', () => {
  it('cuts a response body that stops flowing for idleMs', async () => {
    const idleMs = 500;
    const intervalMs = 5000;
    const { up, sc } = await setup([{ trickle: { chunks: 3, intervalMs, chunkBytes: 10 } }], {
      timeouts: { requestMs: 20_000, perTryMs: 10_000, idleMs },
      retry: 'off',
    });
    const c = track(await RawConnection.open(sc.outboundPort));
    const started = performance.now();
    c.write('GET /slow HTTP/1.1\r\nHost: orders\r\n\r\n');
    const res = await c.waitForResponse(intervalMs);
    const elapsed = performance.now() - started;
    // Either is honest: a local 504 idle-timeout (nothing had reached the client yet), or the
    // upstream's 200 head followed by a cut (incomplete) body. A bare close with no bytes is not.
    expect(c.bytes.length, 'the client got no bytes at all: neither a 504 nor the response head').toBeGreaterThan(0);
    if (res?.status === 504) expect(res.headers['sluice-error']).toBe('idle-timeout');
    else {
      expect(res?.status).toBe(200);
      expect(res?.complete).toBe(false);
      expect(c.closed).toBe(true);
    }
    // Timer resolution: undici's body timer ticks about every 0.5 s, so allow a second more.
    expect(elapsed).toBeGreaterThanOrEqual(idleMs - EARLY_SLACK_MS);
    expect(elapsed).toBeLessThan(idleMs + 1000 + LATE_SLACK_MS);
    expect(await up.requests[0]!.ended).toBe('closed');
  });

  it('does not cut a slow body whose gaps stay under idleMs', async () => {
    // 2 s of body in 100 ms gaps: longer than idleMs in total, never idle for idleMs.
    const { sc } = await setup([{ trickle: { chunks: 20, intervalMs: 100, chunkBytes: 10 } }], {
      timeouts: { requestMs: 20_000, perTryMs: 10_000, idleMs: 700 },
      retry: 'off',
    });
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/slow' });
    expect(r.bodyError).toBeUndefined();
    expect(r.bodyBytes).toBe(200);
  });

  it('slowloris: a client sending its head too slowly is cut off, and nothing reaches the upstream', async () => {
    const headersTimeoutMs = 400;
    const { up, sc } = await setup([], {}, { limits: { headersTimeoutMs } });
    const c = track(await RawConnection.open(sc.outboundPort));
    const started = performance.now();
    // 40 header lines, one per 100 ms: the head would take 4 s to arrive.
    const pieces = [{ data: 'GET /slow HTTP/1.1\r\nHost: orders\r\n', delayMs: 0 }];
    for (let i = 0; i < 40; i++) pieces.push({ data: `X-Drip-${i}: ${i}\r\n`, delayMs: 100 });
    pieces.push({ data: '\r\n', delayMs: 100 });
    void c.writePieces(pieces);
    expect(await c.waitForClose(3500)).toBe(true);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(headersTimeoutMs - EARLY_SLACK_MS);
    expect(elapsed).toBeLessThan(3500);
    const text = c.bytes.toString('latin1');
    // A 408 is courteous; a bare close is acceptable. A 200 is not.
    if (text !== '') expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(up.count).toBe(0);
  });
});
