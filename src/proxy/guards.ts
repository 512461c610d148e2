// An upstream's caps and circuit breakers (build lifetime). A policy update keeps each breaker
// whose own policy is unchanged, so an open breaker stays open when an unrelated field changes,
// and keeps the caps' in-flight count, which stays true across any update.
import { UpstreamCaps, newBreaker } from '../policies/breaker/layer.ts';
import type { Breaker } from '../policies/breaker/breaker.ts';
import type { CircuitBreakerPolicy, RoutePolicy } from '../policy/types.ts';
import type { RuntimeDeps } from './router.ts';

interface KeptBreaker {
  readonly key: string;
  readonly breaker: Breaker;
}

/** The key of the upstream-wide breaker; route-owned ones are keyed by route name. */
const UPSTREAM_WIDE = '';

export class UpstreamGuards {
  readonly caps: UpstreamCaps;
  readonly #breakers: ReadonlyMap<string, KeptBreaker>;

  private constructor(caps: UpstreamCaps, breakers: ReadonlyMap<string, KeptBreaker>) {
    this.caps = caps;
    this.#breakers = breakers;
  }

  /**
   * The guards for an upstream under a new policy: `previous` (the same upstream's under the old
   * one) gives up what still means the same, and closes the rest.
   */
  static build(
    upstream: string,
    shape: { readonly circuitBreaker: CircuitBreakerPolicy; readonly routes: readonly RoutePolicy[] },
    previous: UpstreamGuards | undefined,
    deps: RuntimeDeps,
    /** false when several upstreams share the name (forwarded hosts): one gauge cannot show them all. */
    stateGauge: boolean,
  ): UpstreamGuards {
    const wanted = new Map<string, CircuitBreakerPolicy>();
    if (shape.circuitBreaker.mode !== 'off') wanted.set(UPSTREAM_WIDE, shape.circuitBreaker);
    for (const r of shape.routes) {
      if (r.ownBreaker && r.circuitBreaker.mode !== 'off') wanted.set(r.name, r.circuitBreaker);
    }
    const old = previous === undefined ? undefined : previous.#breakers;
    const breakers = new Map<string, KeptBreaker>();
    for (const [scope, policy] of wanted) {
      const key = JSON.stringify(policy);
      const kept = old?.get(scope);
      if (kept !== undefined && kept.key === key) {
        breakers.set(scope, kept);
        continue;
      }
      const breaker = newBreaker(policy, {
        upstream,
        route: scope,
        clock: deps.clock,
        metrics: deps.metrics.breaker,
        log: deps.log,
        stateGauge,
      });
      breakers.set(scope, { key, breaker });
    }
    if (old !== undefined) for (const [scope, kept] of old) if (breakers.get(scope) !== kept) kept.breaker.close();
    return new UpstreamGuards(previous?.caps ?? new UpstreamCaps(upstream, deps.metrics.breaker), breakers);
  }

  /** The breaker a route's tries pass, or undefined when its policy turns breaking off. */
  breakerFor(route: RoutePolicy): { readonly policy: CircuitBreakerPolicy; readonly breaker: Breaker } | undefined {
    const kept = this.#breakers.get(route.ownBreaker ? route.name : UPSTREAM_WIDE);
    if (kept === undefined) return undefined;
    // A route without a breaker of its own carries the upstream's policy.
    return { policy: route.circuitBreaker, breaker: kept.breaker };
  }

  /** The upstream left the policy: stop the breakers' timers and the caps' reporting. */
  retire(): void {
    for (const kept of this.#breakers.values()) kept.breaker.close();
    this.caps.retire();
  }
}
