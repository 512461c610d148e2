// Outbound defaults, upstreams and their routes. Each level merges over the one above it:
// built-in defaults < outbound.defaults < upstream < route.
import { DNS_DEFAULTS, readDns } from './dns.ts';
import { readRateLimits } from './ratelimits.ts';
import { readCredits, readHedge } from './backpressure.ts';
import { BAD, type Field } from './reader.ts';
import { DEFAULTS, MAX_CONNECTIONS, readValue } from './schema.ts';
import {
  readCircuitBreaker,
  readEndpoint,
  readHost,
  readLoadBalancer,
  readOutlierDetection,
  readRetry,
  readRetryBudget,
  readTimeouts,
} from './sections.ts';
import { UPSTREAM_PROTOCOLS, type Endpoint, type OutboundPolicy, type RetryPolicy, type RoutePolicy, type UpstreamPolicy } from './types.ts';

type Level = Pick<
  UpstreamPolicy,
  | 'protocol'
  | 'maxConnectionsPerEndpoint'
  | 'timeouts'
  | 'retry'
  | 'retryBudget'
  | 'loadBalancer'
  | 'outlierDetection'
  | 'circuitBreaker'
  | 'dns'
  | 'rateLimits'
  | 'credits'
  | 'hedge'
>;

const LEVEL_FIELDS = [
  'protocol',
  'maxConnectionsPerEndpoint',
  'timeouts',
  'retry',
  'retryBudget',
  'loadBalancer',
  'outlierDetection',
  'circuitBreaker',
  'dns',
  'rateLimits',
  'credits',
  'hedge',
] as const;
const UPSTREAM_FIELDS = ['name', 'hosts', 'endpoints', ...LEVEL_FIELDS, 'routes'] as const;
const ROUTE_FIELDS = ['name', 'match', 'timeouts', 'retry', 'circuitBreaker', 'hedge'] as const;

export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_LABEL_RULE = "a DNS label (lower-case letters, digits and '-', at most 63 characters)";
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Route name taken by the catch-all every upstream ends with. */
export const DEFAULT_ROUTE = 'default';

const BUILT_IN: Level = {
  protocol: 'auto',
  maxConnectionsPerEndpoint: DEFAULTS.outbound.maxConnectionsPerEndpoint,
  timeouts: DEFAULTS.outbound.timeouts,
  retry: DEFAULTS.outbound.retry,
  retryBudget: DEFAULTS.outbound.retryBudget,
  loadBalancer: DEFAULTS.outbound.loadBalancer,
  outlierDetection: DEFAULTS.outbound.outlierDetection,
  circuitBreaker: DEFAULTS.outbound.circuitBreaker,
  dns: DNS_DEFAULTS,
  rateLimits: [],
  credits: undefined,
  hedge: undefined,
};

function readLevel(f: Field | undefined, base: Level, retryFallback: RetryPolicy): Level {
  if (!f) return base;
  const max = f.lookup('maxConnectionsPerEndpoint');
  const maxConnections = max && readValue(max, MAX_CONNECTIONS, undefined);
  const protocol = f.lookup('protocol')?.oneOf(UPSTREAM_PROTOCOLS);
  return {
    protocol: protocol === undefined || protocol === BAD ? base.protocol : protocol,
    maxConnectionsPerEndpoint: typeof maxConnections === 'number' ? maxConnections : base.maxConnectionsPerEndpoint,
    timeouts: readTimeouts(f.lookup('timeouts'), base.timeouts),
    retry: readRetry(f.lookup('retry'), base.retry, retryFallback),
    retryBudget: readRetryBudget(f.lookup('retryBudget'), base.retryBudget),
    loadBalancer: readLoadBalancer(f.lookup('loadBalancer'), base.loadBalancer),
    outlierDetection: readOutlierDetection(f.lookup('outlierDetection'), base.outlierDetection),
    circuitBreaker: readCircuitBreaker(f.lookup('circuitBreaker'), base.circuitBreaker),
    dns: readDns(f.lookup('dns'), base.dns),
    rateLimits: readRateLimits(f.lookup('rateLimits'), base.rateLimits),
    credits: readCredits(f.lookup('credits'), base.credits),
    hedge: readHedge(f.lookup('hedge'), base.hedge),
  };
}

function catchAll(level: Level): RoutePolicy {
  return {
    name: DEFAULT_ROUTE,
    match: { pathPrefix: undefined, methods: undefined },
    timeouts: level.timeouts,
    retry: level.retry,
    circuitBreaker: level.circuitBreaker,
    ownBreaker: false,
    hedge: level.hedge,
  };
}

/** spec.outbound.defaults and spec.outbound.upstreams, each upstream ending with its catch-all route. */
export function readUpstreams(
  defaultsField: Field | undefined,
  upstreamsField: Field | undefined,
): Pick<OutboundPolicy, 'defaults' | 'upstreams'> {
  // map() reports unknown fields; readLevel then picks the known ones out.
  const checked = defaultsField && defaultsField.map(LEVEL_FIELDS) !== BAD ? defaultsField : undefined;
  const level = readLevel(checked, BUILT_IN, DEFAULTS.outbound.retry);
  const defaults = { ...level, routes: [catchAll(level)] };
  if (!upstreamsField) return { defaults, upstreams: [] };
  const items = upstreamsField.list();
  if (items === BAD) return { defaults, upstreams: [] };

  const seen = new Seen();
  const upstreams: UpstreamPolicy[] = [];
  for (const item of items) {
    const u = readUpstream(item, level, seen);
    if (u) upstreams.push(u);
  }
  return { defaults, upstreams };
}

/** First writer of a name or host, so a repeat can say where the original is. */
class Seen {
  readonly names = new Map<string, number>();
  readonly hosts = new Map<string, { upstream: string; line: number }>();
}

function readUpstream(f: Field, defaults: Level, seen: Seen): UpstreamPolicy | undefined {
  const m = f.map(UPSTREAM_FIELDS);
  if (m === BAD) return undefined;
  const name = readName(m.require('name'), 'upstream', seen.names) ?? '';

  const hosts: string[] = [];
  for (const h of readNonEmptyList(m.require('hosts'), 'host or host:port')) {
    const host = readHost(h);
    if (host === BAD) continue;
    const first = seen.hosts.get(host);
    if (first) {
      h.fail(
        first.upstream === name
          ? `host ${JSON.stringify(host)} is listed twice`
          : `host ${JSON.stringify(host)} is already claimed by upstream ${first.upstream} (line ${first.line})`,
      );
      continue;
    }
    seen.hosts.set(host, { upstream: name, line: h.reader.lineOf(h.offset) });
    hosts.push(host);
  }

  const endpoints: Endpoint[] = [];
  for (const e of readNonEmptyList(m.require('endpoints'), 'host:port')) {
    const endpoint = readEndpoint(e);
    if (endpoint === BAD) continue;
    if (endpoints.some((x) => x.host === endpoint.host && x.port === endpoint.port)) {
      e.fail(`endpoint ${JSON.stringify(e.scalar())} is listed twice`);
      continue;
    }
    endpoints.push(endpoint);
  }

  const level = readLevel(f, defaults, defaults.retry ?? DEFAULTS.outbound.retry);
  const routeFallback = level.retry ?? defaults.retry ?? DEFAULTS.outbound.retry;
  const routes: RoutePolicy[] = [];
  const routeNames = new Map<string, number>();
  const routesField = m.get('routes');
  const routeItems = routesField ? routesField.list() : [];
  for (const r of routeItems === BAD ? [] : routeItems) {
    const route = readRoute(r, level, routeFallback, routeNames);
    if (route) routes.push(route);
  }
  routes.push(catchAll(level));
  return { name, hosts, endpoints, ...level, routes };
}

function readRoute(
  f: Field,
  upstream: Level,
  retryFallback: RetryPolicy,
  names: Map<string, number>,
): RoutePolicy | undefined {
  const m = f.map(ROUTE_FIELDS);
  if (m === BAD) return undefined;
  const name = readName(m.require('name'), 'route', names) ?? '';

  let pathPrefix: string | undefined;
  let methods: string[] | undefined;
  const match = m.get('match')?.map(['pathPrefix', 'methods']);
  if (match && match !== BAD) {
    const p = match.get('pathPrefix');
    const prefix = p?.string();
    if (p && prefix !== undefined && prefix !== BAD) {
      if (prefix.startsWith('/')) pathPrefix = prefix;
      else p.fail(`must start with '/', ${p.got()}`);
    }
    const methodsField = match.get('methods');
    if (methodsField) {
      methods = [];
      for (const item of readNonEmptyList(methodsField, 'HTTP method')) {
        const method = item.string();
        if (method === BAD) continue;
        if (!HTTP_TOKEN.test(method)) item.fail(`must be an HTTP method name, ${item.got()}`);
        else if (!methods.includes(method.toUpperCase())) methods.push(method.toUpperCase());
      }
    }
  }
  return {
    name,
    match: { pathPrefix, methods },
    timeouts: readTimeouts(m.get('timeouts'), upstream.timeouts),
    retry: readRetry(m.get('retry'), upstream.retry, retryFallback),
    // A route that writes circuitBreaker gets a breaker of its own, over the upstream's settings.
    circuitBreaker: readCircuitBreaker(m.get('circuitBreaker'), upstream.circuitBreaker),
    ownBreaker: m.get('circuitBreaker') !== undefined,
    hedge: readHedge(m.get('hedge'), upstream.hedge),
  };
}

/** A DNS-label name unique among `names` (name -> line first written). */
function readName(f: Field | typeof BAD, what: 'upstream' | 'route', names: Map<string, number>): string | undefined {
  if (f === BAD) return undefined;
  const name = f.string();
  if (name === BAD) return undefined;
  if (!DNS_LABEL.test(name)) return void f.fail(`must be ${DNS_LABEL_RULE}, ${f.got()}`);
  if (what === 'route' && name === DEFAULT_ROUTE) {
    return void f.fail(`"${DEFAULT_ROUTE}" is reserved for the catch-all route every upstream ends with`);
  }
  const first = names.get(name);
  if (first !== undefined) {
    const scope = what === 'route' ? ' in this upstream' : '';
    return void f.fail(`duplicate ${what} name ${JSON.stringify(name)}${scope}, first used at line ${first}`);
  }
  names.set(name, f.reader.lineOf(f.offset));
  return name;
}

function readNonEmptyList(f: Field | typeof BAD, item: string): Field[] {
  if (f === BAD) return [];
  const items = f.list();
  if (items === BAD) return [];
  if (items.length === 0) f.fail(`must list at least one ${item}`);
  return items;
}
