// Counts over a sliding time window, for several series at once (a budget's requests and retries;
// each endpoint's requests and failures). The window is a ring of buckets expired lazily when the
// clock is read, so there are no timers, and running sums make every read O(1) in the common case.

export class SlidingCounts {
  readonly #series: number;
  readonly #buckets: number;
  #bucketMs: number;
  /** counts[s * buckets + slot]: what series s added during that bucket. */
  readonly #counts: Float64Array;
  readonly #sums: Float64Array;
  /** floor(time / bucketMs) of the newest bucket; the ring holds head - buckets + 1 .. head. */
  #head: number;

  constructor(series: number, buckets: number, windowMs: number, nowMs: number) {
    this.#series = series;
    this.#buckets = buckets;
    this.#bucketMs = windowMs / buckets;
    this.#counts = new Float64Array(series * buckets);
    this.#sums = new Float64Array(series);
    this.#head = Math.floor(nowMs / this.#bucketMs);
  }

  add(series: number, n: number, nowMs: number): void {
    this.#rotate(nowMs);
    this.#counts[series * this.#buckets + this.#slot(this.#head)]! += n;
    this.#sums[series]! += n;
  }

  /** What series added within the window ending now. */
  sum(series: number, nowMs: number): number {
    this.#rotate(nowMs);
    return this.#sums[series]!;
  }

  /** Forgets everything series counted (an endpoint back from ejection starts afresh). */
  clear(series: number): void {
    this.#counts.fill(0, series * this.#buckets, (series + 1) * this.#buckets);
    this.#sums[series] = 0;
  }

  /**
   * A new window length: what the current window holds moves into the newest bucket of the new
   * ring, so counts already spent stay spent and age out after one new window.
   */
  resize(windowMs: number, nowMs: number): void {
    this.#rotate(nowMs);
    this.#bucketMs = windowMs / this.#buckets;
    this.#head = Math.floor(nowMs / this.#bucketMs);
    this.#counts.fill(0);
    const slot = this.#slot(this.#head);
    for (let s = 0; s < this.#series; s++) this.#counts[s * this.#buckets + slot] = this.#sums[s]!;
  }

  #slot(bucket: number): number {
    return ((bucket % this.#buckets) + this.#buckets) % this.#buckets;
  }

  /** Zero the buckets that slid out of the window since the last call. */
  #rotate(nowMs: number): void {
    const bucket = Math.floor(nowMs / this.#bucketMs);
    const gap = bucket - this.#head;
    // Same bucket, or the clock went backwards: keep counting into the newest bucket.
    if (!(gap > 0)) return;
    if (gap >= this.#buckets) {
      this.#counts.fill(0);
      this.#sums.fill(0);
    } else {
      for (let b = this.#head + 1; b <= bucket; b++) {
        const slot = this.#slot(b);
        for (let s = 0; s < this.#series; s++) {
          const at = s * this.#buckets + slot;
          this.#sums[s]! -= this.#counts[at]!;
          this.#counts[at] = 0;
        }
      }
    }
    this.#head = bucket;
  }
}
