// The limit's state machine on a fake clock: windows, the start-up baseline and probe, drops,
// probes and their schedule, bounds, expected latency and policy updates. The Vegas step itself
// is in vegas.test.ts; the whole loop against a modelled app in limit-simulation.test.ts.
import { describe, expect, it } from 'vitest';
import {
  ConcurrencyLimit,
  EXPECTED_TTL_MS,
  PROBE_AT_MIN_WINDOWS,
  PROBE_MAX_WINDOWS,
  STALE_WINDOWS,
  type LimitChange,
} from '../../../../src/policies/admission/limit.ts';
import type { AdaptiveLimitPolicy } from '../../../../src/policy/types.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const WINDOW = 100;
const POLICY: AdaptiveLimitPolicy = {
  initialLimit: 10,
  minLimit: 2,
  sampleWindowMs: WINDOW,
  minSamples: 10,
  minRttProbeIntervalMs: 10_000,
  probeRatio: 0.5,
};

function setup(over: Partial<AdaptiveLimitPolicy> = {}, max = 1000, random = () => 0.5) {
  const clock = new FakeClock(0);
  const changes: LimitChange[] = [];
  const probes: number[] = [];
  const probeTimes: number[] = [];
  const limit = new ConcurrencyLimit({ ...POLICY, ...over }, max, clock, random, {
    onChange: (d) => changes.push(d),
    onProbe: (p) => {
      probes.push(p);
      probeTimes.push(clock.now());
    },
  });
  /**
   * One window: `n` requests admitted now with `inFlight` in flight answer after `latencyMs`,
   * then the clock moves to the window's end and the limit is read (which closes the window).
   */
  const window = (latencyMs: number, inFlight = limit.limit(), n = POLICY.minSamples): number => {
    const start = clock.now();
    clock.advance(latencyMs);
    for (let i = 0; i < n; i++) limit.sample(start, latencyMs, inFlight);
    clock.advance(WINDOW);
    return limit.limit();
  };
  /** Start-up: a baseline window, then the probe's two (drain, measure), all at `latencyMs`. */
  const warm = (latencyMs = 10): void => {
    window(latencyMs);
    expect(limit.probing()).toBe(true);
    window(latencyMs);
    window(latencyMs);
    expect(limit.probing()).toBe(false);
  };
  return { clock, limit, changes, probes, probeTimes, window, warm };
}

describe('ConcurrencyLimit, static', () => {
  it('is maxConcurrency whatever happens, and still learns the expected latency', () => {
    const clock = new FakeClock(0);
    const limit = new ConcurrencyLimit(undefined, 7, clock, () => 0.5);
    expect(limit.expectedLatencyMs()).toBeUndefined();
    for (let i = 0; i < 50; i++) {
      limit.sample(clock.now(), 40, 7);
      limit.drop();
      clock.advance(10);
    }
    expect(limit.limit()).toBe(7);
    expect(limit.minRttMs()).toBeUndefined();
    expect(limit.probing()).toBe(false);
    expect(limit.expectedLatencyMs()).toBeCloseTo(40, 9);
  });
});

describe('ConcurrencyLimit, adaptive', () => {
  it.each([
    [{ initialLimit: 0 }, 1000, 'adaptive.initialLimit must be an integer >= 1, got 0'],
    [{ minLimit: 1.5 }, 1000, 'adaptive.minLimit must be an integer >= 1, got 1.5'],
    [{ probeRatio: 0 }, 1000, 'adaptive.probeRatio must be in (0, 1], got 0'],
    [{ minLimit: 20, initialLimit: 20 }, 10, 'adaptive.minLimit (20) must be at most maxConcurrency (10)'],
    [{}, 0, 'maxConcurrency must be an integer >= 1, got 0'],
  ])('refuses %o with maxConcurrency %i', (over, max, message) => {
    expect(() => new ConcurrencyLimit({ ...POLICY, ...over }, max, new FakeClock(), () => 0.5)).toThrow(message);
  });

  it('starts at initialLimit (clamped to maxConcurrency), takes a baseline, then probes at once', () => {
    const { limit, window, probes } = setup({ initialLimit: 10 });
    expect(limit.limit()).toBe(10);
    expect(limit.minRttMs()).toBeUndefined();
    window(30);
    // The baseline moves nothing; the start-up probe lowers the limit to ceil(10 × 0.5).
    expect(limit.minRttMs()).toBe(30);
    expect(limit.limit()).toBe(5);
    expect(probes).toEqual([5]);
    window(10); // drain: not measured
    expect(limit.minRttMs()).toBe(30);
    window(10); // measure
    expect(limit.minRttMs()).toBe(10);
    expect(limit.probing()).toBe(false);
    expect(limit.limit()).toBe(10);
    expect(setup({ initialLimit: 50 }, 20).limit.limit()).toBe(20);
  });

  it('rises window by window while latency stays at the no-load latency, up to maxConcurrency', () => {
    const { limit, window, warm, changes } = setup({}, 40);
    warm();
    const seen = [limit.learnedLimit()];
    for (let i = 0; i < 12; i++) {
      window(10);
      seen.push(limit.learnedLimit());
    }
    // +beta (6·log10) per window with no queue at all, then clamped. (The doubling from 10
    // probes again, for two windows that move nothing.)
    expect([...new Set(seen)]).toEqual([10, 16, 23, 31, 40]);
    expect(changes.every((c) => c === 'up')).toBe(true);
  });

  it('falls as latency rises above the no-load latency (a queue builds), to minLimit at most', () => {
    const { limit, window, warm, changes } = setup({ initialLimit: 40 });
    warm();
    const seen: number[] = [];
    for (let i = 0; i < 30; i++) seen.push(window(40));
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeLessThanOrEqual(seen[i - 1]!);
    expect(seen[0]).toBeLessThan(40);
    expect(Math.min(...seen)).toBeGreaterThanOrEqual(POLICY.minLimit);
    expect(changes).toContain('down');
  });

  it('needs minSamples and a whole window before it moves', () => {
    const { limit, clock, warm } = setup();
    warm();
    const before = limit.limit();
    limit.sample(clock.now(), 10, before);
    clock.advance(WINDOW * 2);
    expect(limit.limit()).toBe(before); // one sample: window still open
    for (let i = 0; i < POLICY.minSamples; i++) limit.sample(clock.now() - 10, 10, before);
    expect(limit.limit()).toBeGreaterThan(before);
  });

  it('throws away a window that has not reached minSamples in STALE_WINDOWS windows', () => {
    const { limit, clock, warm } = setup();
    warm();
    const before = limit.limit();
    // A trickle of slow answers, fewer than minSamples, spread over a long time.
    for (let i = 0; i < POLICY.minSamples - 1; i++) {
      limit.sample(clock.now() - 100, 100, before);
      clock.advance(WINDOW);
    }
    clock.advance(STALE_WINDOWS * WINDOW);
    limit.limit();
    // A fresh window of fast answers: the slow trickle is not in it.
    for (let i = 0; i < POLICY.minSamples; i++) limit.sample(clock.now() - 10, 10, before);
    clock.advance(WINDOW);
    expect(limit.limit()).toBeGreaterThan(before);
  });

  it('does not grow when traffic keeps in flight under half the limit', () => {
    const { limit, window, warm } = setup({ initialLimit: 20 });
    warm();
    for (let i = 0; i < 10; i++) window(10, 9);
    expect(limit.limit()).toBe(20);
  });

  describe('drops', () => {
    it('cut the limit ×0.9 at once, once per window, and that window makes no Vegas step', () => {
      const { limit, clock, window, warm } = setup({ initialLimit: 100 });
      warm();
      limit.drop();
      expect(limit.limit()).toBe(90);
      limit.drop();
      limit.drop();
      expect(limit.limit()).toBe(90);
      // The window closes with its samples unused (they show no queue: Vegas would grow).
      for (let i = 0; i < POLICY.minSamples; i++) limit.sample(clock.now(), 0, 90);
      clock.advance(WINDOW);
      expect(limit.limit()).toBe(90);
      limit.drop();
      expect(limit.limit()).toBe(81);
      window(10, 81);
      expect(limit.limit()).toBe(81);
    });

    it('never take the limit below minLimit', () => {
      const { limit, clock, warm } = setup({ initialLimit: 4, minLimit: 3 });
      warm();
      for (let i = 0; i < 20; i++) {
        limit.drop();
        clock.advance(WINDOW);
      }
      expect(limit.learnedLimit()).toBe(3);
    });

    it.each([
      ['shorter than twice the no-load latency: the caller’s deadline was short', 19, 100],
      ['twice the no-load latency or more: the app is slow', 20, 90],
    ])('timeouts %s', (_name, elapsedMs, next) => {
      const { limit, warm } = setup({ initialLimit: 100 });
      warm(10);
      limit.timedOut(elapsedMs);
      expect(limit.limit()).toBe(next);
    });

    it('count before any no-load latency is known', () => {
      const { limit } = setup({ initialLimit: 100 });
      limit.timedOut(1);
      expect(limit.limit()).toBe(90);
    });
  });

  describe('probes', () => {
    it.each([
      // random(), interval factor
      [0, 0.9],
      [0.5, 1],
      [0.999_999, 1.1],
    ])('come every interval × (0.9 + 0.2 × random()): random %f', (r, factor) => {
      const { limit, clock, window, warm, probeTimes } = setup({}, 10, () => r);
      warm();
      // warm() read the limit at the end of the start-up probe: the next is due from then.
      const dueMs = clock.now() + POLICY.minRttProbeIntervalMs * factor;
      // Keep windows closing (steady at the max: no change) until the probe starts.
      while (!limit.probing()) window(10);
      // It starts once due, as soon as no window is open (a window is 110 ms here).
      expect(probeTimes).toHaveLength(2);
      expect(probeTimes[1]).toBeGreaterThanOrEqual(dueMs);
      expect(probeTimes[1]! - dueMs).toBeLessThanOrEqual(WINDOW + 10);
    });

    it('lower the limit to ceil(limit × probeRatio), not to minLimit, for two windows', () => {
      const { limit, clock, warm, probeTimes } = setup({ initialLimit: 30, minRttProbeIntervalMs: 1000 }, 30);
      warm();
      // Steady traffic: an answer every ms, 10 ms each; the limit read after each.
      const seen: { atMs: number; limit: number; probing: boolean }[] = [];
      while (clock.now() < 2000) {
        clock.advance(1);
        limit.sample(clock.now() - 10, 10, limit.limit());
        seen.push({ atMs: clock.now(), limit: limit.limit(), probing: limit.probing() });
      }
      const during = seen.filter((s) => s.probing);
      expect(probeTimes).toHaveLength(2);
      expect(new Set(during.map((s) => s.limit))).toEqual(new Set([15]));
      // Drain window, then a measuring window: two windows, to the ms.
      expect(during.at(-1)!.atMs - during[0]!.atMs + 1).toBe(2 * WINDOW);
      expect(seen.filter((s) => !s.probing).every((s) => s.limit === 30)).toBe(true);
    });

    it('measure only requests started under the probe, after the drain window', () => {
      const { limit, clock, warm } = setup({ minRttProbeIntervalMs: 1000 });
      warm(10);
      while (!limit.probing()) {
        for (let i = 0; i < POLICY.minSamples; i++) limit.sample(clock.now() - 10, 10, 10);
        clock.advance(WINDOW);
      }
      const probeStart = clock.now();
      // Drain window: answers to requests from before the probe, slow (queued), ignored.
      clock.advance(WINDOW);
      limit.limit();
      // Measuring: old requests still finishing are ignored; new ones at 12 ms are measured.
      for (let i = 0; i < 50; i++) limit.sample(probeStart - 1, 200, 10);
      for (let i = 0; i < POLICY.minSamples; i++) limit.sample(probeStart + 5, 12, 5);
      clock.advance(WINDOW);
      expect(limit.probing()).toBe(false);
      expect(limit.minRttMs()).toBe(12);
    });

    it('give up after PROBE_MAX_WINDOWS without a sample, keeping the no-load latency', () => {
      const { limit, clock, warm } = setup();
      warm(10);
      expect(limit.minRttMs()).toBe(10);
      // No traffic at all: a probe comes due, finds nothing, and ends.
      clock.advance(POLICY.minRttProbeIntervalMs * 1.1);
      expect(limit.probing()).toBe(true);
      clock.advance(WINDOW);
      expect(limit.probing()).toBe(true);
      clock.advance(PROBE_MAX_WINDOWS * WINDOW);
      expect(limit.probing()).toBe(false);
      expect(limit.minRttMs()).toBe(10);
    });

    it('come early when the limit sat at minLimit for PROBE_AT_MIN_WINDOWS windows', () => {
      // Vegas alone cannot take a limit under beta (the queue estimate never exceeds the
      // limit): what holds it at minLimit is drops, say an app timing out for good.
      const { limit, clock, warm, probes } = setup({ initialLimit: 3, minLimit: 2 });
      warm(10);
      const droppingWindow = (): void => {
        limit.drop();
        clock.advance(WINDOW);
        limit.limit();
      };
      let windows = 0;
      while (!limit.probing() && windows < 100) {
        droppingWindow();
        expect(limit.learnedLimit()).toBe(2);
        windows++;
      }
      expect(windows).toBe(PROBE_AT_MIN_WINDOWS);
      expect(probes).toHaveLength(2);
    });

    it('come early when the limit doubled since the last one', () => {
      const { limit, window, warm, probes } = setup({ initialLimit: 10 });
      warm(10);
      window(10); // 16
      expect(limit.probing()).toBe(false);
      window(10); // 23: more than twice 10
      expect(limit.probing()).toBe(true);
      expect(probes).toEqual([5, 12]);
    });
  });

  describe('expected latency', () => {
    it('is an EWMA of the samples, forgotten after a quiet spell', () => {
      const { limit, clock } = setup();
      limit.sample(0, 100, 1);
      expect(limit.expectedLatencyMs()).toBe(100);
      limit.sample(0, 50, 1);
      expect(limit.expectedLatencyMs()).toBeCloseTo(90, 9);
      clock.advance(EXPECTED_TTL_MS);
      expect(limit.expectedLatencyMs()).toBeCloseTo(90, 9);
      clock.advance(1);
      expect(limit.expectedLatencyMs()).toBeUndefined();
    });

    it('is kept longer for a slow app (4 × its latency)', () => {
      const { limit, clock } = setup();
      limit.sample(0, 2000, 1);
      clock.advance(7999);
      expect(limit.expectedLatencyMs()).toBe(2000);
      clock.advance(2);
      expect(limit.expectedLatencyMs()).toBeUndefined();
    });
  });

  describe('reconfigure', () => {
    function learned() {
      const s = setup({ initialLimit: 10 }, 1000);
      s.warm(10);
      s.window(10);
      expect(s.limit.limit()).toBe(16);
      return s;
    }

    it('keeps the learned limit and no-load latency when nothing adaptive changed', () => {
      const { limit } = learned();
      limit.reconfigure({ ...POLICY, initialLimit: 10 }, 1000);
      expect(limit.limit()).toBe(16);
      expect(limit.minRttMs()).toBe(10);
    });

    it('keeps them when other adaptive settings change, clamped to the new bounds', () => {
      const { limit } = learned();
      limit.reconfigure({ ...POLICY, initialLimit: 10, minLimit: 5, probeRatio: 0.25 }, 12);
      expect(limit.limit()).toBe(12);
      expect(limit.minRttMs()).toBe(10);
      limit.reconfigure({ ...POLICY, initialLimit: 10, minLimit: 14 }, 20);
      expect(limit.limit()).toBe(14);
    });

    it('restarts learning on a new initialLimit', () => {
      const { limit } = learned();
      limit.reconfigure({ ...POLICY, initialLimit: 8 }, 1000);
      expect(limit.limit()).toBe(8);
      expect(limit.minRttMs()).toBeUndefined();
    });

    it('goes static and back: static is maxConcurrency; adaptive again learns from initialLimit', () => {
      const { limit } = learned();
      limit.reconfigure(undefined, 300);
      expect(limit.limit()).toBe(300);
      limit.reconfigure({ ...POLICY, initialLimit: 10 }, 300);
      expect(limit.limit()).toBe(10);
      expect(limit.minRttMs()).toBeUndefined();
    });
  });
});
