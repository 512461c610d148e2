// THE order of the request path, outermost first. Config switches a layer off (its build is
// undefined); it never reorders them. Each line says why the layer sits where it does.
//
// Outbound: telemetry → deadline → rate limit → retry + budget → hedge → caps + circuit breaker
//   → credits → per-try timeout → upstream client, which balances (p2c-ewma) over the endpoints
//   outlier ejection leaves in rotation (and, with credits, that have a credit to spend): both
//   learn from each try where it settles.
// Inbound: telemetry → deadline → rate limit → credit grant → admission → idempotency → app.
// One list serves both directions: the inbound-only and outbound-only layers are never both on.
import type { Registry } from 'prom-client';
import { declareRateLimitMetrics, rateLimitLayer, type RateLimitBuild, type RateLimitMetrics } from '../policies/ratelimit/layer.ts';
import { breakerLayer, declareBreakerMetrics, type BreakerBuild, type BreakerMetrics } from '../policies/breaker/layer.ts';
import { retryLayer, declareRetryMetrics, type RetryMetrics } from '../policies/retry/layer.ts';
import type { RetryBudget } from '../policies/retry/budget.ts';
import type { ReplayAllowance } from '../policies/retry/replay-body.ts';
import {
  deadlineLayer,
  declareTimeoutMetrics,
  perTryTimeoutLayer,
  type TimeoutMetrics,
} from '../policies/timeout/layer.ts';
import type { RetryPolicy, TimeoutPolicy } from '../policy/types.ts';
import { declareEndpointMetrics, type EndpointMetrics, type EndpointSet } from '../proxy/endpoints.ts';
import { declareUpstreamMetrics, upstreamClient, type UpstreamMetrics } from '../proxy/upstream-client.ts';
import { declareTelemetryMetrics, telemetryLayer, type TelemetryMetrics } from '../telemetry/layer.ts';
import { SluiceError } from './errors.ts';
import { declareAdmissionMetrics, type AdmissionControl, type AdmissionMetrics } from '../policies/admission/control.ts';
import { declareIdempotencyMetrics, type IdempotencyDedupe, type IdempotencyMetrics } from '../policies/idempotency/dedupe.ts';
import { declareHedgeMetrics, hedgeLayer, type HedgeMetrics, type LatencyTracker } from '../policies/retry/hedge.ts';
import { creditLayer, declareCreditMetrics, type CreditMetrics } from '../policies/credits/layer.ts';
import type { CreditPool } from '../policies/credits/pool.ts';
import { creditGrantLayer, creditlessLayer, type CreditGrants } from '../policies/credits/grant-layer.ts';
import type { HedgePolicy } from '../policy/types.ts';
import type { Clock, Direction, Handler, Layer } from './types.ts';
import type { AccessLog } from '../telemetry/access-log.ts';
import type { Tracing } from '../telemetry/tracing.ts';

/** Every metric family the stack's layers own, declared once per registry. */
export interface StackMetrics {
  readonly telemetry: TelemetryMetrics;
  readonly timeouts: TimeoutMetrics;
  readonly retry: RetryMetrics;
  readonly upstream: UpstreamMetrics;
  readonly endpoints: EndpointMetrics;
  readonly breaker: BreakerMetrics;
  readonly rateLimit: RateLimitMetrics;
  readonly admission: AdmissionMetrics;
  readonly idempotency: IdempotencyMetrics;
  readonly hedge: HedgeMetrics;
  readonly credits: CreditMetrics;
}

export function declareStackMetrics(registry: Registry): StackMetrics {
  return {
    telemetry: declareTelemetryMetrics(registry),
    timeouts: declareTimeoutMetrics(registry),
    retry: declareRetryMetrics(registry),
    upstream: declareUpstreamMetrics(registry),
    endpoints: declareEndpointMetrics(registry),
    breaker: declareBreakerMetrics(registry),
    rateLimit: declareRateLimitMetrics(registry),
    admission: declareAdmissionMetrics(registry),
    idempotency: declareIdempotencyMetrics(registry),
    hedge: declareHedgeMetrics(registry),
    credits: declareCreditMetrics(registry),
  };
}

/** What one route of one upstream needs to build its stack (build lifetime). */
export interface RouteBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly route: string;
  readonly timeouts: TimeoutPolicy;
  /** Cap on the caller's propagated deadline (inbound). */
  readonly maxDeadlineMs: number | undefined;
  readonly retry: RetryPolicy | undefined;
  readonly budget: RetryBudget | undefined;
  readonly replayAllowance: ReplayAllowance;
  /** undefined while the upstream has no endpoints (its names resolved to no address). */
  readonly endpoints: EndpointSet | undefined;
  /** The upstream's rate-limit rules (shared by its routes; rules match routes themselves). */
  readonly rateLimit: RateLimitBuild | undefined;
  /** The caps and breaker this route's tries pass; undefined when the policy turns them off. */
  readonly breaker: Omit<BreakerBuild, 'upstream' | 'clock' | 'metrics'> | undefined;
  /** Hedging for this route, with the upstream's latency tracker (outbound). */
  readonly hedge: { readonly policy: HedgePolicy; readonly latency: LatencyTracker } | undefined;
  /** The credits this upstream's consumers granted (outbound, credits on). */
  readonly credits: CreditPool | undefined;
  /** The credits this sidecar grants its producers (inbound, credits on). */
  readonly creditGrants: CreditGrants | undefined;
  /** Inbound admission: adaptive concurrency, priority shedding, deadline-aware refusals. */
  readonly admission: AdmissionControl | undefined;
  /** Inbound dedupe of requests carrying an Idempotency-Key. */
  readonly idempotency: IdempotencyDedupe | undefined;
  readonly deadlineHeader: string;
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: StackMetrics;
  /** undefined: tracing off. */
  readonly tracing: Tracing | undefined;
  /** undefined: no access log. */
  readonly accessLog: AccessLog | undefined;
}

/** A failed probe must be retried elsewhere (the retry layer retries it whatever it failed with). */
function canProbe(retry: RetryPolicy | undefined): boolean {
  return retry !== undefined && retry.maxAttempts > 1;
}

export function buildStack(b: RouteBuild): Handler {
  const { direction, upstream, clock, metrics } = b;
  const layers: (Layer | undefined)[] = [
    // Outermost: sees every request once, turns any error into the one local reply, counts it;
    // opens the request's trace, so every layer below can note its decisions on it.
    telemetryLayer({ direction, upstream, route: b.route, clock, metrics: metrics.telemetry, tracing: b.tracing, accessLog: b.accessLog }),
    // Fixes the deadline before anything can wait, so retries, back-off and queues all fit in it;
    // also refuses requests whose propagated deadline already passed.
    deadlineLayer({
      direction,
      upstream,
      requestMs: b.timeouts.requestMs,
      maxDeadlineMs: b.maxDeadlineMs,
      clock,
      metrics: metrics.timeouts,
    }),
    // Per request, before retries: a refused request is refused once, and retries (which the
    // budget bounds) are not charged to the caller's rate.
    b.rateLimit === undefined || b.rateLimit.limiters.length === 0 ? undefined : rateLimitLayer(b.rateLimit),
    // Inbound: outside admission, so the grant rides on every answer, admission's refusals too
    // (a producer learns its window shrank on the very refusal that says so).
    // With credits off, the protocol still stops here: the app never sees a claim or a fetch.
    b.creditGrants !== undefined ? creditGrantLayer(b.creditGrants) : direction === 'inbound' ? creditlessLayer() : undefined,
    // Inbound: the app's concurrency limit; sheds lower priorities first, refuses requests whose
    // deadline is shorter than the app's latency now. Before dedupe: a refused duplicate never
    // holds a key.
    b.admission?.layer(),
    // Inbound, innermost: the app sees each Idempotency-Key once; only admitted requests reach it.
    b.idempotency?.layer(),
    // Retries inside the deadline, bounded by attempts and the upstream's budget.
    b.retry === undefined
      ? undefined
      : retryLayer({
          direction,
          upstream,
          policy: b.retry,
          budget: b.budget,
          allowance: b.replayAllowance,
          clock,
          random: b.random,
          metrics: metrics.retry,
        }),
    // One attempt of the retry layer may be raced by hedges; each hedge is a try of its own
    // below (breaker, credits, per-try timer), charged to the same budget.
    b.hedge === undefined
      ? undefined
      : hedgeLayer({
          direction,
          upstream,
          policy: b.hedge.policy,
          budget: b.budget,
          latency: b.hedge.latency,
          clock,
          metrics: metrics.hedge,
          retryOnStatuses: b.retry?.retryOnStatuses,
          // Without a retry layer nobody else counts requests into the budget hedges spend.
          recordRequests: b.retry === undefined,
        }),
    // Each try is admitted on its own: a retry meets an open breaker or a full upstream too.
    // Inside the retry layer, so its refusals end the request instead of being retried.
    b.breaker === undefined ? undefined : breakerLayer({ ...b.breaker, upstream, clock, metrics: metrics.breaker }),
    // Inside the breaker: a try the breaker refuses spends no credit. Outside the per-try timer:
    // waiting for a credit is not the upstream being slow. Refuses before the wire.
    b.credits === undefined ? undefined : creditLayer({ upstream, pool: b.credits, clock, metrics: metrics.credits }),
    // Innermost timer: bounds one try, so a hung endpoint costs a try and the retry goes on.
    b.timeouts.perTryMs === undefined
      ? undefined
      : perTryTimeoutLayer({ direction, upstream, perTryMs: b.timeouts.perTryMs, metrics: metrics.timeouts }),
  ];
  const endpoints = b.endpoints;
  let handler: Handler =
    endpoints === undefined
      ? () => Promise.reject(new SluiceError('no-endpoints', upstream))
      : upstreamClient({
          direction,
          upstream,
          route: b.route,
          metrics: metrics.upstream,
          endpoints,
          idleMs: b.timeouts.idleMs,
          deadlineHeader: b.deadlineHeader,
          clock,
          probes: canProbe(b.retry),
          credits: b.credits,
        });
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i];
    if (layer !== undefined) handler = layer(handler);
  }
  return handler;
}
