// An upstream's recent latency to response headers, for hedging's `delayMs: p95`. A ring of the
// last `capacity` samples: O(1) per sample, fixed memory, exact quantiles of what it holds. The
// sorted view is rebuilt lazily, at most once per `capacity / 32` new samples, so a busy upstream
// pays a sort of a few hundred numbers every few dozen requests, not one per request.
//
// Why not a library: tdigest (what prom-client's Summary uses) and hdr-histogram-js/DDSketch
// accumulate forever, so "recent" would need rotating sketches on a timer; a ring of numbers is
// shorter than that glue. Count-based, not time-based: a quiet upstream keeps its estimate
// instead of falling back to "unknown" (no hedging) after every lull.

export interface LatencyTrackerOptions {
  /** Samples kept, the most recent ones (integer 1..65536; default 512). */
  readonly capacity?: number;
  /** Fewer samples than this: no estimate (integer 1..capacity; default 20). */
  readonly minSamples?: number;
}

const DEFAULT_CAPACITY = 512;
const DEFAULT_MIN_SAMPLES = 20;
const MAX_CAPACITY = 65536;

/** An upstream's observed latency to response headers (build lifetime, shared by its routes). */
export class LatencyTracker {
  readonly #ring: Float64Array;
  readonly #minSamples: number;
  /** New samples after which the sorted view is stale. */
  readonly #refreshEvery: number;
  #next = 0;
  #count = 0;
  #sorted: Float64Array | undefined;
  /** Samples recorded since #sorted was built. */
  #since = 0;

  constructor(options: LatencyTrackerOptions = {}) {
    const capacity = options.capacity ?? DEFAULT_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
      throw new RangeError(`latency tracker capacity must be an integer from 1 to ${MAX_CAPACITY}, got ${capacity}`);
    }
    const minSamples = options.minSamples ?? Math.min(DEFAULT_MIN_SAMPLES, capacity);
    if (!Number.isInteger(minSamples) || minSamples < 1 || minSamples > capacity) {
      throw new RangeError(`latency tracker minSamples must be an integer from 1 to capacity (${capacity}), got ${minSamples}`);
    }
    this.#ring = new Float64Array(capacity);
    this.#minSamples = minSamples;
    this.#refreshEvery = Math.max(1, Math.floor(capacity / 32));
  }

  /** A try got its response headers after `ms`. Negative or non-finite values are ignored. */
  record(ms: number): void {
    if (!(ms >= 0) || ms === Infinity) return;
    this.#ring[this.#next] = ms;
    this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1;
    if (this.#count < this.#ring.length) this.#count++;
    this.#since++;
  }

  /** Samples held now (at most capacity). */
  get count(): number {
    return this.#count;
  }

  /**
   * The q-quantile (0 < q <= 1, nearest rank) of the samples held, or undefined before
   * minSamples. May lag the newest capacity/32 samples.
   */
  quantile(q: number): number | undefined {
    if (!(q > 0 && q <= 1)) throw new RangeError(`quantile must be in (0, 1], got ${q}`);
    if (this.#count < this.#minSamples) return undefined;
    let sorted = this.#sorted;
    if (sorted === undefined || this.#since >= this.#refreshEvery) {
      sorted = this.#ring.slice(0, this.#count).sort();
      this.#sorted = sorted;
      this.#since = 0;
    }
    return sorted[Math.ceil(q * sorted.length) - 1] as number;
  }

  /** The p95 latency now, or undefined before enough samples. */
  p95(): number | undefined {
    return this.quantile(0.95);
  }

  /** The median latency now, or undefined before enough samples. */
  p50(): number | undefined {
    return this.quantile(0.5);
  }
}
