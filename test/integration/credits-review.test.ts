// Regressions found in review of credit-based backpressure, over real sockets: updates with
// tries in flight or waiting, idle producers, a consumer with credits off. Each failed before its fix.
import { afterEach, describe, expect, it } from 'vitest';
import { appMetric, gatedApp, getVia, producerSpec, startConsumer, until } from '../support/credit-sidecars.ts';
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

const consumer = async (app: ScriptedUpstream, credits?: Record<string, unknown> | null): Promise<TestSidecar> => track(await startConsumer(app, credits));
const producer = async (c: TestSidecar, credits?: Record<string, unknown>): Promise<TestSidecar> => track(await startTestSidecar(producerSpec(c, credits)));
const get = getVia;
const metric = appMetric;

describe('credits review', () => {
  // DEFECT: a policy update builds a new CreditPool whose balances copy (adopt) the old ones'
  // inFlight, but tries already out give their credit back to the old pool (the old stack's
  // credits layer holds it). The new pool's inFlight never comes down: credits leak for good.
  it('a policy update while tries are in flight does not leak their credits', async () => {
    const gate = gatedApp('/hold');
    const app = track(await startScriptedUpstream(gate.script as never));
    const c = await consumer(app);
    const spec = producerSpec(c, { maxWaitMs: 20 });
    const p = track(await startTestSidecar(spec));
    // Warm up to the whole limit (4).
    await until(() => metric(p, 'sluice_credits_granted'), (v) => v >= 1, 'first grant');
    for (let k = 0; k < 4 && (await metric(p, 'sluice_credits_granted')) < 4; k++) {
      const rs = Array.from({ length: 4 }, () => get(p, '/hold'));
      await new Promise((r) => setTimeout(r, 50));
      gate.release();
      await Promise.all(rs);
    }
    expect(await metric(p, 'sluice_credits_granted')).toBe(4);
    const held = Array.from({ length: 4 }, () => get(p, '/hold'));
    await until(() => metric(p, 'sluice_credits_in_flight'), (v) => v === 4, 'four in flight');
    await p.reload(spec);
    gate.release();
    expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    // Every try ended: a new request finds a credit, and nothing is in flight any more.
    const r = await get(p);
    expect(`${r.status} ${String(r.headers['sluice-error'])}`).toBe('200 undefined');
    expect(await metric(p, 'sluice_credits_in_flight')).toBe(0);
  });

  // DEFECT: CreditPool.close() (run on every policy update and every DNS change of the upstream)
  // refuses every waiting request with 503 no-credit ('queue_full'), uncounted in the metric.
  it('a policy update does not refuse requests waiting for a credit', async () => {
    const gate = gatedApp('/hold');
    const app = track(await startScriptedUpstream(gate.script as never));
    const c = await consumer(app);
    const spec = producerSpec(c, { maxWaitMs: 3000 });
    const p = track(await startTestSidecar(spec));
    await until(() => metric(p, 'sluice_credits_granted'), (v) => v >= 1, 'first grant');
    const first = get(p, '/hold');
    await app.waitUntil(() => app.count >= 1, 'one at the app');
    // The first grant is 1 credit (want was 1): the next request waits for it.
    expect(await metric(p, 'sluice_credits_granted')).toBe(1);
    const waiter = get(p, '/hold');
    await until(() => metric(p, 'sluice_credit_waiting'), (v) => v >= 1, 'a request waits');
    await p.reload(spec);
    await new Promise((r) => setTimeout(r, 50));
    gate.release();
    expect((await first).status).toBe(200);
    // Keep the gate open until the waiter is answered.
    const opener = setInterval(() => gate.release(), 10);
    const w = await waiter.finally(() => clearInterval(opener));
    expect(`${w.status} ${String(w.headers['sluice-error'])}`).toBe('200 undefined');
  });

  // DEFECT: the ledger starts a producer it re-creates after its lease lapsed at seq 0 again,
  // in the same epoch; the producer's balance still holds the old, higher seq, so it takes the
  // new grant as stale. On a first fetch CreditPool ignores onGrant's false: the balance stays
  // 'fetching' for good (needsFetch is only true in 'unknown'), and the endpoint never gets a
  // credit again. Any producer idle for longer than leaseMs hits it.
  it('a producer idle for longer than the lease is served again afterwards', async () => {
    const gate = gatedApp('/hold');
    const app = track(await startScriptedUpstream(gate.script as never));
    const c = await consumer(app, { leaseMs: 300 });
    const p = await producer(c);
    await until(() => metric(p, 'sluice_credits_granted'), (v) => v >= 1, 'first grant');
    // Demand grows the grant past its first (seq 0): the balance now holds seq >= 1.
    const rs = Array.from({ length: 4 }, () => get(p, '/hold'));
    await new Promise((r) => setTimeout(r, 100));
    gate.release();
    await Promise.all(rs);
    expect(await metric(p, 'sluice_credits_granted')).toBeGreaterThan(1);
    // Idle past the lease.
    await new Promise((r) => setTimeout(r, 500));
    const after = [];
    for (let k = 0; k < 3; k++) {
      after.push((await get(p)).status);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(after).toEqual([200, 200, 200]);
  });

  // DEFECT: with credits on at the producer and off at a consumer that has a sidecar, the
  // consumer sidecar forwards GET /.sluice/v1/credits and the sluice-credit claim to its app.
  // README: "answered by the sidecar, never the app"; "Both headers are removed before the app
  // ... sees them".
  it('credits off at the consumer: its app sees neither the fetch nor the claim', async () => {
    const app = track(await startScriptedUpstream([{ echo: true }]));
    const c = await consumer(app, null);
    const p = await producer(c);
    await until(() => metric(p, 'sluice_credit_fetches_total'), (v) => v >= 1, 'fetched');
    const r = await get(p);
    expect(r.status).toBe(200);
    expect(app.requests.map((q) => q.url)).toEqual(['/work']);
    expect(app.requests.map((q) => q.headers['sluice-credit'])).toEqual([undefined]);
  });
});
