// Malformed and hostile requests get a clean 4xx and go no further: a bad request line, a
// Content-Length/Transfer-Encoding conflict (request smuggling), an oversized head. After each,
// the listener keeps serving. Checked on the outbound listener and, for smuggling, the inbound one
// (the port the pod exposes, where hostile input is likeliest).
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { rawRequest } from '../support/raw-client.ts';
import { startRawUpstream } from '../support/raw-upstream.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();

async function setup() {
  const up = track(await startScriptedUpstream());
  const app = track(await startScriptedUpstream());
  const sc = track(
    await startTestSidecar({
      limits: { maxHeaderBytes: 4096 },
      inbound: { app: { address: '127.0.0.1', port: app.port } },
      outbound: { upstreams: [upstream('orders', up.endpoint)] },
    }),
  );
  return { up, app, sc };
}

/** The listener still answers a normal request after the bad one. */
async function stillServes(port: number, host?: string): Promise<void> {
  const r = await send({ port, path: '/after', ...(host ? { host } : {}) });
  expect(r.status).toBe(200);
}

describe('bad input on the outbound listener', () => {
  it('a malformed request line gets 400', async () => {
    const { up, sc } = await setup();
    for (const line of ['GARBAGE\r\n\r\n', 'GET /x HTTP/9.9 extra\r\nHost: orders\r\n\r\n', 'G\x00T / HTTP/1.1\r\nHost: orders\r\n\r\n']) {
      const r = await rawRequest(sc.outboundPort, line, { untilResponse: true });
      expect(r.response?.status, JSON.stringify(line)).toBe(400);
    }
    expect(up.count).toBe(0);
    await stillServes(sc.outboundPort, 'orders');
  });

  it('Content-Length with Transfer-Encoding gets 400 and nothing reaches the upstream', async () => {
    const { up, sc } = await setup();
    const smuggle =
      'POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n' +
      '0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n';
    const r = await rawRequest(sc.outboundPort, smuggle, { untilResponse: true });
    expect(r.response?.status).toBe(400);
    expect(up.count).toBe(0);
    await stillServes(sc.outboundPort, 'orders');
    expect(up.requests.map((q) => q.url)).toEqual(['/after']);
  });

  it('conflicting duplicate Content-Length and an obfuscated Transfer-Encoding get 400', async () => {
    const { up, sc } = await setup();
    const attempts = [
      'POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      'POST /a HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
      'POST /a HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n',
    ];
    for (const a of attempts) {
      const r = await rawRequest(sc.outboundPort, a, { untilResponse: true });
      expect(r.response?.status, JSON.stringify(a)).toBe(400);
    }
    expect(up.count).toBe(0);
    await stillServes(sc.outboundPort, 'orders');
  });

  it('an unparseable deadline header gets 400 bad-request and goes no further', async () => {
    const { up, sc } = await setup();
    for (const value of ['soon', '1e3', '12.5']) {
      const r = await send({ port: sc.outboundPort, host: 'orders', path: '/d', headers: { 'sluice-timeout-ms': value } });
      expect(r.status, value).toBe(400);
      expect(r.headers['sluice-error']).toBe('bad-request');
    }
    // A negative remaining time is a deadline already passed, by design, not a syntax error.
    const late = await send({ port: sc.outboundPort, host: 'orders', path: '/d', headers: { 'sluice-timeout-ms': '-5' } });
    expect(late.status).toBe(504);
    expect(late.headers['sluice-error']).toBe('deadline-exceeded');
    expect(up.count).toBe(0);
    await stillServes(sc.outboundPort, 'orders');
  });

  it('a request without Host (HTTP/1.1) gets 400', async () => {
    const { up, sc } = await setup();
    const r = await rawRequest(sc.outboundPort, 'GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n', { untilResponse: true });
    expect(r.response?.status).toBe(400);
    expect(up.count).toBe(0);
    await stillServes(sc.outboundPort, 'orders');
  });

  it('an oversized head gets 431', async () => {
    const { up, sc } = await setup();
    const r = await rawRequest(sc.outboundPort, `GET /big HTTP/1.1\r\nHost: orders\r\nX-Big: ${'a'.repeat(8192)}\r\n\r\n`, {
      untilResponse: true,
    });
    expect(r.response?.status).toBe(431);
    expect(up.count).toBe(0);
    // Just under the limit is fine.
    const ok = await send({ port: sc.outboundPort, host: 'orders', path: '/fits', headers: { 'x-big': 'a'.repeat(2048) } });
    expect(ok.status).toBe(200);
  });
});

describe('bad input on the inbound listener', () => {
  it('smuggling attempt gets 400 and the app sees nothing; the listener keeps serving', async () => {
    const { app, sc } = await setup();
    const r = await rawRequest(
      sc.inboundPort,
      'POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX',
      { untilResponse: true },
    );
    expect(r.response?.status).toBe(400);
    expect(app.count).toBe(0);
    await stillServes(sc.inboundPort);
    expect(app.requests.map((q) => q.url)).toEqual(['/after']);
  });

  it('an oversized head gets 431', async () => {
    const { app, sc } = await setup();
    const r = await rawRequest(sc.inboundPort, `GET /big HTTP/1.1\r\nHost: app\r\nX-Big: ${'a'.repeat(8192)}\r\n\r\n`, { untilResponse: true });
    expect(r.response?.status).toBe(431);
    expect(app.count).toBe(0);
    await stillServes(sc.inboundPort);
  });
});

describe('bad answers from the upstream', () => {
  async function withRawUpstream(answer: string) {
    const raw = track(await startRawUpstream((socket) => socket.once('data', () => socket.end(answer))));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('broken', raw.endpoint, { retry: 'off' })] } }));
    return sc;
  }

  it('a malformed status line becomes 502 upstream-error', async () => {
    const sc = await withRawUpstream('NOT-HTTP garbage\r\n\r\n');
    const r = await send({ port: sc.outboundPort, host: 'broken', path: '/' });
    expect(r.status).toBe(502);
    expect(r.headers['sluice-error']).toMatch(/^upstream-(error|reset)$/);
  });

  it('a response smuggling attempt (Content-Length with Transfer-Encoding) becomes 502', async () => {
    const sc = await withRawUpstream('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const r = await send({ port: sc.outboundPort, host: 'broken', path: '/' });
    expect(r.status).toBe(502);
  });

  it('an oversized response head becomes 502, and the sidecar keeps serving', async () => {
    const up = track(
      await startScriptedUpstream((req) => (req.url === '/huge' ? { status: 200, headers: { 'x-huge': 'h'.repeat(128 * 1024) } } : { status: 200 })),
    );
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint, { retry: 'off' })] } }));
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/huge' });
    expect(r.status).toBe(502);
    expect(r.headers['x-huge']).toBeUndefined();
    await stillServes(sc.outboundPort, 'orders');
  });
});
