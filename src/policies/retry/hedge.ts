// Hedged requests (The Tail at Scale; gRPC A6 hedging): when a try is slow to answer, a second
// copy goes to another endpoint and the first answer wins. It sits just inside the retry layer,
// so one call of it is one attempt to the retry layer, raced here by up to 1 + maxHedges tries
// (./hedge-race.ts). Bounded three ways, like retries: only requests that may be sent twice
// (idempotent, or with an Idempotency-Key, and a body that can be replayed), each hedge charged
// to the upstream's retry budget, and none started without time left before the deadline.
import type { Counter, Gauge, Registry } from 'prom-client';
import type { HedgePolicy } from '../../policy/types.ts';
import { classifyResponse } from '../../stack/classify.ts';
import type { Clock, Direction, Handler, Layer, ProxyRequest, ProxyResponse, RequestContext } from '../../stack/types.ts';
import { counter, gauge } from '../../telemetry/registry.ts';
import type { RetryBudget } from './budget.ts';
import { race, type RaceDeps } from './hedge-race.ts';
import { isIdempotentMethod } from './idempotent.ts';
import { LatencyTracker } from './latency-tracker.ts';

export { LatencyTracker, type LatencyTrackerOptions } from './latency-tracker.ts';

export interface HedgeMetrics {
  readonly hedges: Counter<'upstream' | 'outcome'>;
  readonly delay: Gauge<'upstream'>;
  /** Each upstream's latest hedge layer, read at scrape; weak, so a dropped upstream goes away. */
  readonly live: Map<string, { readonly latency: WeakRef<LatencyTracker>; readonly policy: HedgePolicy }>;
}

const LIVE = new WeakMap<Gauge<'upstream'>, HedgeMetrics['live']>();

export function declareHedgeMetrics(registry: Registry): HedgeMetrics {
  const delay = gauge(
    registry,
    'sluice_hedge_delay_seconds',
    'How long a try goes unanswered before it is hedged, per upstream (delayMs: p95 = the observed p95, at least minDelayMs). Absent while the p95 is unknown.',
    ['upstream'],
  );
  let live = LIVE.get(delay);
  if (live === undefined) {
    const entries: HedgeMetrics['live'] = new Map();
    live = entries;
    LIVE.set(delay, entries);
    // prom-client calls collect() before each scrape: nothing is set per request.
    (delay as unknown as { collect?: () => void }).collect = () => {
      delay.reset();
      for (const [upstream, e] of entries) {
        const latency = e.latency.deref();
        if (latency === undefined) {
          entries.delete(upstream);
          continue;
        }
        const ms = hedgeDelayMs(e.policy, latency);
        if (ms !== undefined) delay.labels({ upstream }).set(ms / 1000);
      }
    };
  }
  return {
    hedges: counter(
      registry,
      'sluice_hedges_total',
      'Hedges by outcome: sent; won (its answer was used) or lost (another try answered, or all failed), once each sent hedge ends; budget_refused (the retry budget said no) and no_time (too little time left before the deadline) count hedges not sent.',
      ['upstream', 'outcome'],
    ),
    delay,
    live,
  };
}

export interface HedgeBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly policy: HedgePolicy;
  /** The upstream's retry budget, charged for every hedge; undefined: hedges are bounded by maxHedges only. */
  readonly budget: RetryBudget | undefined;
  /** The upstream's tracker (shared by its routes); fed from every successful try here. */
  readonly latency: LatencyTracker;
  readonly clock: Clock;
  readonly metrics: HedgeMetrics;
  /**
   * The route's retry policy's retryOnStatuses (optional): like a 5xx, such an answer does not
   * win the race while another try may still answer, since the retry layer would retry it.
   */
  readonly retryOnStatuses?: readonly number[] | undefined;
  /**
   * Record each request in the budget (optional, default false). Only for a route with no retry
   * layer outside, which otherwise does it: without deposits the budget allows only its floor.
   */
  readonly recordRequests?: boolean | undefined;
}

/** The delay before a hedge now: fixed, or the p95 (at least minDelayMs); undefined while unknown. */
export function hedgeDelayMs(policy: HedgePolicy, latency: LatencyTracker): number | undefined {
  if (policy.delayMs !== 'p95') return policy.delayMs;
  const p95 = latency.p95();
  return p95 === undefined ? undefined : Math.max(p95, policy.minDelayMs);
}

/**
 * A request may be hedged when sending it twice at once is safe: an idempotent method (RFC 9110
 * §9.2.2) or an Idempotency-Key, and a body held in memory. A streamed body can be read once.
 * Unlike retries, a route's retryNonIdempotent does not extend to hedges: a retry follows a
 * failure, a hedge runs concurrently with a try that may well succeed.
 */
export function mayHedge(req: ProxyRequest, ctx: RequestContext): boolean {
  return (req.body === null || Buffer.isBuffer(req.body)) && (isIdempotentMethod(req.method) || ctx.idempotencyKey !== undefined);
}

function checkPolicy(p: HedgePolicy): void {
  if (!(Number.isInteger(p.maxHedges) && p.maxHedges >= 1 && p.maxHedges <= 3)) {
    throw new RangeError(`hedge maxHedges must be an integer from 1 to 3, got ${p.maxHedges}`);
  }
  if (p.delayMs !== 'p95' && !(Number.isFinite(p.delayMs) && p.delayMs >= 0)) {
    throw new RangeError(`hedge delayMs must be a finite number >= 0 or 'p95', got ${p.delayMs}`);
  }
  if (!(Number.isFinite(p.minDelayMs) && p.minDelayMs >= 0)) {
    throw new RangeError(`hedge minDelayMs must be a finite number >= 0, got ${p.minDelayMs}`);
  }
}

export function hedgeLayer(b: HedgeBuild): Layer {
  const { policy, budget, latency, clock } = b;
  checkPolicy(policy);
  b.metrics.live.set(b.upstream, { latency: new WeakRef(latency), policy });
  const outcome = (o: string) => b.metrics.hedges.labels({ upstream: b.upstream, outcome: o });
  const counts = {
    sent: outcome('sent'),
    won: outcome('won'),
    lost: outcome('lost'),
    budgetRefused: outcome('budget_refused'),
    noTime: outcome('no_time'),
  };
  const nonFatal: ReadonlySet<number> = new Set(b.retryOnStatuses ?? []);

  return (next) => {
    const deps: RaceDeps = { next, clock, budget, latency, maxHedges: policy.maxHedges, nonFatal, ...counts };

    /** One try, unhedged (no estimate yet), still timed so the estimate can form. */
    function timed(req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
      const startedMs = clock.now();
      return next(req, ctx).then((res) => {
        if (!classifyResponse(res.statusCode).failure) latency.record(clock.now() - startedMs);
        return res;
      });
    }

    const handler: Handler = (req, ctx) => {
      if (b.recordRequests === true) budget?.recordRequest();
      if (!mayHedge(req, ctx)) return next(req, ctx);
      const delayMs = hedgeDelayMs(policy, latency);
      if (delayMs === undefined) return timed(req, ctx);
      return race(req, ctx, delayMs, deps);
    };
    return handler;
  };
}
