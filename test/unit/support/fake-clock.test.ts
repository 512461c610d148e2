import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../support/fake-clock.ts';

describe('FakeClock', () => {
  it('starts at 0 or the given time and moves only when told', () => {
    expect(new FakeClock().now()).toBe(0);
    const clock = new FakeClock(1000);
    expect(clock.now()).toBe(1000);
    clock.advance(250.5);
    expect(clock.now()).toBe(1250.5);
    clock.advance(0);
    expect(clock.now()).toBe(1250.5);
    clock.set(10);
    expect(clock.now()).toBe(10);
  });

  it.each([-1, Number.NaN, Infinity])('advance rejects %s', (ms) => {
    expect(() => new FakeClock().advance(ms)).toThrow(`FakeClock.advance needs a finite ms >= 0, got ${ms}`);
  });

  it('rejects non-finite times', () => {
    expect(() => new FakeClock(Number.NaN)).toThrow('FakeClock start must be finite, got NaN');
    expect(() => new FakeClock().set(Infinity)).toThrow('FakeClock.set needs a finite ms, got Infinity');
  });
});
