// Retry budget per upstream (Finagle's RetryBudget, shaped like grpc-js's RetryThrottler): a small
// class with no timers. Retries may add `ratio` of the requests seen in a sliding window, plus a
// floor of `minRetriesPerSecond` so a quiet upstream can still retry at all.
//
// A retry is charged when it is DECIDED, before its back-off sleep. Envoy counts a retry only when
// it is sent, so a burst of failures all pass the check while their siblings sleep, and the budget
// overshoots exactly when the upstream is struggling. Counting at decision time closes that gap.
//
// Bound (fixed policy, m = minRetriesPerSecond, C = max(1, m) when m > 0 else 0). Over any run in
// which R original requests are recorded and T seconds pass between construction and the last
// tryAcquire():
//
//     retries granted <= ratio × R + C + m × T        (for m >= 1: ratio × R + m × (T + 1))
//
// Ratio part: a retry is charged to the ratio only when (retries in window + 1) <= ratio ×
// (requests in window), so whole retries never exceed the share (no per-window rounding term).
// Let W1 be the window ending in the bucket of the last ratio-charged retry: every ratio-charged
// retry inside W1 was counted by that check, so they are <= ratio × requests(W1). The retries
// before W1 end in an earlier bucket; take the window W2 ending there, disjoint from W1, and repeat.
// The windows are disjoint, so each request is counted once: the sum is <= ratio × R.
// Floor part: a token bucket that starts full at C and refills at m per second grants at most
// C + m × T whole tokens.
import type { RetryBudgetPolicy } from '../../policy/types.ts';
import type { Clock } from '../../stack/types.ts';
import { SlidingCounts } from '../sliding-counts.ts';

/**
 * Buckets per window. The window slides in steps of windowMs / BUDGET_BUCKETS, so it holds between
 * 90% and 100% of windowMs of history.
 */
export const BUDGET_BUCKETS = 10;

const REQUESTS = 0;
const RETRIES = 1;

/** Floor bucket capacity: one second's worth of tokens, at least one; none when the floor is off. */
function floorCapacity(minRetriesPerSecond: number): number {
  return minRetriesPerSecond > 0 ? Math.max(1, minRetriesPerSecond) : 0;
}

function checkPolicy(p: RetryBudgetPolicy): void {
  if (!(p.ratio >= 0 && p.ratio <= 1)) throw new RangeError(`retry budget ratio must be in [0, 1], got ${p.ratio}`);
  if (!(p.windowMs > 0 && Number.isFinite(p.windowMs))) {
    throw new RangeError(`retry budget windowMs must be a finite number > 0, got ${p.windowMs}`);
  }
  if (!(p.minRetriesPerSecond >= 0 && Number.isFinite(p.minRetriesPerSecond))) {
    throw new RangeError(`retry budget minRetriesPerSecond must be a finite number >= 0, got ${p.minRetriesPerSecond}`);
  }
  if (!(Number.isSafeInteger(p.maxConcurrentRetries) && p.maxConcurrentRetries >= 0)) {
    throw new RangeError(`retry budget maxConcurrentRetries must be an integer >= 0, got ${p.maxConcurrentRetries}`);
  }
}

export class RetryBudget {
  readonly #clock: Clock;
  #policy: RetryBudgetPolicy;
  /** Series REQUESTS and RETRIES (retries charged to the ratio) over the sliding window. */
  readonly #window: SlidingCounts;
  #tokens: number;
  #capacity: number;
  #lastRefillMs: number;
  #concurrent = 0;

  constructor(policy: RetryBudgetPolicy, clock: Clock) {
    checkPolicy(policy);
    this.#clock = clock;
    this.#policy = policy;
    const now = clock.now();
    this.#window = new SlidingCounts(2, BUDGET_BUCKETS, policy.windowMs, now);
    // Start full: a freshly started sidecar may retry its first failures.
    this.#capacity = floorCapacity(policy.minRetriesPerSecond);
    this.#tokens = this.#capacity;
    this.#lastRefillMs = now;
  }

  /** An original request (not a retry) was sent: it deposits `ratio` of a retry. */
  recordRequest(): void {
    this.#window.add(REQUESTS, 1, this.#clock.now());
  }

  /**
   * Ask for one retry, at the moment it is decided (before back-off). On true the retry counts as
   * concurrent until release(); on false nothing is recorded.
   */
  tryAcquire(): boolean {
    if (this.#concurrent >= this.#policy.maxConcurrentRetries) return false;
    const now = this.#clock.now();
    if (this.#window.sum(RETRIES, now) + 1 <= this.#policy.ratio * this.#window.sum(REQUESTS, now)) {
      this.#window.add(RETRIES, 1, now);
    } else {
      // Ratio spent: fall back to the floor, which is not charged to the ratio.
      this.#refill(now);
      if (this.#tokens < 1) return false;
      this.#tokens -= 1;
    }
    this.#concurrent += 1;
    return true;
  }

  /** The retry's attempt finished (either way). Extra calls are ignored: never below 0. */
  release(): void {
    if (this.#concurrent > 0) this.#concurrent -= 1;
  }

  /**
   * Apply a new policy, keeping state whose meaning is unchanged:
   * - ratio, maxConcurrentRetries: counts and in-flight retries are kept; the new limits apply to
   *   the next tryAcquire (over the new max, acquisitions fail until releases bring it below).
   * - windowMs: the current window's totals are carried into the newest bucket of the new ring, so
   *   the ratio state survives (no burst of fresh budget) and ages out after one new window.
   * - minRetriesPerSecond: tokens are rescaled to the new capacity (as grpc-js does), so a half-full
   *   floor stays half-full; a floor that was off starts full, as on construction.
   */
  reconfigure(policy: RetryBudgetPolicy): void {
    checkPolicy(policy);
    const now = this.#clock.now();
    this.#refill(now);
    if (policy.windowMs !== this.#policy.windowMs) this.#window.resize(policy.windowMs, now);
    const capacity = floorCapacity(policy.minRetriesPerSecond);
    this.#tokens = this.#capacity > 0 ? (this.#tokens * capacity) / this.#capacity : capacity;
    this.#capacity = capacity;
    this.#policy = policy;
  }

  /** Retries decided and not yet released (in back-off or in flight). */
  get concurrent(): number {
    return this.#concurrent;
  }

  /** Original requests recorded in the current window. */
  requestsInWindow(): number {
    return this.#window.sum(REQUESTS, this.#clock.now());
  }

  /** Retries charged to the ratio in the current window (floor retries are not included). */
  retriesInWindow(): number {
    return this.#window.sum(RETRIES, this.#clock.now());
  }

  /** Floor tokens available now (fractional; a retry needs a whole one). */
  floorTokens(): number {
    this.#refill(this.#clock.now());
    return this.#tokens;
  }

  /**
   * Retries the budget would admit now, one after another: what is left of the ratio in the
   * window plus whole floor tokens, at most the free concurrency. 0 means exhausted.
   */
  available(): number {
    const now = this.#clock.now();
    this.#refill(now);
    const byRatio = Math.max(0, Math.floor(this.#policy.ratio * this.#window.sum(REQUESTS, now) - this.#window.sum(RETRIES, now)));
    return Math.min(byRatio + Math.floor(this.#tokens), Math.max(0, this.#policy.maxConcurrentRetries - this.#concurrent));
  }

  /** Continuous refill since the last refill; a clock running backwards refills nothing. */
  #refill(now: number): void {
    const elapsedMs = now - this.#lastRefillMs;
    if (!(elapsedMs > 0)) return;
    this.#lastRefillMs = now;
    this.#tokens = Math.min(this.#capacity, this.#tokens + (elapsedMs * this.#policy.minRetriesPerSecond) / 1000);
  }
}
