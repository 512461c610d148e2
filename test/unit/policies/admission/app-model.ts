// A deterministic model of an app behind admission, to drive the pure limit without sockets or
// timers: the app has `workers` slots and a FIFO queue; each request takes serviceMs(now) once a
// worker picks it up. Demand is unlimited (a closed loop with more clients than any limit), so
// the limit alone decides how many requests are in flight: every slot the limit allows is
// filled at once. Time jumps from one completion to the next on a FakeClock.
import { ConcurrencyLimit } from '../../../../src/policies/admission/limit.ts';
import type { AdaptiveLimitPolicy } from '../../../../src/policy/types.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

export interface AppModel {
  readonly workers: number;
  /** Service time of a request a worker starts at `nowMs`. */
  readonly serviceMs: (nowMs: number) => number;
}

export interface Trace {
  readonly atMs: number;
  /** limit() now (lowered during probes). */
  readonly limit: number;
  /** The learned limit (probes aside). */
  readonly learned: number;
  readonly minRttMs: number | undefined;
  readonly probing: boolean;
}

export interface Run {
  readonly limiter: ConcurrencyLimit;
  /** One entry per completion. */
  readonly trace: readonly Trace[];
  /** Mean latency of the requests that finished in [fromMs, toMs). */
  meanLatencyMs(fromMs: number, toMs: number): number;
}

interface Request {
  readonly admittedMs: number;
  readonly inFlight: number;
  doneMs: number;
}

/** A binary min-heap on doneMs: service times may differ, so completions come out of order. */
class Running {
  readonly #heap: Request[] = [];

  get size(): number {
    return this.#heap.length;
  }

  push(r: Request): void {
    const h = this.#heap;
    h.push(r);
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (h[p]!.doneMs <= h[i]!.doneMs) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  pop(): Request {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.doneMs < h[m]!.doneMs) m = l;
        if (r < h.length && h[r]!.doneMs < h[m]!.doneMs) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}

export function simulate(
  app: AppModel,
  policy: AdaptiveLimitPolicy,
  o: { readonly maxConcurrency: number; readonly durationMs: number; readonly random?: () => number },
): Run {
  const clock = new FakeClock(0);
  const limiter = new ConcurrencyLimit(policy, o.maxConcurrency, clock, o.random ?? (() => 0.5));
  const running = new Running();
  const queued: Request[] = [];
  let queueHead = 0;
  let inFlight = 0;
  const trace: Trace[] = [];
  const finished: { atMs: number; latencyMs: number }[] = [];

  const start = (r: Request): void => {
    r.doneMs = clock.now() + app.serviceMs(clock.now());
    running.push(r);
  };

  while (clock.now() < o.durationMs) {
    while (inFlight < limiter.limit()) {
      inFlight += 1;
      const r: Request = { admittedMs: clock.now(), inFlight, doneMs: 0 };
      if (running.size < app.workers) start(r);
      else queued.push(r);
    }
    const done = running.pop();
    clock.set(done.doneMs);
    inFlight -= 1;
    const latencyMs = clock.now() - done.admittedMs;
    limiter.sample(done.admittedMs, latencyMs, done.inFlight);
    finished.push({ atMs: clock.now(), latencyMs });
    while (running.size < app.workers && queueHead < queued.length) start(queued[queueHead++]!);
    trace.push({
      atMs: clock.now(),
      limit: limiter.limit(),
      learned: limiter.learnedLimit(),
      minRttMs: limiter.minRttMs(),
      probing: limiter.probing(),
    });
  }
  return {
    limiter,
    trace,
    meanLatencyMs(fromMs, toMs) {
      const xs = finished.filter((f) => f.atMs >= fromMs && f.atMs < toMs);
      return xs.reduce((s, f) => s + f.latencyMs, 0) / xs.length;
    },
  };
}
