// Sections that appear at several levels of a policy (timeouts, retry, retry budget) and the
// address forms (listeners, hosts, endpoints). Each merges over the level above it.
import { isIP, isIPv6 } from 'node:net';
import { isMap } from 'yaml';
import { BAD, type Field, type MapView } from './reader.ts';
import {
  CIRCUIT_BREAKER_FIELDS,
  DEFAULTS,
  LATENCY_OUTLIER_FIELDS,
  LOAD_BALANCER_FIELDS,
  OUTLIER_FIELDS,
  PORT_MAX,
  RETRY_BUDGET_FIELDS,
  RETRY_FIELDS,
  SLOW_CALL_FIELDS,
  SUCCESS_RATE_FIELDS,
  TIMEOUT_FIELDS,
  readSection,
  readValue,
  type FieldSpec,
  type SectionSpec,
} from './schema.ts';
import type {
  CircuitBreakerPolicy,
  Endpoint,
  ListenerAddress,
  LoadBalancerPolicy,
  OutlierDetectionPolicy,
  RetryBudgetPolicy,
  RetryPolicy,
  TimeoutPolicy,
} from './types.ts';

export function readTimeouts(f: Field | undefined, base: TimeoutPolicy): TimeoutPolicy {
  return f ? readSection(f, TIMEOUT_FIELDS, base) : base;
}

/**
 * A section that `off` disables. Turned on again below a level that had it off, it merges over
 * `fallback`, the nearest level above that has it on, so the result is always complete.
 */
export function readSwitchable<T extends object>(
  f: Field | undefined,
  spec: SectionSpec<T>,
  base: T | undefined,
  fallback: T,
): T | undefined {
  if (!f) return base;
  if (f.isOff()) return undefined;
  if (!f.isEmpty() && !isMap(f.node)) {
    f.fail(`must be a map or off, ${f.got()}`);
    return base;
  }
  // Even an empty section (`retry: {}`) turns the protection on, with every field inherited.
  return readSection(f, spec, base ?? fallback);
}

export function readRetry(
  f: Field | undefined,
  base: RetryPolicy | undefined,
  fallback: RetryPolicy = DEFAULTS.outbound.retry,
): RetryPolicy | undefined {
  const retry = readSwitchable(f, RETRY_FIELDS, base, fallback);
  if (!f || !retry || retry.backoff.capMs >= retry.backoff.baseMs) return retry;
  // Check only where this level wrote a bound: an inherited pair was checked where it was written.
  const backoff = f.lookup('backoff');
  const at = backoff?.lookup('capMs') ?? backoff?.lookup('baseMs');
  if (!at) return retry;
  const { baseMs, capMs } = retry.backoff;
  at.fail(
    at.path.endsWith('capMs')
      ? `must be at least backoff.baseMs (${baseMs}), got ${capMs}`
      : `must be at most backoff.capMs (${capMs}), got ${baseMs}`,
  );
  return retry;
}

export function readRetryBudget(
  f: Field | undefined,
  base: RetryBudgetPolicy | undefined,
): RetryBudgetPolicy | undefined {
  return readSwitchable(f, RETRY_BUDGET_FIELDS, base, DEFAULTS.outbound.retryBudget);
}

export function readLoadBalancer(f: Field | undefined, base: LoadBalancerPolicy): LoadBalancerPolicy {
  return f ? readSection(f, LOAD_BALANCER_FIELDS, base) : base;
}

/**
 * A section of plain fields that merge as usual plus subsections that may each be `off`
 * (outlierDetection's successRate and latency, circuitBreaker's slowCall).
 */
export function readWithSwitchables<T extends object>(
  f: Field,
  plain: Readonly<Record<string, FieldSpec>>,
  switchables: { readonly [K in keyof T]?: { readonly spec: SectionSpec<object>; readonly fallback: object } },
  base: T,
  /** Further keys the caller reads itself from the returned view. */
  extra: readonly string[] = [],
): { out: T; m: MapView } | undefined {
  const keys = Object.keys(switchables);
  const m = f.map([...Object.keys(plain), ...keys, ...extra]);
  if (m === BAD) return undefined;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [key, spec] of Object.entries(plain)) {
    const child = m.get(key);
    if (!child) continue;
    const v = readValue(child, spec, out[key]);
    if (v !== BAD) out[key] = v;
  }
  for (const key of keys) {
    const { spec, fallback } = switchables[key as keyof T]!;
    out[key] = readSwitchable(m.get(key), spec, out[key] as object | undefined, fallback);
  }
  return { out: out as T, m };
}

/** outlierDetection: plain fields merge as usual; successRate and latency may each be `off`. */
export function readOutlierDetection(f: Field | undefined, base: OutlierDetectionPolicy): OutlierDetectionPolicy {
  if (!f) return base;
  const fallback = DEFAULTS.outbound.outlierDetection;
  const read = readWithSwitchables(
    f,
    OUTLIER_FIELDS,
    {
      successRate: { spec: SUCCESS_RATE_FIELDS, fallback: fallback.successRate! },
      latency: { spec: LATENCY_OUTLIER_FIELDS, fallback: fallback.latency! },
    },
    base,
  );
  if (!read) return base;
  const { out, m } = read;
  if (out.maxEjectionMs < out.baseEjectionMs) {
    const at = m.get('maxEjectionMs') ?? m.get('baseEjectionMs');
    at?.fail(`maxEjectionMs (${out.maxEjectionMs}) must be at least baseEjectionMs (${out.baseEjectionMs})`);
  }
  return out;
}

/** Tries slower than this are what a slowCall section turned on without a threshold means. */
const SLOW_CALL_FALLBACK = { thresholdMs: 1000, ratio: 0.5 };

/** circuitBreaker: plain fields merge as usual; slowCall may be `off`; the whole section may be `off`. */
export function readCircuitBreaker(f: Field | undefined, base: CircuitBreakerPolicy): CircuitBreakerPolicy {
  if (!f) return base;
  // `circuitBreaker: off` reads as other sections' off does; the settings stay for a level below.
  if (f.isOff()) return { ...base, mode: 'off' };
  const read = readWithSwitchables(
    f,
    CIRCUIT_BREAKER_FIELDS,
    { slowCall: { spec: SLOW_CALL_FIELDS, fallback: SLOW_CALL_FALLBACK } },
    base,
  );
  if (!read) return base;
  const { out, m } = read;
  if (out.maxOpenMs < out.openMs) {
    const at = m.get('maxOpenMs') ?? m.get('openMs');
    at?.fail(`maxOpenMs (${out.maxOpenMs}) must be at least openMs (${out.openMs})`);
  }
  return out;
}

/** A listener or the local app: YAML `{address, port}`, output `{host, port}`. */
/** `extra`: further keys the caller reads itself (the app's protocol). */
export function readAddress(f: Field | undefined, base: ListenerAddress, minPort: number, extra: readonly string[] = []): ListenerAddress {
  if (!f) return base;
  const m = f.map(['address', 'port', ...extra]);
  if (m === BAD) return base;
  let { host, port } = base;
  const a = m.get('address');
  const address = a?.string();
  if (a && address !== undefined && address !== BAD) {
    if (isIP(address) || isHostName(address)) host = address.toLowerCase();
    else a.fail(`must be an IP address or a host name, ${a.got()}`);
  }
  const p = m.get('port')?.int(minPort, PORT_MAX);
  if (p !== undefined && p !== BAD) port = p;
  return { host, port };
}

/** Letters, digits, '-' and '_' in dot-separated labels of at most 63; 253 in all. */
export function isHostName(s: string): boolean {
  return s.length <= 253 && /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/i.test(s);
}

/** Splits `host`, `host:port` or `[v6]:port`; when it is none of these, a ` (reason)` to append ('' if obvious). */
export function parseAuthority(s: string): { host: string; port: number | undefined } | string {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]+))(?::([^:]*))?$/.exec(s);
  if (!m) return s.split(':').length > 2 ? ' (write IPv6 addresses in brackets: [::1]:8080)' : '';
  const [, v6, name, portText] = m;
  if (v6 !== undefined && !isIPv6(v6)) return ` (${JSON.stringify(v6)} is not an IPv6 address)`;
  if (name !== undefined && !isHostName(name)) return ` (${JSON.stringify(name)} is not a valid host name)`;
  let port: number | undefined;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= PORT_MAX)) return ` (port must be from 1 to ${PORT_MAX})`;
  }
  return { host: (v6 ?? name ?? '').toLowerCase(), port };
}

/** `host:port` to connect to; IPv6 hosts come out without brackets, as node:net wants them. */
export function readEndpoint(f: Field): Endpoint | typeof BAD {
  const s = f.string();
  if (s === BAD) return BAD;
  const a = parseAuthority(s);
  if (typeof a === 'string') return f.fail(`must be host:port, ${f.got()}${a}`);
  if (a.port === undefined) return f.fail(`must be host:port, ${f.got()} (missing port)`);
  return { host: a.host, port: a.port };
}

/** An authority that selects an upstream: `host` or `host:port`, kept as written but lower-case. */
export function readHost(f: Field): string | typeof BAD {
  const s = f.string();
  if (s === BAD) return BAD;
  const a = parseAuthority(s);
  if (typeof a === 'string') return f.fail(`must be host or host:port, ${f.got()}${a}`);
  return s.toLowerCase();
}
