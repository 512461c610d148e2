// HTTP/1.1 proxying through the outbound listener: how requests reach the sidecar (forward-proxy
// absolute-form, origin-form with Host), which headers cross it, and body framing in both
// directions (chunked, trailers, HEAD, 100-continue, Upgrade), plus client aborts reaching the
// upstream. Retries are off where a second attempt would blur what the upstream saw.
import { describe, expect, it } from 'vitest';
import { ProxyAgent, request } from 'undici';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { parseResponse, RawConnection, rawRequest } from '../support/raw-client.ts';
import { startRawUpstream } from '../support/raw-upstream.ts';
import { startScriptedUpstream, type Script } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type SpecOverrides } from '../support/sidecar.ts';

const track = closeAfterEach();

async function setup(script: Script = [], outbound: SpecOverrides = {}) {
  const up = track(await startScriptedUpstream(script));
  const sc = track(
    await startTestSidecar({
      outbound: { upstreams: [upstream('orders', up.endpoint, { retry: 'off' })], ...outbound },
    }),
  );
  return { up, sc };
}

describe('how requests reach the upstream', () => {
  it('forward-proxy: undici ProxyAgent sends absolute-form and the named upstream answers', async () => {
    const { up, sc } = await setup([{ status: 200, body: 'from orders' }]);
    const agent = new ProxyAgent(sc.proxyUrl);
    try {
      const res = await request('http://orders/items?id=7', { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('from orders');
    } finally {
      await agent.close();
    }
    const rec = await up.waitForRequest(1);
    // The upstream gets origin-form: the absolute target is the proxy's business, not the app's.
    expect(rec.url).toBe('/items?id=7');
  });

  it('forward-proxy: a curl-style raw absolute-form request', async () => {
    const { up, sc } = await setup([{ status: 200, body: 'raw ok' }]);
    const r = await rawRequest(
      sc.outboundPort,
      'GET http://orders/a/b HTTP/1.1\r\nHost: orders\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n',
      { untilResponse: true },
    );
    expect(r.response?.status).toBe(200);
    expect(r.response?.body.toString()).toBe('raw ok');
    const rec = await up.waitForRequest(1);
    expect(rec.url).toBe('/a/b');
    expect(rec.headers['proxy-connection']).toBeUndefined();
  });

  it('origin-form: the Host header names the upstream', async () => {
    const { up, sc } = await setup([{ status: 201, body: 'made' }]);
    const r = await send({ port: sc.outboundPort, method: 'POST', path: '/orders', host: 'orders', body: '{"a":1}' });
    expect(r.status).toBe(201);
    expect(r.text).toBe('made');
    const rec = await up.waitForRequest(1);
    expect(rec).toMatchObject({ method: 'POST', url: '/orders', bodyLength: 7 });
    expect(rec.body.toString()).toBe('{"a":1}');
  });

  it('absolute-form: the target authority wins over a conflicting Host header (RFC 9112 §3.2.2)', async () => {
    const { up, sc } = await setup([{ status: 200, body: 'orders' }], { unknownHosts: 'reject' });
    const r = await rawRequest(sc.outboundPort, 'GET http://orders/x HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n', {
      untilResponse: true,
    });
    expect(r.response?.status).toBe(200);
    expect(up.count).toBe(1);
  });

  it('routes each request on a keep-alive connection by its own Host', async () => {
    const other = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'from billing' } }));
    const up = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'from orders' } }));
    const sc = track(
      await startTestSidecar({
        outbound: { unknownHosts: 'reject', upstreams: [upstream('orders', up.endpoint), upstream('billing', other.endpoint)] },
      }),
    );
    const c = track(await RawConnection.open(sc.outboundPort));
    const bodies: string[] = [];
    for (const host of ['orders', 'billing', 'orders', 'nobody']) {
      c.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      const res = await c.waitForResponse(3000);
      bodies.push(`${res?.status} ${res?.headers['sluice-error'] ?? res?.body.toString()}`);
      c.consume(c.bytes.length - (res?.rest.length ?? 0));
    }
    expect(bodies).toEqual(['200 from orders', '200 from billing', '200 from orders', '502 no-route']);
  });

  it('answers pipelined requests in order', async () => {
    const { sc } = await setup((req) => (req.url === '/slow' ? { delayMs: 100, then: { status: 200, body: 'first' } } : { status: 200, body: 'second' }));
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('GET /slow HTTP/1.1\r\nHost: orders\r\n\r\nGET /fast HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n');
    expect(await c.waitForClose(3000)).toBe(true);
    const first = parseResponse(c.bytes)!;
    const second = parseResponse(first.rest, { closed: true })!;
    expect([first.body.toString(), second.body.toString()]).toEqual(['first', 'second']);
  });

  it('a request addressed to the sidecar itself is refused, not looped', async () => {
    const { up, sc } = await setup([], { upstreams: [], unknownHosts: 'forward' });
    const r = await send({ port: sc.outboundPort, path: '/', host: `127.0.0.1:${sc.outboundPort}`, timeoutMs: 3000 });
    expect(r.status).toBe(502);
    expect(r.headers['sluice-error']).toBe('no-route');
    expect(up.count).toBe(0);
  });

  it('unknownHosts: forward sends an unconfigured authority straight to it', async () => {
    const { up, sc } = await setup([{ status: 200, body: 'direct' }], { upstreams: [], unknownHosts: 'forward' });
    const r = await send({ port: sc.outboundPort, path: '/x', host: up.endpoint });
    expect(r.status).toBe(200);
    expect(r.text).toBe('direct');
    expect(up.count).toBe(1);
  });

  it('unknownHosts: reject answers 502 no-route and contacts nobody', async () => {
    const { up, sc } = await setup([], { upstreams: [], unknownHosts: 'reject' });
    const r = await send({ port: sc.outboundPort, path: '/x', host: up.endpoint });
    expect(r.status).toBe(502);
    expect(r.headers['sluice-error']).toBe('no-route');
    expect(up.count).toBe(0);
  });
});

describe('the inbound listener', () => {
  it('forwards to the local app with the caller\'s path, body and end-to-end headers', async () => {
    const app = track(await startScriptedUpstream([{ status: 202, body: 'accepted' }]));
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }));
    const r = await send({ port: sc.inboundPort, method: 'POST', path: '/jobs?x=1', body: 'job', headers: { 'x-job': '9' } });
    expect(r.status).toBe(202);
    expect(r.text).toBe('accepted');
    const rec = await app.waitForRequest(1);
    expect(rec).toMatchObject({ method: 'POST', url: '/jobs?x=1', bodyLength: 3 });
    expect(rec.headers['x-job']).toBe('9');
  });
});

describe('headers across the proxy', () => {
  it('removes hop-by-hop request headers, including those named in Connection', async () => {
    const { up, sc } = await setup([{ echo: true }]);
    const r = await rawRequest(
      sc.outboundPort,
      [
        'POST /h HTTP/1.1',
        'Host: orders',
        'Connection: keep-alive, X-Secret-Hop',
        'Keep-Alive: timeout=99',
        'X-Secret-Hop: must-not-pass',
        'TE: gzip',
        'Upgrade: h2c-not-really',
        'Proxy-Authorization: Basic Zm9vOmJhcg==',
        'Proxy-Connection: keep-alive',
        'Transfer-Encoding: chunked',
        'X-End-To-End: kept',
        '',
        '5\r\nhello\r\n0\r\n\r\n',
      ].join('\r\n'),
      { untilResponse: true },
    );
    expect(r.response?.status).toBe(200);
    const rec = await up.waitForRequest(1);
    const h = rec.headers;
    expect(h['x-end-to-end']).toBe('kept');
    expect(h['x-secret-hop']).toBeUndefined();
    expect(h['keep-alive']).toBeUndefined();
    expect(h['te']).toBeUndefined();
    expect(h['upgrade']).toBeUndefined();
    expect(h['proxy-authorization']).toBeUndefined();
    expect(h['proxy-connection']).toBeUndefined();
    expect(h['connection'] ?? '').not.toMatch(/x-secret-hop/i);
    expect(rec.body.toString()).toBe('hello');
  });

  it('removes hop-by-hop response headers, including those named in Connection', async () => {
    const { sc } = await setup([
      {
        status: 200,
        headers: {
          connection: 'X-Up-Secret',
          'x-up-secret': 'must-not-pass',
          'keep-alive': 'timeout=99',
          'proxy-authenticate': 'Basic realm="x"',
          upgrade: 'h2c-not-really',
          'x-end-to-end': 'kept',
        },
        body: 'ok',
      },
    ]);
    const r = await rawRequest(sc.outboundPort, 'GET /h HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n', { untilResponse: true });
    const res = r.response!;
    expect(res.status).toBe(200);
    expect(res.headers['x-end-to-end']).toBe('kept');
    expect(res.headers['x-up-secret']).toBeUndefined();
    expect(res.headers['proxy-authenticate']).toBeUndefined();
    expect(res.headers['upgrade']).toBeUndefined();
    expect(res.headers['keep-alive'] ?? '').not.toContain('99');
    expect(res.headers['connection'] ?? '').not.toMatch(/x-up-secret/i);
    expect(res.body.toString()).toBe('ok');
  });

  it('adds X-Forwarded-For/-Proto/-Host and Forwarded', async () => {
    const { up, sc } = await setup();
    await send({ port: sc.outboundPort, path: '/', host: 'orders' });
    const h = (await up.waitForRequest(1)).headers;
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-forwarded-host']).toBe('orders');
    expect(h['forwarded']).toMatch(/for=127\.0\.0\.1/);
  });

  it('appends to an existing X-Forwarded-For chain', async () => {
    const { up, sc } = await setup();
    await send({ port: sc.outboundPort, path: '/', host: 'orders', headers: { 'x-forwarded-for': '10.0.0.9' } });
    expect((await up.waitForRequest(1)).headers['x-forwarded-for']).toBe('10.0.0.9, 127.0.0.1');
  });
});

describe('bodies and framing', () => {
  it('streams a chunked request body and a chunked response body', async () => {
    const { up, sc } = await setup([{ stream: { totalBytes: 300_000, chunked: true } }]);
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('PUT /up HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n');
    for (let i = 0; i < 10; i++) c.write(`400\r\n${'z'.repeat(0x400)}\r\n`);
    c.write('0\r\n\r\n');
    const res = await c.waitForResponse(5000);
    expect(res?.status).toBe(200);
    expect(res?.complete).toBe(true);
    expect(res?.body.length).toBe(300_000);
    const rec = await up.waitForRequest(1);
    expect(rec.bodyLength).toBe(10 * 0x400);
  });

  it('passes response trailers when the upstream sends them chunked', async () => {
    const { sc } = await setup([{ status: 200, body: 'payload', trailers: { 'x-checksum': 'abc123' } }]);
    const r = await rawRequest(sc.outboundPort, 'GET /t HTTP/1.1\r\nHost: orders\r\nTE: trailers\r\nConnection: close\r\n\r\n', {
      untilResponse: true,
    });
    expect(r.response?.status).toBe(200);
    expect(r.response?.headers['transfer-encoding']).toBe('chunked');
    expect(r.response?.body.toString()).toBe('payload');
    expect(r.response?.trailers['x-checksum']).toBe('abc123');
  });

  it('HEAD: headers without a body, and the connection stays usable', async () => {
    const { up, sc } = await setup((req) =>
      req.method === 'HEAD' ? { status: 200, headers: { 'content-length': '1234', 'x-kind': 'head' } } : { status: 200, body: 'after-head' },
    );
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('HEAD /h HTTP/1.1\r\nHost: orders\r\n\r\n');
    const head = await c.waitForResponse(3000, true);
    expect(head?.status).toBe(200);
    expect(head?.headers['x-kind']).toBe('head');
    expect(head?.headers['content-length']).toBe('1234');
    // A stray body byte after a HEAD reply would corrupt the next response on this connection.
    c.consume(c.bytes.length - head!.rest.length);
    c.write('GET /next HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n');
    const next = await c.waitForResponse(3000);
    expect(next?.status).toBe(200);
    expect(next?.body.toString()).toBe('after-head');
    expect(up.requests.map((r) => r.method)).toEqual(['HEAD', 'GET']);
  });

  it('Expect: 100-continue: the client gets 100, then sends the body, then the response', async () => {
    const { up, sc } = await setup([{ echo: true, format: 'raw' }]);
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('POST /e HTTP/1.1\r\nHost: orders\r\nContent-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    expect(await c.waitForText('HTTP/1.1 100', 3000)).toBe(true);
    c.write('hello world');
    // More than one interim response is legal (RFC 9110 §15.2), so skip them all.
    const { response: res, interim } = await c.waitForFinalResponse(3000);
    expect(interim.length).toBeGreaterThanOrEqual(1);
    expect(interim.every((s) => s === 100)).toBe(true);
    expect(res?.status).toBe(200);
    expect(res?.body.toString()).toBe('hello world');
    expect((await up.waitForRequest(1)).body.toString()).toBe('hello world');
  });

  it('Expect: 100-continue is answered with exactly one 100', async () => {
    const { sc } = await setup([{ echo: true, format: 'raw' }]);
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('POST /e HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    expect(await c.waitForText('HTTP/1.1 100', 3000)).toBe(true);
    c.write('hello');
    const { response, interim } = await c.waitForFinalResponse(3000);
    expect(response?.status).toBe(200);
    // Two code paths both answering the expectation is a bug even where the protocol tolerates it.
    expect(interim).toEqual([100]);
  });

  it('Expect: 100-continue from an HTTP/1.0 client is ignored (RFC 9110 §10.1.1)', async () => {
    const { sc } = await setup([{ echo: true, format: 'raw' }]);
    const r = await rawRequest(sc.outboundPort, 'POST /e HTTP/1.0\r\nHost: orders\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello', {
      untilResponse: true,
    });
    expect(r.text).not.toMatch(/^HTTP\/1\.[01] 100/);
    expect(r.response?.status).toBe(200);
    expect(r.response?.body.toString()).toBe('hello');
  });

  it('passes 204 and 304 (no body) without hanging the connection', async () => {
    const { sc } = await setup([{ status: 204 }, { status: 304, headers: { etag: '"v1"' } }, { status: 200, body: 'third' }]);
    const c = track(await RawConnection.open(sc.outboundPort));
    for (const [path, status] of [['/a', 204], ['/b', 304]] as const) {
      c.write(`GET ${path} HTTP/1.1\r\nHost: orders\r\n\r\n`);
      const res = await c.waitForResponse(3000);
      expect(res?.status).toBe(status);
      c.consume(c.bytes.length - res!.rest.length);
    }
    c.write('GET /c HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n');
    expect((await c.waitForResponse(3000))?.body.toString()).toBe('third');
  });

  it('re-frames a close-delimited upstream body so the client sees all of it', async () => {
    const raw = track(
      await startRawUpstream((socket) => {
        socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil-close'));
      }),
    );
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('legacy', raw.endpoint, { retry: 'off' })] } }));
    const r = await send({ port: sc.outboundPort, host: 'legacy', path: '/' });
    expect(r.status).toBe(200);
    expect(r.text).toBe('until-close');
    expect(r.bodyError).toBeUndefined();
  });

  it('tunnels an Upgrade: the upstream answers 101 and bytes flow both ways', async () => {
    const { up, sc } = await setup();
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('GET /ws HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    expect(await c.waitForText('\r\n\r\n', 3000)).toBe(true);
    expect(c.bytes.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    c.consume(c.bytes.indexOf('\r\n\r\n') + 4);
    c.write('ping-1');
    expect(await c.waitForText('ping-1', 3000)).toBe(true);
    c.write('|ping-2');
    expect(await c.waitForText('ping-1|ping-2', 3000)).toBe(true);
    expect(up.requests[0]?.upgraded).toBe(true);
  });
});

describe('client aborts', () => {
  it('a client that disconnects while waiting aborts the upstream request', async () => {
    const { up, sc } = await setup(['hang']);
    const c = await RawConnection.open(sc.outboundPort);
    c.write('GET /slow HTTP/1.1\r\nHost: orders\r\n\r\n');
    const rec = await up.waitForRequest(1);
    c.destroy();
    expect(await rec.ended).toBe('closed');
  });

  it('a client that disconnects mid-upload aborts the upstream request', async () => {
    const { up, sc } = await setup(['hang']);
    const c = await RawConnection.open(sc.outboundPort);
    c.write('POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: 100000\r\n\r\n');
    c.write('x'.repeat(1000));
    const rec = await up.waitForHead(1);
    c.destroy();
    expect(await rec.ended).toBe('closed');
  });
});
