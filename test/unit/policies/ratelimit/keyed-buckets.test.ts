import { describe, expect, it } from 'vitest';
import { KeyedBuckets } from '../../../../src/policies/ratelimit/keyed-buckets.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

/** Takes until refused; how many were admitted. */
function drain(keyed: KeyedBuckets, key: string, nowMs: number): number {
  let n = 0;
  while (n < 1000 && keyed.bucketFor(key, nowMs).tryTake(nowMs)) n++;
  return n;
}

describe('KeyedBuckets', () => {
  it('rejects a bound that is not a positive integer', () => {
    expect(() => new KeyedBuckets(1, 1, 0)).toThrow(new RangeError('maxKeys must be an integer >= 1, got 0'));
    expect(() => new KeyedBuckets(1, 1, 1.5)).toThrow(new RangeError('maxKeys must be an integer >= 1, got 1.5'));
  });

  it('gives each key its own bucket', () => {
    const keyed = new KeyedBuckets(1, 3, 10);
    expect(drain(keyed, 'a', 0)).toBe(3);
    expect(drain(keyed, 'b', 0)).toBe(3);
    expect(drain(keyed, 'a', 0)).toBe(0);
    expect(keyed.size).toBe(2);
  });

  it('forgets the least recently used key once its bucket has refilled: nothing is lost', () => {
    const clock = new FakeClock();
    const keyed = new KeyedBuckets(1, 2, 2);
    drain(keyed, 'a', clock.now());
    drain(keyed, 'b', clock.now());
    clock.advance(2000); // both refilled
    keyed.bucketFor('b', clock.now()); // b is now the most recent
    const c = keyed.bucketFor('c', clock.now());
    expect(keyed.isOverflow(c)).toBe(false);
    expect(keyed.size).toBe(2);
    // a was forgotten (full anyway), b kept its state: it was drained and refilled, still full.
    expect(drain(keyed, 'b', clock.now())).toBe(2);
  });

  it('charges new keys to one overflow bucket while the oldest is still refilling', () => {
    const clock = new FakeClock();
    const keyed = new KeyedBuckets(1, 2, 2);
    drain(keyed, 'a', clock.now());
    drain(keyed, 'b', clock.now());
    const c = keyed.bucketFor('c', clock.now());
    expect(keyed.isOverflow(c)).toBe(true);
    expect(keyed.isOverflow(keyed.bucketFor('d', clock.now()))).toBe(true);
    // c and d share one bucket of the rule's size: fresh values cannot mint fresh bursts.
    expect(drain(keyed, 'c', clock.now()) + drain(keyed, 'd', clock.now())).toBe(2);
    // a and b are not handed a new burst either.
    expect(drain(keyed, 'a', clock.now())).toBe(0);
    expect(keyed.size).toBe(2);
  });

  it('never tracks more than maxKeys values, whatever arrives', () => {
    const clock = new FakeClock();
    const keyed = new KeyedBuckets(1000, 1, 50);
    for (let i = 0; i < 10_000; i++) {
      keyed.bucketFor(`k${i}`, clock.now()).tryTake(clock.now());
      clock.advance(i % 3);
      expect(keyed.size).toBeLessThanOrEqual(50);
    }
    expect(keyed.size).toBe(50);
  });

  it('rescales every bucket, overflow included, on reconfigure', () => {
    const keyed = new KeyedBuckets(1, 4, 1);
    drain(keyed, 'a', 0);
    keyed.bucketFor('b', 0); // overflow (a is empty)
    drain(keyed, 'b', 0);
    keyed.reconfigure(1, 8, 0);
    expect(keyed.bucketFor('a', 0).burst).toBe(8);
    expect(keyed.bucketFor('b', 0).burst).toBe(8);
  });
});
