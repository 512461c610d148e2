// One token bucket per descriptor value (tenant, source, path prefix), at most maxKeys of them.
// A Map in least-recently-used order: a touched key moves to the end, the first key is the oldest.
//
// Beyond maxKeys a new value may only take the place of the oldest one if that bucket has refilled
// completely: a full bucket is exactly what a new one would be, so forgetting it loses nothing.
// Otherwise the new value is charged to one overflow bucket shared by all such values. Evicting a
// bucket that is still draining would hand its owner a fresh burst on return, so a client rotating
// through more values than maxKeys could mint bursts; with the overflow bucket, the excess values
// together get one rule's worth of rate.
import { TokenBucket } from './token-bucket.ts';

export class KeyedBuckets {
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #maxKeys: number;
  #ratePerSecond: number;
  #burst: number;
  #overflow: TokenBucket | undefined;

  constructor(ratePerSecond: number, burst: number, maxKeys: number) {
    if (!(Number.isSafeInteger(maxKeys) && maxKeys >= 1)) throw new RangeError(`maxKeys must be an integer >= 1, got ${maxKeys}`);
    this.#ratePerSecond = ratePerSecond;
    this.#burst = burst;
    this.#maxKeys = maxKeys;
  }

  /** The bucket that decides for `key`: its own (created full on first use) or the overflow bucket. */
  bucketFor(key: string, nowMs: number): TokenBucket {
    const buckets = this.#buckets;
    const existing = buckets.get(key);
    if (existing !== undefined) {
      buckets.delete(key);
      buckets.set(key, existing);
      return existing;
    }
    if (buckets.size >= this.#maxKeys) {
      const [oldestKey, oldest] = buckets.entries().next().value as [string, TokenBucket];
      if (!oldest.isFull(nowMs)) return (this.#overflow ??= new TokenBucket(this.#ratePerSecond, this.#burst, nowMs));
      buckets.delete(oldestKey);
    }
    const bucket = new TokenBucket(this.#ratePerSecond, this.#burst, nowMs);
    buckets.set(key, bucket);
    return bucket;
  }

  /** Whether `bucket` (from bucketFor) is the shared overflow bucket. */
  isOverflow(bucket: TokenBucket): boolean {
    return bucket === this.#overflow;
  }

  /** Descriptor values tracked now (the overflow bucket not included); never above maxKeys. */
  get size(): number {
    return this.#buckets.size;
  }

  /** New rate and burst for every bucket, each keeping its fill ratio (see TokenBucket.reconfigure). */
  reconfigure(ratePerSecond: number, burst: number, nowMs: number): void {
    this.#ratePerSecond = ratePerSecond;
    this.#burst = burst;
    for (const b of this.#buckets.values()) b.reconfigure(ratePerSecond, burst, nowMs);
    this.#overflow?.reconfigure(ratePerSecond, burst, nowMs);
  }
}
