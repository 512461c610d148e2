// A Clock that moves only when a test says so, so time-based decisions (budgets, breakers,
// deadlines) are tested without sleeps or real timers.
import type { Clock } from '../../src/stack/types.ts';

export class FakeClock implements Clock {
  #nowMs: number;

  /** @param startMs where the clock starts (ms); default 0. */
  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new RangeError(`FakeClock start must be finite, got ${startMs}`);
    this.#nowMs = startMs;
  }

  now(): number {
    return this.#nowMs;
  }

  /** Moves time forward by ms (>= 0): a monotonic clock never runs backwards. */
  advance(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`FakeClock.advance needs a finite ms >= 0, got ${ms}`);
    this.#nowMs += ms;
  }

  /**
   * Jumps to an absolute time. Unlike advance() this may go backwards, so tests can check that
   * cores survive a misbehaving clock.
   */
  set(ms: number): void {
    if (!Number.isFinite(ms)) throw new RangeError(`FakeClock.set needs a finite ms, got ${ms}`);
    this.#nowMs = ms;
  }
}
