// One sample window of the adaptive limit: what the requests that got their response headers
// in it saw. The limit moves once per window, on the window's mean latency and how sure that
// mean is (its standard error), never on one request.
//
// The mean, not a median or a minimum (Netflix's default AverageSampleWindow does the same):
// Little's law holds for the mean, so with L requests in flight on N workers the mean is L/N
// service times and the queue estimate comes out exactly L − N. A median misses a queue that
// holds fewer than half the requests (tried: the limit settled near 1.5 N).

/** A mean latency and its standard error, ms. */
export interface Latency {
  readonly meanMs: number;
  /** Standard error of the mean: 0 when every sample was the same (or there was one). */
  readonly seMs: number;
}

export class SampleWindow {
  /** When the window opened (clock ms). */
  startMs = 0;
  count = 0;
  /** Most requests in flight any sample started with (itself included). */
  maxInFlight = 0;
  /** A drop happened in this window: the limit was already cut for it. */
  dropped = false;
  #sum = 0;
  #sumSq = 0;

  reset(startMs: number): void {
    this.startMs = startMs;
    this.count = 0;
    this.maxInFlight = 0;
    this.dropped = false;
    this.#sum = 0;
    this.#sumSq = 0;
  }

  add(latencyMs: number, inFlight: number): void {
    this.count += 1;
    this.#sum += latencyMs;
    this.#sumSq += latencyMs * latencyMs;
    if (inFlight > this.maxInFlight) this.maxInFlight = inFlight;
  }

  /** undefined when the window holds no sample. */
  latency(): Latency | undefined {
    const n = this.count;
    if (n === 0) return undefined;
    const meanMs = this.#sum / n;
    // Sample variance; rounding can make it a hair below 0 when all samples are equal.
    const variance = n > 1 ? Math.max(0, (this.#sumSq - n * meanMs * meanMs) / (n - 1)) : 0;
    return { meanMs, seMs: Math.sqrt(variance / n) };
  }
}
