// The completed-response store of one sidecar: least recently used out first, under two caps at
// once (entries and bytes), with a time to live checked lazily against an injected clock. No
// timers: an expired entry is dropped when it is next looked at or when it reaches the cold end.
//
// A Map keeps insertion order, so "delete then set" moves a key to the hot end and the first key
// is the coldest: the whole LRU is a Map and two counters. lru-cache (isaacs) was the library to
// take, but it preallocates typed arrays sized to `max` (the policy allows 10 million entries)
// and fixes both caps at construction, while a policy update must shrink or grow them in place.
import type { Clock } from '../../stack/types.ts';

/** What the LRU needs to know of a value: its cost and when it stops being valid (clock ms). */
export interface LruValue {
  readonly bytes: number;
  readonly expiresAtMs: number;
}

export interface LruLimits {
  /** Entries at once, >= 1. */
  readonly maxEntries: number;
  /** Sum of entry bytes at once, >= 0. */
  readonly maxBytes: number;
}

export type EvictionReason = 'ttl' | 'lru';

export class ResponseLru<V extends LruValue> {
  readonly #clock: Clock;
  readonly #onEvict: (reason: EvictionReason, key: string, value: V) => void;
  readonly #map = new Map<string, V>();
  #limits: LruLimits;
  #bytes = 0;

  constructor(limits: LruLimits, clock: Clock, onEvict: (reason: EvictionReason, key: string, value: V) => void = () => {}) {
    this.#limits = checkLimits(limits);
    this.#clock = clock;
    this.#onEvict = onEvict;
  }

  get size(): number {
    return this.#map.size;
  }

  /** Sum of the bytes of the entries held (expired ones not yet dropped included). */
  get bytes(): number {
    return this.#bytes;
  }

  /** The live value for `key`, now the most recently used; an expired one is dropped (ttl). */
  get(key: string): V | undefined {
    const value = this.#map.get(key);
    if (value === undefined) return undefined;
    this.#map.delete(key);
    if (value.expiresAtMs <= this.#clock.now()) {
      this.#bytes -= value.bytes;
      this.#onEvict('ttl', key, value);
      return undefined;
    }
    this.#map.set(key, value);
    return value;
  }

  /**
   * Stores `value` as the most recently used, replacing any value of `key` (not an eviction),
   * then evicts from the cold end until both caps hold. false, and nothing stored, when the value
   * alone is over maxBytes: it could only be kept by emptying the store, and still not fit.
   */
  set(key: string, value: V): boolean {
    if (value.bytes > this.#limits.maxBytes) return false;
    const old = this.#map.get(key);
    if (old !== undefined) {
      this.#map.delete(key);
      this.#bytes -= old.bytes;
    }
    this.#dropExpiredCold();
    this.#map.set(key, value);
    this.#bytes += value.bytes;
    this.#fit();
    return true;
  }

  delete(key: string): boolean {
    const value = this.#map.get(key);
    if (value === undefined) return false;
    this.#map.delete(key);
    this.#bytes -= value.bytes;
    return true;
  }

  /** New caps (a policy update): entries over them are evicted now, coldest first. */
  resize(limits: LruLimits): void {
    this.#limits = checkLimits(limits);
    this.#fit();
  }

  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }

  /** Evicts coldest first until both caps hold; an expired victim counts as ttl, a live one as lru. */
  #fit(): void {
    const { maxEntries, maxBytes } = this.#limits;
    if (this.#map.size <= maxEntries && this.#bytes <= maxBytes) return;
    const now = this.#clock.now();
    for (const [key, value] of this.#map) {
      if (this.#map.size <= maxEntries && this.#bytes <= maxBytes) return;
      this.#map.delete(key);
      this.#bytes -= value.bytes;
      this.#onEvict(value.expiresAtMs <= now ? 'ttl' : 'lru', key, value);
    }
  }

  /**
   * Drops expired entries at the cold end, stopping at the first live one: each insert pays for
   * what it finds there, so expired entries that nobody asks for again still leave (amortised
   * O(1); one touched recently but inserted long ago waits for its own get or its turn).
   */
  #dropExpiredCold(): void {
    const now = this.#clock.now();
    for (const [key, value] of this.#map) {
      if (value.expiresAtMs > now) return;
      this.#map.delete(key);
      this.#bytes -= value.bytes;
      this.#onEvict('ttl', key, value);
    }
  }
}

function checkLimits(l: LruLimits): LruLimits {
  if (!(Number.isSafeInteger(l.maxEntries) && l.maxEntries >= 1)) {
    throw new RangeError(`idempotency maxEntries must be an integer >= 1, got ${l.maxEntries}`);
  }
  if (!(Number.isSafeInteger(l.maxBytes) && l.maxBytes >= 0)) {
    throw new RangeError(`idempotency maxBytes must be an integer >= 0, got ${l.maxBytes}`);
  }
  return { maxEntries: l.maxEntries, maxBytes: l.maxBytes };
}
