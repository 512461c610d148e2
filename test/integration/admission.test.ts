// Inbound admission through a whole sidecar, real sockets, a scripted app: the concurrency limit
// refusing (or queueing, then refusing) what the app has no room for, sheddable requests going
// before default ones, and a deadline too short for the app's latency refused before the app
// sees it. No timing luck: the app hangs until the test is done, or answers after a fixed delay
// well apart from the deadlines in play.
import { describe, expect, it } from 'vitest';
import { send, type SendResult } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();

/** A request left hanging at the app: aborted when the test ends. */
function hanging(port: number, headers: Record<string, string> = {}): void {
  const ac = new AbortController();
  track({ close: async () => ac.abort() });
  send({ port, path: '/', headers, signal: ac.signal, timeoutMs: 10_000 }).catch(() => {});
}

async function admissionSidecar(appPort: number, admission: Record<string, unknown>) {
  return track(await startTestSidecar({ inbound: { app: { port: appPort }, admission: { adaptive: 'off', ...admission } } }));
}

function expectShed(r: SendResult): void {
  expect(r.status).toBe(503);
  expect(r.headers['sluice-error']).toBe('shed');
  expect(r.headers['retry-after']).toBe('1');
}

describe('inbound admission', () => {
  it('a static limit of 2 with a hanging app refuses the third request at once (no queue)', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: 'hang' }));
    const sc = await admissionSidecar(app.port, { maxConcurrency: 2, queue: { maxWaiting: 0 } });
    hanging(sc.inboundPort);
    hanging(sc.inboundPort);
    await app.waitForHead(2);
    const third = await send({ port: sc.inboundPort, path: '/' });
    expectShed(third);
    expect(app.count).toBe(2);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_admission_in_flight')).toBe(2);
    expect(metricSum(m, 'sluice_admission_limit')).toBe(2);
    expect(metricSum(m, 'sluice_admission_shed_total', { priority: 'default', reason: 'limit', mode: 'enforce' })).toBe(1);
  });

  it('with a queue, the third request waits its maxWaitMs, then is refused', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: 'hang' }));
    const sc = await admissionSidecar(app.port, { maxConcurrency: 2, queue: { maxWaiting: 4, maxWaitMs: 100 } });
    hanging(sc.inboundPort);
    hanging(sc.inboundPort);
    await app.waitForHead(2);
    const third = await send({ port: sc.inboundPort, path: '/' });
    expectShed(third);
    // It waited (a lower bound only: timers never fire early).
    expect(third.headMs).toBeGreaterThanOrEqual(95);
    expect(app.count).toBe(2);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_admission_shed_total', { reason: 'wait_timeout' })).toBe(1);
    expect(metricSum(m, 'sluice_admission_queue_depth')).toBe(0);
  });

  it('refuses sheddable requests before default ones', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: 'hang' }));
    // floor(4 × 0.5) = 2: sheddable requests go once 2 are in flight; default ones up to 4.
    const sc = await admissionSidecar(app.port, { maxConcurrency: 4, sheddableShare: 0.5, queue: { maxWaiting: 0 } });
    hanging(sc.inboundPort);
    hanging(sc.inboundPort, { 'sluice-priority': 'sheddable' });
    await app.waitForHead(2);
    const sheddable = await send({ port: sc.inboundPort, path: '/', headers: { 'Sluice-Priority': 'sheddable' } });
    expectShed(sheddable);
    hanging(sc.inboundPort);
    await app.waitForHead(3);
    hanging(sc.inboundPort, { 'sluice-priority': 'critical' });
    await app.waitForHead(4);
    expectShed(await send({ port: sc.inboundPort, path: '/', headers: { 'sluice-priority': 'critical' } }));
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_admission_shed_total', { priority: 'sheddable', reason: 'sheddable_share' })).toBe(1);
    expect(metricSum(m, 'sluice_admission_shed_total', { priority: 'critical', reason: 'limit' })).toBe(1);
    expect(app.count).toBe(4);
  });

  it('refuses with deadline-too-short a request whose deadline is shorter than the app takes', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: { delayMs: 50, then: { status: 200, body: 'ok' } } }));
    const sc = await admissionSidecar(app.port, { maxConcurrency: 10 });
    // Learn the app's latency: about 50 ms.
    for (let i = 0; i < 3; i++) expect((await send({ port: sc.inboundPort, path: '/' })).status).toBe(200);
    const short = await send({ port: sc.inboundPort, path: '/', headers: { 'sluice-timeout-ms': '5' } });
    expect(short.status).toBe(504);
    expect(short.headers['sluice-error']).toBe('deadline-too-short');
    expect(app.count).toBe(3);
    // Enough time left: admitted.
    expect((await send({ port: sc.inboundPort, path: '/', headers: { 'sluice-timeout-ms': '2000' } })).status).toBe(200);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_admission_shed_total', { reason: 'deadline' })).toBe(1);
  });

  it('in shadow mode admits everything and says what it would have refused', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: 'hang' }));
    const sc = await admissionSidecar(app.port, { mode: 'shadow', maxConcurrency: 1, queue: { maxWaiting: 0 } });
    hanging(sc.inboundPort);
    await app.waitForHead(1);
    const ac = new AbortController();
    track({ close: async () => ac.abort() });
    const second = send({ port: sc.inboundPort, path: '/', signal: ac.signal, timeoutMs: 10_000 }).catch(() => undefined);
    // It reached the app: shadow mode refused nobody.
    await app.waitForHead(2);
    const m = await sc.metrics();
    expect(metricSum(m, 'sluice_admission_shed_total', { reason: 'limit', mode: 'shadow' })).toBe(1);
    expect(metricSum(m, 'sluice_admission_in_flight')).toBe(2);
    void second;
  });
});
