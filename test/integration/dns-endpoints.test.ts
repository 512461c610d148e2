// Endpoints written as a name, as for a Kubernetes headless Service, through the whole sidecar:
// the name's addresses are resolved before traffic is taken, re-resolved on their TTL, new
// addresses get traffic, addresses that leave get none, and a name with no address is a 503.
// A scripted DNS server on 127.0.0.1 answers; the two "pods" are 127.0.0.1 and ::1 on one port.
import { describe, expect, it } from 'vitest';
import { nodeDns, type DnsFunctions } from '../../src/proxy/dns/resolve.ts';
import { startDnsServer, type ScriptedDnsServer } from '../support/dns-server.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { startScriptedUpstream, type ScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type TestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();
const NAME = 'orders.ns.svc.test';

/** Two upstreams on the same port, one on each loopback address. */
async function twoPods(): Promise<[ScriptedUpstream, ScriptedUpstream]> {
  for (;;) {
    const v4 = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'v4' } }));
    try {
      const v6 = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'v6' } }, { host: '::1', port: v4.port }));
      return [v4, v6];
    } catch {
      // The port is taken on ::1: try another.
    }
  }
}

const DNS_POLICY = { minTtlMs: 100, refreshMs: 200, failureRetryMs: 100 };

async function setup(dnsPolicy: Record<string, unknown> = {}) {
  const server = track(await startDnsServer());
  server.set(NAME, { A: [{ address: '127.0.0.1', ttl: 1 }] });
  const [v4, v6] = await twoPods();
  // The system resolver stands in for /etc/hosts: it knows no test name, and asks no one.
  const dns = (): DnsFunctions => ({
    ...nodeDns({ servers: [server.server], timeoutMs: 200, tries: 1 }),
    lookup: async (name) => {
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    },
  });
  const sc = track(
    await startTestSidecar(
      {
        outbound: {
          upstreams: [upstream('orders', `${NAME}:${v4.port}`, { dns: { ...DNS_POLICY, ...dnsPolicy } })],
        },
      },
      { dns },
    ),
  );
  return { server, v4, v6, sc };
}

const get = (sc: TestSidecar) => send({ port: sc.outboundPort, host: 'orders', path: '/' });

/** Sends requests until one is answered with `body` (bounded by the test timeout). */
async function untilAnswered(sc: TestSidecar, body: string): Promise<void> {
  while ((await get(sc)).text !== body);
}

async function resolutions(sc: TestSidecar, outcome: string): Promise<number> {
  return metricSum(await sc.metrics(), 'sluice_dns_resolutions_total', { upstream: 'orders', outcome });
}

describe('endpoints written as a DNS name', () => {
  it('are resolved before traffic is taken', async () => {
    const { server, v4, sc } = await setup();
    expect(server.count(NAME, 'A')).toBeGreaterThanOrEqual(1);
    expect((await get(sc)).text).toBe('v4');
    expect(v4.count).toBe(1);
    expect(await resolutions(sc, 'resolved')).toBeGreaterThanOrEqual(1);
  });

  it('pick up a new address after its TTL, and stop sending to one that left', async () => {
    const { server, v6, sc } = await setup();
    expect((await get(sc)).text).toBe('v4');
    server.set(NAME, { A: [{ address: '127.0.0.1', ttl: 1 }], AAAA: [{ address: '::1', ttl: 1 }] });
    await untilAnswered(sc, 'v6');
    server.set(NAME, { AAAA: [{ address: '::1', ttl: 1 }] });
    // Once the A record is gone from the answer, the v4 pod gets nothing new.
    const queries = server.count(NAME, 'A');
    await server.waitForQueries(queries + 1, NAME, 'A');
    await untilAnswered(sc, 'v6');
    const v6Before = v6.count;
    for (let i = 0; i < 10; i++) {
      // A request may still have been balanced before the rebuild; from here on all are v6.
      const r = await get(sc);
      if (r.text === 'v4') i = -1;
    }
    expect(v6.count).toBeGreaterThan(v6Before);
  });

  it('answers 503 no-endpoints while the name has no address, and recovers when it has', async () => {
    const { server, sc } = await setup();
    expect((await get(sc)).text).toBe('v4');
    server.set(NAME, 'nxdomain');
    // An empty answer is confirmed by a second query before the last addresses are dropped.
    let r = await get(sc);
    while (r.status === 200) r = await get(sc);
    expect(r.status).toBe(503);
    expect(r.headers['sluice-error']).toBe('no-endpoints');
    server.set(NAME, { A: [{ address: '127.0.0.1', ttl: 1 }] });
    await untilAnswered(sc, 'v4');
    expect(await resolutions(sc, 'empty')).toBeGreaterThanOrEqual(2);
  });

  it('keeps the last addresses while DNS fails', async () => {
    const { server, sc } = await setup();
    server.set(NAME, 'servfail');
    const before = server.count(NAME, 'A');
    await server.waitForQueries(before + 2, NAME, 'A');
    expect((await get(sc)).text).toBe('v4');
    expect(await resolutions(sc, 'failed')).toBeGreaterThanOrEqual(1);
  });

  it('a re-resolution after a policy update rebuilds the upstream as the new policy says', async () => {
    const { server, v4, sc } = await setup();
    expect((await get(sc)).text).toBe('v4');
    // Same endpoints and dns (the watcher is kept), but the upstream is now reached as orders-new.
    const moved = { ...upstream('orders', `${NAME}:${v4.port}`, { dns: DNS_POLICY }), hosts: ['orders-new'] };
    await sc.reload({ outbound: { unknownHosts: 'reject', upstreams: [moved] } });
    server.set(NAME, { AAAA: [{ address: '::1', ttl: 1 }] });
    while ((await send({ port: sc.outboundPort, host: 'orders-new', path: '/' })).text !== 'v6');
    const old = await get(sc);
    expect(old.status).toBe(502);
    expect(old.headers['sluice-error']).toBe('no-route');
  });

  it('a policy update that changes dns settings keeps serving while DNS does not answer', async () => {
    const { server, v4, sc } = await setup();
    expect((await get(sc)).text).toBe('v4');
    server.set(NAME, 'drop');
    await sc.reload({ outbound: { upstreams: [upstream('orders', `${NAME}:${v4.port}`, { dns: { ...DNS_POLICY, maxTtlMs: 20_000 } })] } });
    expect((await get(sc)).text).toBe('v4');
    // The new watcher's first try fails; the old addresses go on serving past it.
    await server.waitForQueries(server.count(NAME, 'A') + 1, NAME, 'A');
    expect((await get(sc)).text).toBe('v4');
  });

  it('an endpoint ejected before a DNS change stays ejected after it', async () => {
    const server = track(await startDnsServer());
    const bad = track(await startScriptedUpstream({ queue: [], otherwise: { status: 503, body: 'down' } }));
    const good = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'good' } }, { host: '::1', port: bad.port }));
    const third = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'third' } }));
    server.set(NAME, { A: [{ address: '127.0.0.1', ttl: 1 }], AAAA: [{ address: '::1', ttl: 1 }] });
    const dns = (): DnsFunctions => ({
      ...nodeDns({ servers: [server.server], timeoutMs: 200, tries: 1 }),
      lookup: async (name) => {
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      },
    });
    const outlierDetection = { baseEjectionMs: 60_000, maxEjectionMs: 60_000, probeIntervalMs: 'off' };
    const sc = track(
      await startTestSidecar(
        { outbound: { upstreams: [upstream('orders', [`${NAME}:${bad.port}`, `more.test:${third.port}`], { dns: DNS_POLICY, outlierDetection })] } },
        { dns },
      ),
    );
    const ejected = async () => metricSum(await sc.metrics(), 'sluice_endpoints_ejected', { upstream: 'orders' });
    while ((await ejected()) === 0) await get(sc);
    const badBefore = bad.count;
    // A new address joins: the endpoint list is rebuilt.
    server.set('more.test', { A: [{ address: '127.0.0.1', ttl: 1 }] });
    await untilAnswered(sc, 'third');
    for (let i = 0; i < 30; i++) expect((await get(sc)).status).toBe(200);
    expect(bad.count).toBe(badBefore);
    expect(await ejected()).toBe(1);
  });
});
