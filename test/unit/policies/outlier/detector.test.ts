import { describe, expect, it } from 'vitest';
import { type OutlierPolicy, OutlierDetector, STALL_MIN_TRIES } from '../../../../src/policies/outlier/detector.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

/** Only the consecutive-failure check on, unless a test turns others on. */
function policy(over: Partial<OutlierPolicy> = {}): OutlierPolicy {
  return {
    mode: 'enforce',
    consecutiveFailures: 3,
    successRate: undefined,
    latency: undefined,
    baseEjectionMs: 1000,
    maxEjectionMs: 3500,
    maxEjectionPercent: 1,
    probeIntervalMs: undefined,
    ...over,
  };
}

function setup(n: number, over: Partial<OutlierPolicy> = {}, startMs = 0) {
  const clock = new FakeClock(startMs);
  return { clock, d: new OutlierDetector(n, policy(over), clock) };
}

/** Fail endpoint i `times` times; returns the ejection it caused, if any. */
function fail(d: OutlierDetector, i: number, times: number) {
  let ejection;
  for (let k = 0; k < times; k++) ejection = d.record(i, true, 10) ?? ejection;
  return ejection;
}

describe('OutlierDetector construction', () => {
  it.each([
    [0, {}, 'outlier endpointCount must be an integer >= 1, got 0'],
    [2, { mode: 'on' }, "outlier mode must be 'enforce', 'shadow' or 'off', got on"],
    [2, { consecutiveFailures: -1 }, 'outlier consecutiveFailures must be an integer >= 0, got -1'],
    [2, { successRate: { windowMs: 0, minRequests: 1, minSuccessRate: 0.5 } }, 'outlier successRate.windowMs must be a finite number > 0, got 0'],
    [2, { successRate: { windowMs: 10, minRequests: 0, minSuccessRate: 0.5 } }, 'outlier successRate.minRequests must be an integer >= 1, got 0'],
    [2, { successRate: { windowMs: 10, minRequests: 1, minSuccessRate: 2 } }, 'outlier successRate.minSuccessRate must be in [0, 1], got 2'],
    [2, { latency: { factor: 0.5, minRequests: 1, minExcessMs: 0 } }, 'outlier latency.factor must be a finite number >= 1, got 0.5'],
    [2, { latency: { factor: 2, minRequests: 1.5, minExcessMs: 0 } }, 'outlier latency.minRequests must be an integer >= 1, got 1.5'],
    [2, { baseEjectionMs: 0 }, 'outlier baseEjectionMs must be a finite number > 0, got 0'],
    [2, { maxEjectionMs: Number.NaN }, 'outlier maxEjectionMs must be a finite number > 0, got NaN'],
    [2, { maxEjectionPercent: 1.1 }, 'outlier maxEjectionPercent must be in [0, 1], got 1.1'],
  ])('rejects %j endpoints with %j', (n, over, message) => {
    expect(() => new OutlierDetector(n, policy(over as Partial<OutlierPolicy>), new FakeClock())).toThrow(
      new RangeError(message),
    );
  });

  it('starts with every endpoint eligible and nothing to report', () => {
    const { d } = setup(3);
    expect(d.eligible()).toEqual([true, true, true]);
    expect(d.ejectedCount()).toBe(0);
    expect(d.takeReturned()).toEqual([]);
  });

  it('rejects an endpoint index out of range', () => {
    const { d } = setup(2);
    expect(() => d.record(2, true, 1)).toThrow(
      new RangeError('outlier endpoint index must be an integer in [0, 1], got 2'),
    );
  });
});

describe('consecutive failures', () => {
  it('ejects on the Nth failure in a row, not before', () => {
    const { d } = setup(3);
    expect(d.record(1, true, 10)).toBeUndefined();
    expect(d.record(1, true, 10)).toBeUndefined();
    expect(d.eligible()).toEqual([true, true, true]);
    expect(d.record(1, true, 10)).toEqual({
      endpoint: 1,
      reason: 'consecutive_failures',
      durationMs: 1000,
      enforced: true,
    });
    expect(d.eligible()).toEqual([true, false, true]);
    expect(d.ejectedCount()).toBe(1);
  });

  it('a success resets the streak', () => {
    const { d } = setup(3);
    fail(d, 0, 2);
    expect(d.record(0, false, 10)).toBeUndefined();
    expect(fail(d, 0, 2)).toBeUndefined();
    expect(d.record(0, true, 10)?.reason).toBe('consecutive_failures');
  });

  it('is off at 0', () => {
    const { d } = setup(2, { consecutiveFailures: 0 });
    expect(fail(d, 0, 100)).toBeUndefined();
  });

  it('ignores results on an ejected endpoint (tries that were already in flight)', () => {
    const { d } = setup(3);
    fail(d, 0, 3);
    expect(fail(d, 0, 10)).toBeUndefined();
    expect(d.ejectedCount()).toBe(1);
  });
});

describe('ejection time and return', () => {
  it('returns after baseEjectionMs, reported once by takeReturned', () => {
    const { clock, d } = setup(3);
    fail(d, 2, 3);
    clock.advance(999);
    expect(d.eligible()[2]).toBe(false);
    expect(d.takeReturned()).toEqual([]);
    clock.advance(1);
    expect(d.eligible()[2]).toBe(true);
    expect(d.ejectedCount()).toBe(0);
    expect(d.takeReturned()).toEqual([2]);
    expect(d.takeReturned()).toEqual([]);
  });

  it('returns the same eligible array, updated in place', () => {
    const { clock, d } = setup(2);
    const e = d.eligible();
    fail(d, 0, 3);
    expect(d.eligible()).toBe(e);
    expect(e[0]).toBe(false);
    clock.advance(1000);
    expect(d.eligible()).toBe(e);
    expect(e[0]).toBe(true);
  });

  it('ejects a flapping endpoint longer each time, capped at maxEjectionMs', () => {
    const { clock, d } = setup(3);
    const durations: number[] = [];
    for (let k = 0; k < 5; k++) {
      const ev = fail(d, 0, 3);
      durations.push(ev!.durationMs);
      clock.advance(ev!.durationMs); // fails again the moment it is back: no healthy time
      expect(d.eligible()[0]).toBe(true);
    }
    expect(durations).toEqual([1000, 2000, 3000, 3500, 3500]);
  });

  it('forgives one step per baseEjectionMs of healthy time after return', () => {
    const { clock, d } = setup(3);
    for (let k = 0; k < 3; k++) clock.advance(fail(d, 0, 3)!.durationMs); // multiplier 3
    clock.advance(1999); // one whole step of healthy time: 3 → 2, then the ejection makes it 3
    expect(fail(d, 0, 3)!.durationMs).toBe(3000);
    clock.advance(3000);
    clock.advance(2000); // two steps: 3 → 1, ejection → 2
    expect(fail(d, 0, 3)!.durationMs).toBe(2000);
    clock.advance(2000);
    clock.advance(60_000); // fully forgiven
    expect(fail(d, 0, 3)!.durationMs).toBe(1000);
  });

  it('stops growing the multiplier at the cap, so forgiveness is quick after a long flap', () => {
    const { clock, d } = setup(3);
    for (let k = 0; k < 20; k++) clock.advance(fail(d, 0, 3)!.durationMs);
    // Multiplier held at ceil(3500 / 1000) = 4; 3 s healthy → 1, ejection → 2.
    clock.advance(3000);
    expect(fail(d, 0, 3)!.durationMs).toBe(2000);
  });

  it('watches a returned endpoint with a clean slate: a success ends probation, old counts are gone', () => {
    const { clock, d } = setup(3, {
      successRate: { windowMs: 10_000, minRequests: 5, minSuccessRate: 0.5 },
    });
    d.record(0, false, 10);
    fail(d, 0, 3); // streak ejects; window holds 1 ok, 3 failed
    clock.advance(1000);
    expect(d.eligible()[0]).toBe(true);
    expect(d.record(0, false, 10)).toBeUndefined(); // first answer after return: probation over
    // Old window would give 2/6 success and the old streak 3 in a row: neither counts any more.
    expect(d.record(0, true, 10)).toBeUndefined();
    expect(d.record(0, true, 10)).toBeUndefined();
    expect(d.record(0, true, 10)?.reason).toBe('consecutive_failures');
  });

  it('ignores a try that started before the endpoint returned', () => {
    const { clock, d } = setup(3);
    fail(d, 0, 3);
    clock.advance(1000); // back at t=1000, on probation
    expect(d.eligible()[0]).toBe(true);
    expect(d.record(0, true, 5000, 500)).toBeUndefined(); // sent at t=500, timed out now
    expect(d.eligible()[0]).toBe(true);
    expect(d.record(0, true, 10, 1000)?.reason).toBe('consecutive_failures');
  });

  it('ejects a returned endpoint again on its first failure (probation)', () => {
    const { clock, d } = setup(3);
    expect(fail(d, 0, 3)?.durationMs).toBe(1000);
    clock.advance(1000);
    expect(d.eligible()[0]).toBe(true);
    expect(d.record(0, true, 10)).toEqual({ endpoint: 0, reason: 'consecutive_failures', durationMs: 2000, enforced: true });
    expect(d.eligible()[0]).toBe(false);
  });
});

describe('success rate', () => {
  const successRate = { windowMs: 10_000, minRequests: 10, minSuccessRate: 0.6 };

  it('ejects below minSuccessRate once minRequests are in the window', () => {
    const { d } = setup(3, { consecutiveFailures: 0, successRate });
    for (let k = 0; k < 4; k++) {
      d.record(0, false, 10);
      expect(d.record(0, true, 10)).toBeUndefined(); // 50% but fewer than 10 requests
    }
    d.record(0, false, 10);
    expect(d.record(0, true, 10)).toEqual({ endpoint: 0, reason: 'success_rate', durationMs: 1000, enforced: true });
  });

  it('does not eject at or above minSuccessRate', () => {
    const { d } = setup(3, { consecutiveFailures: 0, successRate });
    for (let k = 0; k < 5; k++) {
      for (let s = 0; s < 3; s++) expect(d.record(1, false, 10)).toBeUndefined();
      for (let f = 0; f < 2; f++) expect(d.record(1, true, 10)).toBeUndefined(); // 60% exactly
    }
  });

  it('forgets results older than the window', () => {
    const { clock, d } = setup(3, { consecutiveFailures: 0, successRate });
    for (let k = 0; k < 9; k++) d.record(0, true, 10);
    clock.advance(10_000);
    // The 9 failures slid out: this is 1 request, under minRequests.
    expect(d.record(0, true, 10)).toBeUndefined();
    for (let k = 0; k < 8; k++) expect(d.record(0, false, 10)).toBeUndefined();
    // 10 requests, 2 failed: 80%. Had the window not slid it would be 8 of 19: ejected.
    expect(d.record(0, false, 10)).toBeUndefined();
  });

  it('slides bucket by bucket', () => {
    const { clock, d } = setup(2, { consecutiveFailures: 0, successRate: { windowMs: 1000, minRequests: 4, minSuccessRate: 0.5 } });
    d.record(0, true, 1); // bucket 0
    d.record(0, true, 1);
    clock.advance(500);
    d.record(0, false, 1); // bucket 5
    clock.advance(500); // bucket 10: bucket 0 slid out
    expect(d.record(0, true, 1)).toBeUndefined(); // 2 requests in window
    expect(d.record(0, true, 1)).toBeUndefined(); // 3
    expect(d.record(0, false, 1)).toBeUndefined(); // 4 requests, 2 ok: 50% is not below
    expect(d.record(0, true, 1)?.reason).toBe('success_rate'); // 5 requests, 2 ok
  });
});

describe('latency', () => {
  const latency = { factor: 3, minRequests: 5, minExcessMs: 0 };

  /** Records `times` answers of `ms`; returns the ejection they caused, if any. */
  function feed(d: OutlierDetector, i: number, ms: number, times: number) {
    let ejection;
    for (let k = 0; k < times; k++) ejection = d.record(i, false, ms) ?? ejection;
    return ejection;
  }

  it('does not eject for jitter: the excess over the median must reach minExcessMs', () => {
    // 0.3 ms peers and a 2 ms endpoint: over 3 × the median, but only 1.7 ms slower.
    const { d } = setup(3, { consecutiveFailures: 0, latency: { factor: 3, minRequests: 5, minExcessMs: 50 } });
    feed(d, 0, 0.3, 5);
    feed(d, 1, 0.3, 5);
    expect(feed(d, 2, 2, 5)).toBeUndefined();
    expect(feed(d, 2, 200, 5)?.reason).toBe('latency');
  });

  it('ejects an endpoint over factor × the median of its peers', () => {
    const { d } = setup(4, { consecutiveFailures: 0, latency });
    feed(d, 0, 10, 5);
    feed(d, 1, 20, 5);
    feed(d, 2, 1000, 5); // a slow peer does not move the median much
    // Peers of 3: 10, 20, 1000 → median 20; 3's mean after 5 × 70 is 70 > 60.
    expect(feed(d, 3, 70, 4)).toBeUndefined(); // 4 samples: too few
    expect(d.record(3, false, 70)).toEqual({ endpoint: 3, reason: 'latency', durationMs: 1000, enforced: true });
  });

  it('does not eject at factor × median or below', () => {
    const { d } = setup(3, { consecutiveFailures: 0, latency });
    feed(d, 0, 10, 5);
    feed(d, 1, 30, 5);
    // Peers of 2: 10 and 30, median 20; 60 is not above 3 × 20.
    expect(feed(d, 2, 60, 20)).toBeUndefined();
  });

  it('needs peers with enough samples', () => {
    const { d } = setup(3, { consecutiveFailures: 0, latency });
    feed(d, 0, 10, 4);
    feed(d, 1, 10, 4);
    expect(feed(d, 2, 1000, 10)).toBeUndefined();
    d.record(0, false, 10); // 0 now has 5 samples: a yardstick
    expect(d.record(2, false, 1000)?.reason).toBe('latency');
  });

  it('leaves ejected peers out of the median', () => {
    const { d } = setup(3, { consecutiveFailures: 1, latency });
    feed(d, 0, 100, 5);
    feed(d, 1, 10, 5);
    expect(d.record(1, true, 10)?.reason).toBe('consecutive_failures');
    // 2's only peer now is 0 (100): 250 is under 300.
    expect(feed(d, 2, 250, 10)).toBeUndefined();
  });

  it('weights recent samples once past 1 / alpha samples', () => {
    const { d } = setup(2, { consecutiveFailures: 0, latency: { factor: 2, minRequests: 1, minExcessMs: 0 } });
    feed(d, 0, 10, 1);
    feed(d, 1, 10, 30); // long fast history
    // A mean would need 4 slow samples to pass 20; the EWMA (alpha 0.1) needs 2:
    // 10 + 90 × 0.1 = 19, then 10 + 90 × (1 - 0.9²) = 27.1.
    expect(d.record(1, false, 100)).toBeUndefined();
    expect(d.record(1, false, 100)?.reason).toBe('latency');
  });

  it('resets the latency estimate on return', () => {
    const { clock, d } = setup(2, { consecutiveFailures: 0, maxEjectionPercent: 0.5, latency: { factor: 2, minRequests: 2, minExcessMs: 0 } });
    feed(d, 0, 10, 2);
    expect(feed(d, 1, 100, 2)?.reason).toBe('latency');
    clock.advance(1000);
    expect(d.eligible()).toEqual([true, true]);
    expect(d.record(1, false, 15)).toBeUndefined(); // one sample: too few, the old 100 is gone
    expect(d.record(1, false, 15)).toBeUndefined(); // 15 ≤ 2 × 10
  });
});

describe('stalls', () => {
  // Peers answer in 10 ms: an endpoint may keep tries waiting max(3 × 10, 10 + 50) = 60 ms.
  const latency = { factor: 3, minRequests: 5, minExcessMs: 50 };

  function withPeers() {
    const t = setup(3, { consecutiveFailures: 0, latency });
    for (const i of [0, 1]) for (let k = 0; k < 5; k++) t.d.record(i, false, 10);
    return t;
  }

  /**
   * Peers 0 and 1 answer, promptly, a try sent just now (their proof that the endpoints are being
   * served), then the stall check runs.
   */
  function check(d: OutlierDetector, clock: FakeClock) {
    for (const j of [0, 1]) {
      d.started(j);
      d.ended(j, 'answered', clock.now(), 1);
    }
    return d.checkStalls();
  }

  /** Sends `n` tries to endpoint i now. */
  function send(d: OutlierDetector, i: number, n: number): void {
    for (let k = 0; k < n; k++) d.started(i);
  }

  it('ejects an endpoint whose last tries all wait longer than the latency check allows', () => {
    const { clock, d } = withPeers();
    send(d, 2, 3);
    clock.advance(60);
    expect(check(d, clock)).toBeUndefined();
    clock.advance(5); // the next look, 5 ms on
    expect(check(d, clock)).toEqual({ endpoint: 2, reason: 'stalled', durationMs: 1000, enforced: true });
    expect(d.eligible()).toEqual([true, true, false]);
  });

  it('needs a few unanswered tries: one long request is no stall', () => {
    const { clock, d } = withPeers();
    send(d, 2, STALL_MIN_TRIES - 1);
    clock.advance(10_000);
    expect(check(d, clock)).toBeUndefined();
  });

  it('any answer starts the wait over: tries sent before it do not count', () => {
    const { clock, d } = withPeers();
    send(d, 2, 3);
    clock.advance(50);
    d.ended(2, 'answered'); // an answer: the three sent before it no longer count
    send(d, 2, 2);
    clock.advance(50);
    expect(check(d, clock)).toBeUndefined();
    send(d, 2, 1);
    clock.advance(11); // the first try after the answer has now waited 61 ms
    expect(check(d, clock)?.reason).toBe('stalled');
  });

  it('needs peers that say what normal latency is, and the latency check on', () => {
    const { clock, d } = setup(3, { consecutiveFailures: 0, latency });
    send(d, 2, 5);
    clock.advance(10_000);
    expect(check(d, clock)).toBeUndefined();
    const off = setup(3, { consecutiveFailures: 0, latency: undefined });
    send(off.d, 2, 5);
    off.clock.advance(10_000);
    expect(off.d.checkStalls()).toBeUndefined();
  });

  it('the tries that ejected it do not count again when they time out', () => {
    const { clock, d } = withPeers();
    send(d, 2, 3);
    clock.advance(61);
    expect(check(d, clock)?.reason).toBe('stalled');
    clock.advance(1000);
    expect(d.eligible()).toEqual([true, true, true]);
    expect(check(d, clock)).toBeUndefined();
  });

  it('tries that ended for reasons not its silence are no stall evidence (client left, reset)', () => {
    const { clock, d } = withPeers();
    send(d, 2, 3);
    d.ended(2, 'other');
    d.ended(2, 'other');
    clock.advance(10_000);
    expect(check(d, clock)).toBeUndefined(); // one try left: not enough
  });

  it('tries it let time out still count: one try at a time to a hung endpoint is a stall', () => {
    const { clock, d } = withPeers();
    send(d, 2, 1);
    clock.advance(1000);
    d.ended(2, 'timeout');
    send(d, 2, 1);
    clock.advance(60);
    expect(check(d, clock)).toBeUndefined(); // the second try has not waited long enough yet
    clock.advance(5);
    expect(check(d, clock)?.reason).toBe('stalled');
  });

  it('one long request and a second try: no stall until the second has waited past the allowance', () => {
    const { clock, d } = withPeers();
    send(d, 2, 1); // a long poll, say
    clock.advance(2000);
    send(d, 2, 1);
    clock.advance(6);
    expect(check(d, clock)).toBeUndefined();
    clock.advance(55);
    expect(check(d, clock)?.reason).toBe('stalled');
  });

  it('a try that ended otherwise restarts the clock for the rest', () => {
    const { clock, d } = withPeers();
    send(d, 2, 3);
    clock.advance(1000);
    d.ended(2, 'other'); // two still waiting, but which ones is not known
    clock.advance(10);
    expect(check(d, clock)).toBeUndefined();
    clock.advance(55);
    expect(check(d, clock)?.reason).toBe('stalled');
  });

  it('needs a try still waiting: nothing in flight is nothing stalled', () => {
    const { clock, d } = withPeers();
    send(d, 2, 2);
    clock.advance(1000);
    d.ended(2, 'timeout');
    d.ended(2, 'timeout');
    expect(check(d, clock)).toBeUndefined();
  });

  it('a returned endpoint starts with no stall evidence: probes given up while it was out do not count', () => {
    const { clock, d } = withPeers();
    send(d, 2, 2);
    clock.advance(65);
    expect(check(d, clock)?.reason).toBe('stalled');
    send(d, 2, 2); // probes that are never answered
    clock.advance(1000);
    expect(d.eligible()[2]).toBe(true);
    expect(check(d, clock)).toBeUndefined();
  });

  it('a stall the ejection cap refused keeps its evidence and ejects once there is room', () => {
    const { clock, d } = setup(3, { consecutiveFailures: 1, maxEjectionPercent: 0.34, latency: { factor: 3, minRequests: 5, minExcessMs: 50 } });
    for (let k = 0; k < 5; k++) d.record(0, false, 10);
    expect(d.record(1, true, 10)?.endpoint).toBe(1); // the one ejection allowed
    send(d, 2, 2);
    clock.advance(65);
    expect(check(d, clock)).toBeUndefined(); // refused by the cap
    clock.advance(1000); // 1 returns
    expect(check(d, clock)?.endpoint).toBe(2);
  });

  it('no stall while no peer answered a try sent after it (this process or the host stalled)', () => {
    const { clock, d } = withPeers();
    send(d, 2, 2);
    clock.advance(1000);
    expect(d.checkStalls()).toBeUndefined(); // the peers' last answers are older than the wait
    d.started(0);
    d.ended(0, 'answered', clock.now() - 900, 900); // an answer, but as slow as the silence
    expect(d.checkStalls()).toBeUndefined();
    clock.advance(5);
    expect(check(d, clock)?.reason).toBe('stalled');
  });

  it('looks at most every few milliseconds', () => {
    const { clock, d } = withPeers();
    expect(check(d, clock)).toBeUndefined();
    send(d, 2, 3);
    clock.advance(61);
    expect(check(d, clock)?.reason).toBe('stalled');
    send(d, 1, 3);
    clock.advance(1);
    expect(check(d, clock)).toBeUndefined();
  });
});

describe('probes', () => {
  function ejected(over: Partial<OutlierPolicy> = {}) {
    const t = setup(3, { probeIntervalMs: 200, latency: { factor: 3, minRequests: 5, minExcessMs: 50 }, ...over });
    for (let k = 0; k < 5; k++) t.d.record(0, false, 10);
    expect(fail(t.d, 2, 3)?.endpoint).toBe(2);
    return t;
  }

  it('offers an ejected endpoint once per probe interval', () => {
    const { clock, d } = ejected();
    expect(d.probe()).toBe(-1);
    clock.advance(199);
    expect(d.probe()).toBe(-1);
    clock.advance(1);
    expect(d.probe()).toBe(2);
    expect(d.probe()).toBe(-1);
    clock.advance(200);
    expect(d.probe()).toBe(2);
  });

  it('a probe answered without failure brings the endpoint back at once, on probation', () => {
    const { clock, d } = ejected();
    clock.advance(200);
    expect(d.probe()).toBe(2);
    d.probeSucceeded(2);
    expect(d.eligible()).toEqual([true, true, true]);
    expect(d.takeReturned()).toEqual([2]);
    expect(d.record(2, true, 10)?.reason).toBe('consecutive_failures'); // probation: first failure ejects
    expect(d.probe()).toBe(-1);
  });

  it('a failed probe changes nothing: the ejection runs its course', () => {
    const { clock, d } = ejected();
    clock.advance(200);
    expect(d.probe()).toBe(2);
    d.record(2, true, 10); // ignored: the endpoint is ejected
    clock.advance(799);
    expect(d.eligible()[2]).toBe(false);
    clock.advance(1);
    expect(d.eligible()[2]).toBe(true);
    expect(d.probe()).toBe(-1); // back: nothing to probe
  });

  it('gives up on a probe after the stall allowance, when peers say what normal is', () => {
    const { d } = ejected();
    expect(d.probeTimeoutMs(2)).toBe(60); // max(3 × 10, 10 + 50)
    expect(setup(3, { latency: undefined }).d.probeTimeoutMs(2)).toBeUndefined();
  });

  it('does not probe when off, or in shadow mode (the endpoint has traffic anyway)', () => {
    const off = ejected({ probeIntervalMs: undefined });
    off.clock.advance(500); // still ejected
    expect(off.d.probe()).toBe(-1);
    const shadow = ejected({ mode: 'shadow' });
    shadow.clock.advance(200);
    expect(shadow.d.probe()).toBe(-1);
  });
});

describe('adopt (the endpoint list changed, e.g. a DNS answer)', () => {
  it('an ejected endpoint stays ejected, for the rest of its time, under its new index', () => {
    const { clock, d } = setup(3, { maxEjectionPercent: 0.5 });
    expect(fail(d, 1, 3)?.endpoint).toBe(1);
    clock.advance(400);
    const next = new OutlierDetector(2, policy({ maxEjectionPercent: 0.5 }), clock);
    next.adopt(d, [1, -1]); // new 0 = old 1 (ejected), new 1 is new
    expect(next.eligible()).toEqual([false, true]);
    expect(next.ejectedCount()).toBe(1);
    clock.advance(600);
    expect(next.eligible()).toEqual([true, true]);
    expect(next.takeReturned()).toEqual([0]);
    expect(next.record(0, true, 10)?.reason).toBe('consecutive_failures'); // back on probation
  });

  it('a shorter list keeps no more ejections than its cap: the soonest to end come back', () => {
    const { clock, d } = setup(4, { maxEjectionPercent: 0.5 });
    expect(fail(d, 0, 3)?.endpoint).toBe(0);
    clock.advance(100);
    expect(fail(d, 1, 3)?.endpoint).toBe(1); // 1 ends 100 ms after 0
    const next = new OutlierDetector(2, policy({ maxEjectionPercent: 0.5 }), clock);
    next.adopt(d, [0, 1]);
    expect(next.eligible()).toEqual([true, false]);
    expect(next.ejectedCount()).toBe(1);
    expect(next.takeReturned()).toEqual([]); // brought back at adoption, not a return to report
  });

  it('streaks carry over; new endpoints start clean', () => {
    const { clock, d } = setup(2);
    fail(d, 0, 2);
    const next = new OutlierDetector(2, policy(), clock);
    next.adopt(d, [-1, 0]);
    expect(next.record(1, true, 10)?.endpoint).toBe(1); // 2 + 1 = 3 in a row
    expect(fail(next, 0, 2)).toBeUndefined();
  });
});

describe('ejection cap', () => {
  it('3 endpoints at 50%: at most one ejected; a refused ejection returns undefined', () => {
    const { clock, d } = setup(3, { maxEjectionPercent: 0.5 });
    expect(fail(d, 0, 3)?.endpoint).toBe(0);
    expect(fail(d, 1, 3)).toBeUndefined();
    expect(d.eligible()).toEqual([false, true, true]);
    expect(d.ejectedCount()).toBe(1);
    // Once 0 is back there is room: 1's streak still stands, so its next failure ejects it.
    clock.advance(1000);
    expect(d.record(1, true, 10)?.endpoint).toBe(1);
    expect(d.eligible()).toEqual([true, false, true]);
  });

  it('never ejects the last non-ejected endpoint, even at 100%', () => {
    const { d } = setup(3, { maxEjectionPercent: 1 });
    expect(fail(d, 0, 3)).toBeDefined();
    expect(fail(d, 1, 3)).toBeDefined();
    expect(fail(d, 2, 3)).toBeUndefined();
    expect(d.eligible()).toEqual([false, false, true]);
  });

  it('never ejects a lone endpoint', () => {
    const { d } = setup(1);
    expect(fail(d, 0, 10)).toBeUndefined();
    expect(d.eligible()).toEqual([true]);
  });

  it('ejects at least one when the percent is above 0 (Envoy), none at 0', () => {
    expect(fail(setup(4, { maxEjectionPercent: 0.1 }).d, 0, 3)).toBeDefined(); // floor(0.4) = 0 → 1
    expect(fail(setup(4, { maxEjectionPercent: 0 }).d, 0, 3)).toBeUndefined();
  });

  it('allows floor(n × percent)', () => {
    const { d } = setup(10, { maxEjectionPercent: 0.25 });
    const ejected = [0, 1, 2, 3].map((i) => fail(d, i, 3) !== undefined);
    expect(ejected).toEqual([true, true, false, false]);
  });
});

describe('modes', () => {
  it('shadow: same events with enforced = false, everything stays eligible', () => {
    const { clock, d } = setup(3, { mode: 'shadow', maxEjectionPercent: 0.5 });
    expect(fail(d, 0, 3)).toEqual({ endpoint: 0, reason: 'consecutive_failures', durationMs: 1000, enforced: false });
    expect(d.eligible()).toEqual([true, true, true]);
    expect(d.ejectedCount()).toBe(1);
    expect(fail(d, 0, 5)).toBeUndefined(); // would-be ejected: no repeat events
    expect(fail(d, 1, 3)).toBeUndefined(); // the cap applies as it would in enforce
    clock.advance(1000);
    expect(d.takeReturned()).toEqual([0]);
    expect(fail(d, 0, 3)?.durationMs).toBe(2000);
  });

  it('off: records nothing, ejects nothing', () => {
    const { d } = setup(3, {
      mode: 'off',
      successRate: { windowMs: 1000, minRequests: 1, minSuccessRate: 1 },
      latency: { factor: 1, minRequests: 1, minExcessMs: 0 },
    });
    expect(fail(d, 0, 50)).toBeUndefined();
    expect(d.record(7, true, 1)).toBeUndefined();
    expect(d.eligible()).toEqual([true, true, true]);
    expect(d.ejectedCount()).toBe(0);
  });
});
