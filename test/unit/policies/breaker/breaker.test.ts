// Every transition of the circuit breaker, on fake time. opossum reads Date.now and arms real
// timers, so vitest's fake timers drive it, and the breaker's Clock reads the same fake Date.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker, type BreakerState } from '../../../../src/policies/breaker/breaker.ts';
import type { CircuitBreakerPolicy } from '../../../../src/policy/types.ts';

const POLICY: CircuitBreakerPolicy = {
  mode: 'enforce',
  windowMs: 10_000,
  minRequests: 10,
  failureRatio: 0.5,
  slowCall: undefined,
  openMs: 1000,
  maxOpenMs: 3000,
  halfOpenProbes: 2,
  maxRequests: undefined,
  maxPending: undefined,
};

let breakers: Breaker[] = [];
let transitions: string[] = [];

function breaker(over: Partial<CircuitBreakerPolicy> = {}): Breaker {
  const b = new Breaker({ ...POLICY, ...over }, { now: () => Date.now() }, (to: BreakerState, openMs: number) => {
    transitions.push(to === 'open' ? `open ${openMs}` : to);
  });
  breakers.push(b);
  return b;
}

/** opossum decides a microtask or two after it is fed. */
const settle = () => vi.advanceTimersByTimeAsync(0);

/** Feeds n tries admitted now: `failed` each, with `latencyMs` to headers. */
function feed(b: Breaker, n: number, failed: boolean, latencyMs = 1): void {
  for (let i = 0; i < n; i++) {
    const gen = b.admit();
    expect(gen).toBeGreaterThanOrEqual(0);
    b.record(gen, failed, latencyMs);
  }
}

/** Drives a closed breaker to open. */
async function trip(b: Breaker): Promise<void> {
  feed(b, 10, true);
  await settle();
  expect(b.state).toBe('open');
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
  transitions = [];
});

afterEach(() => {
  for (const b of breakers) b.close();
  breakers = [];
  vi.useRealTimers();
});

describe('closed → open', () => {
  it('needs minRequests tries in the window, then opens when failures are over the ratio', async () => {
    const b = breaker();
    feed(b, 9, true);
    await settle();
    expect(b.state).toBe('closed');
    feed(b, 1, true);
    await settle();
    expect(b.state).toBe('open');
    expect(transitions).toEqual(['open 1000']);
  });

  it('stays closed at exactly the ratio (opossum opens above it)', async () => {
    const b = breaker();
    feed(b, 5, false);
    feed(b, 5, true);
    await settle();
    expect(b.state).toBe('closed');
    feed(b, 1, true);
    await settle();
    expect(b.state).toBe('open');
  });

  it('forgets failures older than the window', async () => {
    const b = breaker();
    feed(b, 9, true);
    await vi.advanceTimersByTimeAsync(11_000);
    feed(b, 1, true);
    feed(b, 9, false);
    await settle();
    expect(b.state).toBe('closed');
  });

  it('opens on slow calls over their own ratio, whatever the failures', async () => {
    const b = breaker({ slowCall: { thresholdMs: 100, ratio: 0.6 } });
    feed(b, 4, false, 5);
    feed(b, 5, false, 100);
    await settle();
    expect(b.state).toBe('closed'); // 9 tries: under minRequests
    feed(b, 1, false, 150);
    await settle();
    expect(b.state).toBe('open'); // 6 of 10 slow
  });
});

describe('open', () => {
  it('refuses, says how long is left, and half-opens after the open period', async () => {
    const b = breaker();
    await trip(b);
    expect(b.admit()).toBe(-1);
    expect(b.refusal()).toBe('open');
    await vi.advanceTimersByTimeAsync(400);
    expect(b.retryAfterMs()).toBe(600);
    await vi.advanceTimersByTimeAsync(600);
    expect(b.state).toBe('half-open');
    expect(transitions).toEqual(['open 1000', 'half-open']);
  });

  it('ignores outcomes of tries admitted before it opened', async () => {
    const b = breaker();
    const early = b.admit();
    await trip(b);
    await vi.advanceTimersByTimeAsync(1000);
    expect(b.state).toBe('half-open');
    b.record(early, false, 1); // would be a successful probe if it counted
    b.record(early, true, 1); // would re-open if it counted
    expect(b.state).toBe('half-open');
  });
});

describe('half-open', () => {
  async function halfOpen(b: Breaker): Promise<void> {
    await trip(b);
    await vi.advanceTimersByTimeAsync(1000);
    expect(b.state).toBe('half-open');
  }

  it('admits halfOpenProbes tries and closes when all succeed', async () => {
    const b = breaker();
    await halfOpen(b);
    const p1 = b.admit();
    const p2 = b.admit();
    expect(b.admit()).toBe(-1);
    expect(b.refusal()).toBe('half-open');
    b.record(p1, false, 1);
    expect(b.state).toBe('half-open');
    b.record(p2, false, 1);
    expect(b.state).toBe('closed');
    expect(transitions).toEqual(['open 1000', 'half-open', 'closed']);
  });

  it('re-opens on a failed probe, each time for twice as long, up to maxOpenMs', async () => {
    const b = breaker();
    await halfOpen(b);
    b.record(b.admit(), true, 1);
    expect(b.state).toBe('open');
    await vi.advanceTimersByTimeAsync(1999);
    expect(b.state).toBe('open');
    await vi.advanceTimersByTimeAsync(1);
    b.record(b.admit(), true, 1);
    await vi.advanceTimersByTimeAsync(3000);
    b.record(b.admit(), true, 1);
    expect(transitions).toEqual(['open 1000', 'half-open', 'open 2000', 'half-open', 'open 3000', 'half-open', 'open 3000']);
  });

  it('a slow probe counts as failed', async () => {
    const b = breaker({ slowCall: { thresholdMs: 100, ratio: 0.5 } });
    await halfOpen(b);
    b.record(b.admit(), false, 100);
    expect(b.state).toBe('open');
  });

  it('an abandoned probe (client left, local refusal) gives its slot back', async () => {
    const b = breaker({ halfOpenProbes: 1 });
    await halfOpen(b);
    const probe = b.admit();
    expect(b.admit()).toBe(-1);
    b.abandon(probe);
    expect(b.admit()).toBeGreaterThanOrEqual(0);
  });

  it('after closing, starts from a clean window and the base open period', async () => {
    const b = breaker();
    await halfOpen(b);
    b.record(b.admit(), true, 1); // open 2000
    await vi.advanceTimersByTimeAsync(2000);
    b.record(b.admit(), false, 1);
    b.record(b.admit(), false, 1);
    expect(b.state).toBe('closed');
    feed(b, 1, true); // the failures that opened it are gone with the old window
    await settle();
    expect(b.state).toBe('closed');
    await trip(b);
    expect(transitions.at(-1)).toBe('open 1000');
  });
});
