// Local rate limits through the whole sidecar, outbound and inbound: per-descriptor buckets, the
// 429 with Retry-After and the IETF RateLimit fields, shadow mode, and a refused request never
// reaching the upstream. Bursts are counted, not timed: rates are low enough that no token refills
// during a test.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { redisAvailable, startRedis } from '../support/redis.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();
const OK = { queue: [], otherwise: { status: 200, body: 'ok' } } as const;

describe('rate limits', () => {
  it('outbound: one bucket per tenant header; refusals are 429 with Retry-After and RateLimit fields', async () => {
    const up = track(await startScriptedUpstream(OK));
    const sc = track(
      await startTestSidecar({
        outbound: {
          upstreams: [
            upstream('orders', up.endpoint, {
              rateLimits: [{ name: 'per-tenant', requestsPerMinute: 3, burst: 3, by: 'header:x-tenant' }],
            }),
          ],
        },
      }),
    );
    const get = (tenant: string) => send({ port: sc.outboundPort, host: 'orders', path: '/', headers: { 'x-tenant': tenant } });
    for (let i = 0; i < 3; i++) expect((await get('a')).status).toBe(200);
    const refused = await get('a');
    expect(refused.status).toBe(429);
    expect(refused.headers['sluice-error']).toBe('rate-limited');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.headers['ratelimit-policy']).toBe('"per-tenant";q=3;w=60');
    expect(refused.headers['ratelimit']).toMatch(/^"per-tenant";r=0;t=\d+$/);
    expect((await get('b')).status).toBe(200); // another tenant has its own bucket
    expect(up.count).toBe(4);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_ratelimit_decisions_total', { upstream: 'orders', rule: 'per-tenant', outcome: 'refused' })).toBe(1);
    expect(metricSum(m, 'sluice_ratelimit_decisions_total', { upstream: 'orders', rule: 'per-tenant', outcome: 'allowed' })).toBe(4);
  });

  it('a refused request is not retried and does not touch the retry budget', async () => {
    const up = track(await startScriptedUpstream(OK));
    const sc = track(
      await startTestSidecar({
        outbound: { upstreams: [upstream('orders', up.endpoint, { rateLimits: [{ name: 'all', requestsPerMinute: 1 }] })] },
      }),
    );
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(429);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_retries_total')).toBe(0);
    expect(metricSum(m, 'sluice_upstream_attempts_total', { upstream: 'orders' })).toBe(1);
  });

  it('shadow mode lets everything through, counts and annotates what it would have refused', async () => {
    const up = track(await startScriptedUpstream(OK));
    const sc = track(
      await startTestSidecar({
        outbound: {
          upstreams: [upstream('orders', up.endpoint, { rateLimits: [{ name: 'all', mode: 'shadow', requestsPerMinute: 2 }] })],
        },
      }),
    );
    const statuses: number[] = [];
    const shadow: (string | string[] | undefined)[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await send({ port: sc.outboundPort, host: 'orders', path: '/' });
      statuses.push(r.status);
      shadow.push(r.headers['sluice-shadow']);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    expect(shadow).toEqual([undefined, undefined, 'rate-limited', 'rate-limited', 'rate-limited']);
    expect(up.count).toBe(5);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_ratelimit_decisions_total', { rule: 'all', outcome: 'shadow_refused' })).toBe(3);
  });

  it('inbound: admission by source address before the app sees the request', async () => {
    const app = track(await startScriptedUpstream(OK));
    const sc = track(
      await startTestSidecar({
        inbound: {
          listener: { port: 0 },
          app: { port: app.port },
          rateLimits: [{ name: 'per-source', requestsPerMinute: 2, by: 'source', match: { pathPrefix: '/ingest' } }],
        },
      }),
    );
    const post = (path: string) => send({ port: sc.inboundPort, path, method: 'POST', body: 'x' });
    expect((await post('/ingest')).status).toBe(200);
    expect((await post('/ingest')).status).toBe(200);
    expect((await post('/ingest')).status).toBe(429);
    expect((await post('/health')).status).toBe(200); // outside the rule's match
    expect(app.count).toBe(3);
  });
});

describe.skipIf(!redisAvailable())('global rate limits at start-up', () => {
  it('the first request after start is decided by Redis, not by the fallback (onRedisDown: deny)', async () => {
    const redis = await startRedis();
    track({ close: () => redis.stop() });
    const up = track(await startScriptedUpstream(OK));
    const sc = track(
      await startTestSidecar({
        redis: { address: '127.0.0.1', port: redis.port, keyPrefix: 'startup' },
        outbound: {
          upstreams: [
            upstream('orders', up.endpoint, {
              rateLimits: [{ name: 'all', requestsPerSecond: 100, scope: 'global', onRedisDown: 'deny' }],
            }),
          ],
        },
      }),
    );
    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/' });
    expect(r.status).toBe(200);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_ratelimit_decisions_total', { rule: 'all', outcome: 'allowed' })).toBe(1);
  });
});
