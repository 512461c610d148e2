// One step of the adaptive limit, per sample window: TCP Vegas as Netflix's concurrency-limits
// applies it to RPCs (VegasLimit), as a pure function.
//
//   queue = limit × (1 − noLoad / rtt)      requests waiting inside the app, by Little's law
//   lg = max(1, log10(limit)),  alpha = 3·lg,  beta = 6·lg
//   queue ≤ lg     → limit + beta           no queue at all: grow fast
//   queue < alpha  → limit + lg             a little queue: grow slowly
//   queue > beta   → limit − max(lg, ½·(queue − beta))    a queue is building: back off
//   otherwise      → unchanged              alpha..beta requests queued keep the app busy
//
// Vegas keeps alpha..beta requests queued in the app on purpose: on an app of N workers the
// limit settles a few requests above N, every worker busy and the latency a few service times
// at most above the no-load latency. The log10 scaling lets a large limit move by more than one
// request per window. Two changes to Netflix's rule, both found by simulation (the unit tests
// keep the cases):
// - The decrease takes half the excess over beta, not lg: from a limit far too high, Vegas's
//   fixed step takes a hundred windows to come down. With the window's one-window lag a gain
//   of ½ still converges without overshooting.
// - Holding or shrinking the limit needs evidence: they go by the least queue the measurements
//   allow, with the no-load latency EVIDENCE standard errors higher and the window's latency as
//   many lower. A probe measures few requests (100 at a limit of 20 and 10 ms each: ±10% for
//   exponential service times), and a no-load latency too low by e reads as a queue of
//   e × limit that is not there: the limit stalls or shrinks, shedding traffic the app could
//   serve (tried: a probe 16% low held 200 workers near a limit of 45 until the next probe).
//   The fast-growth test keeps the plain estimate: noise must not make it jump. Steady service
//   times have no spread, and there the rule is Vegas's exactly.
import type { Latency } from './sample-window.ts';

/** Standard errors of doubt on each side (~84% one-sided each; 2 held noisy apps far above their workers). */
export const EVIDENCE = 1;
/** Share of the queue's excess over beta taken off the limit in one window. */
export const DECREASE_GAIN = 0.5;

export interface VegasInput {
  /** The learned limit now (fractional). */
  readonly limit: number;
  readonly noLoad: Latency;
  /** The window's latency. */
  readonly rtt: Latency;
  /** Most requests in flight in the window. */
  readonly maxInFlight: number;
}

/** The limit after one window (unclamped), or the same limit when nothing moves it. */
export function vegasStep(v: VegasInput): number {
  const { limit } = v;
  // Traffic, not the app, bounded concurrency in this window: no evidence either way (Netflix).
  if (v.maxInFlight * 2 < limit) return limit;
  const lg = Math.max(1, Math.log10(limit));
  const alpha = 3 * lg;
  const beta = 6 * lg;
  if (queueEstimate(limit, v.noLoad.meanMs, v.rtt.meanMs) <= lg) return limit + beta;
  // The least queue the measurements allow: what holding or shrinking the limit must rest on.
  const queue = queueEstimate(limit, v.noLoad.meanMs + EVIDENCE * v.noLoad.seMs, v.rtt.meanMs - EVIDENCE * v.rtt.seMs);
  if (queue < alpha) return limit + lg;
  if (queue <= beta) return limit;
  return limit - Math.max(lg, DECREASE_GAIN * (queue - beta));
}

/** limit × (1 − noLoad / rtt); a window faster than the no-load latency is no queue at all. */
export function queueEstimate(limit: number, noLoadMs: number, rttMs: number): number {
  return rttMs > noLoadMs && rttMs > 0 ? limit * (1 - noLoadMs / rttMs) : 0;
}
