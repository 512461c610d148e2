// The completed-response LRU alone: both caps, lazy TTL on a fake clock, and why each entry left.
import { describe, expect, it } from 'vitest';
import { ResponseLru, type EvictionReason, type LruLimits } from '../../../../src/policies/idempotency/lru.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

interface V {
  readonly bytes: number;
  readonly expiresAtMs: number;
  readonly name: string;
}

function lru(limits: LruLimits, clock = new FakeClock()) {
  const evicted: [EvictionReason, string][] = [];
  const cache = new ResponseLru<V>(limits, clock, (reason, key) => evicted.push([reason, key]));
  const put = (key: string, bytes: number, ttlMs = 1000): boolean => cache.set(key, { bytes, expiresAtMs: clock.now() + ttlMs, name: key });
  return { cache, evicted, clock, put };
}

describe('ResponseLru', () => {
  it('keeps at most maxEntries, dropping the least recently used', () => {
    const { cache, evicted, put } = lru({ maxEntries: 2, maxBytes: 1000 });
    put('a', 1);
    put('b', 1);
    expect(cache.get('a')?.name).toBe('a'); // a is now the most recent
    put('c', 1);
    expect(evicted).toEqual([['lru', 'b']]);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.size).toBe(2);
  });

  it('keeps at most maxBytes, evicting as many cold entries as the new one needs', () => {
    const { cache, evicted, put } = lru({ maxEntries: 100, maxBytes: 100 });
    put('a', 40);
    put('b', 40);
    put('c', 10);
    expect(cache.bytes).toBe(90);
    put('d', 90);
    expect(evicted).toEqual([
      ['lru', 'a'],
      ['lru', 'b'],
    ]);
    expect(cache.bytes).toBe(100);
    expect([cache.get('c')?.name, cache.get('d')?.name]).toEqual(['c', 'd']);
  });

  it('refuses a value larger than maxBytes and keeps what it holds', () => {
    const { cache, evicted, put } = lru({ maxEntries: 10, maxBytes: 100 });
    put('a', 60);
    expect(put('huge', 101)).toBe(false);
    expect(evicted).toEqual([]);
    expect(cache.get('a')?.name).toBe('a');
    expect(cache.get('huge')).toBeUndefined();
  });

  it('replacing a key is no eviction and recounts its bytes', () => {
    const { cache, evicted, put } = lru({ maxEntries: 2, maxBytes: 100 });
    put('a', 50);
    put('a', 20);
    expect(cache.size).toBe(1);
    expect(cache.bytes).toBe(20);
    expect(evicted).toEqual([]);
  });

  it('expires lazily: nothing leaves on its own, an expired entry is dropped when asked for', () => {
    const { cache, evicted, put, clock } = lru({ maxEntries: 10, maxBytes: 100 });
    put('a', 10, 1000);
    clock.advance(999);
    expect(cache.get('a')?.name).toBe('a');
    clock.advance(1);
    expect(cache.size).toBe(1); // still held: no timers
    expect(cache.get('a')).toBeUndefined();
    expect(evicted).toEqual([['ttl', 'a']]);
    expect([cache.size, cache.bytes]).toEqual([0, 0]);
  });

  it('drops expired entries at the cold end when something is stored', () => {
    const { cache, evicted, put, clock } = lru({ maxEntries: 10, maxBytes: 100 });
    put('old1', 10, 100);
    put('old2', 10, 100);
    put('young', 10, 10_000);
    clock.advance(500);
    put('new', 10);
    expect(evicted).toEqual([
      ['ttl', 'old1'],
      ['ttl', 'old2'],
    ]);
    expect(cache.size).toBe(2);
  });

  it('an expired entry evicted to make room counts as ttl, a live one as lru', () => {
    const { evicted, put, clock } = lru({ maxEntries: 2, maxBytes: 100 });
    put('live', 10, 10_000);
    put('short', 10, 100);
    clock.advance(200);
    // 'live' is colder and live, 'short' expired but hotter: the cold-end sweep stops at 'live'.
    put('c', 10);
    expect(evicted).toEqual([['lru', 'live']]);
    put('d', 10);
    expect(evicted).toEqual([
      ['lru', 'live'],
      ['ttl', 'short'],
    ]);
  });

  it('resize shrinks both caps in place', () => {
    const { cache, evicted, put } = lru({ maxEntries: 10, maxBytes: 100 });
    for (const k of ['a', 'b', 'c', 'd']) put(k, 20);
    cache.resize({ maxEntries: 3, maxBytes: 40 });
    expect(evicted.map(([, k]) => k)).toEqual(['a', 'b']);
    expect([cache.size, cache.bytes]).toEqual([2, 40]);
    cache.resize({ maxEntries: 1000, maxBytes: 1000 });
    expect(put('e', 500)).toBe(true);
  });

  it('names the bad value when built with nonsense caps', () => {
    const clock = new FakeClock();
    expect(() => new ResponseLru({ maxEntries: 0, maxBytes: 1 }, clock)).toThrow('idempotency maxEntries must be an integer >= 1, got 0');
    expect(() => new ResponseLru({ maxEntries: 1, maxBytes: -1 }, clock)).toThrow('idempotency maxBytes must be an integer >= 0, got -1');
  });
});
