import { describe, expect, it } from 'vitest';
import type { RetryBudgetPolicy } from '../../../../src/policy/types.ts';
import { BUDGET_BUCKETS, RetryBudget } from '../../../../src/policies/retry/budget.ts';
import { FakeClock } from '../../../support/fake-clock.ts';
import { prng } from '../../../support/prng.ts';

function policy(over: Partial<RetryBudgetPolicy> = {}): RetryBudgetPolicy {
  return { ratio: 0.2, windowMs: 1000, minRetriesPerSecond: 0, maxConcurrentRetries: 1000, ...over };
}

function setup(over: Partial<RetryBudgetPolicy> = {}, startMs = 0) {
  const clock = new FakeClock(startMs);
  return { clock, budget: new RetryBudget(policy(over), clock) };
}

/** Acquire and release at once, as many times as allowed (a caller that always wants another retry). */
function drain(budget: RetryBudget, max = 1_000_000): number {
  let n = 0;
  while (n < max && budget.tryAcquire()) {
    budget.release();
    n++;
  }
  return n;
}

/** The bound the budget proves: ratio × R + C + m × T, C = max(1, m) when m > 0 else 0. */
function bound(p: RetryBudgetPolicy, requests: number, elapsedMs: number): number {
  const m = p.minRetriesPerSecond;
  const capacity = m > 0 ? Math.max(1, m) : 0;
  return p.ratio * requests + capacity + (m * elapsedMs) / 1000;
}

describe('RetryBudget construction', () => {
  it.each([
    [{ ratio: -0.1 }, 'retry budget ratio must be in [0, 1], got -0.1'],
    [{ ratio: 1.5 }, 'retry budget ratio must be in [0, 1], got 1.5'],
    [{ ratio: Number.NaN }, 'retry budget ratio must be in [0, 1], got NaN'],
    [{ windowMs: 0 }, 'retry budget windowMs must be a finite number > 0, got 0'],
    [{ windowMs: Infinity }, 'retry budget windowMs must be a finite number > 0, got Infinity'],
    [{ minRetriesPerSecond: -1 }, 'retry budget minRetriesPerSecond must be a finite number >= 0, got -1'],
    [{ maxConcurrentRetries: 1.5 }, 'retry budget maxConcurrentRetries must be an integer >= 0, got 1.5'],
    [{ maxConcurrentRetries: -1 }, 'retry budget maxConcurrentRetries must be an integer >= 0, got -1'],
  ])('rejects %j', (over, message) => {
    expect(() => new RetryBudget(policy(over), new FakeClock())).toThrow(new RangeError(message));
  });

  it('starts empty with a full floor bucket', () => {
    const { budget } = setup({ minRetriesPerSecond: 5 });
    expect(budget.concurrent).toBe(0);
    expect(budget.requestsInWindow()).toBe(0);
    expect(budget.retriesInWindow()).toBe(0);
    expect(budget.floorTokens()).toBe(5);
  });
});

describe('RetryBudget ratio', () => {
  it('grants ratio × requests whole retries, counted at decision time', () => {
    const { budget } = setup({ ratio: 0.2 });
    for (let i = 0; i < 10; i++) budget.recordRequest();
    // Two retries decided and still sleeping in back-off (not released, not sent): they already
    // count, so a third decision is refused.
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(false);
    expect(budget.concurrent).toBe(2);
    expect(budget.retriesInWindow()).toBe(2);
  });

  it('needs a whole retry of credit: 4 requests at 20% grant none', () => {
    const { budget } = setup({ ratio: 0.2 });
    for (let i = 0; i < 4; i++) budget.recordRequest();
    expect(budget.tryAcquire()).toBe(false);
    budget.recordRequest();
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(false);
  });

  it('ratio 0 with no floor never retries', () => {
    const { budget } = setup({ ratio: 0 });
    for (let i = 0; i < 100; i++) budget.recordRequest();
    expect(budget.tryAcquire()).toBe(false);
  });

  it('a refused acquisition records nothing', () => {
    const { budget } = setup({ ratio: 0.5 });
    budget.recordRequest();
    expect(budget.tryAcquire()).toBe(false);
    expect(budget.retriesInWindow()).toBe(0);
    expect(budget.concurrent).toBe(0);
  });
});

describe('RetryBudget sliding window', () => {
  it('keeps a bucket for one window, then forgets it', () => {
    const { clock, budget } = setup({ windowMs: 1000 });
    for (let i = 0; i < 10; i++) budget.recordRequest(); // bucket [0, 100)
    clock.set(999);
    expect(budget.requestsInWindow()).toBe(10);
    clock.set(1000); // bucket 10 replaces bucket 0 in the ring
    expect(budget.requestsInWindow()).toBe(0);
  });

  it('retries age out with the requests of their bucket', () => {
    const { clock, budget } = setup({ ratio: 0.5, windowMs: 1000 });
    for (let i = 0; i < 4; i++) budget.recordRequest();
    expect(drain(budget)).toBe(2);
    clock.set(550);
    for (let i = 0; i < 4; i++) budget.recordRequest();
    expect(budget.requestsInWindow()).toBe(8);
    expect(drain(budget)).toBe(2);
    clock.set(1000); // t=0 bucket leaves: 4 requests, 2 retries
    expect(budget.requestsInWindow()).toBe(4);
    expect(budget.retriesInWindow()).toBe(2);
    expect(drain(budget)).toBe(0);
    clock.set(1550); // t=550 bucket leaves too
    expect(budget.requestsInWindow()).toBe(0);
    expect(budget.retriesInWindow()).toBe(0);
  });

  it('zeroes every bucket after a gap longer than the window', () => {
    const { clock, budget } = setup({ ratio: 1, windowMs: 1000 });
    for (let t = 0; t < 1000; t += 100) {
      clock.set(t);
      budget.recordRequest();
    }
    expect(budget.requestsInWindow()).toBe(BUDGET_BUCKETS);
    clock.advance(5000);
    expect(budget.requestsInWindow()).toBe(0);
    budget.recordRequest();
    expect(budget.requestsInWindow()).toBe(1);
  });

  it('works from a negative start time', () => {
    const { clock, budget } = setup({ ratio: 1, windowMs: 1000 }, -250);
    budget.recordRequest();
    clock.set(100);
    expect(budget.requestsInWindow()).toBe(1);
    clock.set(800);
    expect(budget.requestsInWindow()).toBe(0);
  });

  it('a clock running backwards counts into the newest bucket and refills nothing', () => {
    const { clock, budget } = setup({ ratio: 1, windowMs: 1000, minRetriesPerSecond: 1 });
    clock.set(5000);
    budget.recordRequest();
    expect(drain(budget)).toBe(2); // 1 ratio + 1 floor
    clock.set(0);
    budget.recordRequest();
    expect(budget.requestsInWindow()).toBe(2);
    expect(budget.floorTokens()).toBe(0);
    expect(drain(budget)).toBe(1);
    clock.set(5000); // back to where it was: no time passed for the floor
    expect(budget.floorTokens()).toBe(0);
    clock.set(5999); // the t=5000 bucket expires only at 6000
    expect(budget.requestsInWindow()).toBe(2);
  });
});

describe('RetryBudget floor', () => {
  it('allows one second of floor at once, then refills continuously', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 2 });
    expect(drain(budget)).toBe(2);
    clock.advance(250);
    expect(budget.floorTokens()).toBeCloseTo(0.5, 12);
    expect(budget.tryAcquire()).toBe(false);
    clock.advance(250);
    expect(drain(budget)).toBe(1);
    clock.advance(60_000);
    expect(budget.floorTokens()).toBe(2); // capped at one second's worth
  });

  it('a floor below 1/s still holds one token', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 0.5 });
    expect(budget.floorTokens()).toBe(1);
    expect(drain(budget)).toBe(1);
    clock.advance(1999);
    expect(budget.tryAcquire()).toBe(false);
    clock.advance(1);
    expect(drain(budget)).toBe(1);
  });

  it('floor 0 means no floor', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 0 });
    clock.advance(10_000);
    expect(budget.floorTokens()).toBe(0);
    expect(budget.tryAcquire()).toBe(false);
  });

  it('uses the ratio first and does not charge floor retries to it', () => {
    const { budget } = setup({ ratio: 0.2, minRetriesPerSecond: 3 });
    for (let i = 0; i < 10; i++) budget.recordRequest();
    expect(drain(budget)).toBe(5); // 2 ratio + 3 floor
    expect(budget.retriesInWindow()).toBe(2);
    expect(budget.floorTokens()).toBe(0);
  });
});

describe('RetryBudget concurrency', () => {
  it('caps retries decided and not yet released', () => {
    const { budget } = setup({ ratio: 1, maxConcurrentRetries: 2 });
    for (let i = 0; i < 100; i++) budget.recordRequest();
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(false);
    expect(budget.retriesInWindow()).toBe(2); // the refused one was not recorded
    budget.release();
    expect(budget.concurrent).toBe(1);
    expect(budget.tryAcquire()).toBe(true);
  });

  it('a concurrency refusal spends no floor token', () => {
    const { budget } = setup({ ratio: 0, minRetriesPerSecond: 5, maxConcurrentRetries: 1 });
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(false);
    expect(budget.floorTokens()).toBe(4);
  });

  it('maxConcurrentRetries 0 refuses every retry', () => {
    const { budget } = setup({ ratio: 1, minRetriesPerSecond: 10, maxConcurrentRetries: 0 });
    budget.recordRequest();
    expect(budget.tryAcquire()).toBe(false);
  });

  it('release never goes below zero', () => {
    const { budget } = setup({ ratio: 1, maxConcurrentRetries: 1 });
    budget.recordRequest();
    budget.recordRequest();
    budget.release();
    budget.release();
    expect(budget.concurrent).toBe(0);
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(false); // an extra release did not buy a second slot
  });
});

describe('RetryBudget bound: retries <= ratio × R + C + m × T', () => {
  it('1000 requests at 100/s, every one wanting retries (ratio 0.2, floor 10/s, window 1 s)', () => {
    const p = policy({ ratio: 0.2, windowMs: 1000, minRetriesPerSecond: 10 });
    const clock = new FakeClock();
    const budget = new RetryBudget(p, clock);
    let granted = 0;
    for (let i = 0; i < 1000; i++) {
      clock.set(i * 10);
      budget.recordRequest();
      granted += drain(budget);
    }
    // T = 9.99 s: 0.2 × 1000 + 10 + 10 × 9.99 = 309.9
    const limit = bound(p, 1000, clock.now());
    expect(limit).toBeCloseTo(309.9, 9);
    expect(granted).toBeLessThanOrEqual(309);
    // Tight, not merely safe: the first window's ratio share is lost to rounding only.
    expect(granted).toBeGreaterThanOrEqual(300);
  });

  it('retries held through back-off still respect the bound', () => {
    // Each retry sleeps 50 ms before its attempt and the attempt takes 30 ms: release 80 ms later.
    const p = policy({ ratio: 0.1, windowMs: 2000, minRetriesPerSecond: 2, maxConcurrentRetries: 5 });
    const clock = new FakeClock();
    const budget = new RetryBudget(p, clock);
    const releases: number[] = [];
    let granted = 0;
    for (let t = 0; t < 20_000; t += 5) {
      clock.set(t);
      while (releases.length > 0 && releases[0]! <= t) {
        releases.shift();
        budget.release();
      }
      budget.recordRequest();
      while (budget.tryAcquire()) {
        granted++;
        releases.push(t + 80);
      }
      expect(budget.concurrent).toBeLessThanOrEqual(5);
    }
    expect(granted).toBeLessThanOrEqual(bound(p, 4000, clock.now()));
  });

  it('ratio-only: bursts at bucket and window edges cannot exceed ratio × R', () => {
    const p = policy({ ratio: 0.5, windowMs: 1000, minRetriesPerSecond: 0 });
    const clock = new FakeClock();
    const budget = new RetryBudget(p, clock);
    let requests = 0;
    let granted = 0;
    for (let w = 0; w < 20; w++) {
      // 10 requests in the last ms of a window, then retries at every ms afterwards.
      clock.set(w * 1000 + 999);
      for (let i = 0; i < 10; i++) budget.recordRequest();
      requests += 10;
      for (let ms = 0; ms < 1000; ms++) {
        clock.set(w * 1000 + 999 + ms);
        granted += drain(budget);
      }
    }
    expect(granted).toBeLessThanOrEqual(0.5 * requests);
    expect(granted).toBe(0.5 * requests); // and the share is fully usable
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])('random traffic and policies, seed %i', (seed) => {
    const rnd = prng(seed);
    const p = policy({
      ratio: Math.round(rnd() * 100) / 100,
      windowMs: 100 + Math.floor(rnd() * 5000),
      minRetriesPerSecond: [0, 0.3, 1, 2.5, 10][Math.floor(rnd() * 5)]!,
      maxConcurrentRetries: 1 + Math.floor(rnd() * 20),
    });
    const clock = new FakeClock();
    const budget = new RetryBudget(p, clock);
    let requests = 0;
    let granted = 0;
    for (let step = 0; step < 5000; step++) {
      // Mostly small steps, sometimes long silences.
      clock.advance(rnd() < 0.02 ? rnd() * 10_000 : rnd() * 20);
      const burst = Math.floor(rnd() * 4);
      for (let i = 0; i < burst; i++) budget.recordRequest();
      requests += burst;
      const wants = Math.floor(rnd() * 6);
      for (let i = 0; i < wants; i++) if (budget.tryAcquire()) granted++;
      const done = Math.floor(rnd() * 4);
      for (let i = 0; i < done; i++) budget.release();
      // 1e-9: floating-point slack in the continuous refill, far below one retry.
      expect(granted).toBeLessThanOrEqual(bound(p, requests, clock.now()) + 1e-9);
    }
  });
});

describe('RetryBudget reconfigure', () => {
  it('keeps counts and in-flight retries when the ratio changes', () => {
    const { budget } = setup({ ratio: 0.1 });
    for (let i = 0; i < 20; i++) budget.recordRequest();
    expect(drain(budget)).toBe(2);
    expect(budget.tryAcquire()).toBe(false);
    budget.reconfigure(policy({ ratio: 0.2 }));
    expect(budget.requestsInWindow()).toBe(20);
    expect(budget.retriesInWindow()).toBe(2);
    expect(drain(budget)).toBe(2); // 4 allowed now, 2 already used
  });

  it('a lower maxConcurrentRetries refuses until releases bring it below', () => {
    const { budget } = setup({ ratio: 1, maxConcurrentRetries: 10 });
    for (let i = 0; i < 100; i++) budget.recordRequest();
    for (let i = 0; i < 3; i++) expect(budget.tryAcquire()).toBe(true);
    budget.reconfigure(policy({ ratio: 1, maxConcurrentRetries: 2 }));
    expect(budget.concurrent).toBe(3);
    expect(budget.tryAcquire()).toBe(false);
    budget.release();
    expect(budget.tryAcquire()).toBe(false);
    budget.release();
    expect(budget.tryAcquire()).toBe(true);
  });

  it('a new window carries the current totals into its newest bucket', () => {
    const { clock, budget } = setup({ ratio: 0.5, windowMs: 1000 });
    for (let i = 0; i < 10; i++) budget.recordRequest();
    expect(drain(budget)).toBe(5);
    clock.set(500);
    budget.reconfigure(policy({ ratio: 0.5, windowMs: 4000 }));
    // No fresh budget appears: the spent share is still spent.
    expect(budget.requestsInWindow()).toBe(10);
    expect(budget.retriesInWindow()).toBe(5);
    expect(budget.tryAcquire()).toBe(false);
    clock.set(1500); // past the old window, inside the new one: still counted
    expect(budget.requestsInWindow()).toBe(10);
    clock.set(4399); // carried bucket is [400, 800) on the new 400 ms buckets
    expect(budget.requestsInWindow()).toBe(10);
    clock.set(4400);
    expect(budget.requestsInWindow()).toBe(0);
    expect(budget.retriesInWindow()).toBe(0);
  });

  it('rescales floor tokens to the new capacity', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 10 });
    expect(drain(budget, 5)).toBe(5);
    budget.reconfigure(policy({ ratio: 0, minRetriesPerSecond: 20 }));
    expect(budget.floorTokens()).toBe(10); // half full stays half full
    budget.reconfigure(policy({ ratio: 0, minRetriesPerSecond: 0 }));
    expect(budget.floorTokens()).toBe(0);
    clock.advance(1000);
    expect(budget.floorTokens()).toBe(0);
    budget.reconfigure(policy({ ratio: 0, minRetriesPerSecond: 4 }));
    expect(budget.floorTokens()).toBe(4); // a floor switched on starts full
  });

  it('refills at the old rate up to the change', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 10 });
    expect(drain(budget)).toBe(10);
    clock.advance(300); // +3 tokens at 10/s
    budget.reconfigure(policy({ ratio: 0, minRetriesPerSecond: 10, windowMs: 2000 }));
    expect(budget.floorTokens()).toBeCloseTo(3, 12);
  });

  it('rejects a bad policy and keeps the old one', () => {
    const { budget } = setup({ ratio: 0.5 });
    budget.recordRequest();
    budget.recordRequest();
    expect(() => budget.reconfigure(policy({ ratio: 2 }))).toThrow('retry budget ratio must be in [0, 1], got 2');
    expect(budget.requestsInWindow()).toBe(2);
    expect(drain(budget)).toBe(1);
  });
});

describe('RetryBudget.available (the level the health report and the gauge show)', () => {
  it('counts what is left of the ratio and the floor, capped by free concurrency', () => {
    const { budget, clock } = setup({ ratio: 0.5, minRetriesPerSecond: 2, maxConcurrentRetries: 3 });
    expect(budget.available()).toBe(2); // a full floor, no requests yet
    for (let i = 0; i < 4; i++) budget.recordRequest();
    expect(budget.available()).toBe(3); // 2 by ratio + 2 floor, at most 3 at once
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.tryAcquire()).toBe(true);
    expect(budget.available()).toBe(0); // concurrency full
    budget.release();
    budget.release();
    budget.release();
    // Ratio spent (2 of 2), one floor token used: one left.
    expect(budget.available()).toBe(1);
    clock.advance(500);
    expect(budget.available()).toBe(2);
  });
});
