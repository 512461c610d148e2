// Plain HTTP/2 (h2c with prior knowledge) through the sidecar: one port for both protocols, each
// upstream spoken to in the version its policy names, trailers kept, HTTP/2 connections reused,
// and the failure cases of an HTTP/2 upstream (refused stream, 503, death mid-body) handled as
// they are for HTTP/1.1.
import type { ClientHttp2Session } from 'node:http2';
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { closeSession, h2Connect, h2Request, startH2Upstream, type H2Step } from '../support/h2.ts';
import { startScriptedUpstream, type Script } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type SpecOverrides } from '../support/sidecar.ts';

const track = closeAfterEach();

function session(port: number): Promise<ClientHttp2Session> {
  return h2Connect(port).then((s) => track({ close: () => closeSession(s), s }).s);
}

async function viaH1Upstream(script: Script, extra: SpecOverrides = {}) {
  const up = track(await startScriptedUpstream(script));
  const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint, { protocol: 'http1', ...extra })] } }));
  return { up, sc };
}

async function viaH2Upstream(script: readonly H2Step[], extra: SpecOverrides = {}) {
  const up = track(await startH2Upstream(script));
  const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint, { protocol: 'http2', ...extra })] } }));
  return { up, sc };
}

describe('one port, both protocols', () => {
  it('takes HTTP/2 with prior knowledge and HTTP/1.1 on the outbound port', async () => {
    const { up, sc } = await viaH1Upstream([
      { status: 200, body: 'to h2' },
      { status: 200, body: 'to h1' },
    ]);
    const s = await session(sc.outboundPort);
    const r2 = await h2Request(s, { path: '/a', authority: 'orders' });
    expect(r2.status).toBe(200);
    expect(r2.body.toString()).toBe('to h2');
    const r1 = await send({ port: sc.outboundPort, path: '/b', host: 'orders' });
    expect(r1.status).toBe(200);
    expect(r1.text).toBe('to h1');
    // protocol: http1 — the HTTP/2 client's request went out as HTTP/1.1, Host from :authority.
    const rec = await up.waitForRequest(1);
    expect(rec.url).toBe('/a');
    expect(rec.headers['host']).toBe('orders');
  });

  it('carries a request body and a POST answer over HTTP/2 into an HTTP/1.1 upstream', async () => {
    const { up, sc } = await viaH1Upstream([{ echo: true, format: 'raw' }]);
    const s = await session(sc.outboundPort);
    const body = Buffer.alloc(300_000, 0x42);
    const r = await h2Request(s, { method: 'POST', path: '/upload', authority: 'orders', body });
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
    expect((await up.waitForRequest(1)).method).toBe('POST');
  });

  it('counts HTTP/2 requests like any other', async () => {
    const { sc } = await viaH1Upstream([{ status: 200, body: 'x' }]);
    const s = await session(sc.outboundPort);
    await h2Request(s, { path: '/', authority: 'orders' });
    const m = await sc.metrics();
    expect(metricSum(m, 'http_server_request_duration_seconds_count', { direction: 'outbound', upstream: 'orders', http_response_status_code: '200' })).toBe(1);
    expect(metricSum(m, 'http_client_request_duration_seconds_count', { direction: 'outbound', upstream: 'orders', http_response_status_code: '200' })).toBe(1);
  });

  it('answers a request for no upstream with the local reply, on the stream', async () => {
    const sc = track(await startTestSidecar({ outbound: { unknownHosts: 'reject' } }));
    const s = await session(sc.outboundPort);
    const r = await h2Request(s, { path: '/', authority: 'nowhere' });
    expect(r.status).toBe(502);
    expect(r.headers['sluice-error']).toBe('no-route');
  });

  it('refuses CONNECT over HTTP/2 with a 400', async () => {
    const sc = track(await startTestSidecar());
    const s = await session(sc.outboundPort);
    const r = await h2Request(s, { method: 'CONNECT', authority: 'orders:443' });
    expect(r.status).toBe(400);
    expect(r.headers['sluice-error']).toBe('bad-request');
  });
});

describe('HTTP/1.1 fields HTTP/2 forbids', () => {
  it('drops them from an HTTP/1.1 answer and its trailers instead of failing the stream', async () => {
    const { sc } = await viaH1Upstream([
      { status: 200, headers: { 'http2-settings': 'AAMAAABkAAQAoAAAAAIAAAAA', 'x-kept': 'yes' }, body: 'fine', trailers: { 'keep-alive': 'timeout=5', 'x-sum': 'abc' } },
    ]);
    const s = await session(sc.outboundPort);
    const r = await h2Request(s, { path: '/', authority: 'orders', headers: { te: 'trailers' } });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('fine');
    expect(r.headers['x-kept']).toBe('yes');
    expect(r.headers['http2-settings']).toBeUndefined();
    expect(r.trailers?.['x-sum']).toBe('abc');
    expect(r.trailers?.['keep-alive']).toBeUndefined();
  });
});

describe('HTTP/2 upstreams', () => {
  it('speaks HTTP/2 to an upstream on protocol http2, and keeps its trailers for the client', async () => {
    const { up, sc } = await viaH2Upstream([{ status: 200, body: 'streamed', trailers: { 'x-checksum': 'abc' } }]);
    const s = await session(sc.outboundPort);
    const r = await h2Request(s, { path: '/t', authority: 'orders', headers: { te: 'trailers' } });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('streamed');
    expect(r.trailers?.['x-checksum']).toBe('abc');
    expect(up.requests[0]?.headers[':path']).toBe('/t');
    expect(up.requests[0]?.headers[':authority']).toBe('orders');
  });

  it('carries an HTTP/1.1 client to an HTTP/2 upstream, trailers and all', async () => {
    const { sc } = await viaH2Upstream([{ status: 200, body: 'from h2', trailers: { 'x-checksum': 'def' } }]);
    const r = await send({ port: sc.outboundPort, path: '/t', host: 'orders', headers: { te: 'trailers' } });
    expect(r.status).toBe(200);
    expect(r.text).toBe('from h2');
    expect(r.trailers['x-checksum']).toBe('def');
  });

  it('reuses one HTTP/2 connection for many concurrent requests', async () => {
    const { up, sc } = await viaH2Upstream([]);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => send({ port: sc.outboundPort, path: `/r${i}`, host: 'orders' })));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(up.requests).toHaveLength(40);
    expect(up.sessions).toBe(1);
  });

  it('retries a stream the upstream refused, and a 503', async () => {
    const { up, sc } = await viaH2Upstream([{ rst: http2.constants.NGHTTP2_REFUSED_STREAM }, { status: 503 }, { status: 200, body: 'third' }]);
    const r = await send({ port: sc.outboundPort, path: '/', host: 'orders' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('third');
    expect(up.requests).toHaveLength(3);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_retries_total', { upstream: 'orders', reason: 'refused_stream' })).toBe(1);
    expect(metricSum(m, 'sluice_retries_total', { upstream: 'orders', reason: 'status_503' })).toBe(1);
  });

  it('cuts the client stream when the upstream dies mid-body, and reconnects for the next request', async () => {
    const { up, sc } = await viaH2Upstream([{ status: 200, body: 'x'.repeat(200_000), die: true }, { status: 200, body: 'again' }]);
    const s = await session(sc.outboundPort);
    const cut = await h2Request(s, { path: '/big', authority: 'orders' });
    expect(cut.status).toBe(200);
    expect(cut.rstCode).not.toBe(0);
    const next = await h2Request(s, { path: '/next', authority: 'orders' });
    expect(next.body.toString()).toBe('again');
    expect(up.sessions).toBe(2);
  });

  it('answers 503 connect-failure when the HTTP/2 upstream is not there', async () => {
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', '127.0.0.1:1', { protocol: 'http2', retry: 'off' })] } }));
    const r = await send({ port: sc.outboundPort, path: '/', host: 'orders' });
    expect(r.status).toBe(503);
    expect(r.headers['sluice-error']).toBe('connect-failure');
  });

  it('ends a hung HTTP/2 try at the per-try timeout and retries it', async () => {
    const { up, sc } = await viaH2Upstream([{ hang: true }, { status: 200, body: 'second' }], { timeouts: { perTryMs: 200 } });
    const r = await send({ port: sc.outboundPort, path: '/', host: 'orders' });
    expect(r.text).toBe('second');
    expect(up.requests).toHaveLength(2);
  });
});

describe('HTTP/2 sessions and shutdown', () => {
  it('lets a stream in flight finish when the sidecar drains, and sends GOAWAY', async () => {
    const gate = Promise.withResolvers<void>();
    const up = track(await startScriptedUpstream([{ after: gate.promise, then: { status: 200, body: 'finished' } }]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint, { protocol: 'http1' })] } }));
    const s = await session(sc.outboundPort);
    const goaway = new Promise<void>((r) => s.once('goaway', () => r()));
    const pending = h2Request(s, { path: '/slow', authority: 'orders' });
    await up.waitForHead(1);
    const draining = sc.sidecar.shutdown(5000);
    await goaway;
    gate.resolve();
    const r = await pending;
    expect(r.body.toString()).toBe('finished');
    await draining;
  });
});
