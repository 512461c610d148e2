// Exponential back-off with FULL jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
// sleep = uniform[0, min(cap, base × 2^(n-1))). Full jitter spreads a burst of clients that failed
// together over the whole interval, so they do not come back in lock-step; it also does the least
// total work among the variants that post compares.
import type { BackoffPolicy } from '../../policy/types.ts';

// 2^1023 is the largest finite power of two: clamping the exponent there keeps base × growth
// finite or +Infinity (never NaN, even for base 0), and min() with capMs then yields capMs.
const MAX_EXPONENT = 1023;

/**
 * Milliseconds to wait before retry number `retryNumber` (1 for the first retry), as an integer:
 * 0 <= result < min(capMs, baseMs × 2^(retryNumber-1)) when that ceiling is >= 1, else 0.
 * `random` returns a uniform value in [0, 1) (Math.random, or a fixed value in tests); values outside
 * that range are clamped, so a bad source can never push the wait past the ceiling.
 */
export function backoffMs(retryNumber: number, policy: BackoffPolicy, random: () => number): number {
  if (!(Number.isSafeInteger(retryNumber) && retryNumber >= 1)) {
    throw new RangeError(`retry number must be an integer >= 1, got ${retryNumber}`);
  }
  const growth = 2 ** Math.min(retryNumber - 1, MAX_EXPONENT);
  const ceiling = Math.max(0, Math.min(policy.capMs, policy.baseMs * growth));
  if (!(ceiling >= 1)) return 0;
  const r = random();
  const u = r > 0 ? r : 0; // negative and NaN become 0
  // Whole ms (timers have no finer grain); the min() holds a source returning >= 1 below the ceiling.
  return Math.min(Math.floor(u * ceiling), Math.ceil(ceiling) - 1);
}
