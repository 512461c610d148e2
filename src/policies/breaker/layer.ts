// Admission of each try to an upstream: Envoy-style caps on tries in flight and tries waiting
// for a connection, then the circuit breaker. It sits inside the retry layer, so every try is
// admitted on its own and a retry refused here ends the request with what the refusal says. It
// refuses at once (no queue of its own): an open breaker costs the caller microseconds, not a
// timeout. Only the one classifier's upstream failures count against the breaker; our own
// refusals further in (credits, deadline) and a client leaving count as nothing.
import type { Counter, Gauge, Registry } from 'prom-client';
import type { CircuitBreakerPolicy } from '../../policy/types.ts';
import { classifyError, classifyResponse } from '../../stack/classify.ts';
import { SluiceError } from '../../stack/errors.ts';
import { noteShadowRefusal, type Clock, type Layer, type ProxyResponse, type RequestContext } from '../../stack/types.ts';
import { counter, gauge } from '../../telemetry/registry.ts';
import { Breaker, type BreakerState } from './breaker.ts';

export interface BreakerMetrics {
  readonly state: Gauge<'upstream' | 'route' | 'state'>;
  readonly transitions: Counter<'upstream' | 'route' | 'to'>;
  readonly refusals: Counter<'upstream' | 'reason' | 'mode'>;
  readonly inFlight: Gauge<'upstream'>;
  /** Every live upstream's caps, read when Prometheus scrapes: nothing is counted per try. */
  readonly live: Set<UpstreamCaps>;
}

export function declareBreakerMetrics(registry: Registry): BreakerMetrics {
  const live = new Set<UpstreamCaps>();
  const inFlight = gauge(registry, 'sluice_upstream_tries_in_flight', 'Tries in flight to each upstream, all endpoints.', [
    'upstream',
  ]);
  // prom-client calls collect() on the gauge before each scrape.
  // Forwarded unknown hosts each have caps under the one label 'passthrough': they add up.
  (inFlight as unknown as { collect?: () => void }).collect = () => {
    inFlight.reset();
    for (const c of live) inFlight.labels({ upstream: c.upstream }).inc(c.inFlight);
  };
  return {
    state: gauge(
      registry,
      'sluice_circuit_breaker_state',
      'Circuit breaker state: 1 for the state each breaker is in (closed, open, half_open), 0 for the others. route="" is the upstream-wide breaker.',
      ['upstream', 'route', 'state'],
    ),
    transitions: counter(registry, 'sluice_circuit_breaker_transitions_total', 'Circuit breaker state changes, by the state entered.', [
      'upstream',
      'route',
      'to',
    ]),
    refusals: counter(
      registry,
      'sluice_circuit_breaker_refusals_total',
      'Tries refused (mode="enforce") or that would have been (mode="shadow"), by reason: open, half_open (probes all taken), max_requests, max_pending.',
      ['upstream', 'reason', 'mode'],
    ),
    inFlight,
    live,
  };
}

const STATE_LABELS: Readonly<Record<BreakerState, string>> = { closed: 'closed', open: 'open', 'half-open': 'half_open' };

/** Tries in flight to one upstream, shared by its routes (build lifetime). */
export class UpstreamCaps {
  readonly upstream: string;
  inFlight = 0;
  readonly #live: Set<UpstreamCaps>;

  constructor(upstream: string, metrics: BreakerMetrics) {
    this.upstream = upstream;
    this.#live = metrics.live;
    this.#live.add(this);
  }

  /** The upstream left the policy (or a forwarded host was evicted): stop reporting it. */
  retire(): void {
    this.#live.delete(this);
  }
}

export interface BreakerBuildDeps {
  readonly upstream: string;
  /** '' for the upstream-wide breaker, else the route that owns it. */
  readonly route: string;
  readonly clock: Clock;
  readonly metrics: BreakerMetrics;
  readonly log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** Set the state gauge (false when several breakers share these labels). */
  readonly stateGauge: boolean;
}

/** A breaker with its state gauge and transition log, for one upstream or route. */
export function newBreaker(policy: CircuitBreakerPolicy, d: BreakerBuildDeps): Breaker {
  const labels = { upstream: d.upstream, route: d.route };
  const setState = (state: BreakerState): void => {
    if (!d.stateGauge) return;
    for (const s of Object.keys(STATE_LABELS) as BreakerState[]) {
      d.metrics.state.labels({ ...labels, state: STATE_LABELS[s] }).set(s === state ? 1 : 0);
    }
  };
  setState('closed');
  return new Breaker(policy, d.clock, (to, openMs) => {
    setState(to);
    d.metrics.transitions.labels({ ...labels, to: STATE_LABELS[to] }).inc();
    const fields = { upstream: d.upstream, route: d.route || undefined, mode: policy.mode };
    if (to === 'open') d.log.warn({ ...fields, openMs }, 'circuit breaker opened');
    else d.log.info(fields, to === 'closed' ? 'circuit breaker closed' : 'circuit breaker half-open: probing');
  });
}

export interface BreakerBuild {
  readonly upstream: string;
  readonly policy: CircuitBreakerPolicy;
  readonly breaker: Breaker;
  readonly caps: UpstreamCaps;
  /** Connections the upstream's pools can open in all; tries beyond them wait for one. */
  readonly connectionSlots: () => number;
  readonly clock: Clock;
  readonly metrics: BreakerMetrics;
}

export function breakerLayer(b: BreakerBuild): Layer | undefined {
  const { policy, breaker, caps, clock } = b;
  if (policy.mode === 'off') return undefined;
  const enforce = policy.mode === 'enforce';
  const refusal = (reason: string) => b.metrics.refusals.labels({ upstream: b.upstream, reason, mode: policy.mode });
  const refused = {
    open: refusal('open'),
    halfOpen: refusal('half_open'),
    maxRequests: refusal('max_requests'),
    maxPending: refusal('max_pending'),
  };

  /** The refusal to reject with (enforce), or undefined once noted (shadow). */
  function refuse(ctx: RequestContext, c: { inc(): void }, err: () => SluiceError): SluiceError | undefined {
    c.inc();
    if (enforce) return err();
    noteShadowRefusal(ctx, err().code);
    return undefined;
  }

  function overCap(ctx: RequestContext): SluiceError | undefined {
    const over = (what: string) => () => new SluiceError('overloaded', `${what} for upstream ${b.upstream}`);
    if (policy.maxRequests !== undefined && caps.inFlight >= policy.maxRequests) {
      return refuse(ctx, refused.maxRequests, over(`${policy.maxRequests} tries in flight`));
    }
    if (policy.maxPending !== undefined && caps.inFlight - b.connectionSlots() >= policy.maxPending) {
      return refuse(ctx, refused.maxPending, over(`${policy.maxPending} tries waiting for a connection`));
    }
    return undefined;
  }

  const circuitOpen = () => new SluiceError('circuit-open', b.upstream, { retryAfterS: breaker.retryAfterMs() / 1000 });

  return (next) => (req, ctx) => {
    const capped = overCap(ctx);
    if (capped !== undefined) return Promise.reject(capped);
    const generation = breaker.admit();
    if (generation < 0) {
      const open = refuse(ctx, breaker.refusal() === 'open' ? refused.open : refused.halfOpen, circuitOpen);
      if (open !== undefined) return Promise.reject(open);
    }
    caps.inFlight++;
    const startedMs = clock.now();
    // A probe of an ejected endpoint (ctx.probed, set by the upstream client) says nothing about
    // the upstream as a whole: ejection already knows that endpoint is sick.
    return next(req, ctx).then(
      (response: ProxyResponse) => {
        caps.inFlight--;
        if (ctx.probed) breaker.abandon(generation);
        else breaker.record(generation, classifyResponse(response.statusCode, response.headers).failure, clock.now() - startedMs);
        return response;
      },
      (err: unknown) => {
        caps.inFlight--;
        const verdict = classifyError(err);
        if (verdict.failure && !ctx.probed) breaker.record(generation, true, clock.now() - startedMs);
        else breaker.abandon(generation);
        throw err;
      },
    );
  };
}
