// One Vegas step, table-driven. At a limit of 10, lg = 1, alpha = 3, beta = 6, and the queue
// estimate is 10 × (1 − noLoad / rtt): with noLoad 10, an rtt of 10/(1 − q/10) means a queue of q.
import { describe, expect, it } from 'vitest';
import { queueEstimate, vegasStep } from '../../../../src/policies/admission/vegas.ts';

const exact = (meanMs: number) => ({ meanMs, seMs: 0 });
/** The rtt at which a limit of 10 over a no-load latency of 10 reads a queue of q. */
const rttForQueue = (q: number) => 10 / (1 - q / 10);

describe('vegasStep', () => {
  it.each([
    ['no queue: grows by beta', 0, 16],
    ['queue = lg: still grows by beta', 1, 16],
    ['a little queue (< alpha): grows by lg', 2, 11],
    ['queue = alpha: holds', 3, 10],
    ['queue between alpha and beta: holds', 5, 10],
    ['queue = beta: holds', 6, 10],
    ['queue just over beta: falls by lg at least', 6.5, 9],
    ['queue of 8: falls by max(lg, half the excess of 2)', 8, 9],
  ])('%s', (_name, queue, next) => {
    expect(vegasStep({ limit: 10, noLoad: exact(10), rtt: exact(rttForQueue(queue)), maxInFlight: 10 })).toBeCloseTo(next, 9);
  });

  it('falls by half the excess when that is more than lg', () => {
    // limit 100: lg 2, beta 12; rtt 20 over 10 reads a queue of 50, excess 38.
    expect(vegasStep({ limit: 100, noLoad: exact(10), rtt: exact(20), maxInFlight: 100 })).toBeCloseTo(100 - 19, 9);
  });

  it('scales its thresholds with log10 of the limit', () => {
    // A queue of 15: within alpha..beta (9..18) at a limit of 1000, over beta (12) at 100.
    const at = (limit: number) =>
      vegasStep({ limit, noLoad: exact(10), rtt: exact(10 / (1 - 15 / limit)), maxInFlight: limit });
    expect(at(1000)).toBe(1000);
    expect(at(100)).toBeCloseTo(98, 9);
  });

  it('does not grow when traffic, not the app, bounded concurrency (peak in flight under half the limit)', () => {
    expect(vegasStep({ limit: 10, noLoad: exact(10), rtt: exact(10), maxInFlight: 4 })).toBe(10);
    expect(vegasStep({ limit: 10, noLoad: exact(10), rtt: exact(10), maxInFlight: 5 })).toBe(16);
  });

  it('reads a window faster than the no-load latency as no queue', () => {
    expect(queueEstimate(10, 10, 8)).toBe(0);
    expect(vegasStep({ limit: 10, noLoad: exact(10), rtt: exact(8), maxInFlight: 10 })).toBe(16);
  });

  it('holds instead of falling when the queue over beta is within the measurements’ doubt', () => {
    // limit 100: lg 2, alpha 6, beta 12. Point estimate: a queue of 14. With the no-load latency
    // one standard error higher and the window's one lower, the least queue is about 9: hold.
    const rtt = 10 / (1 - 14 / 100);
    expect(vegasStep({ limit: 100, noLoad: { meanMs: 10, seMs: 0.3 }, rtt: { meanMs: rtt, seMs: 0.3 }, maxInFlight: 100 })).toBe(100);
    // The same window measured precisely does fall.
    expect(vegasStep({ limit: 100, noLoad: exact(10), rtt: exact(rtt), maxInFlight: 100 })).toBe(98);
  });

  it('grows slowly, not fast, when the least queue allowed is under alpha', () => {
    // Point estimate: a queue of 7 (holds at 100); the least queue allowed is about 5: grow by lg.
    const rtt = 10 / (1 - 7 / 100);
    expect(vegasStep({ limit: 100, noLoad: exact(10), rtt: exact(rtt), maxInFlight: 100 })).toBe(100);
    expect(vegasStep({ limit: 100, noLoad: { meanMs: 10, seMs: 0.1 }, rtt: { meanMs: rtt, seMs: 0.1 }, maxInFlight: 100 })).toBe(102);
  });
});
