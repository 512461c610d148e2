// A token bucket with no timers: refilled from elapsed time whenever it is read, so a decision is
// one synchronous call. That is what makes local admission exact under concurrency: requests are
// decided one at a time on the event loop, so N concurrent requests against a full bucket of B
// admit exactly min(N, B) — no check-then-take gap for two requests to pass through together.
//
// Bound: over any run in which T ms pass between construction and the last take, the bucket
// grants at most burst + ratePerSecond × T / 1000 tokens (it starts full and never holds more).

export class TokenBucket {
  #ratePerMs: number;
  #burst: number;
  #tokens: number;
  #lastMs: number;

  /** Starts full: a quiet client may spend its burst at once. */
  constructor(ratePerSecond: number, burst: number, nowMs: number) {
    checkBucket(ratePerSecond, burst);
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#lastMs = nowMs;
  }

  /** Takes `n` tokens if all are there; on false nothing is taken. */
  tryTake(nowMs: number, n = 1): boolean {
    this.#refill(nowMs);
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  /** Tokens available now (fractional; a request needs a whole one). */
  tokens(nowMs: number): number {
    this.#refill(nowMs);
    return this.#tokens;
  }

  /** Ms until `n` tokens are available (0 if they are now); Infinity if n exceeds the burst. */
  msUntil(n: number, nowMs: number): number {
    this.#refill(nowMs);
    if (n > this.#burst) return Infinity;
    return this.#tokens >= n ? 0 : (n - this.#tokens) / this.#ratePerMs;
  }

  /** Whether the bucket has refilled completely: forgetting it now loses nothing. */
  isFull(nowMs: number): boolean {
    this.#refill(nowMs);
    return this.#tokens >= this.#burst;
  }

  get burst(): number {
    return this.#burst;
  }

  /**
   * A new rate or size. Tokens are rescaled to the new burst (as grpc-js rescales its throttle), so
   * a half-empty bucket stays half-empty: a policy push neither grants a fresh burst nor starves.
   */
  reconfigure(ratePerSecond: number, burst: number, nowMs: number): void {
    checkBucket(ratePerSecond, burst);
    this.#refill(nowMs);
    this.#tokens = (this.#tokens * burst) / this.#burst;
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
  }

  /** Continuous refill since the last read; a clock running backwards refills nothing. */
  #refill(nowMs: number): void {
    const elapsedMs = nowMs - this.#lastMs;
    if (!(elapsedMs > 0)) return;
    this.#lastMs = nowMs;
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsedMs * this.#ratePerMs);
  }
}

function checkBucket(ratePerSecond: number, burst: number): void {
  if (!(ratePerSecond > 0 && Number.isFinite(ratePerSecond))) {
    throw new RangeError(`token bucket ratePerSecond must be a finite number > 0, got ${ratePerSecond}`);
  }
  if (!(burst >= 1 && Number.isFinite(burst))) throw new RangeError(`token bucket burst must be a finite number >= 1, got ${burst}`);
}
