// LatencyTracker: exact nearest-rank quantiles over the last `capacity` samples, nothing before
// minSamples, bounded memory however many samples arrive.
import { describe, expect, it } from 'vitest';
import { LatencyTracker } from '../../../../src/policies/retry/hedge.ts';
import { prng } from '../../../support/prng.ts';

describe('LatencyTracker', () => {
  it('knows nothing before minSamples', () => {
    const t = new LatencyTracker({ capacity: 100, minSamples: 5 });
    for (let i = 0; i < 4; i++) t.record(10);
    expect(t.p95()).toBeUndefined();
    expect(t.p50()).toBeUndefined();
    t.record(10);
    expect(t.p95()).toBe(10);
  });

  it('gives the nearest-rank p95 and median of what it holds', () => {
    const t = new LatencyTracker({ capacity: 100, minSamples: 1 });
    // 1..100 in a shuffled order: p95 is the 95th smallest, the median the 50th.
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    const random = prng(7);
    for (let i = values.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [values[i], values[j]] = [values[j]!, values[i]!];
    }
    for (const v of values) t.record(v);
    expect(t.p95()).toBe(95);
    expect(t.p50()).toBe(50);
    expect(t.quantile(1)).toBe(100);
  });

  it('forgets the oldest samples: only the last `capacity` count', () => {
    const t = new LatencyTracker({ capacity: 20, minSamples: 1 });
    for (let i = 0; i < 20; i++) t.record(1000);
    expect(t.p95()).toBe(1000);
    for (let i = 0; i < 20; i++) t.record(5);
    expect(t.p95()).toBe(5);
    expect(t.count).toBe(20);
  });

  it('refreshes its sorted view lazily but catches up within capacity/32 samples', () => {
    const t = new LatencyTracker({ capacity: 320, minSamples: 1 }); // refreshes every 10
    for (let i = 0; i < 320; i++) t.record(10);
    expect(t.p95()).toBe(10);
    for (let i = 0; i < 320; i++) t.record(50);
    // Asked once per sample, as the layer does: never more than 10 samples behind.
    const t2 = new LatencyTracker({ capacity: 320, minSamples: 1 });
    for (let i = 0; i < 320; i++) t2.record(10);
    let seen50At = -1;
    for (let i = 0; i < 320; i++) {
      t2.record(50);
      if (seen50At < 0 && t2.p95() === 50) seen50At = i + 1;
    }
    // p95 turns 50 once more than 5% of the ring (16 samples) is 50; the view lags at most 10.
    expect(seen50At).toBeGreaterThanOrEqual(17);
    expect(seen50At).toBeLessThanOrEqual(17 + 10);
    expect(t.p95()).toBe(50);
  });

  it('ignores samples that are no latency', () => {
    const t = new LatencyTracker({ capacity: 10, minSamples: 1 });
    t.record(Number.NaN);
    t.record(-1);
    t.record(Infinity);
    expect(t.count).toBe(0);
    t.record(0);
    expect(t.p95()).toBe(0);
  });

  it('refuses a bad size with the value in the message', () => {
    expect(() => new LatencyTracker({ capacity: 0 })).toThrow('capacity must be an integer from 1 to 65536, got 0');
    expect(() => new LatencyTracker({ capacity: 10, minSamples: 11 })).toThrow('minSamples must be an integer from 1 to capacity (10), got 11');
    expect(() => new LatencyTracker().quantile(0)).toThrow('quantile must be in (0, 1], got 0');
  });

  it('has defaults the wiring can use as is', () => {
    const t = new LatencyTracker();
    for (let i = 0; i < 19; i++) t.record(3);
    expect(t.p95()).toBeUndefined();
    t.record(3);
    expect(t.p95()).toBe(3);
  });
});
