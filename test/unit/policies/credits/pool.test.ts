// The producer's credit pool: reservations, the bounded wait queue, fetches and refreshes.
// Timers are vitest's fake ones and the clock follows them, so no test waits for real time.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CreditPool, type FetchResult, type Refusal } from '../../../../src/policies/credits/pool.ts';
import { formatGrant } from '../../../../src/policies/credits/protocol.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import { cancel } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';

const clock = { now: () => Date.now() };

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

interface Harness {
  pool: CreditPool;
  fetches: { i: number; claim: string; answer(r: FetchResult): void }[];
  refused: Refusal[];
}

function harness(policy = { maxWaiting: 2, maxWaitMs: 25, recheckMs: 1000 }, endpoints = ['a|1']): Harness {
  const fetches: Harness['fetches'] = [];
  const refused: Refusal[] = [];
  const pool = new CreditPool({
    upstream: 'u',
    endpoints,
    policy,
    clock,
    identity: { id: 'me', svc: 'svc' },
    fetch: (i, claim) => new Promise((resolve) => fetches.push({ i, claim, answer: resolve })),
    events: { refused: (r) => refused.push(r), waited: () => {}, fetched: () => {} },
  });
  return { pool, fetches, refused };
}

const grant = (n: number, seq: number): FetchResult => ({ status: 200, grant: formatGrant({ n, seq, leaseMs: 10_000, epoch: 'e' }) });

/** Lets the pool's setImmediate and the fetch promise callbacks run. */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

describe('credit pool', () => {
  it('fetches every endpoint before the first request; until a grant, requests wait', async () => {
    const h = harness();
    await settle();
    expect(h.fetches.map((f) => f.i)).toEqual([0]);
    expect(h.fetches[0]?.claim).toBe('id="me", svc="svc", epoch="", ack=-1, want=1');
    const ctx = testContext({ deadlineMs: 10_000 });
    const waiting = h.pool.acquire(ctx);
    expect(waiting).toBeInstanceOf(Promise);
    h.fetches[0]?.answer(grant(2, 0));
    await settle();
    await expect(waiting).resolves.toBeUndefined();
    expect(h.pool.reserved).toBe(1);
  });

  it('reserves at once while credit is free; spend and give back keep the count', async () => {
    const h = harness();
    await settle();
    h.fetches[0]?.answer(grant(2, 0));
    await settle();
    expect(h.pool.acquire(testContext())).toBeUndefined();
    expect(h.pool.eligible()).toEqual([true]);
    expect(h.pool.spend(0).claim).toContain('ack=0');
    expect(h.pool.acquire(testContext())).toBeUndefined();
    h.pool.spend(0);
    expect(h.pool.inFlight()).toBe(2);
    expect(h.pool.available()).toBe(0);
    expect(h.pool.eligible()).toEqual([false]);
    h.pool.giveBack(h.pool.balances[0]!);
    expect(h.pool.available()).toBe(1);
  });

  it('bounds the queue: past maxWaiting a request is refused at once with 503 no-credit', async () => {
    const h = harness({ maxWaiting: 1, maxWaitMs: 25, recheckMs: 1000 });
    await settle();
    h.fetches[0]?.answer(grant(1, 0));
    await settle();
    h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    h.pool.spend(0);
    const first = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    const second = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    await expect(second).rejects.toMatchObject({ code: 'no-credit', retryAfterS: 1 });
    expect(h.refused).toEqual(['queue_full']);
    // The waiter gets the credit the try gives back.
    h.pool.giveBack(h.pool.balances[0]!);
    await expect(first).resolves.toBeUndefined();
  });

  it('a wait ends at maxWaitMs, or sooner at the deadline, and says which', async () => {
    const h = harness({ maxWaiting: 10, maxWaitMs: 25, recheckMs: 1000 });
    await settle();
    h.fetches[0]?.answer(grant(0, 0));
    await settle();
    const long = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    const short = h.pool.acquire(testContext({ deadlineMs: 10 }));
    const results = Promise.allSettled([long, short]);
    await vi.advanceTimersByTimeAsync(25);
    const [l, s] = await results;
    expect((l as PromiseRejectedResult).reason).toBeInstanceOf(SluiceError);
    expect((s as PromiseRejectedResult).reason).toMatchObject({ code: 'no-credit' });
    expect(h.refused).toEqual(['deadline', 'wait_timeout']);
    expect(h.pool.waiting).toBe(0);
  });

  it('a cancelled waiter leaves the queue with the cancellation reason', async () => {
    const h = harness();
    await settle();
    h.fetches[0]?.answer(grant(0, 0));
    await settle();
    const ctx = testContext({ deadlineMs: 10_000 });
    const waiting = h.pool.acquire(ctx);
    const gone = new SluiceError('client-closed');
    cancel(ctx, gone);
    await expect(waiting).rejects.toBe(gone);
    expect(h.pool.waiting).toBe(0);
  });

  it('short of credit, it asks again with the demand of the whole burst', async () => {
    const h = harness({ maxWaiting: 10, maxWaitMs: 25, recheckMs: 1000 });
    await settle();
    h.fetches[0]?.answer(grant(1, 0));
    await settle();
    h.pool.acquire(testContext());
    h.pool.spend(0);
    const waiters = Array.from({ length: 5 }, () => h.pool.acquire(testContext({ deadlineMs: 10_000 })));
    await settle();
    // One refresh for the burst, with its whole demand: 1 in flight + 5 waiting.
    expect(h.fetches).toHaveLength(2);
    expect(h.fetches[1]?.claim).toBe('id="me", svc="svc", epoch="e", ack=0, want=6');
    h.fetches[1]?.answer(grant(6, 1));
    await settle();
    await Promise.all(waiters);
    expect(h.pool.reserved).toBe(5);
  });

  it('an endpoint that answers without a grant is unmetered until recheckMs; an unreachable one for a second', async () => {
    const h = harness({ maxWaiting: 10, maxWaitMs: 25, recheckMs: 5000 }, ['a|1', 'b|2']);
    await settle();
    h.fetches[0]?.answer({ status: 404, grant: undefined });
    h.fetches[1]?.answer({ error: new Error('ECONNREFUSED') });
    await settle();
    expect(h.pool.available()).toBe(Infinity);
    expect(h.pool.eligible()).toEqual([true, true]);
    await vi.advanceTimersByTimeAsync(1000);
    h.pool.acquire(testContext());
    await settle();
    // b is asked again after a second, a not yet.
    expect(h.fetches.map((f) => f.i)).toEqual([0, 1, 1]);
  });

  it('refuses at once, fast, a request that would get no credit within its wait; the hint says when one frees', async () => {
    const h = harness({ maxWaiting: 100, maxWaitMs: 25, recheckMs: 1000 });
    await settle();
    h.fetches[0]?.answer(grant(2, 0));
    await settle();
    // Tries hold their credit 40 ms on average: with 2 credits, one comes back every ~20 ms.
    for (let k = 0; k < 2; k++) {
      h.pool.acquire(testContext());
      h.pool.spend(0);
    }
    h.pool.giveBack(h.pool.balances[0]!, 40);
    h.pool.acquire(testContext());
    h.pool.spend(0);
    // The first waiter expects ~20 ms (within 25): it waits. The second would expect ~40: refused now.
    const first = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    expect(first).toBeInstanceOf(Promise);
    const second = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    await expect(second).rejects.toMatchObject({ code: 'no-credit', retryAfterS: 0.02 });
    expect(h.refused).toEqual(['expected_wait']);
    h.pool.giveBack(h.pool.balances[0]!, 40);
    await expect(first).resolves.toBeUndefined();
  });

  it('closing refuses whoever waits', async () => {
    const h = harness();
    await settle();
    const waiting = h.pool.acquire(testContext({ deadlineMs: 10_000 }));
    h.pool.close();
    await expect(waiting).rejects.toMatchObject({ code: 'no-credit' });
  });
});
