// Why local rules do not go through bottleneck's job queue: pinned behaviour of bottleneck 2.19.5's
// local datastore, asserted by counts only. It admits exactly (the submit lock serialises
// decisions), but no decision is made without timers: each passes serial locks (Sync.js, whose
// queues are unbounded) and setTimeout(0) hops (LocalDatastore.yieldLoop, Bottleneck._run), each at
// least 1 ms on Node: measured, 3.5 ms per sequential decision and 1.9 s for 1000 concurrent ones. sluice's own bucket decides the same requests synchronously (layer.test.ts).
import Bottleneck from 'bottleneck';
import { afterEach, describe, expect, it, vi } from 'vitest';

describe('bottleneck local datastore as an admission check', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('admits exactly the reservoir with highWater 0 + OVERFLOW, but every decision waits for timers', async () => {
    const N = 40;
    const B = 10;
    const timers = vi.spyOn(globalThis, 'setTimeout');
    const limiter = new Bottleneck({ reservoir: B, highWater: 0, strategy: Bottleneck.strategy.OVERFLOW });
    let admitted = 0;
    let refused = 0;
    const jobs = Array.from({ length: N }, () =>
      limiter
        .schedule(() => {
          admitted++;
          return Promise.resolve();
        })
        .catch(() => {
          refused++;
        }),
    );
    // Microtasks alone decide nothing: every request is still waiting for a timer.
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(admitted + refused).toBe(0);

    await Promise.all(jobs);
    expect(admitted).toBe(B);
    expect(refused).toBe(N - B);
    // A refusal waits for one timer (submit), an admission for four (submit, register, run, free).
    expect(timers.mock.calls.length).toBeGreaterThanOrEqual(N + 3 * B);
    await limiter.disconnect();
  });
});
