// Wiring: one sidecar = outbound and inbound listeners, their routers, the admin listener, and a
// registry. Policy updates swap the routers' runtimes; requests already running keep the stack
// they started with, so a reload never fails in-flight work.
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry, type Counter, type Gauge } from 'prom-client';
import type { Logger } from 'pino';
import type { SidecarPolicy } from '../policy/types.ts';
import { ReplayAllowance } from '../policies/retry/replay-body.ts';
import { SluiceError } from '../stack/errors.ts';
import { declareStackMetrics } from '../stack/order.ts';
import { RedisLink } from '../policies/ratelimit/redis-link.ts';
import type { DnsFunctions } from './dns/resolve.ts';
import { declareDnsMetrics } from './dns/watcher.ts';
import { systemClock, type Clock } from '../stack/types.ts';
import { silentLogger } from '../telemetry/log.ts';
import { counter, gauge } from '../telemetry/registry.ts';
import { startAdmin, type Admin } from './admin.ts';
import { startListener, type Listener } from './listener.ts';
import { PoolSet } from './pools.ts';
import { sidecarIdentity } from './backpressure.ts';
import { InboundRouter, OutboundRouter, parseAuthority, type RouteTarget } from './router.ts';
import type { Tracing } from '../telemetry/tracing.ts';

export interface SidecarOptions {
  readonly policy: SidecarPolicy;
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly log?: Logger;
  /** Process-wide metrics (CPU, memory, event loop); off by default for embedded use. */
  readonly processMetrics?: boolean;
  /** Called when /shutdown is posted; the CLI drains and exits. */
  readonly onShutdownRequest?: () => void;
  /** Further reasons the sidecar is not ready (waiting for its first policy from the config service). */
  readonly notReady?: () => string[];
  /** Resolver functions for endpoint names (tests point them at a scripted DNS server). */
  readonly dns?: () => DnsFunctions;
  /** Tracing (src/telemetry/otel.ts sets it up from OTEL_* variables); undefined: off. */
  readonly tracing?: Tracing | undefined;
}

export interface Sidecar {
  readonly addresses: { readonly outbound?: AddressInfo; readonly inbound?: AddressInfo; readonly admin: AddressInfo };
  readonly metrics: Registry;
  policy(): SidecarPolicy;
  /** Swaps in a validated policy for the next requests. Listener addresses change only on restart. */
  applyPolicy(policy: SidecarPolicy): void;
  /** Fails readiness, stops accepting, lets in-flight work finish within the grace period. */
  shutdown(graceMs?: number): Promise<void>;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '0.0.0.0', '::']);

/** The port an authority names (80 when none), without parsing the host. */
function portOf(authority: string): number {
  const colon = authority.lastIndexOf(':');
  if (colon < 0 || authority.endsWith(']')) return 80;
  return Number(authority.slice(colon + 1));
}

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? silentLogger;
  const registry = new Registry();
  const identity = sidecarIdentity(process.env['POD_NAME'], opts.policy.name);
  if (opts.processMetrics === true) collectDefaultMetrics({ register: registry });
  const replayAllowance = new ReplayAllowance(opts.policy.limits.maxRetryBufferBytes);
  const deps = {
    clock,
    log,
    random: opts.random ?? Math.random,
    metrics: declareStackMetrics(registry),
    dnsMetrics: declareDnsMetrics(registry),
    podName: process.env['POD_NAME'],
    dns: opts.dns,
    replayAllowance,
    rateLimitStore: () => redis?.link,
    identity: () => identity,
    tracing: opts.tracing,
  };
  const policyMetrics = declarePolicyMetrics(registry);

  const pools = new PoolSet();
  const passthroughPools = new PoolSet();
  const inboundPools = new PoolSet();
  const outboundRouter = new OutboundRouter(deps, pools, passthroughPools);
  const inboundRouter = new InboundRouter(deps, inboundPools);

  let current = opts.policy;
  let draining = false;
  const ownPorts = new Set<number>();

  /** The Redis link for global rate limits, made anew only when `spec.redis` changes. */
  let redis: { readonly key: string; readonly link: RedisLink } | undefined;
  /** Called on the link's first state change: start-up waits for it. */
  let redisSettled: (() => void) | undefined;
  const install = (policy: SidecarPolicy): void => {
    replayAllowance.setLimit(policy.limits.maxRetryBufferBytes);
    const previousRedis = redis;
    const key = JSON.stringify(policy.redis ?? null);
    if (redis?.key !== key) {
      redis =
        policy.redis === undefined
          ? undefined
          : {
              key,
              link: new RedisLink({
                policy: policy.redis,
                metrics: deps.metrics.rateLimit,
                ...(deps.podName === undefined ? {} : { sidecarId: deps.podName }),
                onStateChange: (state) => {
                  redisSettled?.();
                  if (state === 'down') {
                    log.warn({ redis: `${policy.redis?.host}:${policy.redis?.port}` }, 'redis unreachable: global rate limits fall back to onRedisDown');
                  } else log.info({ state }, 'redis for global rate limits');
                },
              }),
            };
    }
    outboundRouter.apply(policy);
    inboundRouter.apply(policy);
    // Builds made under the old link are gone now; it closes in the background.
    if (previousRedis !== undefined && previousRedis !== redis) void previousRedis.link.close().catch(() => {});
    current = policy;
    policyMetrics.info.reset();
    policyMetrics.info.labels({ name: policy.name }).set(1);
  };
  install(current);
  // Like Envoy's cluster warming: endpoints written as names are resolved before traffic is
  // taken. Bounded: a watcher is ready after one try per name, success or failure.
  await outboundRouter.ready();
  // Dedupe over Redis likewise: until its link is known, first keys would go to memory only.
  // Bounded by one connect and one call, as below.
  if (current.redis !== undefined && current.inbound.idempotency?.store === 'redis') {
    const boundMs = current.redis.connectTimeoutMs + current.redis.commandTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([inboundRouter.ready(), new Promise<void>((resolve) => (timer = setTimeout(resolve, boundMs)))]);
    clearTimeout(timer);
  }
  // Likewise Redis: until the link knows whether Redis is up, global rules would take their
  // fallback (with onRedisDown: deny, refuse everything). Bounded by one connect and one call.
  if (redis !== undefined && redis.link.state === 'connecting' && current.redis !== undefined) {
    const boundMs = current.redis.connectTimeoutMs + current.redis.commandTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      redisSettled = resolve;
      timer = setTimeout(resolve, boundMs);
    });
    clearTimeout(timer);
    redisSettled = undefined;
  }

  const listeners: Listener[] = [];
  let outbound: Listener | undefined;
  let inbound: Listener | undefined;
  let admin: Admin | undefined;
  try {
    const out = current.outbound.listener;
    if (out !== undefined) {
      outbound = await startListener(out, {
        direction: 'outbound',
        clock,
        log,
        settings: () => ({ limits: current.limits, deadlineHeader: current.deadlineHeader, idleMs: current.outbound.defaults.timeouts.idleMs }),
        refused: (code) => deps.metrics.telemetry.localReplies.labels({ direction: 'outbound', upstream: 'none', code }).inc(),
        // The listener has already validated the authority (non-empty, well-formed).
        resolve: (authority, method, path) => {
          // A request addressed to this sidecar would be forwarded to itself. Via catches every
          // such loop one hop later; this answers the obvious spellings at once. The port is
          // checked first so the common request parses nothing.
          if (ownPorts.has(portOf(authority))) {
            const endpoint = parseAuthority(authority);
            if (endpoint !== undefined && LOOPBACK.has(endpoint.host)) return new SluiceError('no-route', `${authority} is this sidecar`);
          }
          return outboundRouter.resolve(authority, method, path) ?? new SluiceError('no-route', authority);
        },
      });
      listeners.push(outbound);
      ownPorts.add(outbound.address.port);
    }
    const inb = current.inbound.listener;
    if (inb !== undefined) {
      inbound = await startListener(inb, {
        direction: 'inbound',
        clock,
        log,
        settings: () => ({ limits: current.limits, deadlineHeader: current.deadlineHeader, idleMs: current.inbound.timeouts.idleMs }),
        refused: (code) => deps.metrics.telemetry.localReplies.labels({ direction: 'inbound', upstream: 'none', code }).inc(),
        resolve: (_authority, method, path): RouteTarget | SluiceError =>
          inboundRouter.resolve(method, path) ?? new SluiceError('no-route', 'inbound app not configured'),
      });
      listeners.push(inbound);
      ownPorts.add(inbound.address.port);
    }
    admin = await startAdmin(current.admin, {
      registry,
      log,
      notReady: () => [...(draining ? ['draining'] : []), ...(opts.notReady?.() ?? [])],
      app: () => (inbound === undefined ? undefined : current.inbound.app),
      config: () => current,
      shutdown: () => opts.onShutdownRequest?.(),
    });
    ownPorts.add(admin.address.port);
  } catch (err) {
    outboundRouter.close();
    await redis?.link.close();
    await Promise.all(listeners.map((l) => l.close()));
    await Promise.all([pools.close(), passthroughPools.close(), inboundPools.close()]);
    throw err;
  }
  const adminServer = admin;

  const closePools = (): Promise<unknown> => {
    outboundRouter.close();
    return Promise.all([inboundRouter.close(), pools.close(), passthroughPools.close(), inboundPools.close(), redis?.link.close()]);
  };

  return {
    addresses: { outbound: outbound?.address, inbound: inbound?.address, admin: adminServer.address },
    metrics: registry,
    policy: () => current,
    applyPolicy(policy: SidecarPolicy): void {
      if (JSON.stringify(listenerShape(policy)) !== JSON.stringify(listenerShape(current))) {
        log.warn({ policy: policy.name }, 'listener addresses or limits changed: they take effect on restart');
      }
      install(policy);
      policyMetrics.reloads.labels({ result: 'applied' }).inc();
      log.info({ policy: policy.name }, 'policy applied');
    },
    async shutdown(graceMs = current.shutdown.graceMs): Promise<void> {
      draining = true;
      log.info({ graceMs }, 'draining');
      await Promise.all(listeners.map((l) => l.drain(graceMs)));
      await closePools();
      await adminServer.close();
      log.info('drained');
    },
    async close(): Promise<void> {
      draining = true;
      await Promise.all(listeners.map((l) => l.close()));
      await closePools();
      await adminServer.close();
    },
  };
}

function listenerShape(p: SidecarPolicy): unknown {
  return [p.admin, p.outbound.listener, p.inbound.listener, p.limits];
}

export interface PolicyMetrics {
  readonly reloads: Counter<'result'>;
  readonly info: Gauge<'name'>;
}

/** Policy lifecycle metrics; the CLI's file watcher counts rejected reloads here too. */
export function declarePolicyMetrics(registry: Registry): PolicyMetrics {
  return {
    reloads: counter(registry, 'sluice_policy_reloads_total', 'Policy reloads by result: applied, rejected (invalid; the old policy keeps serving).', ['result']),
    info: gauge(registry, 'sluice_policy_info', 'The policy in effect (value 1), by metadata.name.', ['name']),
  };
}
