import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../../../src/policies/ratelimit/token-bucket.ts';
import { FakeClock } from '../../../support/fake-clock.ts';
import { prng } from '../../../support/prng.ts';

describe('TokenBucket', () => {
  it.each([
    [0, 1, 'token bucket ratePerSecond must be a finite number > 0, got 0'],
    [-1, 1, 'token bucket ratePerSecond must be a finite number > 0, got -1'],
    [Infinity, 1, 'token bucket ratePerSecond must be a finite number > 0, got Infinity'],
    [1, 0.5, 'token bucket burst must be a finite number >= 1, got 0.5'],
    [1, Number.NaN, 'token bucket burst must be a finite number >= 1, got NaN'],
  ])('rejects rate %s, burst %s', (rate, burst, message) => {
    expect(() => new TokenBucket(rate, burst, 0)).toThrow(new RangeError(message));
  });

  it('starts full and admits exactly its burst at one instant', () => {
    const b = new TokenBucket(10, 5, 0);
    const admitted = Array.from({ length: 20 }, () => b.tryTake(0)).filter(Boolean).length;
    expect(admitted).toBe(5);
    expect(b.tokens(0)).toBe(0);
  });

  it('refills continuously at its rate and never beyond its burst', () => {
    const clock = new FakeClock();
    const b = new TokenBucket(10, 5, clock.now());
    for (let i = 0; i < 5; i++) b.tryTake(clock.now());
    clock.advance(99);
    expect(b.tryTake(clock.now())).toBe(false); // 0.99 of a token
    clock.advance(1);
    expect(b.tryTake(clock.now())).toBe(true);
    clock.advance(60_000);
    expect(b.tokens(clock.now())).toBe(5);
    expect(b.isFull(clock.now())).toBe(true);
  });

  it('says how long until a token comes', () => {
    const b = new TokenBucket(4, 2, 0);
    expect(b.msUntil(1, 0)).toBe(0);
    b.tryTake(0);
    b.tryTake(0);
    expect(b.msUntil(1, 0)).toBe(250);
    expect(b.msUntil(1, 100)).toBeCloseTo(150);
    expect(b.msUntil(3, 100)).toBe(Infinity); // more than the bucket holds
  });

  it('is not stingy: a client that always asks gets the whole bound, to the token', () => {
    const clock = new FakeClock();
    const b = new TokenBucket(40, 10, clock.now());
    let granted = 0;
    for (let ms = 0; ms <= 1000; ms++, clock.advance(1)) while (b.tryTake(clock.now())) granted++;
    expect(granted).toBe(10 + 40);
  });

  it('refills nothing when the clock runs backwards', () => {
    const clock = new FakeClock(1000);
    const b = new TokenBucket(1, 1, clock.now());
    b.tryTake(clock.now());
    clock.set(0);
    expect(b.tryTake(clock.now())).toBe(false);
    clock.set(1000);
    expect(b.tryTake(clock.now())).toBe(false); // no credit for the time it ran back
    clock.set(2000);
    expect(b.tryTake(clock.now())).toBe(true);
  });

  it('keeps its fill ratio when reconfigured: no fresh burst from a policy update', () => {
    const b = new TokenBucket(10, 10, 0);
    for (let i = 0; i < 5; i++) b.tryTake(0);
    b.reconfigure(100, 20, 0);
    expect(b.tokens(0)).toBe(10);
    expect(b.burst).toBe(20);
    expect(b.msUntil(11, 0)).toBeCloseTo(10); // refills at the new rate
  });

  it('grants at most burst + rate × elapsed over any random run', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = prng(seed);
      const clock = new FakeClock();
      const rate = 1 + Math.floor(random() * 100);
      const burst = 1 + Math.floor(random() * 50);
      const b = new TokenBucket(rate, burst, clock.now());
      let granted = 0;
      for (let i = 0; i < 5000; i++) {
        clock.advance(random() < 0.3 ? random() * 50 : 0);
        if (b.tryTake(clock.now())) granted++;
      }
      expect(granted).toBeLessThanOrEqual(burst + (rate * clock.now()) / 1000);
    }
  });
});
