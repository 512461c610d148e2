// Rate limits: every rule that applies to a request must admit it. Rules are checked in policy
// order; the first enforcing rule that refuses ends the request with 429, Retry-After and the IETF
// RateLimit-Policy / RateLimit fields. Tokens already taken by earlier rules stay spent: giving them
// back would need a second round trip to Redis for global rules, and a refused request is cheap.
// A rule in shadow mode takes tokens like an enforcing one, so what it reports is what enforce
// would have done; when it would refuse, it counts that, notes it on the context and lets the
// request through.
//
// Local rules decide synchronously (no promise, no timer) and need no I/O; only global rules wait,
// for one Redis round trip bounded by redis.commandTimeoutMs and by the request's cancellation.
import type { Counter, Registry } from 'prom-client';
import type { RateLimitPolicy } from '../../policy/ratelimits.ts';
import { SluiceError } from '../../stack/errors.ts';
import { noteShadowRefusal, type Clock, type Direction, type Layer, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../stack/types.ts';
import { counter, gauge } from '../../telemetry/registry.ts';
import { descriptorKey, ruleApplies } from './descriptor.ts';
import { refusalHeaders, waitSeconds } from './headers.ts';
import { RuleLimiter, RuleState, globalBucket, ruleSignature, type Verdict } from './limiter.ts';
import type { GlobalStore, RedisLinkMetrics } from './redis-link.ts';

/** Every value the `outcome` label takes. */
export const OUTCOMES = [
  'allowed',
  'refused',
  'shadow_refused',
  'fallback_allowed',
  'fallback_refused',
  'fallback_shadow_refused',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface RateLimitMetrics extends RedisLinkMetrics {
  readonly decisions: Counter<'direction' | 'upstream' | 'rule' | 'outcome'>;
  readonly overflow: Counter<'direction' | 'upstream' | 'rule'>;
}

export function declareRateLimitMetrics(registry: Registry): RateLimitMetrics {
  return {
    decisions: counter(
      registry,
      'sluice_ratelimit_decisions_total',
      'Rate-limit decisions by rule and outcome: allowed, refused, shadow_refused (shadow mode would have refused), and fallback_* for global rules decided without Redis (onRedisDown).',
      ['direction', 'upstream', 'rule', 'outcome'],
    ),
    overflow: counter(
      registry,
      'sluice_ratelimit_overflow_total',
      'Requests whose descriptor value was charged to the shared overflow bucket because the rule already tracks maxKeys values.',
      ['direction', 'upstream', 'rule'],
    ),
    redisUp: gauge(registry, 'sluice_ratelimit_redis_up', 'Whether global rate limits reach Redis (1) or fall back to onRedisDown (0).', []),
    redisReplicas: gauge(
      registry,
      'sluice_ratelimit_redis_replicas',
      'Sidecars this one assumes share each global limit; its local share while Redis is down is 1 / this.',
      [],
    ),
    fallbackActivations: counter(
      registry,
      'sluice_ratelimit_fallback_activations_total',
      'Times global rate limits switched to their onRedisDown fallback because Redis became unreachable.',
      [],
    ),
    redisFailures: counter(
      registry,
      'sluice_ratelimit_redis_failures_total',
      'Failed Redis calls for rate limits, by why: timeout (slower than commandTimeoutMs), error (an error reply or a refused write), closed (the connection closed or a reconnect failed).',
      ['why'],
    ),
  };
}

export interface RateLimitBuildOptions {
  readonly direction: Direction;
  /** Upstream name (outbound) or 'app' (inbound): part of every global limit's Redis id. */
  readonly upstream: string;
  readonly rules: readonly RateLimitPolicy[];
  /** The sidecar's Redis link (RedisLink); required when a rule is global. */
  readonly store: GlobalStore | undefined;
  readonly clock: Clock;
  readonly metrics: RateLimitMetrics;
  /** The build this one replaces: rules whose buckets mean the same keep them (no fresh burst on update). */
  readonly previous?: RateLimitBuild;
}

export interface RateLimitBuild {
  readonly direction: Direction;
  readonly upstream: string;
  /** The rules that are not off, in policy order. */
  readonly limiters: readonly RuleLimiter[];
  readonly metrics: RateLimitMetrics;
  /** Rule state by name, for the build that replaces this one. */
  readonly states: ReadonlyMap<string, RuleState>;
  /**
   * Lets go of the rules' state. Holds no timers or sockets itself: those belong to the shared
   * RedisLink, closed with it when the `redis:` policy goes away or changes.
   */
  close(): void;
}

export function createRateLimitBuild(o: RateLimitBuildOptions): RateLimitBuild {
  const now = o.clock.now();
  const states = new Map<string, RuleState>();
  const limiters: RuleLimiter[] = [];
  for (const rule of o.rules) {
    if (rule.mode === 'off') continue;
    const before = o.previous?.states.get(rule.name);
    const state = before !== undefined && before.signature === ruleSignature(rule) ? before : new RuleState(rule, now);
    states.set(rule.name, state);
    const overflow = o.metrics.overflow.labels({ direction: o.direction, upstream: o.upstream, rule: rule.name });
    limiters.push(
      new RuleLimiter({
        rule,
        state,
        clock: o.clock,
        store: o.store,
        global: rule.scope === 'global' && o.store ? globalBucket(o.store.keyPrefix, o.direction, o.upstream, rule) : undefined,
        onOverflow: () => overflow.inc(),
      }),
    );
  }
  return {
    direction: o.direction,
    upstream: o.upstream,
    limiters,
    metrics: o.metrics,
    states,
    close: () => states.clear(),
  };
}

interface Counted {
  readonly limiter: RuleLimiter;
  readonly rule: RateLimitPolicy;
  readonly count: Readonly<Record<Outcome, { inc(): void }>>;
}

export function rateLimitLayer(b: RateLimitBuild): Layer {
  if (b.limiters.length === 0) return (next) => next;
  const rules: Counted[] = b.limiters.map((limiter) => {
    const labels = { direction: b.direction, upstream: b.upstream, rule: limiter.rule.name };
    const count = Object.fromEntries(OUTCOMES.map((outcome) => [outcome, b.metrics.decisions.labels({ ...labels, outcome })]));
    return { limiter, rule: limiter.rule, count: count as Record<Outcome, { inc(): void }> };
  });

  /** Counts a verdict; the error to end the request with when an enforcing rule refused. */
  function settle(r: Counted, v: Verdict, ctx: RequestContext): SluiceError | undefined {
    if (v.admitted) {
      r.count[v.fallback ? 'fallback_allowed' : 'allowed'].inc();
      return undefined;
    }
    if (r.rule.mode === 'shadow') {
      r.count[v.fallback ? 'fallback_shadow_refused' : 'shadow_refused'].inc();
      noteShadowRefusal(ctx, 'rate-limited');
      return undefined;
    }
    r.count[v.fallback ? 'fallback_refused' : 'refused'].inc();
    const waitS = waitSeconds(v.waitMs);
    const why = v.fallback && r.rule.onRedisDown === 'deny' ? ' (rate limit store unreachable)' : '';
    return new SluiceError('rate-limited', `${r.rule.name}${why}`, {
      retryAfterS: waitS,
      headers: refusalHeaders(r.rule, 0, waitS),
    });
  }

  return (next) => {
    /** From the first rule that had to wait for Redis on: the rest in order, awaiting where needed. */
    async function rest(from: number, pending: Promise<Verdict>, req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
      const first = settle(rules[from]!, await pending, ctx);
      if (first) throw first;
      for (let i = from + 1; i < rules.length; i++) {
        const r = rules[i]!;
        if (!ruleApplies(r.rule.match, req, ctx)) continue;
        const refusal = settle(r, await r.limiter.decide(descriptorKey(r.rule.by, req, ctx), ctx), ctx);
        if (refusal) throw refusal;
      }
      return next(req, ctx);
    }

    // Not async itself: with local rules only, a request is decided without a promise or a tick.
    return (req, ctx) => {
      for (let i = 0; i < rules.length; i++) {
        const r = rules[i]!;
        if (!ruleApplies(r.rule.match, req, ctx)) continue;
        const v = r.limiter.decide(descriptorKey(r.rule.by, req, ctx), ctx);
        if (v instanceof Promise) return rest(i, v, req, ctx);
        const refusal = settle(r, v, ctx);
        if (refusal) return Promise.reject(refusal);
      }
      return next(req, ctx);
    };
  };
}
