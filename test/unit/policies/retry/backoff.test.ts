import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../../../src/policies/retry/backoff.ts';

const policy = { baseMs: 25, capMs: 1000 };
const zero = () => 0;
const half = () => 0.5;
const almostOne = () => 1 - Number.EPSILON / 2; // the largest double below 1

describe('backoffMs (full jitter)', () => {
  it.each([
    // retry, random, expected: uniform in [0, min(cap, base × 2^(n-1)))
    [1, zero, 0],
    [1, half, 12], // 0.5 × 25 = 12.5, whole ms rounded down
    [1, almostOne, 24],
    [2, half, 25],
    [3, half, 50],
    [3, almostOne, 99],
    [5, half, 200],
    [6, half, 400],
    [7, half, 500], // 25 × 64 = 1600 > cap: ceiling is 1000
    [7, almostOne, 999],
    [7, zero, 0],
  ])('retry %i with random %o → %i ms', (retry, random, expected) => {
    expect(backoffMs(retry, policy, random)).toBe(expected);
  });

  it('stays an integer below the cap at the top of the random range', () => {
    for (const capMs of [1, 3, 7, 300, 1000, 2 ** 40 + 1]) {
      const ms = backoffMs(60, { baseMs: 10, capMs }, almostOne);
      expect(ms).toBeLessThan(capMs);
      expect(Number.isInteger(ms)).toBe(true);
    }
  });

  it('huge retry numbers give the cap range, never NaN or Infinity', () => {
    for (const retry of [64, 1024, 1025, 5000, Number.MAX_SAFE_INTEGER]) {
      expect(backoffMs(retry, policy, half)).toBe(500);
      expect(backoffMs(retry, policy, almostOne)).toBe(999);
    }
    expect(backoffMs(1_000_000, { baseMs: 0, capMs: 1000 }, half)).toBe(0); // 0 × growth is not NaN
    expect(backoffMs(2000, { baseMs: 1e-300, capMs: 1000 }, half)).toBe(500);
  });

  it('clamps a misbehaving random source into [0, 1)', () => {
    expect(backoffMs(3, policy, () => 1)).toBe(99);
    expect(backoffMs(3, policy, () => 7)).toBe(99);
    expect(backoffMs(3, policy, () => -1)).toBe(0);
    expect(backoffMs(3, policy, () => Number.NaN)).toBe(0);
  });

  it('a ceiling below 1 ms gives 0', () => {
    expect(backoffMs(1, { baseMs: 0.5, capMs: 1000 }, almostOne)).toBe(0);
    expect(backoffMs(5, { baseMs: 100, capMs: 0 }, almostOne)).toBe(0);
  });

  it('stays within [0, ceiling) over many draws and spreads over the range', () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let max = 0;
    for (let i = 0; i < 10_000; i++) {
      const ms = backoffMs(4, policy, random); // ceiling 200
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThan(200);
      max = Math.max(max, ms);
    }
    expect(max).toBeGreaterThan(190);
  });

  it.each([0, -1, 1.5, Number.NaN])('rejects retry number %s', (retry) => {
    expect(() => backoffMs(retry, policy, half)).toThrow(`retry number must be an integer >= 1, got ${retry}`);
  });
});
