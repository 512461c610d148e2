// The circuit breaker of one upstream (or one route). opossum keeps the rolling window and owns
// the closed → open → half-open transitions and the open timer; this class adds what a sidecar
// needs and opossum lacks, without touching its internals:
// - outcomes are *fed* to opossum after each try settles instead of wrapping the try in fire():
//   the try's promise resolves at response headers, a 5xx is a failure that still carries a
//   response to return, and our own refusals must count neither as failure nor as success;
// - a slow-call share with its own threshold, over a second opossum window;
// - an open period that doubles on each re-open from half-open (resetTimeout is read by opossum
//   when it arms its timer, so it is set ahead of every open);
// - half-open admits `halfOpenProbes` tries and closes only when all of them succeed; opossum
//   would admit one and close on its first success;
// - generations: a try admitted in one state reports into that state only, so a slow try from
//   before the breaker opened cannot close it, and one from before it closed cannot re-open it.
// opossum's own timeout and semaphore stay off: the per-try timeout layer times tries, and
// opossum would count its semaphore rejections as failures.
import CircuitBreaker from 'opossum';
import type { CircuitBreakerPolicy } from '../../policy/types.ts';
import type { Clock } from '../../stack/types.ts';

export type BreakerState = 'closed' | 'open' | 'half-open';

/** Why a try was refused. */
export type BreakerRefusal = 'open' | 'half-open';

/** The outcome opossum is fed: the action rejects for a failure, resolves otherwise. */
const FAILED = Object.freeze(new Error('upstream failure'));
const action = (failed: boolean): Promise<void> => (failed ? Promise.reject(FAILED) : Promise.resolve());
const ignore = (): void => {};

/** opossum's rolling windows are split into this many buckets (its default). */
const BUCKETS = 10;

export class Breaker {
  readonly #policy: CircuitBreakerPolicy;
  readonly #clock: Clock;
  #cb: CircuitBreaker<[boolean], void>;
  #slow: CircuitBreaker.Status | undefined;
  readonly #onTransition: (to: BreakerState, openMs: number) => void;
  #state: BreakerState = 'closed';
  /** Bumped on every transition; tries carry the generation they were admitted in. */
  #generation = 0;
  #openedAtMs = 0;
  #openMs = 0;
  #probesLeft = 0;
  #probesPassed = 0;

  constructor(policy: CircuitBreakerPolicy, clock: Clock, onTransition: (to: BreakerState, openMs: number) => void) {
    this.#policy = policy;
    this.#clock = clock;
    this.#onTransition = onTransition;
    [this.#cb, this.#slow] = this.#windows();
  }

  /**
   * A fresh opossum breaker (and slow-call window). Made anew on every close: opossum keeps its
   * window across close, so the failures that opened it would re-open it at the next failure.
   */
  #windows(): [CircuitBreaker<[boolean], void>, CircuitBreaker.Status | undefined] {
    const policy = this.#policy;
    const window = { rollingCountTimeout: policy.windowMs, rollingCountBuckets: BUCKETS };
    const cb = new CircuitBreaker(action, {
      ...window,
      timeout: false,
      errorThresholdPercentage: policy.failureRatio * 100,
      volumeThreshold: policy.minRequests,
      resetTimeout: policy.openMs,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    });
    // Registered after opossum's own 'open' listener, which has already armed its timer with
    // the current resetTimeout: that is this open's length; the next re-open waits twice as long.
    cb.on('open', () => {
      this.#openMs = cb.options.resetTimeout ?? policy.openMs;
      this.#openedAtMs = this.#clock.now();
      cb.options.resetTimeout = Math.min(this.#openMs * 2, policy.maxOpenMs);
      this.#enter('open');
    });
    cb.on('halfOpen', () => {
      this.#probesLeft = policy.halfOpenProbes;
      this.#probesPassed = 0;
      this.#enter('half-open');
    });
    cb.on('close', () => {
      cb.shutdown();
      this.#slow?.shutdown();
      [this.#cb, this.#slow] = this.#windows();
      this.#enter('closed');
    });
    const slow =
      policy.slowCall === undefined
        ? undefined
        : CircuitBreaker.newStatus({ ...window, rollingPercentilesEnabled: false, enableSnapshots: false });
    return [cb, slow];
  }

  get state(): BreakerState {
    return this.#state;
  }

  /**
   * Admits a try: its generation (≥ 0) to report the outcome with, or -1 when refused. In
   * half-open each admitted try takes a probe slot until it reports or is abandoned.
   */
  admit(): number {
    if (this.#state === 'closed') return this.#generation;
    if (this.#state === 'half-open' && this.#probesLeft > 0) {
      this.#probesLeft--;
      return this.#generation;
    }
    return -1;
  }

  /** Why admit() refused now. */
  refusal(): BreakerRefusal {
    return this.#state === 'half-open' ? 'half-open' : 'open';
  }

  /** How long until a refused try could be admitted: the rest of the open period, or 1 s for probes to report. */
  retryAfterMs(): number {
    if (this.#state !== 'open') return 1000;
    return Math.max(0, this.#openedAtMs + this.#openMs - this.#clock.now());
  }

  /** A try admitted in `generation` ended: `failed` by the one classifier, with its latency to headers. */
  record(generation: number, failed: boolean, latencyMs: number): void {
    if (generation !== this.#generation) return;
    const slowCall = this.#policy.slowCall;
    const slow = slowCall !== undefined && latencyMs >= slowCall.thresholdMs;
    if (this.#state === 'half-open') {
      if (failed || slow) {
        this.#cb.open();
        return;
      }
      this.#probesPassed++;
      if (this.#probesPassed >= this.#policy.halfOpenProbes) this.#cb.close();
      return;
    }
    // Closed. opossum counts the try and opens (a microtask later) if failures exceed the ratio.
    this.#cb.fire(failed).catch(ignore);
    if (this.#slow === undefined || slowCall === undefined) return;
    this.#slow.increment('fires');
    if (!slow) return;
    this.#slow.increment('failures');
    const { fires, failures } = this.#slow.stats;
    if (fires >= this.#policy.minRequests && failures / fires >= slowCall.ratio) this.#cb.open();
  }

  /** A try admitted in `generation` ended without a verdict on the upstream (client left, our refusal). */
  abandon(generation: number): void {
    if (generation === this.#generation && this.#state === 'half-open') this.#probesLeft++;
  }

  /** Stops opossum's timers (a policy update replaced this breaker). */
  close(): void {
    this.#cb.shutdown();
    this.#slow?.shutdown();
  }

  #enter(state: BreakerState): void {
    this.#state = state;
    this.#generation++;
    this.#onTransition(state, state === 'open' ? this.#openMs : 0);
  }
}
