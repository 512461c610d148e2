import { describe, expect, it } from 'vitest';
import { type BalancerOptions, createBalancer } from '../../../../src/policies/balancer/balancer.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const OPTIONS: BalancerOptions = { decayMs: 10_000, defaultRttMs: 30 };

/** Small deterministic LCG (Numerical Recipes constants), so every pick replays exactly. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** A random that returns the given values in order (and fails loudly when exhausted). */
function scripted(...values: number[]): () => number {
  let i = 0;
  return () => {
    if (i >= values.length) throw new Error('random called more often than scripted');
    return values[i++]!;
  };
}

function never(): number {
  throw new Error('random must not be called');
}

describe('createBalancer', () => {
  it.each([
    [0, OPTIONS, 'balancer endpointCount must be an integer >= 1, got 0'],
    [1.5, OPTIONS, 'balancer endpointCount must be an integer >= 1, got 1.5'],
    [2, { decayMs: 0, defaultRttMs: 1 }, 'balancer decayMs must be a finite number > 0, got 0'],
    [2, { decayMs: Infinity, defaultRttMs: 1 }, 'balancer decayMs must be a finite number > 0, got Infinity'],
    [2, { decayMs: 1, defaultRttMs: -1 }, 'balancer defaultRttMs must be a finite number >= 0, got -1'],
    [2, { decayMs: 1, defaultRttMs: Number.NaN }, 'balancer defaultRttMs must be a finite number >= 0, got NaN'],
  ])('rejects %j endpoints with %j', (n, options, message) => {
    expect(() => createBalancer('p2c-ewma', n, options, new FakeClock(), Math.random)).toThrow(
      new RangeError(message),
    );
  });

  it('rejects an unknown algorithm', () => {
    expect(() => createBalancer('random' as 'p2c-ewma', 2, OPTIONS, new FakeClock(), Math.random)).toThrow(
      new RangeError("balancer algorithm must be 'p2c-ewma' or 'round-robin', got random"),
    );
  });

  it('rejects an endpoint index out of range', () => {
    const b = createBalancer('p2c-ewma', 2, OPTIONS, new FakeClock(), Math.random);
    expect(() => b.start(2)).toThrow(new RangeError('balancer endpoint index must be an integer in [0, 1], got 2'));
    expect(() => b.end(-1, 5)).toThrow(RangeError);
    expect(() => b.cost(0.5)).toThrow(RangeError);
  });
});

describe('p2c-ewma pick', () => {
  it('with one endpoint always returns 0 without drawing', () => {
    const b = createBalancer('p2c-ewma', 1, OPTIONS, new FakeClock(), never);
    expect(b.pick()).toBe(0);
    expect(b.pick([false])).toBe(0);
  });

  it('with one eligible endpoint returns it without drawing', () => {
    const b = createBalancer('p2c-ewma', 4, OPTIONS, new FakeClock(), never);
    expect(b.pick([false, false, true, false])).toBe(2);
  });

  it('draws two distinct endpoints and keeps the cheaper, the first on a tie', () => {
    const clock = new FakeClock();
    // 0.5 × 4 → slot 2; 0.7 × 3 → slot 2, shifted past the first → 3.
    const b = createBalancer('p2c-ewma', 4, OPTIONS, clock, scripted(0.5, 0.7, 0.5, 0.7, 0.5, 0.7));
    expect(b.pick()).toBe(2); // both at defaultRttMs: tie, the first drawn wins
    b.start(2);
    expect(b.pick()).toBe(3); // 2 now costs 30 × 2
    b.start(3);
    b.start(3);
    expect(b.pick()).toBe(2); // 60 < 90
  });

  it('maps draws onto eligible endpoints only', () => {
    const b = createBalancer('p2c-ewma', 5, OPTIONS, new FakeClock(), scripted(0, 0.99));
    b.start(3); // makes 3 costlier than 1, so the winner shows which two were drawn
    // Eligible are 1 and 3: slot 0 → 1, slot 0 of the one left shifted → slot 1 → 3.
    expect(b.pick([false, true, false, true, false])).toBe(1);
  });

  it('never picks an ineligible endpoint', () => {
    const b = createBalancer('p2c-ewma', 6, OPTIONS, new FakeClock(), lcg(7));
    const eligible = [true, false, true, false, false, true];
    for (let k = 0; k < 2000; k++) expect(eligible[b.pick(eligible)]).toBe(true);
  });

  it('treats missing entries as eligible and picks among all when none is eligible', () => {
    const b = createBalancer('p2c-ewma', 3, OPTIONS, new FakeClock(), lcg(3));
    const seen = new Set<number>();
    for (let k = 0; k < 300; k++) seen.add(b.pick([false, false, false]));
    expect([...seen].sort()).toEqual([0, 1, 2]);
    for (let k = 0; k < 300; k++) expect(b.pick([false])).not.toBe(0);
  });

  it('survives a random() that returns 1', () => {
    const b = createBalancer('p2c-ewma', 3, OPTIONS, new FakeClock(), () => 1);
    const i = b.pick();
    expect(i === 1 || i === 2).toBe(true);
  });

  it('sends a slow endpoint far fewer picks than fast ones', () => {
    const clock = new FakeClock();
    const latency = [10, 10, 200, 10];
    const b = createBalancer('p2c-ewma', 4, OPTIONS, clock, lcg(42));
    const picks = [0, 0, 0, 0];
    for (let k = 0; k < 4000; k++) {
      const i = b.pick();
      picks[i]!++;
      b.start(i);
      clock.advance(5);
      b.end(i, latency[i]!);
    }
    expect(picks[2]).toBeLessThan(4000 * 0.02);
    for (const i of [0, 1, 3]) expect(picks[i]).toBeGreaterThan(4000 * 0.3);
  });

  it('stops picking a hung endpoint (tries started, never ended) against idle peers', () => {
    const clock = new FakeClock();
    const b = createBalancer('p2c-ewma', 3, OPTIONS, clock, lcg(9));
    for (const i of [0, 1, 2]) {
      b.start(i);
      b.end(i, 20);
    }
    for (let k = 0; k < 50; k++) b.start(1); // hung: 50 in flight
    for (let k = 0; k < 1000; k++) expect(b.pick()).not.toBe(1);
  });
});

describe('p2c-ewma cost', () => {
  it('starts at defaultRttMs × (inFlight + 1)', () => {
    const b = createBalancer('p2c-ewma', 2, OPTIONS, new FakeClock(), never);
    expect(b.cost(0)).toBe(30);
    b.start(0);
    b.start(0);
    expect(b.inFlight(0)).toBe(2);
    expect(b.cost(0)).toBe(90);
  });

  it('takes a peak at once and decays toward fast samples with exp(-elapsed / decayMs)', () => {
    const clock = new FakeClock(1000);
    const b = createBalancer('p2c-ewma', 2, OPTIONS, clock, never);
    b.end(0, 10);
    expect(b.cost(0)).toBe(10); // the first sample replaces the 30 ms guess outright
    b.end(0, 500);
    expect(b.cost(0)).toBe(500); // peak replaces at once
    clock.advance(1000);
    b.end(0, 10);
    const w = Math.exp(-1000 / 10_000);
    const afterOne = 500 * w + 10 * (1 - w);
    expect(b.cost(0)).toBeCloseTo(afterOne, 9);
    for (let k = 0; k < 49; k++) {
      clock.advance(1000);
      b.end(0, 10);
    }
    // After 50 s of 10 ms samples once a second: 10 + 490 × exp(-50 000 / 10 000).
    expect(b.cost(0)).toBeCloseTo(10 + 490 * Math.exp(-5), 9);
    expect(b.cost(0)).toBeLessThan(14);
  });

  it('keeps a sample-free estimate decaying toward 0, so a shunned endpoint is tried again', () => {
    const clock = new FakeClock();
    const b = createBalancer('p2c-ewma', 2, OPTIONS, clock, never);
    b.end(0, 500);
    clock.advance(10_000);
    expect(b.cost(0)).toBeCloseTo(500 * Math.exp(-1), 9);
    // Reading did not store the decay: the next sample mixes from the same point.
    expect(b.cost(0)).toBeCloseTo(500 * Math.exp(-1), 9);
    b.end(0, 100);
    expect(b.cost(0)).toBeCloseTo(500 * Math.exp(-1) + 100 * (1 - Math.exp(-1)), 9);
  });

  it('never goes below zero in flight, and drops broken latencies', () => {
    const clock = new FakeClock();
    const b = createBalancer('p2c-ewma', 2, OPTIONS, clock, never);
    b.end(0, 50);
    b.end(0, Number.NaN);
    b.end(0, -5);
    expect(b.inFlight(0)).toBe(0);
    expect(b.cost(0)).toBe(50);
    b.start(0);
    expect(b.inFlight(0)).toBe(1);
  });

  it('ignores a clock that runs backwards', () => {
    const clock = new FakeClock(5000);
    const b = createBalancer('p2c-ewma', 2, OPTIONS, clock, never);
    b.end(0, 100);
    clock.set(0);
    expect(b.cost(0)).toBe(100);
    b.end(0, 10);
    expect(b.cost(0)).toBe(100); // weight 1: no time has passed as far as the estimate knows
  });
});

describe('round-robin', () => {
  it('cycles in order', () => {
    const b = createBalancer('round-robin', 3, OPTIONS, new FakeClock(), never);
    expect([b.pick(), b.pick(), b.pick(), b.pick(), b.pick()]).toEqual([0, 1, 2, 0, 1]);
  });

  it('skips ineligible endpoints and keeps its place', () => {
    const b = createBalancer('round-robin', 4, OPTIONS, new FakeClock(), never);
    const e = [true, false, true, true];
    expect([b.pick(e), b.pick(e), b.pick(e), b.pick(e)]).toEqual([0, 2, 3, 0]);
    expect(b.pick()).toBe(1);
    expect(b.pick([false, false, false, true])).toBe(3);
  });

  it('cycles over all when none is eligible', () => {
    const b = createBalancer('round-robin', 3, OPTIONS, new FakeClock(), never);
    const none = [false, false, false];
    expect([b.pick(none), b.pick(none), b.pick(none), b.pick(none)]).toEqual([0, 1, 2, 0]);
  });

  it('tracks in-flight and cost for metrics', () => {
    const b = createBalancer('round-robin', 2, OPTIONS, new FakeClock(), never);
    b.start(1);
    b.end(1, 40);
    b.start(1);
    expect(b.inFlight(1)).toBe(1);
    expect(b.cost(1)).toBe(80);
    b.end(1, 40);
    b.end(1, 40);
    expect(b.inFlight(1)).toBe(0);
  });
});

describe('adopt (the endpoint list changed, e.g. a DNS answer)', () => {
  it('endpoints in both lists keep their estimates; new ones start at the default; in-flight stays behind', () => {
    const clock = new FakeClock();
    const old = createBalancer('p2c-ewma', 2, OPTIONS, clock, never);
    old.start(0);
    old.end(0, 5);
    old.start(1);
    old.end(1, 200);
    old.start(1); // still in flight on the old list
    const next = createBalancer('p2c-ewma', 3, OPTIONS, clock, never);
    next.adopt(old, [1, -1, 0]); // new 0 = old 1, new 1 is new, new 2 = old 0
    expect(next.cost(0)).toBe(200);
    expect(next.cost(1)).toBe(30);
    expect(next.cost(2)).toBe(5);
    expect(next.inFlight(0)).toBe(0);
  });
});
