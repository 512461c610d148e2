// The admin listener: liveness, readiness that tracks the local app, the effective policy as
// JSON, and Prometheus metrics that count what the proxy did.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { metricNames, metricSum } from '../support/metrics.ts';
import { deadPort } from '../support/raw-upstream.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();

describe('admin endpoints', () => {
  it('/healthz answers 200', async () => {
    const sc = track(await startTestSidecar());
    const r = await sc.admin('/healthz');
    expect(r.status).toBe(200);
  });

  it('/readyz is 200 when the inbound app is reachable', async () => {
    const app = track(await startScriptedUpstream());
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }));
    const r = await eventually('readyz 200', async () => {
      const res = await sc.admin('/readyz');
      return res.status === 200 ? res : undefined;
    });
    expect(r.status).toBe(200);
  });

  it('/readyz is 503 with a reason when the inbound app is unreachable', async () => {
    const port = await deadPort();
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port } } }));
    const r = await eventually('readyz 503', async () => {
      const res = await sc.admin('/readyz');
      return res.status === 503 ? res : undefined;
    });
    expect(r.text.trim().length).toBeGreaterThan(0);
    expect(r.text).toMatch(/app|connect|refused|unreachable/i);
  });

  it('/readyz follows the app: 503 after it dies', async () => {
    const app = track(await startScriptedUpstream());
    const sc = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }));
    await eventually('readyz 200', async () => (await sc.admin('/readyz')).status === 200);
    await app.close();
    await eventually('readyz 503 after the app died', async () => (await sc.admin('/readyz')).status === 503, 5000);
  });

  it('/config returns the effective policy as JSON', async () => {
    const sc = track(
      await startTestSidecar({
        outbound: { upstreams: [upstream('orders', '127.0.0.1:9', { timeouts: { requestMs: 1234 } })] },
      }),
    );
    const r = await sc.admin('/config');
    expect(r.status).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/json/);
    const body = JSON.parse(r.text) as Record<string, unknown>;
    const text = JSON.stringify(body);
    // Effective: the upstream is there with its override and the defaults filled in.
    expect(text).toContain('"orders"');
    expect(text).toContain('1234');
    expect(text).toContain('"maxAttempts"');
  });

  it('/metrics is Prometheus text', async () => {
    const sc = track(await startTestSidecar());
    const r = await sc.admin('/metrics');
    expect(r.status).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/^text\/plain/);
    expect(r.text).toMatch(/^# (HELP|TYPE) sluice_/m);
  });

  it('/metrics: the server histogram counts requests, the client histogram counts each try', async () => {
    // The second request's first try gets a 503 and is retried: 3 requests, 4 tries.
    const up = track(await startScriptedUpstream([{ status: 200 }, { status: 503 }, { status: 200 }, { status: 200 }]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint)] } }));
    for (let i = 0; i < 3; i++) expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const m = await sc.metrics();
    const outbound = { direction: 'outbound', upstream: 'orders', route: 'default', http_request_method: 'GET' };
    expect(metricSum(m, 'http_server_request_duration_seconds_count', { ...outbound, http_response_status_code: '200', error_type: '' }), metricNames(m).join(' ')).toBe(3);
    expect(metricSum(m, 'http_server_request_duration_seconds_count', { http_response_status_code: '503' })).toBe(0);
    expect(metricSum(m, 'http_client_request_duration_seconds_count', { ...outbound, http_response_status_code: '200' })).toBe(3);
    expect(metricSum(m, 'http_client_request_duration_seconds_count', { ...outbound, http_response_status_code: '503' })).toBe(1);
  });

  it('/metrics: a try that got no answer is in the client histogram by its failure, without a status', async () => {
    const up = track(await startScriptedUpstream(['reset', { status: 200 }]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint)] } }));
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const m = await sc.metrics();
    expect(metricSum(m, 'http_client_request_duration_seconds_count', { upstream: 'orders', http_response_status_code: '', error_type: 'upstream-reset' })).toBe(1);
    expect(metricSum(m, 'http_server_request_duration_seconds_count', { upstream: 'orders', http_response_status_code: '200' })).toBe(1);
  });

  it('/metrics: every local reply is counted by its sluice-error code, no-route included', async () => {
    const up = track(await startScriptedUpstream(['hang']));
    const sc = track(
      await startTestSidecar({
        outbound: {
          unknownHosts: 'reject',
          upstreams: [upstream('orders', up.endpoint, { timeouts: { requestMs: 100 }, retry: 'off' })],
        },
      }),
    );
    const timedOut = await send({ port: sc.outboundPort, host: 'orders', path: '/' });
    expect(timedOut.headers['sluice-error']).toBe('deadline-exceeded');
    const noRoute = await send({ port: sc.outboundPort, host: 'nobody.example', path: '/' });
    expect(noRoute.headers['sluice-error']).toBe('no-route');
    const m = await sc.metrics();
    const names = metricNames(m).join(' ');
    expect(metricSum(m, 'sluice_local_replies_total', { direction: 'outbound', code: 'deadline-exceeded' }), names).toBe(1);
    expect(metricSum(m, 'sluice_local_replies_total', { direction: 'outbound', code: 'no-route' }), names).toBe(1);
  });

  it('/metrics: sluice_upstream_attempts_total counts every try', async () => {
    const up = track(await startScriptedUpstream([{ status: 503 }, { status: 503 }, { status: 200 }]));
    const sc = track(
      await startTestSidecar({
        outbound: { upstreams: [upstream('orders', up.endpoint, { retry: { maxAttempts: 3, backoff: { baseMs: 1, capMs: 2 } } })] },
      }),
    );
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_upstream_attempts_total', { upstream: 'orders' }), metricNames(m).join(' ')).toBe(3);
  });

  it('an unknown admin path is 404', async () => {
    const sc = track(await startTestSidecar());
    expect((await sc.admin('/nope')).status).toBe(404);
  });
});
