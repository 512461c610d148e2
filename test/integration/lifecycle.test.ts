// Policy reload and shutdown, the two moments a sidecar is most tempted to drop work: a new policy
// takes over without failing requests in flight on the old one, and shutdown fails readiness,
// stops accepting, lets in-flight work finish, and only then resolves.
import { describe, expect, it } from 'vitest';
import { RequestFailed, send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricNames, metricSum } from '../support/metrics.ts';
import { RawConnection } from '../support/raw-client.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { buildPolicy, startTestSidecar, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();

describe('policy reload', () => {
  it('swaps the policy without failing a request in flight on the old one', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const oldUp = track(await startScriptedUpstream([{ after: gate, then: { status: 200, body: 'old' } }]));
    const newUp = track(await startScriptedUpstream([{ status: 200, body: 'new' }]));
    const spec = (endpoint: string) => ({ outbound: { unknownHosts: 'reject', upstreams: [upstream('orders', endpoint)] } });
    const sc = track(await startTestSidecar(spec(oldUp.endpoint)));

    const inFlight = send({ port: sc.outboundPort, host: 'orders', path: '/slow' });
    await oldUp.waitForRequest(1);
    await sc.reload(spec(newUp.endpoint));

    const after = await send({ port: sc.outboundPort, host: 'orders', path: '/fresh' });
    expect(after.status).toBe(200);
    expect(after.text).toBe('new');

    release();
    const r = await inFlight;
    expect(r.status).toBe(200);
    expect(r.text).toBe('old');
    expect(r.bodyError).toBeUndefined();
    expect(oldUp.count).toBe(1);
    expect(newUp.requests.map((q) => q.url)).toEqual(['/fresh']);
  });

  it('a reload can add an upstream that was unknown before', async () => {
    const up = track(await startScriptedUpstream());
    const sc = track(await startTestSidecar({ outbound: { unknownHosts: 'reject', upstreams: [] } }));
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(502);
    await sc.reload({ outbound: { unknownHosts: 'reject', upstreams: [upstream('orders', up.endpoint)] } });
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_policy_reloads_total', { result: 'applied' }), metricNames(m).join(' ')).toBe(1);
  });

  it('the new policy is what /config shows', async () => {
    const sc = track(await startTestSidecar({ outbound: { upstreams: [] } }));
    const { policy } = await buildPolicy({ outbound: { upstreams: [upstream('reloaded-upstream', '127.0.0.1:9')] } });
    await sc.sidecar.applyPolicy(policy);
    expect((await sc.admin('/config')).text).toContain('reloaded-upstream');
  });
});

describe('shutdown', () => {
  it('fails readiness, refuses new connections, finishes in-flight work, then resolves', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const up = track(await startScriptedUpstream([{ after: gate, then: { status: 200, body: 'finished' } }]));
    const app = track(await startScriptedUpstream());
    const sc = track(
      await startTestSidecar({
        inbound: { app: { address: '127.0.0.1', port: app.port } },
        outbound: { upstreams: [upstream('orders', up.endpoint)] },
      }),
    );
    const inFlight = send({ port: sc.outboundPort, host: 'orders', path: '/slow' });
    const rec = await up.waitForRequest(1);

    let shutdownDone = false;
    const shutdown = sc.sidecar.shutdown(5000).then(() => {
      shutdownDone = true;
    });

    // Readiness fails while draining (admin still answers).
    const ready = await send({ port: sc.adminPort, path: '/readyz' }).catch((e: unknown) => e);
    expect(ready instanceof RequestFailed ? `admin unreachable: ${ready.code}` : (ready as { status: number }).status).toBe(503);

    // New connections are refused on the traffic listeners.
    const fresh = await send({ port: sc.outboundPort, host: 'orders', path: '/new' }).catch((e: unknown) => e);
    expect(fresh).toBeInstanceOf(RequestFailed);
    expect((fresh as RequestFailed).code).toBe('ECONNREFUSED');
    const freshIn = await send({ port: sc.inboundPort, path: '/new' }).catch((e: unknown) => e);
    expect((freshIn as RequestFailed).code).toBe('ECONNREFUSED');

    // Still draining: the in-flight request holds shutdown open.
    expect(shutdownDone).toBe(false);
    release();
    const r = await inFlight;
    expect(r.status).toBe(200);
    expect(r.text).toBe('finished');
    expect(r.bodyError).toBeUndefined();
    await shutdown;
    expect(await rec.ended).toBe('complete');
    expect(up.requests.map((q) => q.url)).toEqual(['/slow']);
  });

  it('an idle keep-alive client connection is closed by shutdown, which resolves well before the grace', async () => {
    const up = track(await startScriptedUpstream());
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint)] } }));
    const c = track(await RawConnection.open(sc.outboundPort));
    c.write('GET /ka HTTP/1.1\r\nHost: orders\r\n\r\n');
    expect((await c.waitForResponse(3000))?.status).toBe(200);
    const started = performance.now();
    await sc.sidecar.shutdown(10_000);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(await c.waitForClose(2000)).toBe(true);
  });

  it('a request still running at the end of the grace period is cut, and shutdown resolves', async () => {
    const up = track(await startScriptedUpstream(['hang']));
    const sc = track(
      await startTestSidecar({
        outbound: { upstreams: [upstream('orders', up.endpoint, { timeouts: { requestMs: 60_000, perTryMs: 60_000 }, retry: 'off' })] },
      }),
    );
    const inFlight = send({ port: sc.outboundPort, host: 'orders', path: '/hang', timeoutMs: 10_000 }).catch((e: unknown) => e);
    await up.waitForRequest(1);
    const started = performance.now();
    await sc.sidecar.shutdown(300);
    expect(performance.now() - started).toBeLessThan(300 + 1500);
    const r = await inFlight;
    // Either a local 503/504 reply or a cut connection; never a hang.
    if (r instanceof RequestFailed) expect(r.elapsedMs).toBeLessThan(5000);
    else expect((r as { status: number }).status).toBeGreaterThanOrEqual(500);
    expect(await up.requests[0]!.ended).toBe('closed');
  });
});
