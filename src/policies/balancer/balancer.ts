// Endpoint choice per upstream: a pure core with no timers or sockets. Time comes from the injected
// Clock (ms), randomness from the injected `random`, so a test replays every pick exactly.
//
// p2c-ewma is Finagle's / Linkerd's "peak EWMA" with power of two choices:
// - Each endpoint keeps a latency estimate. A sample above the current estimate replaces it at once
//   (peak-sensitive: a latency spike is believed immediately); a lower one is mixed in with weight
//   1 - w, w = exp(-elapsedMs / decayMs) since the last sample (slow recovery: an endpoint must be
//   fast for a while before it is trusted again).
// - Between samples the estimate decays toward 0 with the same w, as in Linkerd (tower's
//   PeakEwma). Without that, an endpoint that was slow once is never picked against faster peers,
//   so it never gets the sample that would prove it recovered. The decay is computed on read and
//   never stored, so reading a cost (metrics, tests) does not change any later decision.
// - cost = estimate × (inFlight + 1): in-flight tries make an endpoint look slower before their
//   latency is known, so a hung endpoint (tries started, none ending) stops being picked.
// - pick: two distinct eligible endpoints uniformly at random, the cheaper wins. Two choices rather
//   than the global minimum so that many proxies sharing stale estimates do not all herd onto the
//   same "best" endpoint.
import type { Clock } from '../../stack/types.ts';

export type BalancerAlgorithm = 'p2c-ewma' | 'round-robin';

export interface BalancerOptions {
  /** EWMA decay time constant in ms (Linkerd uses 10 s). Finite, > 0. */
  readonly decayMs: number;
  /** Latency assumed for an endpoint with no samples yet, ms. Finite, >= 0. */
  readonly defaultRttMs: number;
}

export interface Balancer {
  /**
   * Index of the endpoint for the next try. `eligible[i] === false` excludes endpoint i; when none
   * is eligible, picks among all (never refuse for lack of choice: ejection caps handle that).
   */
  pick(eligible?: readonly boolean[]): number;
  /** A try started on endpoint i (in-flight +1). */
  start(i: number): void;
  /** The try on endpoint i ended after latencyMs (until response headers, or until it failed). */
  end(i: number, latencyMs: number): void;
  /** Current cost of endpoint i, for tests and metrics. */
  cost(i: number): number;
  inFlight(i: number): number;
  /**
   * Takes over the latency estimates of `from` (a balancer of the same algorithm over the
   * previous endpoint list): endpoint i gets from's endpoint map[i], or keeps its default when
   * map[i] is -1. In-flight counts stay with `from`: its tries end there.
   */
  adopt(from: Balancer, map: readonly number[]): void;
}

export function createBalancer(
  algorithm: BalancerAlgorithm,
  endpointCount: number,
  options: BalancerOptions,
  clock: Clock,
  random: () => number,
): Balancer {
  if (!(Number.isSafeInteger(endpointCount) && endpointCount >= 1)) {
    throw new RangeError(`balancer endpointCount must be an integer >= 1, got ${endpointCount}`);
  }
  if (!(options.decayMs > 0 && Number.isFinite(options.decayMs))) {
    throw new RangeError(`balancer decayMs must be a finite number > 0, got ${options.decayMs}`);
  }
  if (!(options.defaultRttMs >= 0 && Number.isFinite(options.defaultRttMs))) {
    throw new RangeError(`balancer defaultRttMs must be a finite number >= 0, got ${options.defaultRttMs}`);
  }
  switch (algorithm) {
    case 'p2c-ewma':
      return new P2cEwmaBalancer(endpointCount, options, clock, random);
    case 'round-robin':
      return new RoundRobinBalancer(endpointCount, options, clock);
    default:
      throw new RangeError(`balancer algorithm must be 'p2c-ewma' or 'round-robin', got ${String(algorithm)}`);
  }
}

/** Number of endpoints `eligible` lets through; 0 means "none", and the caller then uses all. */
function countEligible(eligible: readonly boolean[] | undefined, n: number): number {
  if (eligible === undefined) return n;
  let m = 0;
  for (let i = 0; i < n; i++) if (eligible[i] !== false) m++;
  return m;
}

/** Index of the k-th (0-based) endpoint that `eligible` lets through. */
function nthEligible(eligible: readonly boolean[], n: number, k: number): number {
  for (let i = 0; i < n; i++) {
    if (eligible[i] !== false && k-- === 0) return i;
  }
  return n - 1; // unreachable when k < countEligible
}

/** Uniform integer in [0, m), robust to a random() that returns exactly 1 or garbage. */
function below(random: () => number, m: number): number {
  const k = Math.floor(random() * m);
  return k >= 0 && k < m ? k : k >= m ? m - 1 : 0;
}

/**
 * Latency estimates and in-flight counts, shared by both algorithms (round-robin keeps them for
 * metrics). Typed arrays: allocated once, no per-call garbage.
 */
class EndpointStats {
  readonly n: number;
  readonly #clock: Clock;
  readonly #decayMs: number;
  readonly #estimateMs: Float64Array;
  /** Clock time the estimate was last set. */
  readonly #stampMs: Float64Array;
  readonly #inFlight: Float64Array;
  /** 1 once the endpoint has a real sample: the default is a guess, the first sample replaces it. */
  readonly #sampled: Uint8Array;

  constructor(n: number, options: BalancerOptions, clock: Clock) {
    this.n = n;
    this.#clock = clock;
    this.#decayMs = options.decayMs;
    this.#estimateMs = new Float64Array(n).fill(options.defaultRttMs);
    this.#stampMs = new Float64Array(n).fill(clock.now());
    this.#inFlight = new Float64Array(n);
    this.#sampled = new Uint8Array(n);
  }

  check(i: number): void {
    if (!(Number.isInteger(i) && i >= 0 && i < this.n)) {
      throw new RangeError(`balancer endpoint index must be an integer in [0, ${this.n - 1}], got ${i}`);
    }
  }

  start(i: number): void {
    this.check(i);
    this.#inFlight[i]! += 1;
  }

  end(i: number, latencyMs: number): void {
    this.check(i);
    // An end without a start (or a double end) must not drive the count negative: a negative
    // in-flight would make the endpoint look cheaper than idle and attract traffic.
    if (this.#inFlight[i]! > 0) this.#inFlight[i]! -= 1;
    // A broken measurement is dropped rather than poisoning the estimate (NaN never recovers).
    if (!(latencyMs >= 0 && Number.isFinite(latencyMs))) return;
    const now = this.#clock.now();
    if (this.#sampled[i] === 0) {
      this.#sampled[i] = 1;
      this.#estimateMs[i] = latencyMs;
    } else {
      const w = this.#weight(i, now);
      const current = this.#estimateMs[i]! * w;
      this.#estimateMs[i] = latencyMs > current ? latencyMs : current + latencyMs * (1 - w);
    }
    this.#stampMs[i] = now;
  }

  /** Latency estimate now: the stored one decayed toward 0 for the time since it was set. */
  estimate(i: number, now: number): number {
    return this.#estimateMs[i]! * this.#weight(i, now);
  }

  cost(i: number, now: number): number {
    return this.estimate(i, now) * (this.#inFlight[i]! + 1);
  }

  inFlight(i: number): number {
    this.check(i);
    return this.#inFlight[i]!;
  }

  adopt(from: EndpointStats, map: readonly number[]): void {
    for (let i = 0; i < this.n; i++) {
      const j = map[i] ?? -1;
      if (j < 0 || j >= from.n) continue;
      this.#estimateMs[i] = from.#estimateMs[j]!;
      this.#stampMs[i] = from.#stampMs[j]!;
      this.#sampled[i] = from.#sampled[j]!;
    }
  }

  #weight(i: number, now: number): number {
    const elapsedMs = now - this.#stampMs[i]!;
    // A clock that ran backwards decays nothing.
    return elapsedMs > 0 ? Math.exp(-elapsedMs / this.#decayMs) : 1;
  }
}

/** What both algorithms share: per-endpoint stats, so metrics read the same either way. */
abstract class StatsBalancer implements Balancer {
  protected readonly stats: EndpointStats;
  protected readonly clock: Clock;

  constructor(n: number, options: BalancerOptions, clock: Clock) {
    this.stats = new EndpointStats(n, options, clock);
    this.clock = clock;
  }

  abstract pick(eligible?: readonly boolean[]): number;

  start(i: number): void {
    this.stats.start(i);
  }

  end(i: number, latencyMs: number): void {
    this.stats.end(i, latencyMs);
  }

  cost(i: number): number {
    this.stats.check(i);
    return this.stats.cost(i, this.clock.now());
  }

  inFlight(i: number): number {
    return this.stats.inFlight(i);
  }

  adopt(from: Balancer, map: readonly number[]): void {
    if (from instanceof StatsBalancer) this.stats.adopt(from.stats, map);
  }
}

class P2cEwmaBalancer extends StatsBalancer {
  readonly #random: () => number;

  constructor(n: number, options: BalancerOptions, clock: Clock, random: () => number) {
    super(n, options, clock);
    this.#random = random;
  }

  pick(eligible?: readonly boolean[]): number {
    const n = this.stats.n;
    if (n === 1) return 0;
    let m = countEligible(eligible, n);
    // None eligible: choose among all rather than refuse (the ejection cap keeps this rare).
    const among = m === 0 ? undefined : eligible;
    if (m === 0) m = n;
    if (m === 1) return nthEligible(among!, n, 0);
    // Two distinct slots: the second is drawn from the m - 1 slots left and shifted past the first.
    const ka = below(this.#random, m);
    let kb = below(this.#random, m - 1);
    if (kb >= ka) kb++;
    const a = among === undefined || m === n ? ka : nthEligible(among, n, ka);
    const b = among === undefined || m === n ? kb : nthEligible(among, n, kb);
    const now = this.clock.now();
    return this.stats.cost(b, now) < this.stats.cost(a, now) ? b : a;
  }
}

class RoundRobinBalancer extends StatsBalancer {
  /** Where the next scan starts. */
  #next = 0;

  pick(eligible?: readonly boolean[]): number {
    const n = this.stats.n;
    let chosen = this.#next;
    if (eligible !== undefined) {
      // First eligible at or after the cursor; if none is eligible, the cursor itself.
      for (let step = 0; step < n; step++) {
        const i = (this.#next + step) % n;
        if (eligible[i] !== false) {
          chosen = i;
          break;
        }
      }
    }
    this.#next = (chosen + 1) % n;
    return chosen;
  }
}
