// Credit-based backpressure over real sockets: two producer sidecars and one consumer sidecar in
// front of a slow app. The consumer's admission limit is static here (4), so the shares are exact.
import { afterEach, describe, expect, it } from 'vitest';
import { appMetric, gatedApp, getVia, producerSpec, startConsumer, until } from '../support/credit-sidecars.ts';
import { metricSum } from '../support/metrics.ts';
import type { SendResult } from '../support/http-client.ts';
import { startScriptedUpstream, type ScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, type TestSidecar } from '../support/sidecar.ts';

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((x) => x.close()));
});

function track<T extends { close(): Promise<void> }>(x: T): T {
  opened.push(x);
  return x;
}

const consumer = async (app: ScriptedUpstream, credits?: Record<string, unknown>): Promise<TestSidecar> => track(await startConsumer(app, credits));
const producer = async (c: TestSidecar, credits?: Record<string, unknown>): Promise<TestSidecar> => track(await startTestSidecar(producerSpec(c, credits)));
const get = getVia;
const granted = (p: TestSidecar): Promise<number> => appMetric(p, 'sluice_credits_granted');

describe('credits between sidecars', () => {
  it('a producer fetches its grant before the first request, and the app never sees the protocol', async () => {
    const app = track(await startScriptedUpstream([{ echo: true }]));
    const c = await consumer(app);
    const p = await producer(c);
    await until(() => granted(p), (v) => v >= 1, 'first grant');
    const r = await get(p);
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.text) as { headers: Record<string, string>; url: string };
    expect(seen.headers['sluice-credit']).toBeUndefined();
    expect(r.headers['sluice-credit-grant']).toBeUndefined();
    // The fetch was answered by the consumer sidecar: the app saw one request, the real one.
    expect(app.count).toBe(1);
    expect(seen.url).toBe('/work');
  });

  it('never has more in flight than granted: excess is refused at the producer, before the wire', async () => {
    const gate = gatedApp();
    const app = track(await startScriptedUpstream(gate.script));
    const c = await consumer(app);
    const p = await producer(c);
    await until(() => granted(p), (v) => v >= 1, 'first grant');
    const replies = Array.from({ length: 8 }, () => get(p));
    // The consumer's limit is 4 and this is its only producer: 4 reach the app, 4 are refused.
    await app.waitUntil(() => app.count >= 4, '4 requests at the app');
    const refused = await until(
      async () => metricSum(await p.metrics(), 'sluice_credit_refusals_total', { upstream: 'app' }),
      (v) => v >= 4,
      'four refusals',
    );
    expect(refused).toBe(4);
    expect(app.count).toBe(4);
    gate.release();
    const results = await Promise.all(replies);
    const codes = results.map((r) => (r.status === 200 ? 'ok' : `${r.status} ${String(r.headers['sluice-error'])}`)).sort();
    expect(codes).toEqual(['503 no-credit', '503 no-credit', '503 no-credit', '503 no-credit', 'ok', 'ok', 'ok', 'ok']);
    const refusal = results.find((r) => r.status === 503) as SendResult;
    expect(refusal.headers['retry-after']).toBe('1');
    // Refused locally: the consumer saw only what had credit.
    expect(metricSum(await c.metrics(), 'sluice_credit_grant_over_window')).toBe(0);
  });

  it('shares the limit between two producers and converges to half each', async () => {
    const gate = gatedApp();
    const app = track(await startScriptedUpstream(gate.script));
    const c = await consumer(app);
    const a = await producer(c);
    const b = await producer(c);
    await until(() => granted(a), (v) => v >= 1, 'a granted');
    await until(() => granted(b), (v) => v >= 1, 'b granted');
    // Both want more than the whole limit; in rounds, each learns its share from its answers.
    for (let round = 0; round < 4; round++) {
      const replies = [...Array.from({ length: 6 }, () => get(a)), ...Array.from({ length: 6 }, () => get(b))];
      await app.waitUntil(() => app.count >= (round + 1) * 4, 'limit reached');
      // Wait for the refusals (queue waits are 20 ms), then let the app answer.
      await until(
        async () =>
          metricSum(await a.metrics(), 'sluice_credit_refusals_total') + metricSum(await b.metrics(), 'sluice_credit_refusals_total'),
        (v) => v >= (round + 1) * 8,
        'refusals',
      );
      gate.release();
      await Promise.all(replies);
    }
    expect(await granted(a)).toBe(2);
    expect(await granted(b)).toBe(2);
    expect(metricSum(await c.metrics(), 'sluice_credit_grant_committed')).toBeLessThanOrEqual(4);
  });

  it('a producer that stops using its credits loses them at lease expiry, to the one that wants them', async () => {
    // '/hold' waits at the app until released; anything else is answered at once.
    const gate = gatedApp('/hold');
    const app = track(await startScriptedUpstream(gate.script));
    const c = await consumer(app, { leaseMs: 300 });
    const a = await producer(c);
    const b = await producer(c);
    // a takes a share of the limit, then goes silent (as a paused or partitioned producer would).
    await until(() => granted(a), (v) => v >= 1, 'a granted');
    await Promise.all(Array.from({ length: 6 }, () => get(a)));
    const aHeld = await granted(a);
    expect(aHeld).toBeGreaterThanOrEqual(1);
    await a.close();
    // b wants everything: while a's lease runs, b gets only what a does not hold.
    const before = app.count;
    let replies = Array.from({ length: 6 }, () => get(b, '/hold'));
    await app.waitUntil(() => app.count >= before + 4 - aHeld, 'b at the app');
    await until(
      async () => metricSum(await b.metrics(), 'sluice_credit_refusals_total'),
      (v) => v >= 6 - (4 - aHeld),
      'b refused the rest',
    );
    expect(app.count - before).toBe(4 - aHeld);
    gate.release();
    await Promise.all(replies);
    await until(
      async () => metricSum(await c.metrics(), 'sluice_credit_grant_leases_expired'),
      (v) => v >= 1,
      'a lease lapsed',
    );
    // b learns its grown share from the grant on its next answers (each request answered at once;
    // a burst sent first could be refused before that answer arrives, on how fast the host is).
    await until(
      async () => ((await get(b)).status === 200 ? granted(b) : 0),
      (v) => v === 4,
      'b granted the whole limit',
    );
    // With it, four of a burst of six are at the app at once.
    const after = app.count;
    replies = Array.from({ length: 6 }, () => get(b, '/hold'));
    await app.waitUntil(() => app.count >= after + 4, 'b has four at the app');
    expect(app.count - after).toBe(4);
    gate.release();
    const results = await Promise.all(replies);
    expect(results.filter((r) => r.status === 200).length).toBe(4);
  });
});
