import { describe, expect, it } from 'vitest';
import { SlidingCounts } from '../../../src/policies/sliding-counts.ts';

describe('SlidingCounts', () => {
  it('keeps what was added within the window and drops it bucket by bucket', () => {
    const w = new SlidingCounts(2, 10, 1000, 0); // 100 ms buckets
    w.add(0, 3, 0);
    w.add(0, 2, 450);
    w.add(1, 7, 450);
    expect([w.sum(0, 999), w.sum(1, 999)]).toEqual([5, 7]);
    expect(w.sum(0, 1000)).toBe(2); // the bucket at 0..99 slid out
    expect(w.sum(0, 1399)).toBe(2);
    expect([w.sum(0, 1400), w.sum(1, 1400)]).toEqual([0, 0]); // the bucket at 400..499 went
  });

  it('forgets everything after a gap longer than the window', () => {
    const w = new SlidingCounts(1, 10, 1000, 0);
    w.add(0, 4, 10);
    expect(w.sum(0, 50_000)).toBe(0);
    w.add(0, 1, 50_000);
    expect(w.sum(0, 50_000)).toBe(1);
  });

  it('counts into the newest bucket when the clock goes backwards', () => {
    const w = new SlidingCounts(1, 10, 1000, 500);
    w.add(0, 1, 500);
    w.add(0, 1, 100);
    expect(w.sum(0, 500)).toBe(2);
  });

  it('clears one series only', () => {
    const w = new SlidingCounts(2, 10, 1000, 0);
    w.add(0, 1, 0);
    w.add(1, 1, 0);
    w.clear(0);
    expect([w.sum(0, 10), w.sum(1, 10)]).toEqual([0, 1]);
  });

  it('resize carries the window’s totals into the newest bucket, then ages them out', () => {
    const w = new SlidingCounts(1, 10, 1000, 0);
    w.add(0, 3, 0);
    w.add(0, 4, 900);
    w.resize(10_000, 950); // 1 s buckets now; the 7 sit in the bucket of t=950
    expect(w.sum(0, 950)).toBe(7);
    expect(w.sum(0, 9_999)).toBe(7);
    expect(w.sum(0, 10_000)).toBe(0);
  });
});
