// THE order of the request path, outermost first. Config switches a layer off (its build is
// undefined); it never reorders them. Each line says why the layer sits where it does.
//
// DESIGN.md's full outbound order, with the layers still to come marked (later):
//   telemetry → deadline → rate limit → retry + budget → caps + circuit breaker →
//   credits (later) → per-try timeout → upstream client, which balances (p2c-ewma) over the
//   endpoints outlier ejection leaves in rotation: both learn from each try where it settles.
// Inbound today: telemetry → deadline → rate limit → app; adaptive concurrency, credit grant
// and idempotency (later) go between rate limit and the app client.
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
import type { Clock, Direction, Handler, Layer } from './types.ts';

/** Every metric family the stack's layers own, declared once per registry. */
export interface StackMetrics {
  readonly telemetry: TelemetryMetrics;
  readonly timeouts: TimeoutMetrics;
  readonly retry: RetryMetrics;
  readonly upstream: UpstreamMetrics;
  readonly endpoints: EndpointMetrics;
  readonly breaker: BreakerMetrics;
  readonly rateLimit: RateLimitMetrics;
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
  readonly deadlineHeader: string;
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: StackMetrics;
}

/** A failed probe must be retried elsewhere (the retry layer retries it whatever it failed with). */
function canProbe(retry: RetryPolicy | undefined): boolean {
  return retry !== undefined && retry.maxAttempts > 1;
}

export function buildStack(b: RouteBuild): Handler {
  const { direction, upstream, clock, metrics } = b;
  const layers: (Layer | undefined)[] = [
    // Outermost: sees every request once, turns any error into the one local reply, counts it.
    telemetryLayer({ direction, upstream, route: b.route, clock, metrics: metrics.telemetry }),
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
    // Each try is admitted on its own: a retry meets an open breaker or a full upstream too.
    // Inside the retry layer, so its refusals end the request instead of being retried.
    b.breaker === undefined ? undefined : breakerLayer({ ...b.breaker, upstream, clock, metrics: metrics.breaker }),
    // (later: credits)
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
          metrics: metrics.upstream,
          endpoints,
          idleMs: b.timeouts.idleMs,
          deadlineHeader: b.deadlineHeader,
          clock,
          probes: canProbe(b.retry),
        });
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i];
    if (layer !== undefined) handler = layer(handler);
  }
  return handler;
}
