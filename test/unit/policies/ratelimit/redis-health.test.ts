import { describe, expect, it } from 'vitest';
import { RedisHealth } from '../../../../src/policies/ratelimit/redis-health.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

function setup(replicas: number | 'auto' = 'auto', minReplicas = 1) {
  const clock = new FakeClock(1000);
  return { clock, health: new RedisHealth({ replicas, minReplicas }, clock) };
}

describe('RedisHealth', () => {
  it.each([
    [{ replicas: 0, minReplicas: 1 }, 'redis replicas must be auto or an integer >= 1, got 0'],
    [{ replicas: 'auto' as const, minReplicas: 0 }, 'redis minReplicas must be an integer >= 1, got 0'],
  ])('rejects %j', (policy, message) => {
    expect(() => new RedisHealth(policy, new FakeClock())).toThrow(new RangeError(message));
  });

  it('starts connecting: requests fall back until the first probe reaches Redis', () => {
    const { health } = setup();
    expect(health.state).toBe('connecting');
    expect(health.usable).toBe(false);
    expect(health.probeSucceeded()).toBe(true);
    expect(health.usable).toBe(true);
  });

  it('a failed first contact is an outage (a fallback activation)', () => {
    const { health } = setup();
    expect(health.probeFailed()).toBe(true);
    expect(health.state).toBe('down');
  });

  it('one activation per outage, however many calls fail in it', () => {
    const { clock, health } = setup();
    health.probeSucceeded();
    clock.advance(5);
    expect(health.callFailed()).toBe(true);
    expect(health.sinceMs).toBe(1005);
    expect(health.callFailed()).toBe(false);
    expect(health.probeFailed()).toBe(false);
    expect(health.usable).toBe(false);
    clock.advance(100);
    expect(health.probeSucceeded()).toBe(true);
    expect(health.sinceMs).toBe(1105);
    expect(health.probeSucceeded()).toBe(false);
    expect(health.callFailed()).toBe(true); // a new outage
  });

  it('remembers the last replica count through an outage, never below the floor', () => {
    const { health } = setup('auto', 2);
    expect(health.replicas()).toBe(2); // never seen: the floor
    health.probeSucceeded();
    health.observeReplicas(5);
    health.callFailed();
    expect(health.replicas()).toBe(5);
    expect(health.share()).toBe(1 / 5);
    health.observeReplicas(1);
    expect(health.replicas()).toBe(2);
    health.observeReplicas(0); // nonsense is ignored
    health.observeReplicas(Number.NaN);
    expect(health.replicas()).toBe(2);
  });

  it('a fixed replica count ignores what the probe sees', () => {
    const { health } = setup(3);
    health.observeReplicas(10);
    expect(health.replicas()).toBe(3);
  });
});
