// The app's concurrency limit: a pure state machine with an injected clock and no timers. With
// `adaptive` off it is the static maxConcurrency. On, it learns: latency samples (admission to
// response headers) are gathered per window of at least sampleWindowMs and minSamples, and each
// window moves the limit by one Vegas step (./vegas.ts) against the app's no-load latency,
// bounded to [minLimit, maxConcurrency].
//
// - Drops (the app timed out or answered 503) cut the limit ×0.9 at once, at most once per
//   window, and that window then makes no Vegas step.
// - The no-load latency is measured by probes: once right after start-up (the first window, at
//   initialLimit, is only a baseline until then) and every minRttProbeIntervalMs after (±10%
//   jitter, so sidecars do not probe in step). A probe lowers the limit to
//   max(minLimit, ceil(limit × probeRatio)) for two windows: one for the app's internal queue to
//   drain, one to measure. What finishes in the second, of requests started under the probe, is
//   the new no-load latency. Measuring in the first window would keep only the requests that
//   both started and finished in it, the short ones (tried: exponential service times read 17%
//   low). Envoy pins the limit to a tiny min_concurrency for its probe, refusing most traffic
//   meanwhile; a share of the limit costs a bounded share of the traffic for two windows.
// - Unlike Vegas, a window faster than the no-load latency does not lower it: the luckiest of a
//   hundred noisy window means is well below the true mean, and at a high limit that bias reads
//   as a queue (tried: exponential service times on 200 workers held the limit near 60). A
//   faster app is still seen at once (no queue, so the limit grows) and measured next probe.
// - Some probes come early: when the last one found the no-load latency much lower (the one
//   before measured a queue: the limit was far above the app's capacity), when the limit has
//   doubled since (a probe at a higher limit measures more requests, so more precisely), and
//   when the limit sat at minLimit for a while (as Envoy: a stale no-load latency, an app
//   that got slower for good, is the likely cause).
//
// Alongside, an EWMA of every sample's latency is the app's expected latency now, for
// deadline-aware admission; it is kept with a static limit too.
import type { AdaptiveLimitPolicy } from '../../policy/types.ts';
import type { Clock } from '../../stack/types.ts';
import { SampleWindow, type Latency } from './sample-window.ts';
import { vegasStep } from './vegas.ts';

/** Multiplicative decrease on a drop. */
export const DROP_FACTOR = 0.9;
/** Probe interval jitter: the interval is scaled by a factor in [1 − J, 1 + J). */
export const PROBE_JITTER = 0.1;
/** A probe's measuring window lasts until it has minSamples samples, at most this many windows. */
export const PROBE_MAX_WINDOWS = 5;
/** A probe that found the no-load latency this share lower than before repeats... */
export const PROBE_REPEAT_GAIN = 0.1;
/** ...this many windows later, once the limit has come down, instead of an interval later. */
export const PROBE_REPEAT_WINDOWS = 10;
/** The learned limit grew to this multiple of the one the last probe was taken at: probe again. */
export const PROBE_GROWTH = 2;
/** The limit at minLimit for this many windows in a row: probe again. */
export const PROBE_AT_MIN_WINDOWS = 5;
/**
 * A window short of minSamples after this many window lengths is thrown away: a trickle of
 * traffic says nothing about queueing, and mixing old samples with new misleads.
 */
export const STALE_WINDOWS = 10;
/** Weight of each new sample in the expected-latency EWMA. */
export const EXPECTED_WEIGHT = 0.2;
/**
 * The expected latency is forgotten after max(EXPECTED_TTL_MS, EXPECTED_TTL_FACTOR × itself)
 * without a sample. Deadline-aware refusals produce no samples: were every request refused on
 * a stale estimate, it could never come down. Forgetting it lets a request through to measure.
 */
export const EXPECTED_TTL_MS = 1000;
export const EXPECTED_TTL_FACTOR = 4;
/**
 * A request that timed out sooner than this multiple of the no-load latency is no evidence of a
 * queue: its caller's deadline was short. Counting it would let clients with tight deadlines
 * drive the limit down on a healthy app.
 */
export const TIMEOUT_DROP_FACTOR = 2;

export type LimitChange = 'up' | 'down';

/** Told what the limit does, for metrics and logs. */
export interface LimitEvents {
  /** The learned limit's integer value moved. */
  onChange?(direction: LimitChange, from: number, to: number): void;
  /** A no-load latency probe started, the limit lowered to `probeLimit`. */
  onProbe?(probeLimit: number): void;
}

export function checkAdaptive(a: AdaptiveLimitPolicy, maxConcurrency: number): void {
  const int = (name: string, v: number, min: number): void => {
    if (!(Number.isSafeInteger(v) && v >= min)) throw new RangeError(`adaptive.${name} must be an integer >= ${min}, got ${v}`);
  };
  int('initialLimit', a.initialLimit, 1);
  int('minLimit', a.minLimit, 1);
  int('sampleWindowMs', a.sampleWindowMs, 1);
  int('minSamples', a.minSamples, 1);
  int('minRttProbeIntervalMs', a.minRttProbeIntervalMs, 1);
  if (!(a.probeRatio > 0 && a.probeRatio <= 1)) throw new RangeError(`adaptive.probeRatio must be in (0, 1], got ${a.probeRatio}`);
  if (a.minLimit > maxConcurrency) {
    throw new RangeError(`adaptive.minLimit (${a.minLimit}) must be at most maxConcurrency (${maxConcurrency})`);
  }
}

function checkMax(maxConcurrency: number): void {
  if (!(Number.isSafeInteger(maxConcurrency) && maxConcurrency >= 1)) {
    throw new RangeError(`maxConcurrency must be an integer >= 1, got ${maxConcurrency}`);
  }
}

/** The limit during a probe: a share of the learned one, never below minLimit. */
export function probeLimit(learned: number, a: AdaptiveLimitPolicy): number {
  return Math.max(a.minLimit, Math.ceil(learned * a.probeRatio));
}

type Probe = { readonly startMs: number; measuring: boolean };

export class ConcurrencyLimit {
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #events: LimitEvents;
  #adaptive: AdaptiveLimitPolicy | undefined;
  #max: number;
  /** The learned limit, fractional (the limit is its floor). */
  #estimate = 0;
  #noLoad: Latency | undefined;
  readonly #window = new SampleWindow();
  #windowOpen = false;
  #probe: Probe | undefined;
  #nextProbeMs = -Infinity;
  /** The learned limit when the last probe started (0: none yet). */
  #probedAt = 0;
  #atMinWindows = 0;
  #expectedMs: number | undefined;
  #lastSampleMs = -Infinity;

  constructor(
    adaptive: AdaptiveLimitPolicy | undefined,
    maxConcurrency: number,
    clock: Clock,
    random: () => number,
    events: LimitEvents = {},
  ) {
    checkMax(maxConcurrency);
    if (adaptive !== undefined) checkAdaptive(adaptive, maxConcurrency);
    this.#clock = clock;
    this.#random = random;
    this.#events = events;
    this.#max = maxConcurrency;
    this.#adaptive = adaptive;
    if (adaptive !== undefined) this.#restart(adaptive);
  }

  /** Requests the app may have in flight now: the learned limit, lowered during a probe. */
  limit(): number {
    const a = this.#adaptive;
    if (a === undefined) return this.#max;
    this.#tick(this.#clock.now(), a);
    const learned = Math.floor(this.#estimate);
    return this.#probe === undefined ? learned : probeLimit(learned, a);
  }

  /** The learned limit, probe or not (static: maxConcurrency). */
  learnedLimit(): number {
    return this.#adaptive === undefined ? this.#max : Math.floor(this.#estimate);
  }

  /** True while the no-load latency is being re-measured (the limit is lowered). */
  probing(): boolean {
    if (this.#adaptive !== undefined) this.#tick(this.#clock.now(), this.#adaptive);
    return this.#probe !== undefined;
  }

  /** The no-load latency the limit is judged against, ms; undefined before the first window, or static. */
  minRttMs(): number | undefined {
    return this.#adaptive === undefined ? undefined : this.#noLoad?.meanMs;
  }

  /** The app's latency to headers now (EWMA of recent samples), ms; undefined without recent samples. */
  expectedLatencyMs(): number | undefined {
    const e = this.#expectedMs;
    if (e === undefined) return undefined;
    const ttl = Math.max(EXPECTED_TTL_MS, EXPECTED_TTL_FACTOR * e);
    return this.#clock.now() - this.#lastSampleMs > ttl ? undefined : e;
  }

  /**
   * The app answered a request (any status but a drop): admitted at `startMs` with `inFlight`
   * requests in flight (itself included), its headers came `latencyMs` later.
   */
  sample(startMs: number, latencyMs: number, inFlight: number): void {
    if (!(latencyMs >= 0 && Number.isFinite(latencyMs))) return;
    const now = this.#clock.now();
    const e = this.#expectedMs;
    this.#expectedMs = e === undefined ? latencyMs : e + EXPECTED_WEIGHT * (latencyMs - e);
    this.#lastSampleMs = now;
    const a = this.#adaptive;
    if (a === undefined) return;
    this.#tick(now, a);
    const probe = this.#probe;
    // A probe measures only requests started under its lower limit, once the ones from before
    // (queued behind the old concurrency) are gone.
    if (probe !== undefined && (!probe.measuring || startMs < probe.startMs)) return;
    this.#open(now);
    this.#window.add(latencyMs, inFlight);
  }

  /** The app said it is overloaded (503): cut the limit, once per window. */
  drop(): void {
    const a = this.#adaptive;
    if (a === undefined) return;
    const now = this.#clock.now();
    this.#tick(now, a);
    this.#open(now);
    if (this.#window.dropped) return;
    this.#window.dropped = true;
    this.#set(this.#estimate * DROP_FACTOR, a);
  }

  /** A request timed out waiting for the app after `elapsedMs`: a drop, unless too soon to tell. */
  timedOut(elapsedMs: number): void {
    const noLoad = this.#noLoad?.meanMs;
    if (noLoad !== undefined && elapsedMs < TIMEOUT_DROP_FACTOR * noLoad) return;
    this.drop();
  }

  /**
   * A policy update. The learned limit and no-load latency carry over unless learning must
   * start again: adaptive switched on, or a new initialLimit (the operator saying so). Other
   * adaptive settings apply from now on, the learned limit clamped to the new bounds.
   */
  reconfigure(adaptive: AdaptiveLimitPolicy | undefined, maxConcurrency: number): void {
    checkMax(maxConcurrency);
    if (adaptive !== undefined) checkAdaptive(adaptive, maxConcurrency);
    const before = this.#adaptive;
    this.#max = maxConcurrency;
    this.#adaptive = adaptive;
    if (adaptive === undefined) return;
    if (before === undefined || before.initialLimit !== adaptive.initialLimit) {
      this.#restart(adaptive);
      return;
    }
    if (before.minRttProbeIntervalMs !== adaptive.minRttProbeIntervalMs && this.#probe === undefined && this.#probedAt > 0) {
      this.#nextProbeMs = this.#clock.now() + this.#probeInterval(adaptive);
    }
    this.#set(this.#estimate, adaptive);
  }

  #restart(a: AdaptiveLimitPolicy): void {
    this.#estimate = Math.min(this.#max, Math.max(a.minLimit, a.initialLimit));
    this.#noLoad = undefined;
    this.#windowOpen = false;
    this.#probe = undefined;
    this.#nextProbeMs = -Infinity;
    this.#probedAt = 0;
    this.#atMinWindows = 0;
  }

  #open(now: number): void {
    if (this.#windowOpen) return;
    this.#windowOpen = true;
    this.#window.reset(now);
  }

  /** Closes what time has closed and starts a probe that is due. Runs before every use. */
  #tick(now: number, a: AdaptiveLimitPolicy): void {
    const w = this.#window;
    const probe = this.#probe;
    const age = now - w.startMs;
    if (probe !== undefined) {
      if (!probe.measuring && now - probe.startMs >= a.sampleWindowMs) {
        // Drained: measure from now.
        probe.measuring = true;
        this.#windowOpen = true;
        w.reset(now);
      } else if (probe.measuring && ((age >= a.sampleWindowMs && w.count >= a.minSamples) || age >= PROBE_MAX_WINDOWS * a.sampleWindowMs)) {
        this.#endProbe(now, a);
      }
    } else if (this.#windowOpen) {
      if (age >= a.sampleWindowMs && (w.count >= a.minSamples || w.dropped)) this.#closeWindow(now, a);
      else if (age >= STALE_WINDOWS * a.sampleWindowMs) this.#windowOpen = false;
    }
    if (!this.#windowOpen && this.#probe === undefined && this.#noLoad !== undefined && now >= this.#nextProbeMs) {
      this.#startProbe(now, a);
    }
  }

  #closeWindow(now: number, a: AdaptiveLimitPolicy): void {
    this.#windowOpen = false;
    const w = this.#window;
    const rtt = w.latency();
    if (!w.dropped && rtt !== undefined) {
      // The first window gives a baseline to probe against; a probe follows at once.
      if (this.#noLoad === undefined) this.#noLoad = rtt;
      else this.#set(vegasStep({ limit: this.#estimate, noLoad: this.#noLoad, rtt, maxInFlight: w.maxInFlight }), a);
    }
    if (Math.floor(this.#estimate) <= a.minLimit) {
      this.#atMinWindows += 1;
      if (this.#atMinWindows >= PROBE_AT_MIN_WINDOWS) this.#nextProbeMs = now;
    } else this.#atMinWindows = 0;
    if (this.#probedAt > 0 && this.#estimate >= PROBE_GROWTH * this.#probedAt) this.#nextProbeMs = now;
  }

  #startProbe(now: number, a: AdaptiveLimitPolicy): void {
    this.#probe = { startMs: now, measuring: false };
    this.#probedAt = Math.floor(this.#estimate);
    this.#windowOpen = false;
    this.#events.onProbe?.(probeLimit(this.#probedAt, a));
  }

  #endProbe(now: number, a: AdaptiveLimitPolicy): void {
    const measured = this.#window.latency();
    const before = this.#noLoad;
    this.#probe = undefined;
    this.#windowOpen = false;
    this.#atMinWindows = 0;
    // No sample at all (no traffic): keep what we knew, try again next interval.
    if (measured !== undefined) this.#noLoad = measured;
    const repeat = measured !== undefined && before !== undefined && measured.meanMs < before.meanMs * (1 - PROBE_REPEAT_GAIN);
    this.#nextProbeMs = now + (repeat ? PROBE_REPEAT_WINDOWS * a.sampleWindowMs : this.#probeInterval(a));
  }

  #probeInterval(a: AdaptiveLimitPolicy): number {
    const r = Math.min(1, Math.max(0, this.#random()));
    return a.minRttProbeIntervalMs * (1 - PROBE_JITTER + 2 * PROBE_JITTER * r);
  }

  #set(next: number, a: AdaptiveLimitPolicy): void {
    const from = Math.floor(this.#estimate);
    this.#estimate = Math.min(this.#max, Math.max(a.minLimit, next));
    const to = Math.floor(this.#estimate);
    if (to !== from) this.#events.onChange?.(to > from ? 'up' : 'down', from, to);
  }
}
