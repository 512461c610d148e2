// Who is admitted, who waits and who is refused, and the order waiters are served in.
import { describe, expect, it } from 'vitest';
import { decide, WaitQueue, type AdmissionRules, type AdmissionState } from '../../../../src/policies/admission/admission-queue.ts';
import type { Priority } from '../../../../src/policy/types.ts';

const RULES: AdmissionRules = { sheddableShare: 0.8, queue: { maxWaiting: 2, maxWaitMs: 50 } };
const state = (inFlight: number, waiting = 0, waitingDefault = waiting): AdmissionState => ({ inFlight, limit: 10, waiting, waitingDefault });

describe('decide', () => {
  it.each<[string, Priority, AdmissionState, string]>([
    ['default under the limit', 'default', state(9), 'admit'],
    ['critical under the limit', 'critical', state(0), 'admit'],
    ['sheddable under the sheddable share (floor(10 × 0.8) = 8)', 'sheddable', state(7), 'admit'],
    ['sheddable at the sheddable share', 'sheddable', state(8), 'refuse:sheddable_share'],
    ['sheddable at the limit: never waits', 'sheddable', state(10), 'refuse:limit'],
    ['default at the limit: waits', 'default', state(10), 'wait'],
    ['critical at the limit: waits', 'critical', state(10, 1), 'wait'],
    ['default at the limit, queue full', 'default', state(10, 2), 'refuse:queue_full'],
    ['critical at the limit, queue full of defaults: evicts the newest', 'critical', state(10, 2, 2), 'wait-evicting'],
    ['critical at the limit, queue full of criticals', 'critical', state(10, 2, 0), 'refuse:queue_full'],
    // Someone is waiting already: under the limit (it just grew) a new arrival still queues behind.
    ['default under the limit with waiters', 'default', state(5, 1), 'wait'],
    ['sheddable under the limit with waiters', 'sheddable', state(5, 1), 'refuse:limit'],
  ])('%s', (_name, priority, s, expected) => {
    const d = decide(priority, s, RULES, Infinity, undefined);
    expect(d.kind === 'refuse' ? `refuse:${d.reason}` : d.kind).toBe(expected);
  });

  it.each<[string, AdmissionRules, string]>([
    ['no queue at all (maxWaiting 0)', { ...RULES, queue: { maxWaiting: 0, maxWaitMs: 50 } }, 'refuse:limit'],
    ['no waiting allowed (maxWaitMs 0)', { ...RULES, queue: { maxWaiting: 10, maxWaitMs: 0 } }, 'refuse:limit'],
  ])('at the limit with %s: refused at once', (_name, rules, expected) => {
    const d = decide('critical', state(10), rules, Infinity, undefined);
    expect(d.kind === 'refuse' ? `refuse:${d.reason}` : d.kind).toBe(expected);
  });

  it.each([
    [0, 'refuse:sheddable_share'],
    [1, 'admit'],
  ])('sheddableShare %f: sheddable at 9 of 10 in flight is %s', (share, expected) => {
    const d = decide('sheddable', state(9), { ...RULES, sheddableShare: share }, Infinity, undefined);
    expect(d.kind === 'refuse' ? `refuse:${d.reason}` : d.kind).toBe(expected);
  });

  it.each<[string, number, number | undefined, string]>([
    ['less time left than the app takes', 49, 50, 'refuse:deadline'],
    ['as much time as the app takes', 50, 50, 'admit'],
    ['no deadline', Infinity, 50, 'admit'],
    ['no estimate yet (or deadline-aware off)', 1, undefined, 'admit'],
  ])('deadline-aware: %s', (_name, remainingMs, expectedMs, expected) => {
    for (const priority of ['critical', 'default'] as const) {
      const d = decide(priority, state(0), RULES, remainingMs, expectedMs);
      expect(d.kind === 'refuse' ? `refuse:${d.reason}` : d.kind).toBe(expected);
    }
  });
});

describe('WaitQueue', () => {
  it('serves critical waiters first, each line in arrival order', () => {
    const q = new WaitQueue<string>();
    q.push('default', 'd1');
    q.push('critical', 'c1');
    q.push('default', 'd2');
    q.push('critical', 'c2');
    expect(q.size).toBe(4);
    expect(q.defaults).toBe(2);
    expect(q.drain()).toEqual(['c1', 'c2', 'd1', 'd2']);
    expect(q.shift()).toBeUndefined();
  });

  it('gives up its newest default waiter for a critical one', () => {
    const q = new WaitQueue<string>();
    q.push('default', 'd1');
    q.push('default', 'd2');
    q.push('critical', 'c1');
    expect(q.popNewestDefault()).toBe('d2');
    expect(q.popNewestDefault()).toBe('d1');
    expect(q.popNewestDefault()).toBeUndefined();
    expect(q.drain()).toEqual(['c1']);
  });

  it('lets any waiter leave early, once', () => {
    const q = new WaitQueue<string>();
    const a = q.push('default', 'a');
    const b = q.push('default', 'b');
    const c = q.push('default', 'c');
    const x = q.push('critical', 'x');
    expect(q.remove(b)).toBe(true);
    expect(q.remove(b)).toBe(false);
    expect(q.remove(x)).toBe(true);
    expect(q.size).toBe(2);
    expect(q.drain()).toEqual(['a', 'c']);
    expect(q.remove(a)).toBe(false);
    expect(q.remove(c)).toBe(false);
    // Removing the only node, head and tail at once, leaves a usable queue.
    const d = q.push('default', 'd');
    q.remove(d);
    q.push('default', 'e');
    expect(q.drain()).toEqual(['e']);
  });
});
