// Defects found in review, each kept fixed by the scenario that showed it.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { rawRequest } from '../support/raw-client.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();

describe('review regressions', () => {
  it('a try cancelled while queued for a connection cannot disarm the next try (ends by its deadline)', async () => {
    // /a holds the endpoint's only connection until released; /b never answers.
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const up = track(
      await startScriptedUpstream((req) => (req.url === '/a' ? { after: gate, then: { status: 200, body: 'a' } } : 'hang')),
    );
    const sc = track(
      await startTestSidecar({
        outbound: {
          upstreams: [
            upstream('svc', up.endpoint, {
              maxConnectionsPerEndpoint: 1,
              timeouts: { requestMs: 1500, perTryMs: 300 },
              retry: { maxAttempts: 3, backoff: { baseMs: 1, capMs: 2 } },
              routes: [{ name: 'slow', match: { pathPrefix: '/a' }, timeouts: { perTryMs: 'off' }, retry: 'off' }],
            }),
          ],
        },
      }),
    );
    const a = send({ port: sc.outboundPort, host: 'svc', path: '/a' });
    await up.waitForRequest(1);
    // B's first try waits for the busy connection and is timed out there; its retries follow.
    const b = send({ port: sc.outboundPort, host: 'svc', path: '/b', timeoutMs: 8000 });
    setTimeout(release, 600);
    const rb = await b;
    expect(rb.status).toBe(504);
    expect(rb.headMs).toBeLessThan(1500 + 250);
    expect((await a).status).toBe(200);
  });

  it('a policy reload during back-off does not fail the retry (old pools retire, not close)', async () => {
    let n = 0;
    const up = track(await startScriptedUpstream(() => (++n === 1 ? { status: 503, body: 'busy' } : { status: 200, body: 'ok' })));
    const spec = (connections: number) => ({
      outbound: {
        upstreams: [upstream('svc', up.endpoint, { maxConnectionsPerEndpoint: connections, retry: { backoff: { baseMs: 300, capMs: 300 } } })],
      },
    });
    const sc = track(await startTestSidecar(spec(8), { random: () => 0.99 }));
    const pending = send({ port: sc.outboundPort, host: 'svc', path: '/x' });
    await up.waitForRequest(1);
    // The first try got its 503; the retry is sleeping in back-off while the policy changes.
    await sc.reload(spec(16));
    const r = await pending;
    expect(r.status).toBe(200);
    expect(up.requests).toHaveLength(2);
  });

  it('a Host that would break out of the Forwarded quoted string is refused', async () => {
    const sc = track(await startTestSidecar({}));
    const r = await rawRequest(sc.inboundPort, 'GET / HTTP/1.1\r\nHost: a", for=6.6.6.6;host="b\r\nConnection: close\r\n\r\n');
    expect(r.response?.status).toBe(400);
    expect(r.response?.headers['sluice-error']).toBe('bad-request');
  });

  it('a request that comes back to the same listener is refused, not recursed', async () => {
    const sc = track(await startTestSidecar({ outbound: { unknownHosts: 'forward' } }));
    // 127.1 is 127.0.0.1, but not a name the sidecar recognises as itself.
    const r = await send({ port: sc.outboundPort, host: `127.1:${sc.outboundPort}`, path: '/' });
    expect(r.headers['sluice-error']).toBe('loop-detected');
    expect(r.status).toBe(508);
  });

  it('a refused CONNECT whose client stays half-open does not hold up shutdown', async () => {
    const sc = track(await startTestSidecar({ outbound: { unknownHosts: 'reject' } }));
    // A client that keeps its half of the connection open after the refusal.
    const client = net.connect({ port: sc.outboundPort, host: '127.0.0.1', allowHalfOpen: true });
    const got = new Promise<string>((resolve) => {
      let text = '';
      client.on('data', (c: Buffer) => (text += c.toString('latin1')));
      client.on('end', () => resolve(text));
    });
    client.write('CONNECT nowhere.example:443 HTTP/1.1\r\nHost: nowhere.example:443\r\n\r\n');
    try {
      expect(await got).toMatch(/^HTTP\/1\.1 502 /);
      const started = performance.now();
      await sc.sidecar.shutdown(5000);
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      client.destroy();
    }
  });
});

describe('HTTP/1.0 without Host', () => {
  it('is served on the inbound port, naming the address it connected to', async () => {
    const app = track(await startScriptedUpstream([{ echo: true }]));
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }));
    const r = await rawRequest(sc.inboundPort, 'GET /health HTTP/1.0\r\n\r\n');
    expect(r.response?.status).toBe(200);
    expect((await app.waitForRequest(1)).headers.host).toBe(`127.0.0.1:${sc.inboundPort}`);
  });

  it('is refused on the outbound port, where Host chooses the upstream', async () => {
    const sc = track(await startTestSidecar({}));
    const r = await rawRequest(sc.outboundPort, 'GET / HTTP/1.0\r\n\r\n');
    expect(r.response?.status).toBe(400);
    expect(r.response?.headers['sluice-error']).toBe('bad-request');
  });
});
