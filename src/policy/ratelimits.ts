// Rate-limit rules (`rateLimits:`, a list at a level of the policy) and the sidecar's Redis link
// (`redis:`), read from YAML with positions. Cross-field rules are checked here too, so a rule that
// cannot mean anything (onRedisDown on a local rule, maxKeys without a descriptor) is an error where
// it is written rather than a silent no-op.
import { isIP } from 'node:net';
import { BAD, type Bad, type Field } from './reader.ts';
import type { ProtectionMode } from './types.ts';
import { PORT_MAX } from './schema.ts';
import { isHostName } from './sections.ts';
import { DNS_LABEL } from './upstreams.ts';

export type RateLimitMode = ProtectionMode;

/** What a rule counts separately: one bucket per distinct value. */
export type RateLimitDescriptor =
  /** One bucket for all requests the rule applies to. */
  | { readonly kind: 'none' }
  /** The value of a request header (lower-case name), e.g. a tenant or producer id. */
  | { readonly kind: 'header'; readonly name: string }
  /** The client's address as the listener saw it. */
  | { readonly kind: 'source' }
  /** The first `segments` segments of the path (`/api/v1` for 2), query excluded. */
  | { readonly kind: 'path-prefix'; readonly segments: number };

export interface RateLimitPolicy {
  /** DNS label, unique in its list; the metric label and the IETF policy name. */
  readonly name: string;
  /** enforce: refuse with 429; shadow: count and annotate what would be refused, refuse nothing; off. */
  readonly mode: RateLimitMode;
  /**
   * Refill rate, tokens (requests) per second, > 0. Written as `requestsPerSecond` (0.01 to
   * 1,000,000, fractions allowed) or `requestsPerMinute` (integer, 1 to 60,000,000); exactly one.
   */
  readonly ratePerSecond: number;
  /** Requests per `windowS` as advertised in RateLimit-Policy (`q`): the rate in whole requests. */
  readonly quota: number;
  /** Window of `quota`, seconds (`w`): 1 for requestsPerSecond (or the smallest whole window of a fraction), 60 for requestsPerMinute. */
  readonly windowS: number;
  /** Bucket size: requests admitted at once after a quiet period. 1 to 10,000,000; default `quota`. */
  readonly burst: number;
  /** What is counted separately (`by:`); default none (one bucket). */
  readonly by: RateLimitDescriptor;
  /**
   * Distinct descriptor values tracked at once, 1 to 1,000,000, default 10,000 (only with `by`).
   * Beyond it the least recently used value is forgotten if its bucket has refilled (nothing is
   * lost); otherwise the new value is charged to one shared overflow bucket of the same rate, so a
   * flood of fresh values cannot mint fresh bursts.
   */
  readonly maxKeys: number;
  /** local: this sidecar's own bucket; global: one bucket shared by all sidecars through Redis. Default local. */
  readonly scope: 'local' | 'global';
  /**
   * Global rules while Redis is unreachable (default local-share): local-share = a local bucket with
   * this sidecar's share of rate and burst (see RedisPolicy.replicas); allow = admit all; deny =
   * refuse all. Only with scope: global.
   */
  readonly onRedisDown: 'local-share' | 'allow' | 'deny';
  /** Which requests the rule applies to; every condition given must hold. */
  readonly match: {
    /** Path starts with this (plain prefix, as route matching); undefined = any. */
    readonly pathPrefix: string | undefined;
    /** Upper-case methods; undefined = any. */
    readonly methods: readonly string[] | undefined;
    /** Route names (outbound routes of the upstream); undefined = any. */
    readonly routes: readonly string[] | undefined;
  };
}

export interface RedisPolicy {
  /** Redis server address: an IP or host name. Default 127.0.0.1. */
  readonly host: string;
  /** Default 6379. */
  readonly port: number;
  /**
   * Prefix of every key and id this sidecar writes, 1 to 64 of [A-Za-z0-9._:-]; default `sluice`.
   * Sidecars share a global limit when prefix, direction, upstream and rule name agree: give each
   * service its own prefix when services share a Redis.
   */
  readonly keyPrefix: string;
  /** Opening the connection, ms (1 to 60,000; default 1000). Reconnects go on in the background. */
  readonly connectTimeoutMs: number;
  /**
   * Longest a request waits for Redis, ms (1 to 10,000; default 50). A call that takes longer
   * marks Redis down: the request and those after it are decided by onRedisDown at once.
   */
  readonly commandTimeoutMs: number;
  /**
   * How often, ms (100 to 60,000; default 1000), the sidecar reports itself live in Redis (the
   * replica count) and, while Redis is down, tries it again.
   */
  readonly probeIntervalMs: number;
  /**
   * Sidecars sharing each global limit, for the local share (limit / replicas) when Redis is
   * down. auto (default): the sidecars seen live in Redis, remembered from when it was last up; a
   * number (1 to 10,000): fixed. auto follows scaling; a fixed count drifts from it.
   */
  readonly replicas: number | 'auto';
  /** With replicas auto: never count fewer (1 to 10,000; default 1); also the count before Redis was ever reached. */
  readonly minReplicas: number;
}

export const RATE_LIMIT_DEFAULTS = {
  mode: 'enforce',
  maxKeys: 10_000,
  scope: 'local',
  onRedisDown: 'local-share',
} as const;

export const REDIS_DEFAULTS: RedisPolicy = {
  host: '127.0.0.1',
  port: 6379,
  keyPrefix: 'sluice',
  connectTimeoutMs: 1000,
  commandTimeoutMs: 50,
  probeIntervalMs: 1000,
  replicas: 'auto',
  minReplicas: 1,
};

const RULE_FIELDS = [
  'name',
  'mode',
  'requestsPerSecond',
  'requestsPerMinute',
  'burst',
  'by',
  'maxKeys',
  'scope',
  'onRedisDown',
  'match',
] as const;
const REDIS_FIELDS = [
  'address',
  'port',
  'keyPrefix',
  'connectTimeoutMs',
  'commandTimeoutMs',
  'probeIntervalMs',
  'replicas',
  'minReplicas',
] as const;

const DNS_LABEL_RULE = "a DNS label (lower-case letters, digits and '-', at most 63 characters)";
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const KEY_PREFIX = /^[A-Za-z0-9._:-]{1,64}$/;
const BY_FORMS = 'header:<name>, source or path-prefix:<segments>';
export const MAX_PATH_SEGMENTS = 16;
const MAX_REPLICAS = 10_000;

/** Where each global rule's scope was written, to point at it when the policy has no redis section. */
const scopeFields = new WeakMap<RateLimitPolicy, Field>();

/**
 * A level's `rateLimits:` list. Absent: the inherited list; `off` or `[]`: none; a list replaces
 * the inherited list whole (rules are not merged by name: a level says all the rules it wants).
 */
export function readRateLimits(f: Field | undefined, base: readonly RateLimitPolicy[]): readonly RateLimitPolicy[] {
  if (!f) return base;
  if (f.isOff()) return [];
  const items = f.list();
  if (items === BAD) return base;
  const names = new Map<string, number>();
  const rules: RateLimitPolicy[] = [];
  for (const item of items) {
    const rule = readRule(item, names);
    if (rule) rules.push(rule);
  }
  return rules;
}

/** `redis:`; absent or `off`: no Redis (global rules are then an error, see checkGlobalRateLimits). */
export function readRedis(f: Field | undefined): RedisPolicy | undefined {
  if (!f || f.isOff()) return undefined;
  const m = f.map(REDIS_FIELDS);
  if (m === BAD) return undefined;
  const d = REDIS_DEFAULTS;
  let host = d.host;
  const a = m.get('address');
  const address = a?.string();
  if (a && address !== undefined && address !== BAD) {
    if (isIP(address) || isHostName(address)) host = address.toLowerCase();
    else a.fail(`must be an IP address or a host name, ${a.got()}`);
  }
  let keyPrefix = d.keyPrefix;
  const p = m.get('keyPrefix');
  const prefix = p?.string();
  if (p && prefix !== undefined && prefix !== BAD) {
    if (KEY_PREFIX.test(prefix)) keyPrefix = prefix;
    else p.fail(`must be 1 to 64 of letters, digits, '.', '_', ':' and '-', ${p.got()}`);
  }
  let replicas: number | 'auto' = d.replicas;
  const r = m.get('replicas');
  if (r && r.scalar() !== 'auto') {
    const v = r.scalar();
    if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_REPLICAS) replicas = v;
    else r.fail(`must be auto or an integer from 1 to ${MAX_REPLICAS}, ${r.got()}`);
  }
  const min = m.get('minReplicas');
  if (min && replicas !== 'auto') min.fail('applies only with replicas: auto');
  return {
    host,
    port: intOr(m.get('port'), 1, PORT_MAX, d.port),
    keyPrefix,
    connectTimeoutMs: intOr(m.get('connectTimeoutMs'), 1, 60_000, d.connectTimeoutMs),
    commandTimeoutMs: intOr(m.get('commandTimeoutMs'), 1, 10_000, d.commandTimeoutMs),
    probeIntervalMs: intOr(m.get('probeIntervalMs'), 100, 60_000, d.probeIntervalMs),
    replicas,
    minReplicas: intOr(min, 1, MAX_REPLICAS, d.minReplicas),
  };
}

/**
 * Global rules need Redis: reports each global rule read by readRateLimits (at its `scope`) when
 * the policy has no redis section. Call once per list after reading `redis:`.
 */
export function checkGlobalRateLimits(rules: readonly RateLimitPolicy[], redis: RedisPolicy | undefined): void {
  if (redis !== undefined) return;
  for (const rule of rules) {
    if (rule.scope !== 'global') continue;
    scopeFields.get(rule)?.fail('scope: global needs a redis section (spec.redis) to share the limit through');
  }
}

function intOr(f: Field | undefined, min: number, max: number, fallback: number): number {
  const v = f?.int(min, max);
  return v === undefined || v === BAD ? fallback : v;
}

function readRule(f: Field, names: Map<string, number>): RateLimitPolicy | undefined {
  const m = f.map(RULE_FIELDS);
  if (m === BAD) return undefined;
  const name = readName(m.require('name'), names);

  const mode = oneOf(m.get('mode'), ['enforce', 'shadow', 'off'] as const, RATE_LIMIT_DEFAULTS.mode);
  const rate = readRate(f, m.get('requestsPerSecond'), m.get('requestsPerMinute'));
  const burst = intOr(m.get('burst'), 1, 10_000_000, rate.quota);

  const byField = m.get('by');
  const by = byField ? readBy(byField) : { kind: 'none' as const };
  const maxKeysField = m.get('maxKeys');
  if (maxKeysField && !byField) maxKeysField.fail('has no effect without by (the rule keeps one bucket)');
  const maxKeys = intOr(maxKeysField, 1, 1_000_000, RATE_LIMIT_DEFAULTS.maxKeys);

  const scopeField = m.get('scope');
  const scopeValue = scopeField?.oneOf(['local', 'global'] as const) ?? RATE_LIMIT_DEFAULTS.scope;
  const scope = scopeValue === BAD ? RATE_LIMIT_DEFAULTS.scope : scopeValue;
  const downField = m.get('onRedisDown');
  const onRedisDown = oneOf(downField, ['local-share', 'allow', 'deny'] as const, RATE_LIMIT_DEFAULTS.onRedisDown);
  // A scope that failed to read was reported already; guessing it local would add a second error.
  if (downField && scopeValue === 'local') downField.fail('applies only to scope: global (a local rule never needs Redis)');

  if (name === undefined || rate.ratePerSecond === 0) return undefined;
  const rule: RateLimitPolicy = {
    name,
    mode,
    ...rate,
    burst,
    by: by === BAD ? { kind: 'none' } : by,
    maxKeys,
    scope,
    onRedisDown,
    match: readMatch(m.get('match')),
  };
  if (scope === 'global' && scopeField) scopeFields.set(rule, scopeField);
  return rule;
}

function oneOf<T extends string>(f: Field | undefined, values: readonly T[], fallback: T): T {
  const v = f?.oneOf(values);
  return v === undefined || v === BAD ? fallback : v;
}

function readName(f: Field | Bad, names: Map<string, number>): string | undefined {
  if (f === BAD) return undefined;
  const name = f.string();
  if (name === BAD) return undefined;
  if (!DNS_LABEL.test(name)) return void f.fail(`must be ${DNS_LABEL_RULE}, ${f.got()}`);
  const first = names.get(name);
  if (first !== undefined) return void f.fail(`duplicate rate limit name ${JSON.stringify(name)}, first used at line ${first}`);
  names.set(name, f.reader.lineOf(f.offset));
  return name;
}

type Rate = Pick<RateLimitPolicy, 'ratePerSecond' | 'quota' | 'windowS'>;
/** Stands in for an unreadable rate so reading goes on; the rule is dropped (its error is recorded). */
const NO_RATE: Rate = { ratePerSecond: 0, quota: 1, windowS: 1 };

function readRate(rule: Field, perSecond: Field | undefined, perMinute: Field | undefined): Rate {
  if (perSecond && perMinute) {
    perMinute.fail('cannot be set together with requestsPerSecond; write the rate once');
    return NO_RATE;
  }
  if (perMinute) {
    const n = perMinute.int(1, 60_000_000);
    return n === BAD ? NO_RATE : { ratePerSecond: n / 60, quota: n, windowS: 60 };
  }
  if (!perSecond) {
    rule.reader.report(rule.offset, rule.path, 'needs a rate: requestsPerSecond or requestsPerMinute');
    return NO_RATE;
  }
  const x = perSecond.number(0.01, 1_000_000);
  if (x === BAD) return NO_RATE;
  // RateLimit-Policy carries whole quotas over whole seconds: 2.5/s is advertised as q=5;w=2.
  for (let w = 1; w <= 100; w++) {
    const q = x * w;
    if (Math.abs(q - Math.round(q)) < 1e-9) return { ratePerSecond: x, quota: Math.round(q), windowS: w };
  }
  return { ratePerSecond: x, quota: Math.max(1, Math.round(x * 100)), windowS: 100 };
}

function readBy(f: Field): RateLimitDescriptor | Bad {
  const s = f.string();
  if (s === BAD) return BAD;
  if (s === 'source') return { kind: 'source' };
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const arg = colon < 0 ? '' : s.slice(colon + 1);
  if (kind === 'header') {
    if (HTTP_TOKEN.test(arg)) return { kind: 'header', name: arg.toLowerCase() };
    return f.fail(`header:<name> needs an HTTP header name, ${f.got()}`);
  }
  if (kind === 'path-prefix') {
    const n = /^\d{1,2}$/.test(arg) ? Number(arg) : NaN;
    if (n >= 1 && n <= MAX_PATH_SEGMENTS) return { kind: 'path-prefix', segments: n };
    return f.fail(`path-prefix:<segments> needs a segment count from 1 to ${MAX_PATH_SEGMENTS}, ${f.got()}`);
  }
  return f.fail(`must be ${BY_FORMS}, ${f.got()}`);
}

function readMatch(f: Field | undefined): RateLimitPolicy['match'] {
  const none = { pathPrefix: undefined, methods: undefined, routes: undefined };
  const m = f?.map(['pathPrefix', 'methods', 'routes']);
  if (!m || m === BAD) return none;
  let pathPrefix: string | undefined;
  const p = m.get('pathPrefix');
  const prefix = p?.string();
  if (p && prefix !== undefined && prefix !== BAD) {
    if (prefix.startsWith('/')) pathPrefix = prefix;
    else p.fail(`must start with '/', ${p.got()}`);
  }
  const methods = readList(m.get('methods'), 'HTTP method', (item, s) =>
    HTTP_TOKEN.test(s) ? s.toUpperCase() : item.fail(`must be an HTTP method name, ${item.got()}`),
  );
  const routes = readList(m.get('routes'), 'route name', (item, s) =>
    DNS_LABEL.test(s) ? s : item.fail(`must be ${DNS_LABEL_RULE}, ${item.got()}`),
  );
  return { pathPrefix, methods, routes };
}

/** A non-empty list of strings, each checked by `check`; repeats are dropped. undefined when absent. */
function readList(
  f: Field | undefined,
  what: string,
  check: (item: Field, s: string) => string | Bad,
): string[] | undefined {
  if (!f) return undefined;
  const items = f.list();
  if (items === BAD) return undefined;
  if (items.length === 0) {
    f.fail(`must list at least one ${what}`);
    return undefined;
  }
  const out: string[] = [];
  for (const item of items) {
    const s = item.string();
    if (s === BAD) continue;
    const v = check(item, s);
    if (v !== BAD && !out.includes(v)) out.push(v);
  }
  return out;
}
