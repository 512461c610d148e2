// Build lifetime: one runtime per upstream (its budget, its endpoints' pools, one stack per
// route), rebuilt on every policy update. State whose meaning survives an update is carried
// over: a budget keeps its window when its upstream keeps its name, pools stay warm per endpoint.
import { RetryBudget } from '../policies/retry/budget.ts';
import type { ReplayAllowance } from '../policies/retry/replay-body.ts';
import type { Endpoint, OutboundPolicy, RoutePolicy, SidecarPolicy, UpstreamPolicy } from '../policy/types.ts';
import { buildStack, type StackMetrics } from '../stack/order.ts';
import type { Clock, Direction, Handler } from '../stack/types.ts';
import { isIP } from 'node:net';
import { createRateLimitBuild, type RateLimitBuild } from '../policies/ratelimit/layer.ts';
import type { GlobalStore } from '../policies/ratelimit/redis-link.ts';
import type { RateLimitPolicy } from '../policy/ratelimits.ts';
import type { DnsFunctions } from './dns/resolve.ts';
import { DnsWatcher, type DnsMetrics } from './dns/watcher.ts';
import { EndpointSet } from './endpoints.ts';
import { UpstreamGuards } from './guards.ts';
import type { PoolSet, PoolSettings } from './pools.ts';
import type { Logger } from 'pino';
import type { AdmissionControl } from '../policies/admission/control.ts';
import type { CreditGrants } from '../policies/credits/grant-layer.ts';
import type { CreditPool, ProducerIdentity } from '../policies/credits/pool.ts';
import type { IdempotencyDedupe } from '../policies/idempotency/dedupe.ts';
import type { LatencyTracker } from '../policies/retry/hedge.ts';
import { InboundBackpressure, OutboundBackpressure } from './backpressure.ts';
import { AccessLog } from '../telemetry/access-log.ts';
import type { Tracing } from '../telemetry/tracing.ts';

export interface RouteTarget {
  readonly handler: Handler;
  readonly upstream: string;
  readonly route: string;
  /** For byte tunnels (Upgrade, CONNECT), which bypass the stack. */
  readonly endpoints: readonly Endpoint[];
  readonly connectMs: number;
  readonly idleMs: number | undefined;
}

export interface RuntimeDeps {
  readonly clock: Clock;
  readonly log: Logger;
  /** Sidecar-wide bound on request bodies held for replay. */
  readonly replayAllowance: ReplayAllowance;
  readonly random: () => number;
  readonly metrics: StackMetrics;
  readonly dnsMetrics: DnsMetrics;
  /** This sidecar's pod, when known: spreads sidecars over a long DNS answer's addresses. */
  readonly podName: string | undefined;
  /** Resolver functions for endpoint names; default node:dns with the system's servers. */
  readonly dns: (() => DnsFunctions) | undefined;
  /** The sidecar's Redis link for global rate limits under the policy being applied, if any. */
  readonly rateLimitStore: () => GlobalStore | undefined;
  /** Who this sidecar is in the credit claims it sends. */
  readonly identity: () => ProducerIdentity;
  /** undefined: tracing off. */
  readonly tracing: Tracing | undefined;
}

type UpstreamShape = Omit<UpstreamPolicy, 'name' | 'hosts' | 'endpoints'>;

/** The backpressure builds a runtime's stacks share (see ./backpressure.ts); each may be absent. */
interface StackExtras {
  readonly latency?: LatencyTracker | undefined;
  readonly credits?: CreditPool | undefined;
  readonly creditGrants?: CreditGrants | undefined;
  readonly admission?: AdmissionControl | undefined;
  readonly idempotency?: IdempotencyDedupe | undefined;
}

const NO_EXTRAS: StackExtras = {};

class UpstreamRuntime {
  readonly #routes: readonly { readonly policy: RoutePolicy; readonly target: RouteTarget }[];

  constructor(
    direction: Direction,
    name: string,
    shape: UpstreamShape,
    endpoints: readonly Endpoint[],
    endpointSet: EndpointSet | undefined,
    budget: RetryBudget | undefined,
    guards: UpstreamGuards,
    rateLimit: RateLimitBuild | undefined,
    policy: SidecarPolicy,
    deps: RuntimeDeps,
    extras: StackExtras = NO_EXTRAS,
  ) {
    const connectionSlots = (): number => shape.maxConnectionsPerEndpoint * endpoints.length;
    const accessLog = policy.accessLog === undefined ? undefined : new AccessLog(policy.accessLog, deps.log, deps.random);
    const breakerBuild = (route: RoutePolicy) => {
      const breaker = guards.breakerFor(route);
      return breaker && { ...breaker, caps: guards.caps, connectionSlots };
    };
    this.#routes = shape.routes.map((route) => ({
      policy: route,
      target: {
        upstream: name,
        route: route.name,
        endpoints,
        connectMs: shape.timeouts.connectMs,
        idleMs: route.timeouts.idleMs,
        handler: buildStack({
          direction,
          upstream: name,
          route: route.name,
          timeouts: route.timeouts,
          maxDeadlineMs: direction === 'inbound' ? policy.inbound.maxDeadlineMs : undefined,
          retry: route.retry,
          budget,
          replayAllowance: deps.replayAllowance,
          endpoints: endpointSet,
          breaker: breakerBuild(route),
          rateLimit,
          hedge: route.hedge === undefined || extras.latency === undefined ? undefined : { policy: route.hedge, latency: extras.latency },
          credits: extras.credits,
          creditGrants: extras.creditGrants,
          admission: extras.admission,
          idempotency: extras.idempotency,
          deadlineHeader: policy.deadlineHeader,
          clock: deps.clock,
          random: deps.random,
          metrics: deps.metrics,
          tracing: deps.tracing,
          accessLog,
        }),
      },
    }));
  }

  select(method: string, path: string): RouteTarget {
    for (const { policy, target } of this.#routes) {
      const m = policy.match;
      if (m.pathPrefix !== undefined && !path.startsWith(m.pathPrefix)) continue;
      if (m.methods !== undefined && !m.methods.includes(method)) continue;
      return target;
    }
    // Unreachable while the parser appends the catch-all 'default' route; kept total anyway.
    return (this.#routes[this.#routes.length - 1] as { target: RouteTarget }).target;
  }
}

/** An upstream's rate-limit build; rules whose buckets mean the same keep them (no fresh burst). */
function rateLimitFor(
  direction: Direction,
  upstream: string,
  rules: readonly RateLimitPolicy[],
  previous: RateLimitBuild | undefined,
  deps: RuntimeDeps,
): RateLimitBuild {
  const build = createRateLimitBuild({
    direction,
    upstream,
    rules,
    store: deps.rateLimitStore(),
    clock: deps.clock,
    metrics: deps.metrics.rateLimit,
    previous,
  });
  previous?.close(); // its rule state lives on in `build` where the rule kept its meaning
  return build;
}

/** Parses an authority into an endpoint: `host`, `host:port`, `[v6]:port`; port 80 by default. */
export function parseAuthority(authority: string): Endpoint | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9._~-]+))(?::(\d{1,5}))?$/.exec(authority);
  if (m === null) return undefined;
  const port = m[3] === undefined ? 80 : Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Forwarded unknown hosts keep a runtime each, capped so a scan of hostnames cannot grow memory. */
const MAX_PASSTHROUGH = 256;

/** A pool that leaves the policy stays open while requests on the old policy may still use it. */
const MAX_RETIRE_MS = 300_000;

/** The longest any request admitted under `policy` can live: how long its pools must stay. */
export function retireMs(policy: SidecarPolicy): number {
  let longest = policy.inbound.timeouts.requestMs ?? MAX_RETIRE_MS;
  const shapes = [policy.outbound.defaults, ...policy.outbound.upstreams];
  for (const shape of shapes) {
    for (const route of shape.routes) longest = Math.max(longest, route.timeouts.requestMs ?? MAX_RETIRE_MS);
  }
  return Math.min(longest, MAX_RETIRE_MS);
}

/** The pools an upstream needs per endpoint: for HTTP/1.1 clients, and for HTTP/2 clients. */
function poolSettings(shape: UpstreamShape): { h1: PoolSettings; h2: PoolSettings } {
  const base = { connectMs: shape.timeouts.connectMs, connections: shape.maxConnectionsPerEndpoint };
  const protocol = shape.protocol;
  const h1: PoolSettings = { ...base, protocol: protocol === 'http2' ? 'http2' : 'http1' };
  const h2: PoolSettings = { ...base, protocol: protocol === 'http1' ? 'http1' : 'http2' };
  return { h1, h2 };
}

/** Every pool an upstream on these settings uses, for PoolSet.retain. */
function poolsUsed(endpoints: readonly Endpoint[], settings: { h1: PoolSettings; h2: PoolSettings }): [Endpoint, PoolSettings][] {
  return endpoints.flatMap((e): [Endpoint, PoolSettings][] => [
    [e, settings.h1],
    [e, settings.h2],
  ]);
}

/** An upstream's endpoint set, and what must stay equal for it to carry over a policy update. */
interface KeptSet {
  readonly key: string;
  /** The part of the key other than the endpoint list. */
  readonly policyKey: string;
  /** undefined while there are no endpoints. */
  readonly set: EndpointSet | undefined;
}

/**
 * The endpoint set for an upstream: the previous one when endpoints, pools and balancing policy
 * are unchanged (its latency estimates and ejections still mean the same), else a new one.
 */
function endpointSetFor(
  name: string,
  shape: UpstreamShape,
  endpoints: readonly Endpoint[],
  pools: PoolSet,
  deps: RuntimeDeps,
  previous: KeptSet | undefined,
): KeptSet {
  const settings = poolSettings(shape);
  const policyKey = JSON.stringify([settings, shape.loadBalancer, shape.outlierDetection]);
  const key = JSON.stringify([endpoints, policyKey]);
  if (previous !== undefined && previous.key === key) return previous;
  // Only the endpoint list changed (a DNS answer): estimates and ejections still mean the same.
  const adopt = previous !== undefined && previous.policyKey === policyKey ? previous.set : undefined;
  previous?.set?.retire();
  if (endpoints.length === 0) return { key, policyKey, set: undefined };
  const set = new EndpointSet({
    upstream: name,
    endpoints,
    dispatchers: endpoints.map((e) => pools.get(e, settings.h1)),
    h2Dispatchers: endpoints.map((e) => pools.get(e, settings.h2)),
    loadBalancer: shape.loadBalancer,
    outlierDetection: shape.outlierDetection,
    clock: deps.clock,
    random: deps.random,
    metrics: deps.metrics.endpoints,
    log: deps.log,
    ...(adopt === undefined ? {} : { previous: adopt }),
  });
  return { key, policyKey, set };
}

/**
 * An upstream's endpoints as resolved now, and the watcher that keeps them so when they are
 * written as names. Kept over a policy update while endpoints and dns settings are unchanged.
 */
interface Resolution {
  readonly key: string;
  watcher: DnsWatcher | undefined;
  endpoints: readonly Endpoint[];
}

export class OutboundRouter {
  readonly #deps: RuntimeDeps;
  readonly #pools: PoolSet;
  readonly #passthroughPools: PoolSet;
  #policy: SidecarPolicy | undefined;
  #byHost = new Map<string, UpstreamRuntime>();
  #budgets = new Map<string, RetryBudget>();
  #sets = new Map<string, KeptSet>();
  #guards = new Map<string, UpstreamGuards>();
  #resolutions = new Map<string, Resolution>();
  #rateLimits = new Map<string, RateLimitBuild>();
  #passthroughRateLimit: RateLimitBuild | undefined;
  #passthrough = new Map<string, { runtime: UpstreamRuntime; endpoint: Endpoint; guards: UpstreamGuards }>();
  #passthroughBudget: RetryBudget | undefined;
  readonly #backpressure: OutboundBackpressure;

  constructor(deps: RuntimeDeps, pools: PoolSet, passthroughPools: PoolSet) {
    this.#deps = deps;
    this.#backpressure = new OutboundBackpressure(deps.clock, deps.metrics, deps.identity);
    this.#pools = pools;
    this.#passthroughPools = passthroughPools;
  }

  apply(policy: SidecarPolicy): void {
    const out: OutboundPolicy = policy.outbound;
    const retire = retireMs(this.#policy ?? policy);
    this.#policy = policy;
    const previous = {
      budgets: this.#budgets,
      sets: this.#sets,
      guards: this.#guards,
      resolutions: this.#resolutions,
      rateLimits: this.#rateLimits,
    };
    this.#byHost = new Map();
    this.#rateLimits = new Map();
    this.#budgets = new Map();
    this.#sets = new Map();
    this.#guards = new Map();
    this.#resolutions = new Map();
    for (const u of out.upstreams) {
      this.#resolutions.set(u.name, this.#resolutionFor(u, previous.resolutions.get(u.name)));
      const budget = carryBudget(previous.budgets.get(u.name), u.retryBudget, this.#deps.clock);
      if (budget !== undefined) this.#budgets.set(u.name, budget);
      this.#guards.set(u.name, UpstreamGuards.build(u.name, u, previous.guards.get(u.name), this.#deps, true));
      this.#rateLimits.set(u.name, rateLimitFor('outbound', u.name, u.rateLimits, previous.rateLimits.get(u.name), this.#deps));
      this.#build(u, previous.sets.get(u.name));
    }
    for (const [name, b] of previous.rateLimits) if (!this.#rateLimits.has(name)) b.close();
    this.#backpressure.retain(new Set(out.upstreams.map((u) => u.name)));
    // Forwarded unknown hosts share one build, as they share one budget.
    this.#passthroughRateLimit = rateLimitFor(
      'outbound',
      'passthrough',
      out.defaults.rateLimits,
      this.#passthroughRateLimit,
      this.#deps,
    );
    // One budget for all forwarded unknown hosts: they share the defaults' meaning.
    this.#passthroughBudget = carryBudget(this.#passthroughBudget, out.defaults.retryBudget, this.#deps.clock);
    const live = this.#deps.metrics.retry.budgets;
    live.clear();
    for (const [name, budget] of this.#budgets) live.set(name, budget);
    // Forwarded unknown hosts share one budget, under the one label 'passthrough'.
    if (this.#passthroughBudget !== undefined) live.set('passthrough', this.#passthroughBudget);
    for (const [name, kept] of previous.sets) if (!this.#sets.has(name)) kept.set?.retire();
    for (const [name, g] of previous.guards) if (!this.#guards.has(name)) g.retire();
    for (const [name, r] of previous.resolutions) if (this.#resolutions.get(name) !== r) r.watcher?.close();
    for (const entry of this.#passthrough.values()) entry.guards.retire();
    this.#passthrough = new Map();
    this.#retainPools(retire);
    // Forwarded hosts get fresh routes (and pools) under the new defaults.
    this.#passthroughPools.retain([], retire);
  }

  /** Settles once every upstream's names were resolved (or failed) once. */
  async ready(): Promise<void> {
    await Promise.all([...this.#resolutions.values()].map((r) => r.watcher?.ready));
  }

  /** The sidecar is closing: stops re-resolving names and the breakers' timers. */
  close(): void {
    for (const r of this.#resolutions.values()) r.watcher?.close();
    for (const g of this.#guards.values()) g.retire();
    for (const entry of this.#passthrough.values()) entry.guards.retire();
    for (const b of this.#rateLimits.values()) b.close();
    this.#passthroughRateLimit?.close();
    this.#backpressure.close();
  }

  /** The upstream's runtime over its endpoints as resolved now, with its hosts pointing at it. */
  #build(u: UpstreamPolicy, previousSet: KeptSet | undefined): void {
    const endpoints = (this.#resolutions.get(u.name) as Resolution).endpoints;
    const kept = endpointSetFor(u.name, u, endpoints, this.#pools, this.#deps, previousSet);
    this.#sets.set(u.name, kept);
    const guards = this.#guards.get(u.name) as UpstreamGuards;
    const budget = this.#budgets.get(u.name);
    const policy = this.#policy as SidecarPolicy;
    const rateLimit = this.#rateLimits.get(u.name);
    const extras: StackExtras = {
      latency: this.#backpressure.latency(u.name),
      credits: this.#backpressure.pool(u, endpoints, kept.set),
    };
    const runtime = new UpstreamRuntime('outbound', u.name, u, endpoints, kept.set, budget, guards, rateLimit, policy, this.#deps, extras);
    for (const host of u.hosts) this.#byHost.set(host, runtime);
  }

  #resolutionFor(u: UpstreamPolicy, previous: Resolution | undefined): Resolution {
    const key = JSON.stringify([u.endpoints, u.dns]);
    if (previous !== undefined && previous.key === key) return previous;
    if (u.endpoints.every((e) => isIP(e.host) !== 0)) return { key, watcher: undefined, endpoints: u.endpoints };
    const name = u.name;
    const resolution: Resolution = { key, endpoints: [], watcher: undefined };
    const update = (endpoints: readonly Endpoint[], first: boolean): void => {
      // A watcher the last policy update replaced may still report once: ignore it.
      if (this.#resolutions.get(name) !== resolution) return;
      // A first answer with nothing in it (DNS failing as the policy changed) keeps the addresses
      // the previous watcher had: a policy update must not empty an upstream that DNS could not.
      if (first && endpoints.length === 0 && resolution.endpoints.length > 0) return;
      // The upstream as the policy says now: a later update may have kept this resolution (same
      // endpoints and dns) and changed everything else.
      const current = this.#policy?.outbound.upstreams.find((x) => x.name === name);
      if (current === undefined) return;
      this.#deps.log.info({ upstream: name, endpoints: endpoints.length }, 'endpoints resolved');
      resolution.endpoints = endpoints;
      this.#build(current, this.#sets.get(name));
      this.#retainPools(retireMs(this.#policy as SidecarPolicy));
    };
    const watcher = new DnsWatcher({
      upstream: name,
      endpoints: u.endpoints,
      policy: u.dns,
      metrics: this.#deps.dnsMetrics,
      log: this.#deps.log,
      subsetSeed: this.#deps.podName,
      ...(this.#deps.dns === undefined ? {} : { dns: this.#deps.dns() }),
      onChange: (endpoints) => update(endpoints, false),
    });
    // The first answer comes through `ready`; onChange reports the changes after it.
    void watcher.ready.then((endpoints) => update(endpoints, true));
    resolution.watcher = watcher;
    // Until the new watcher answers, the addresses the old one had keep serving.
    resolution.endpoints = watcher.endpoints.length > 0 || previous === undefined ? watcher.endpoints : previous.endpoints;
    return resolution;
  }

  /** Pools of endpoints no upstream uses any more drain and close. */
  #retainPools(retire: number): void {
    const used: [Endpoint, PoolSettings][] = [];
    for (const u of this.#policy?.outbound.upstreams ?? []) {
      used.push(...poolsUsed(this.#resolutions.get(u.name)?.endpoints ?? [], poolSettings(u)));
    }
    this.#pools.retain(used, retire);
  }

  /** The route for a request, or undefined when no upstream claims the host and none may be made. */
  resolve(authority: string, method: string, path: string): RouteTarget | undefined {
    let runtime = this.#byHost.get(authority);
    if (runtime === undefined) {
      const colon = authority.lastIndexOf(':');
      if (colon > 0 && authority[colon - 1] !== ']') runtime = this.#byHost.get(authority.slice(0, colon));
    }
    if (runtime === undefined) runtime = this.#passthroughFor(authority);
    return runtime?.select(method, path);
  }

  #passthroughFor(authority: string): UpstreamRuntime | undefined {
    const policy = this.#policy;
    if (policy === undefined || policy.outbound.unknownHosts === 'reject') return undefined;
    const known = this.#passthrough.get(authority);
    if (known !== undefined) return known.runtime;
    const endpoint = parseAuthority(authority);
    if (endpoint === undefined) return undefined;
    const shape = policy.outbound.defaults;
    const { set } = endpointSetFor('passthrough', shape, [endpoint], this.#passthroughPools, this.#deps, undefined);
    // Each forwarded host has a breaker of its own; they share one label, so none sets the state gauge.
    const guards = UpstreamGuards.build('passthrough', shape, undefined, this.#deps, false);
    const runtime = new UpstreamRuntime(
      'outbound',
      'passthrough',
      shape,
      [endpoint],
      set,
      this.#passthroughBudget,
      guards,
      this.#passthroughRateLimit,
      policy,
      this.#deps,
    );
    this.#passthrough.set(authority, { runtime, endpoint, guards });
    if (this.#passthrough.size > MAX_PASSTHROUGH) {
      // The oldest forwarded host goes, and its pool with it (after the retire delay).
      const oldest = this.#passthrough.entries().next();
      if (oldest.done !== true) {
        const [key, entry] = oldest.value;
        this.#passthrough.delete(key);
        entry.guards.retire();
        for (const [e, settings] of poolsUsed([entry.endpoint], poolSettings(policy.outbound.defaults))) {
          this.#passthroughPools.release(e, settings, retireMs(policy));
        }
      }
    }
    return runtime;
  }
}

/** The inbound side has one upstream: the local app. */
export class InboundRouter {
  readonly #deps: RuntimeDeps;
  readonly #pools: PoolSet;
  #runtime: UpstreamRuntime | undefined;
  #set: KeptSet | undefined;
  #guards: UpstreamGuards | undefined;
  #rateLimit: RateLimitBuild | undefined;
  #policy: SidecarPolicy | undefined;
  readonly #backpressure: InboundBackpressure;

  constructor(deps: RuntimeDeps, pools: PoolSet) {
    this.#deps = deps;
    this.#pools = pools;
    this.#backpressure = new InboundBackpressure(deps);
  }

  apply(policy: SidecarPolicy): void {
    const app = policy.inbound.app;
    // The app is reached on loopback: no retries (the producer's sidecar owns retry decisions,
    // and retrying at both hops would multiply load), one route.
    // Nor a circuit breaker: refusing its own app's traffic is admission control's job (inbound
    // layers of their own), not a breaker's.
    const circuitBreaker = { ...policy.outbound.defaults.circuitBreaker, mode: 'off' as const };
    const shape: UpstreamShape = {
      ...policy.outbound.defaults,
      protocol: policy.inbound.appProtocol,
      timeouts: { ...policy.inbound.timeouts },
      retry: undefined,
      retryBudget: undefined,
      circuitBreaker,
      credits: undefined,
      hedge: undefined,
      routes: [
        {
          name: 'default',
          match: { pathPrefix: undefined, methods: undefined },
          timeouts: policy.inbound.timeouts,
          retry: undefined,
          circuitBreaker,
          ownBreaker: false,
          hedge: undefined,
        },
      ],
    };
    const retire = retireMs(this.#policy ?? policy);
    this.#policy = policy;
    this.#set = endpointSetFor('app', shape, [app], this.#pools, this.#deps, this.#set);
    this.#guards = UpstreamGuards.build('app', shape, this.#guards, this.#deps, true);
    this.#rateLimit = rateLimitFor('inbound', 'app', policy.inbound.rateLimits, this.#rateLimit, this.#deps);
    const bp = this.#backpressure;
    bp.apply(policy);
    const extras: StackExtras = { admission: bp.admission, creditGrants: bp.creditGrants, idempotency: bp.idempotency };
    this.#runtime = new UpstreamRuntime('inbound', 'app', shape, [app], this.#set.set, undefined, this.#guards, this.#rateLimit, policy, this.#deps, extras);
    this.#pools.retain(poolsUsed([app], poolSettings(shape)), retire);
  }

  resolve(method: string, path: string): RouteTarget | undefined {
    return this.#runtime?.select(method, path);
  }

  /** Settles once the inbound protections that talk to Redis know whether it is up. */
  ready(): Promise<void> {
    return this.#backpressure.ready();
  }

  /** The sidecar is closing. */
  close(): Promise<void> {
    this.#guards?.retire();
    this.#rateLimit?.close();
    return this.#backpressure.close();
  }
}

function carryBudget(
  previous: RetryBudget | undefined,
  policy: UpstreamPolicy['retryBudget'],
  clock: Clock,
): RetryBudget | undefined {
  if (policy === undefined) return undefined;
  if (previous === undefined) return new RetryBudget(policy, clock);
  previous.reconfigure(policy);
  return previous;
}
