// The adaptive limit driving a modelled app (./app-model.ts): N workers, a service time, more
// demand than any limit. Deterministic (fake clock, seeded PRNG), so the bands below are exact
// properties of the algorithm, not timing luck.
//
// The band: Vegas keeps between alpha = 3·lg and beta = 6·lg requests queued in the app
// (lg = log10(limit), at least 1), and with L in flight on N workers the queue estimate is
// L − N (Little's law on the window's mean latency). So a converged limit sits in
// [N + alpha − lg, N + beta + lg]: the thresholds, with one step of slack either way.
import { describe, expect, it } from 'vitest';
import { probeLimit } from '../../../../src/policies/admission/limit.ts';
import type { AdaptiveLimitPolicy } from '../../../../src/policy/types.ts';
import { prng } from '../../../support/prng.ts';
import { simulate, type Trace } from './app-model.ts';

const POLICY: AdaptiveLimitPolicy = {
  initialLimit: 20,
  minLimit: 2,
  sampleWindowMs: 100,
  minSamples: 10,
  minRttProbeIntervalMs: 10_000,
  probeRatio: 0.5,
};

function band(workers: number): [number, number] {
  // lg at the converged limit; evaluated at N + beta(N), a little above N, rounded outward.
  const lgAt = (l: number) => Math.max(1, Math.log10(l));
  const top = workers + 7 * lgAt(workers + 6 * lgAt(workers));
  return [Math.floor(workers + 2 * lgAt(workers)), Math.ceil(top)];
}

function between(trace: readonly Trace[], fromMs: number, toMs: number): Trace[] {
  return trace.filter((t) => t.atMs >= fromMs && t.atMs < toMs);
}

function learnedRange(trace: readonly Trace[], fromMs: number, toMs: number): [number, number] {
  const xs = between(trace, fromMs, toMs).map((t) => t.learned);
  return [Math.min(...xs), Math.max(...xs)];
}

describe('adaptive limit on a modelled app', () => {
  it.each([
    // workers, initial limit, ms to converge
    [10, 20, 3000],
    [20, 20, 2000],
    [50, 20, 3000],
    [20, 100, 4000],
    [50, 200, 4000],
  ])('%i workers from initialLimit %i: converges into the Vegas band and stays', (workers, initialLimit, settleMs) => {
    const run = simulate({ workers, serviceMs: () => 10 }, { ...POLICY, initialLimit }, { maxConcurrency: 1000, durationMs: 25_000 });
    const [lo, hi] = band(workers);
    const [min, max] = learnedRange(run.trace, settleMs, 25_000);
    expect(min).toBeGreaterThanOrEqual(lo);
    expect(max).toBeLessThanOrEqual(hi);
    // No wild swings once settled: within the band, a few requests wide.
    expect(max - min).toBeLessThanOrEqual(hi - lo);
    // The no-load latency is the service time, measured by a probe.
    expect(run.limiter.minRttMs()).toBeCloseTo(10, 5);
    // Latency stays within the queue Vegas allows: at most (N + beta) / N service times.
    expect(run.meanLatencyMs(settleMs, 25_000)).toBeLessThanOrEqual((10 * hi) / workers);
  });

  it('rises from a low limit while latency stays at the no-load latency', () => {
    const run = simulate({ workers: 200, serviceMs: () => 10 }, { ...POLICY, initialLimit: 5 }, { maxConcurrency: 1000, durationMs: 4000 });
    const learned = run.trace.map((t) => t.learned);
    // Never falls on the way up (no queue, nothing to back off from).
    for (let i = 1; i < learned.length; i++) expect(learned[i]).toBeGreaterThanOrEqual(learned[i - 1]!);
    expect(learned.at(-1)!).toBeGreaterThan(200);
  });

  it('probes every interval (±10%) at probeRatio × limit, never pinning the app to minLimit', () => {
    const run = simulate({ workers: 20, serviceMs: () => 10 }, POLICY, { maxConcurrency: 1000, durationMs: 40_000 });
    const settled = between(run.trace, 3000, 40_000);
    const probeStarts = settled.filter((t, i) => t.probing && !settled[i - 1]?.probing).map((t) => t.atMs);
    // random() = 0.5: the interval exactly, counted from the end of the previous probe, which
    // lasted two windows (drain, measure).
    expect(probeStarts).toEqual([10_310, 20_510, 30_710]);
    for (const t of settled) {
      if (t.probing) expect(t.limit).toBe(probeLimit(t.learned, POLICY));
      expect(t.limit).toBeGreaterThanOrEqual(Math.ceil(t.learned * POLICY.probeRatio));
    }
    expect(Math.min(...settled.map((t) => t.limit))).toBeGreaterThan(POLICY.minLimit);
  });

  it('re-measures the no-load latency when the app gets slower for good, and recovers the limit', () => {
    // At 12 s every request starts taking twice as long (a slower dependency, not load).
    const run = simulate({ workers: 20, serviceMs: (now) => (now < 12_000 ? 10 : 20) }, POLICY, { maxConcurrency: 1000, durationMs: 40_000 });
    const [lo, hi] = band(20);
    // With the old no-load latency the slower app reads as a queue: the limit falls...
    const slowed = between(run.trace, 12_500, 20_000);
    expect(Math.min(...slowed.map((t) => t.learned))).toBeLessThan(lo);
    // ...but not to the floor, and the next probe measures the new no-load latency...
    const after = between(run.trace, 25_000, 40_000);
    expect(after.at(-1)!.minRttMs).toBeCloseTo(20, 5);
    // ...after which the limit is back in the band.
    const [min, max] = learnedRange(run.trace, 25_000, 40_000);
    expect(min).toBeGreaterThanOrEqual(lo);
    expect(max).toBeLessThanOrEqual(hi);
    expect(Math.min(...run.trace.map((t) => t.limit))).toBeGreaterThan(POLICY.minLimit);
  });

  it.each([1, 2, 3])('holds a noisy app (exponential service times, seed %i) near its workers, not far below', (seed) => {
    // The case the evidence rule exists for: probes measure few requests, and a no-load latency
    // read low by noise must not hold the limit far below what the app serves.
    const random = prng(seed);
    const run = simulate({ workers: 50, serviceMs: () => -10 * Math.log(1 - random()) }, POLICY, { maxConcurrency: 1000, durationMs: 20_000 });
    const [min, max] = learnedRange(run.trace, 5000, 20_000);
    // Never below the workers: no traffic the app could serve is shed...
    expect(min).toBeGreaterThanOrEqual(50);
    // ...and noise widens the band upward only so far (the limit holds until a queue is likely):
    // the app's latency stays within 1.5 times the no-load latency.
    expect(max).toBeLessThanOrEqual(75);
    expect(run.meanLatencyMs(5000, 20_000)).toBeLessThan(1.5 * 10);
  });
});
