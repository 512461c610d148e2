import { describe, expect, it } from 'vitest';
import {
  effectiveDeadlineMs,
  formatDeadlineHeader,
  MAX_DEADLINE_MS,
  parseDeadlineHeader,
  remainingMs,
} from '../../../../src/policies/timeout/deadline.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

describe('parseDeadlineHeader', () => {
  it.each([
    // value, maxMs, expected
    [undefined, undefined, { kind: 'none' }],
    [undefined, 1000, { kind: 'none' }],
    ['1500', undefined, { kind: 'ok', remainingMs: 1500 }],
    [' 1500 ', undefined, { kind: 'ok', remainingMs: 1500 }],
    ['0042', undefined, { kind: 'ok', remainingMs: 42 }],
    ['1', 1000, { kind: 'ok', remainingMs: 1 }],
    ['1500', 1000, { kind: 'ok', remainingMs: 1000 }], // capped at the policy's maximum
    ['1000', 1000, { kind: 'ok', remainingMs: 1000 }],
    ['99999999999', undefined, { kind: 'ok', remainingMs: MAX_DEADLINE_MS }], // capped for timers
    ['9'.repeat(400), 5000, { kind: 'ok', remainingMs: 5000 }],
    ['0', undefined, { kind: 'expired' }],
    ['000', 1000, { kind: 'expired' }],
    ['-0', undefined, { kind: 'expired' }],
    ['-250', undefined, { kind: 'expired' }],
    ['', undefined, { kind: 'invalid', reason: 'empty value' }],
    ['  ', undefined, { kind: 'invalid', reason: 'empty value' }],
    ['1.5', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['1e3', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['+100', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['100ms', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['0x10', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['abc', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }],
    ['1, 2', undefined, { kind: 'invalid', reason: 'not an integer number of milliseconds' }], // repeated header
  ] as const)('%j with max %s → %j', (value, maxMs, expected) => {
    expect(parseDeadlineHeader(value, maxMs)).toEqual(expected);
  });
});

describe('effectiveDeadlineMs', () => {
  it.each([
    // start, policy, header, expected
    [1000, undefined, undefined, Infinity],
    [1000, 500, undefined, 1500],
    [1000, undefined, 300, 1300],
    [1000, 500, 300, 1300], // the caller's shorter deadline wins
    [1000, 300, 500, 1300], // the policy's shorter timeout wins
    [1000, 0, 500, 1000],
  ] as const)('start %i, policy %s, header %s → %s', (start, policy, header, expected) => {
    expect(effectiveDeadlineMs(start, policy, header)).toBe(expected);
  });
});

describe('remainingMs', () => {
  it('counts down on the clock and stops at 0', () => {
    const clock = new FakeClock(1000);
    expect(remainingMs(1500, clock)).toBe(500);
    clock.advance(499.5);
    expect(remainingMs(1500, clock)).toBe(0.5);
    clock.advance(100);
    expect(remainingMs(1500, clock)).toBe(0);
  });

  it('no deadline leaves Infinity', () => {
    expect(remainingMs(Infinity, new FakeClock(123))).toBe(Infinity);
  });
});

describe('formatDeadlineHeader', () => {
  it.each([
    [1500, '1500'],
    [1500.9, '1500'], // rounded down: never promise more time than is left
    [0.4, '0'],
    [0, '0'],
    [-20, '0'],
    [-Infinity, '0'],
    [1e21, String(MAX_DEADLINE_MS)], // never exponent notation
  ])('%s → %j', (ms, expected) => {
    expect(formatDeadlineHeader(ms)).toBe(expected);
  });

  it('nothing to propagate without a deadline', () => {
    expect(formatDeadlineHeader(Infinity)).toBeUndefined();
    expect(formatDeadlineHeader(Number.NaN)).toBeUndefined();
  });

  it('round-trips through parseDeadlineHeader', () => {
    const clock = new FakeClock(0);
    const deadline = effectiveDeadlineMs(clock.now(), 2000, undefined);
    clock.advance(750.25);
    const header = formatDeadlineHeader(remainingMs(deadline, clock));
    expect(header).toBe('1249');
    expect(parseDeadlineHeader(header, undefined)).toEqual({ kind: 'ok', remainingMs: 1249 });
  });
});
