// Outlier ejection per upstream (Envoy's outlier detection, plus latency): a pure core with no
// timers. Every try's result is recorded; an endpoint that fails N times in a row, whose success
// rate over a window drops too low, or whose latency is far above its peers' is ejected for a while
// and then returns by itself, checked lazily against the injected clock.
//
// - Ejection time grows with the endpoint's ejection count (n-th: n × base, capped at max), and the
//   count decays by one per baseEjectionMs of time out of ejection. A flapping endpoint is ejected
//   longer each time; one that stayed healthy is forgiven.
// - The count stops growing once n × base reaches max, so forgiveness never takes longer than the
//   number of steps it takes to reach the cap.
// - A returned endpoint starts with a clean slate (streak, window, latency): the results that
//   ejected it are old news, and a stale slow latency must not eject it again on its first answer.
// - Cap: at most max(1, floor(n × maxEjectionPercent)) endpoints ejected at once (Envoy ejects at
//   least one whenever the percent is above 0), and never the last non-ejected one. An ejection the
//   cap refuses is not an ejection: record() returns undefined, and the check fires again on that
//   endpoint's next result, so it is ejected as soon as room frees up.
// - Stalls: the latency check also looks at tries still waiting. An endpoint that has answered
//   nothing of the last few tries sent to it, each of two waiting longer than the latency check
//   allows, is ejected as 'stalled' without waiting for per-try timeouts to report the tries:
//   a hung endpoint is cut off in tens of milliseconds instead of seconds. Only while a peer
//   answers, promptly, a try sent after the wait began: when this process or the host stalls,
//   every endpoint looks silent and none is ejected. Tries started before
//   the endpoint's last answer do not count, so one long request it is still working on while it
//   answers others (or while the balancer sends it nothing) is no stall.
// - Probes: every probeIntervalMs an ejected endpoint may be given one try (probe()); the caller
//   sends only tries that are retried elsewhere if the probe fails, and gives up on a probe
//   that waits longer than the stall allowance. A probe that is answered without failure ends
//   the ejection at once (the endpoint comes back on probation), so a recovered endpoint is
//   back within a probe interval instead of the rest of a growing ejection.
// - Shadow mode runs the same state machine (so events, durations and the cap are exactly those
//   enforce would produce) but eligible() stays all true.
import type { OutlierDetectionPolicy } from '../../policy/types.ts';
import type { Clock } from '../../stack/types.ts';
import { SlidingCounts } from '../sliding-counts.ts';

/** Same shape as the parsed config (one definition, so the two cannot drift). */
export type OutlierPolicy = OutlierDetectionPolicy;

export type OutlierReason = 'consecutive_failures' | 'success_rate' | 'latency' | 'stalled';

/** Unanswered tries sent since an endpoint's last answer before it can count as stalled. */
export const STALL_MIN_TRIES = 2;
/**
 * Answers a peer needs before its latency is a yardstick for stalls. Fewer than the latency
 * check wants: a stall is no answer at all, so a rough idea of normal is enough, and soon after
 * start is when a hung endpoint would otherwise hold tries for a whole per-try timeout.
 */
const STALL_PEER_SAMPLES = 5;
/** Stalls are looked for at most this often (ms), from the pick path. */
const STALL_CHECK_MS = 5;

export interface EjectionEvent {
  readonly endpoint: number;
  readonly reason: OutlierReason;
  readonly durationMs: number;
  /** false in shadow mode: the endpoint would have been ejected, but still gets traffic. */
  readonly enforced: boolean;
}

/** Buckets of the success-rate window; it slides in steps of windowMs / 10 (holds 90..100%). */
export const SUCCESS_RATE_BUCKETS = 10;

/**
 * Weight of a new sample in the latency EWMA once the endpoint has 1 / alpha samples; before
 * that the estimate is the plain mean, so the first answer does not dominate.
 */
export const LATENCY_ALPHA = 0.1;

const NOT_EJECTED = -1;
const EMPTY: number[] = Object.freeze([]) as unknown as number[];

function isCount(v: number, min: number): boolean {
  return Number.isSafeInteger(v) && v >= min;
}

function checkPolicy(n: number, p: OutlierPolicy): void {
  if (!isCount(n, 1)) throw new RangeError(`outlier endpointCount must be an integer >= 1, got ${n}`);
  if (p.mode !== 'enforce' && p.mode !== 'shadow' && p.mode !== 'off') {
    throw new RangeError(`outlier mode must be 'enforce', 'shadow' or 'off', got ${String(p.mode)}`);
  }
  if (!isCount(p.consecutiveFailures, 0)) {
    throw new RangeError(`outlier consecutiveFailures must be an integer >= 0, got ${p.consecutiveFailures}`);
  }
  const sr = p.successRate;
  if (sr !== undefined) {
    if (!(sr.windowMs > 0 && Number.isFinite(sr.windowMs))) {
      throw new RangeError(`outlier successRate.windowMs must be a finite number > 0, got ${sr.windowMs}`);
    }
    if (!isCount(sr.minRequests, 1)) {
      throw new RangeError(`outlier successRate.minRequests must be an integer >= 1, got ${sr.minRequests}`);
    }
    if (!(sr.minSuccessRate >= 0 && sr.minSuccessRate <= 1)) {
      throw new RangeError(`outlier successRate.minSuccessRate must be in [0, 1], got ${sr.minSuccessRate}`);
    }
  }
  const lat = p.latency;
  if (lat !== undefined) {
    if (!(lat.factor >= 1 && Number.isFinite(lat.factor))) {
      throw new RangeError(`outlier latency.factor must be a finite number >= 1, got ${lat.factor}`);
    }
    if (!isCount(lat.minRequests, 1)) {
      throw new RangeError(`outlier latency.minRequests must be an integer >= 1, got ${lat.minRequests}`);
    }
    if (!(lat.minExcessMs >= 0 && Number.isFinite(lat.minExcessMs))) {
      throw new RangeError(`outlier latency.minExcessMs must be a finite number >= 0, got ${lat.minExcessMs}`);
    }
  }
  if (!(p.baseEjectionMs > 0 && Number.isFinite(p.baseEjectionMs))) {
    throw new RangeError(`outlier baseEjectionMs must be a finite number > 0, got ${p.baseEjectionMs}`);
  }
  // max < base is allowed: every ejection then lasts max.
  if (!(p.maxEjectionMs > 0 && Number.isFinite(p.maxEjectionMs))) {
    throw new RangeError(`outlier maxEjectionMs must be a finite number > 0, got ${p.maxEjectionMs}`);
  }
  if (!(p.maxEjectionPercent >= 0 && p.maxEjectionPercent <= 1)) {
    throw new RangeError(`outlier maxEjectionPercent must be in [0, 1], got ${p.maxEjectionPercent}`);
  }
}

export class OutlierDetector {
  readonly #n: number;
  readonly #policy: OutlierPolicy;
  readonly #clock: Clock;
  /** Most endpoints ejected at once. */
  readonly #maxEjected: number;
  /** Ejection count at which n × base reaches max; the count never grows past it. */
  readonly #maxMultiplier: number;

  // Per endpoint, allocated once.
  readonly #eligible: boolean[];
  /** Clock time the ejection ends, or NOT_EJECTED. */
  readonly #ejectedUntil: Float64Array;
  readonly #multiplier: Float64Array;
  /** Clock time the multiplier was last decayed up to (the return time, after an ejection). */
  readonly #decayedAt: Float64Array;
  /** When each endpoint last came back (or the detector started): older tries are not evidence. */
  readonly #returnedAt: Float64Array;
  readonly #streak: Float64Array;
  /**
   * 1 while a returned endpoint is on probation: its first failure ejects it again at once
   * (without waiting for a new streak), its first success ends the probation.
   */
  readonly #watched: Uint8Array;
  readonly #latencyMs: Float64Array;
  readonly #samples: Float64Array;
  /**
   * When the STALL_MIN_TRIES-th try since the endpoint's last answer was sent (NaN: fewer are
   * waiting): once it has waited past the allowance, so has every try before it.
   */
  readonly #waitingSince: Float64Array;
  /** Tries sent since the endpoint's last answer. */
  readonly #sentSinceAnswer: Float64Array;
  /** Start and latency of the endpoint's last answered try (a peer's proof of normal service). */
  readonly #answerStartMs: Float64Array;
  readonly #answerLatencyMs: Float64Array;
  /** Tries in flight on the endpoint now: a stall needs one still waiting. */
  readonly #waiting: Float64Array;
  #nextStallCheckMs = 0;
  /** When each ejected endpoint may next be probed. */
  readonly #nextProbeMs: Float64Array;
  /** Earliest of #nextProbeMs over ejected endpoints: probe() is O(1) before it. */
  #nextProbeAnyMs = Infinity;
  #ejected = 0;
  /** Earliest ejectedUntil among ejected endpoints: the sweep for returns is skipped before it. */
  #nextReturnMs = Infinity;
  #returned: number[] = [];

  /** Success-rate window, when on: series i = endpoint i's tries, n + i = its failures. */
  readonly #window: SlidingCounts | undefined;

  /** Scratch for the median of peers' latencies (quickselect in place, no allocation). */
  readonly #scratch: Float64Array;

  constructor(endpointCount: number, policy: OutlierPolicy, clock: Clock) {
    checkPolicy(endpointCount, policy);
    const n = endpointCount;
    this.#n = n;
    this.#policy = policy;
    this.#clock = clock;
    const byPercent = policy.maxEjectionPercent > 0 ? Math.max(1, Math.floor(n * policy.maxEjectionPercent)) : 0;
    this.#maxEjected = Math.min(n - 1, byPercent);
    this.#maxMultiplier = Math.max(1, Math.ceil(policy.maxEjectionMs / policy.baseEjectionMs));
    this.#eligible = new Array<boolean>(n).fill(true);
    this.#ejectedUntil = new Float64Array(n).fill(NOT_EJECTED);
    this.#multiplier = new Float64Array(n);
    this.#decayedAt = new Float64Array(n).fill(clock.now());
    this.#returnedAt = new Float64Array(n).fill(clock.now());
    this.#streak = new Float64Array(n);
    this.#watched = new Uint8Array(n);
    this.#latencyMs = new Float64Array(n);
    this.#samples = new Float64Array(n);
    this.#waitingSince = new Float64Array(n).fill(Number.NaN);
    this.#sentSinceAnswer = new Float64Array(n);
    this.#waiting = new Float64Array(n);
    this.#answerStartMs = new Float64Array(n).fill(Number.NaN);
    this.#answerLatencyMs = new Float64Array(n).fill(Number.NaN);
    this.#nextProbeMs = new Float64Array(n).fill(Infinity);
    this.#window =
      policy.successRate === undefined
        ? undefined
        : new SlidingCounts(2 * n, SUCCESS_RATE_BUCKETS, policy.successRate.windowMs, clock.now());
    this.#scratch = new Float64Array(n);
  }

  /**
   * Record one finished try on endpoint i. Returns an ejection when this result ejects (or, in
   * shadow mode, would eject) the endpoint; undefined otherwise, including when the cap refused the
   * ejection. Results on an endpoint already ejected (tries that were in flight when it was) are
   * ignored: they are what ejected it.
   */
  record(i: number, failed: boolean, latencyMs: number, startedMs = Infinity): EjectionEvent | undefined {
    const p = this.#policy;
    if (p.mode === 'off') return undefined;
    if (!(Number.isInteger(i) && i >= 0 && i < this.#n)) {
      throw new RangeError(`outlier endpoint index must be an integer in [0, ${this.#n - 1}], got ${i}`);
    }
    const now = this.#clock.now();
    this.#sweep(now);
    if (this.#ejectedUntil[i] !== NOT_EJECTED) return undefined;
    // A try sent before the endpoint's last return (it hung through the ejection) says nothing
    // about the endpoint now, and on probation it would eject it again at once.
    if (startedMs < this.#returnedAt[i]!) return undefined;

    this.#streak[i] = failed ? this.#streak[i]! + 1 : 0;
    const onProbation = this.#watched[i] === 1;
    if (!failed) this.#watched[i] = 0;
    if (this.#window !== undefined) {
      this.#window.add(i, 1, now);
      if (failed) this.#window.add(this.#n + i, 1, now);
    }
    if (latencyMs >= 0 && Number.isFinite(latencyMs)) {
      const k = (this.#samples[i]! += 1);
      const alpha = Math.max(1 / k, LATENCY_ALPHA);
      this.#latencyMs[i]! += (latencyMs - this.#latencyMs[i]!) * alpha;
    }

    const reason = failed && onProbation && p.consecutiveFailures > 0 ? 'consecutive_failures' : this.#outlier(i);
    if (reason === undefined) return undefined;
    return this.#eject(i, reason, now);
  }

  /** A try was sent to endpoint i (stall tracking). */
  started(i: number): void {
    this.#sentSinceAnswer[i]! += 1;
    if (this.#sentSinceAnswer[i] === STALL_MIN_TRIES) this.#waitingSince[i] = this.#clock.now();
    this.#waiting[i]! += 1;
  }

  /**
   * A try on endpoint i ended. `answered`: response headers, any status: it is alive, the wait is
   * over. `timeout`: it said nothing until the try was given up, which is what a stall is made
   * of, so the try still counts. `other` (reset, refused connection, client gone, our refusal):
   * not silence, so it no longer counts; failures are the other checks' evidence.
   */
  ended(i: number, how: 'answered' | 'timeout' | 'other', startedMs = Number.NaN, latencyMs = Number.NaN): void {
    this.#waiting[i] = Math.max(0, this.#waiting[i]! - 1);
    if (how === 'answered') {
      this.#clearWait(i);
      this.#answerStartMs[i] = startedMs;
      this.#answerLatencyMs[i] = latencyMs;
    } else if (how === 'other') {
      this.#sentSinceAnswer[i] = Math.max(0, this.#sentSinceAnswer[i]! - 1);
      // Which try ended is not known: the wait is timed again, from now if enough tries are
      // left, else from the next try that makes STALL_MIN_TRIES (later, never sooner).
      this.#waitingSince[i] = this.#sentSinceAnswer[i]! >= STALL_MIN_TRIES ? this.#clock.now() : Number.NaN;
    }
  }

  #peerAnsweredSince(i: number, sinceMs: number, withinMs: number): boolean {
    for (let j = 0; j < this.#n; j++) {
      if (j === i || this.#ejectedUntil[j] !== NOT_EJECTED) continue;
      if (this.#answerStartMs[j]! > sinceMs && this.#answerLatencyMs[j]! <= withinMs) return true;
    }
    return false;
  }

  #clearWait(i: number): void {
    this.#waitingSince[i] = Number.NaN;
    this.#sentSinceAnswer[i] = 0;
  }

  /**
   * Looks for a stalled endpoint (at most every few ms) and ejects the first found; call it
   * where tries are placed. Needs the latency check on and peers with enough answers to say
   * what normal latency is.
   */
  checkStalls(): EjectionEvent | undefined {
    const p = this.#policy;
    const lat = p.latency;
    const now = this.#clock.now();
    if (p.mode === 'off' || lat === undefined || now < this.#nextStallCheckMs) return undefined;
    this.#nextStallCheckMs = now + STALL_CHECK_MS;
    this.#sweep(now);
    for (let i = 0; i < this.#n; i++) {
      // A stall is a try still waiting, behind others that went unanswered.
      if (this.#waiting[i] === 0 || this.#sentSinceAnswer[i]! < STALL_MIN_TRIES || this.#ejectedUntil[i] !== NOT_EJECTED) continue;
      const median = this.#peerMedian(i, Math.min(lat.minRequests, STALL_PEER_SAMPLES));
      if (median === undefined) continue;
      const allowedMs = Math.max(lat.factor * median, median + lat.minExcessMs);
      if (now - this.#waitingSince[i]! <= allowedMs) continue;
      // Silence is only a stall when a peer answered, promptly, a try sent after ours: if this
      // process or the host stalled, every endpoint looks silent and none must be ejected.
      if (!this.#peerAnsweredSince(i, this.#waitingSince[i]!, allowedMs)) continue;
      const ejection = this.#eject(i, 'stalled', now);
      // A refused ejection keeps its evidence: it fires again when room frees up.
      if (ejection !== undefined) return ejection;
    }
    return undefined;
  }

  /**
   * An ejected endpoint due for a probe (it is then not due again for probeIntervalMs), or -1.
   * Only enforced ejections are probed: in shadow mode the endpoint has traffic anyway.
   */
  probe(): number {
    const intervalMs = this.#policy.probeIntervalMs;
    const now = this.#clock.now();
    if (intervalMs === undefined || now < this.#nextProbeAnyMs || this.#policy.mode !== 'enforce') return -1;
    this.#sweep(now);
    let due = -1;
    let next = Infinity;
    for (let i = 0; i < this.#n; i++) {
      if (this.#ejectedUntil[i] === NOT_EJECTED) continue;
      if (due < 0 && this.#nextProbeMs[i]! <= now) {
        due = i;
        this.#nextProbeMs[i] = now + intervalMs;
      }
      if (this.#nextProbeMs[i]! < next) next = this.#nextProbeMs[i]!;
    }
    this.#nextProbeAnyMs = next;
    return due;
  }

  /**
   * How long a probe of endpoint i may wait for its answer before the caller gives up on it:
   * the stall allowance, when peers say what normal is; else undefined (the per-try timeout).
   */
  probeTimeoutMs(i: number): number | undefined {
    const lat = this.#policy.latency;
    if (lat === undefined) return undefined;
    const median = this.#peerMedian(i, Math.min(lat.minRequests, STALL_PEER_SAMPLES));
    return median === undefined ? undefined : Math.max(lat.factor * median, median + lat.minExcessMs);
  }

  /** A probe of endpoint i was answered without failure: it comes back now, on probation. */
  probeSucceeded(i: number): void {
    if (this.#ejectedUntil[i] === NOT_EJECTED) return;
    const now = this.#clock.now();
    this.#ejectedUntil[i] = now;
    this.#nextReturnMs = Math.min(this.#nextReturnMs, now);
    this.#sweep(now);
  }

  /**
   * Takes over ejections, streaks, probation and latency estimates of `from` (the detector over
   * the previous endpoint list): endpoint i gets from's endpoint map[i], or starts clean when
   * map[i] is -1. An endpoint ejected before a DNS change stays ejected after it. The
   * success-rate window starts over.
   */
  adopt(from: OutlierDetector, map: readonly number[]): void {
    const now = this.#clock.now();
    from.#sweep(now);
    for (let i = 0; i < this.#n; i++) {
      const j = map[i] ?? -1;
      if (j < 0 || j >= from.#n) continue;
      this.#ejectedUntil[i] = from.#ejectedUntil[j]!;
      this.#multiplier[i] = from.#multiplier[j]!;
      this.#decayedAt[i] = from.#decayedAt[j]!;
      this.#returnedAt[i] = from.#returnedAt[j]!;
      this.#streak[i] = from.#streak[j]!;
      this.#watched[i] = from.#watched[j]!;
      this.#latencyMs[i] = from.#latencyMs[j]!;
      this.#samples[i] = from.#samples[j]!;
      this.#nextProbeMs[i] = from.#nextProbeMs[j]!;
    }
    // A shorter list may hold more ejections than the cap allows here: the ones ending soonest
    // come back now, on probation, so the last endpoints are never all out.
    const ejected: number[] = [];
    for (let i = 0; i < this.#n; i++) if (this.#ejectedUntil[i] !== NOT_EJECTED) ejected.push(i);
    ejected.sort((a, b) => this.#ejectedUntil[a]! - this.#ejectedUntil[b]!);
    for (let k = 0; k < ejected.length - this.#maxEjected; k++) {
      const i = ejected[k]!;
      this.#ejectedUntil[i] = NOT_EJECTED;
      this.#nextProbeMs[i] = Infinity;
      this.#returnedAt[i] = now;
      this.#decayedAt[i] = now;
      this.#watched[i] = 1;
    }
    this.#ejected = 0;
    this.#nextReturnMs = Infinity;
    this.#nextProbeAnyMs = Infinity;
    for (let i = 0; i < this.#n; i++) {
      const until = this.#ejectedUntil[i]!;
      if (until === NOT_EJECTED) continue;
      this.#ejected += 1;
      if (this.#policy.mode === 'enforce') this.#eligible[i] = false;
      this.#nextReturnMs = Math.min(this.#nextReturnMs, until);
      this.#nextProbeAnyMs = Math.min(this.#nextProbeAnyMs, this.#nextProbeMs[i]!);
    }
  }

  /**
   * Per endpoint: may it receive traffic now? Ejected endpoints whose time is up return here
   * (lazily, by the clock). In shadow/off mode all true. Returns the same array instance, updated
   * in place (no allocation per call); callers must not modify it.
   */
  eligible(): readonly boolean[] {
    this.#sweep(this.#clock.now());
    return this.#eligible;
  }

  /**
   * Endpoints that came back since the last call (for metrics/logs), each reported once. When none
   * did, a shared frozen empty array (no allocation on the hot path).
   */
  takeReturned(): number[] {
    this.#sweep(this.#clock.now());
    if (this.#returned.length === 0) return EMPTY;
    const out = this.#returned;
    this.#returned = [];
    return out;
  }

  /** Endpoints ejected now (in shadow mode: that would be ejected). */
  ejectedCount(): number {
    this.#sweep(this.#clock.now());
    return this.#ejected;
  }

  /** The first check that finds endpoint i an outlier, in order of how clear the evidence is. */
  #outlier(i: number): OutlierReason | undefined {
    const p = this.#policy;
    if (p.consecutiveFailures > 0 && this.#streak[i]! >= p.consecutiveFailures) return 'consecutive_failures';
    const sr = p.successRate;
    if (sr !== undefined && this.#window !== undefined) {
      const now = this.#clock.now();
      const requests = this.#window.sum(i, now);
      if (requests >= sr.minRequests && (requests - this.#window.sum(this.#n + i, now)) / requests < sr.minSuccessRate) {
        return 'success_rate';
      }
    }
    const lat = p.latency;
    if (lat !== undefined && this.#samples[i]! >= lat.minRequests) {
      const median = this.#peerMedian(i, lat.minRequests);
      // Both relative and absolute: at loopback latencies a factor alone ejects on jitter.
      const ms = this.#latencyMs[i]!;
      if (median !== undefined && ms > lat.factor * median && ms - median >= lat.minExcessMs) return 'latency';
    }
    return undefined;
  }

  /**
   * Median latency EWMA of the other non-ejected endpoints that have at least minRequests samples
   * themselves (a peer with two answers is no yardstick); undefined when there is none.
   */
  #peerMedian(i: number, minRequests: number): number | undefined {
    const a = this.#scratch;
    let k = 0;
    for (let j = 0; j < this.#n; j++) {
      if (j !== i && this.#ejectedUntil[j] === NOT_EJECTED && this.#samples[j]! >= minRequests) {
        a[k++] = this.#latencyMs[j]!;
      }
    }
    if (k === 0) return undefined;
    const hi = select(a, k, k >> 1);
    return k % 2 === 1 ? hi : (select(a, k, (k >> 1) - 1) + hi) / 2;
  }

  #eject(i: number, reason: OutlierReason, now: number): EjectionEvent | undefined {
    if (this.#ejected >= this.#maxEjected) return undefined;
    const p = this.#policy;
    // Forgive: one step per baseEjectionMs spent out of ejection since the last decay.
    const steps = Math.floor((now - this.#decayedAt[i]!) / p.baseEjectionMs);
    if (steps > 0) this.#multiplier[i] = Math.max(0, this.#multiplier[i]! - steps);
    const multiplier = Math.min(this.#maxMultiplier, this.#multiplier[i]! + 1);
    this.#multiplier[i] = multiplier;
    const durationMs = Math.min(p.maxEjectionMs, multiplier * p.baseEjectionMs);
    const until = now + durationMs;
    this.#ejectedUntil[i] = until;
    // The tries that ejected it must not count again once it is back.
    this.#clearWait(i);
    if (p.probeIntervalMs !== undefined) {
      this.#nextProbeMs[i] = now + p.probeIntervalMs;
      this.#nextProbeAnyMs = Math.min(this.#nextProbeAnyMs, this.#nextProbeMs[i]!);
    }
    if (until < this.#nextReturnMs) this.#nextReturnMs = until;
    this.#ejected += 1;
    const enforced = p.mode === 'enforce';
    if (enforced) this.#eligible[i] = false;
    return { endpoint: i, reason, durationMs, enforced };
  }

  /** Bring back every endpoint whose ejection is over, with a clean slate. */
  #sweep(now: number): void {
    if (now < this.#nextReturnMs) return;
    let next = Infinity;
    for (let i = 0; i < this.#n; i++) {
      const until = this.#ejectedUntil[i]!;
      if (until === NOT_EJECTED) continue;
      if (until > now) {
        if (until < next) next = until;
        continue;
      }
      this.#ejectedUntil[i] = NOT_EJECTED;
      this.#nextProbeMs[i] = Infinity;
      // Probes given up during the ejection are no evidence against the returned endpoint.
      this.#clearWait(i);
      this.#eligible[i] = true;
      this.#ejected -= 1;
      // Healthy time (for forgiveness) counts from when the ejection ended, not from when the
      // clock was next read, so the outcome does not depend on how often anyone looks.
      this.#decayedAt[i] = until;
      this.#returnedAt[i] = until;
      this.#streak[i] = 0;
      this.#watched[i] = 1;
      this.#latencyMs[i] = 0;
      this.#samples[i] = 0;
      this.#window?.clear(i);
      this.#window?.clear(this.#n + i);
      this.#returned.push(i);
    }
    this.#nextReturnMs = next;
  }
}

/** The k-th smallest of a[0..len) (Hoare's quickselect, reorders a in place). */
function select(a: Float64Array, len: number, k: number): number {
  let lo = 0;
  let hi = len - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}
