// The one table of what a policy file may say: every field's built-in default and its range.
// config/sluice.yaml shows the same defaults to people; a test parses it and checks they agree.
import type { AccessLogPolicy } from '../telemetry/access-log.ts';
import type {
  CircuitBreakerPolicy,
  Endpoint,
  UpstreamProtocol,
  ListenerAddress,
  LoadBalancerPolicy,
  OutlierDetectionPolicy,
  RetryBudgetPolicy,
  RetryCondition,
  RetryPolicy,
  ServerLimits,
  TimeoutPolicy,
} from './types.ts';
import { GRPC_STATUS_NAMES } from '../stack/grpc.ts';
import { BAD, type Field } from './reader.ts';

export const API_VERSION = 'sluice.dev/v1alpha1';
export const KIND = 'SidecarPolicy';

/** A day: a longer timeout is a typo, not a timeout. */
export const MAX_MS = 86_400_000;

export const RETRY_CONDITIONS: readonly RetryCondition[] = [
  'connect-failure',
  'reset',
  'refused-stream',
  'per-try-timeout',
];

interface Defaults {
  readonly admin: ListenerAddress;
  readonly limits: ServerLimits;
  readonly shutdown: { readonly graceMs: number };
  readonly deadlineHeader: string;
  readonly inbound: {
    readonly listener: ListenerAddress;
    readonly app: Endpoint;
    readonly appProtocol: UpstreamProtocol;
    readonly timeouts: TimeoutPolicy;
    readonly maxDeadlineMs: number | undefined;
  };
  readonly outbound: {
    readonly listener: ListenerAddress;
    readonly unknownHosts: 'forward' | 'reject';
    readonly maxConnectionsPerEndpoint: number;
    readonly timeouts: TimeoutPolicy;
    readonly retry: RetryPolicy;
    readonly retryBudget: RetryBudgetPolicy;
    readonly loadBalancer: LoadBalancerPolicy;
    readonly outlierDetection: OutlierDetectionPolicy;
    readonly circuitBreaker: CircuitBreakerPolicy;
  };
}

/** What each field is when no level of the policy sets it. */
export const DEFAULTS: Defaults = {
  admin: { host: '127.0.0.1', port: 15000 },
  limits: { maxHeaderBytes: 16384, headersTimeoutMs: 10000, keepAliveTimeoutMs: 5000, maxRetryBufferBytes: 67_108_864 },
  shutdown: { graceMs: 20000 },
  deadlineHeader: 'sluice-timeout-ms',
  inbound: {
    listener: { host: '0.0.0.0', port: 15006 },
    app: { host: '127.0.0.1', port: 8080 },
    appProtocol: 'auto',
    // The app is on loopback: a connect that takes a second means it is not listening. Nothing
    // retries inbound, so a per-try timeout would only duplicate requestMs.
    timeouts: { connectMs: 1000, requestMs: 30000, perTryMs: undefined, idleMs: 60000 },
    maxDeadlineMs: 300000,
  },
  outbound: {
    listener: { host: '127.0.0.1', port: 15001 },
    unknownHosts: 'forward',
    maxConnectionsPerEndpoint: 128,
    timeouts: { connectMs: 1000, requestMs: 15000, perTryMs: 5000, idleMs: 60000 },
    retry: {
      maxAttempts: 3,
      retryOn: RETRY_CONDITIONS,
      retryOnStatuses: [502, 503, 504],
      retryOnGrpcStatuses: ['UNAVAILABLE'],
      backoff: { baseMs: 25, capMs: 1000 },
      retryAfterMaxMs: 5000,
      bufferLimitBytes: 65536,
      retryNonIdempotent: false,
    },
    retryBudget: { ratio: 0.2, windowMs: 10000, minRetriesPerSecond: 10, maxConcurrentRetries: 100 },
    loadBalancer: { algorithm: 'p2c-ewma', decayMs: 10000, defaultRttMs: 1 },
    // Short first ejections: an endpoint that recovers is back within about a second, one that
    // keeps failing is ejected longer each time.
    outlierDetection: {
      mode: 'enforce',
      consecutiveFailures: 5,
      successRate: { windowMs: 10000, minRequests: 20, minSuccessRate: 0.5 },
      latency: { factor: 5, minRequests: 20, minExcessMs: 50 },
      baseEjectionMs: 1000,
      maxEjectionMs: 30000,
      maxEjectionPercent: 0.5,
      probeIntervalMs: 500,
    },
    // Ejection handles one bad endpoint; the breaker is for when the upstream as a whole fails:
    // answering at once beats queueing tries it will fail. Slow calls depend on the service,
    // so that check is off until a policy names what slow is.
    circuitBreaker: {
      mode: 'enforce',
      windowMs: 10000,
      minRequests: 20,
      failureRatio: 0.5,
      slowCall: undefined,
      openMs: 5000,
      maxOpenMs: 60000,
      halfOpenProbes: 3,
      maxRequests: 1024,
      maxPending: 1024,
    },
  },
};

/** slowCall is switchable (`off`); see sections.ts. */
export const CIRCUIT_BREAKER_FIELDS = {
  mode: { kind: 'enum', values: ['enforce', 'shadow', 'off'] },
  windowMs: { kind: 'int', min: 1000, max: 600_000 },
  minRequests: { kind: 'int', min: 1, max: 1_000_000 },
  failureRatio: { kind: 'number', min: 0, max: 1 },
  openMs: { kind: 'int', min: 1, max: 3_600_000 },
  maxOpenMs: { kind: 'int', min: 1, max: 3_600_000 },
  halfOpenProbes: { kind: 'int', min: 1, max: 1000 },
  maxRequests: { kind: 'int', min: 1, max: 1_000_000, off: true },
  maxPending: { kind: 'int', min: 0, max: 1_000_000, off: true },
} as const satisfies Record<string, FieldSpec>;

export const SLOW_CALL_FIELDS = {
  thresholdMs: { kind: 'int', min: 1, max: MAX_MS },
  ratio: { kind: 'number', min: 0, max: 1 },
} as const satisfies Record<string, FieldSpec>;

export const LOAD_BALANCER_FIELDS: SectionSpec<LoadBalancerPolicy> = {
  algorithm: { kind: 'enum', values: ['p2c-ewma', 'round-robin'] },
  decayMs: { kind: 'int', min: 100, max: 600_000 },
  defaultRttMs: { kind: 'int', min: 0, max: 60_000 },
};

/** successRate and latency are switchable (`off`); see sections.ts. */
export const OUTLIER_FIELDS = {
  mode: { kind: 'enum', values: ['enforce', 'shadow', 'off'] },
  consecutiveFailures: { kind: 'int', min: 0, max: 1000 },
  baseEjectionMs: { kind: 'int', min: 1, max: 3_600_000 },
  maxEjectionMs: { kind: 'int', min: 1, max: 3_600_000 },
  maxEjectionPercent: { kind: 'number', min: 0, max: 1 },
  probeIntervalMs: { kind: 'int', min: 10, max: 3_600_000, off: true },
} as const satisfies Record<string, FieldSpec>;

export const SUCCESS_RATE_FIELDS = {
  windowMs: { kind: 'int', min: 1000, max: 600_000 },
  minRequests: { kind: 'int', min: 1, max: 1_000_000 },
  minSuccessRate: { kind: 'number', min: 0, max: 1 },
} as const satisfies Record<string, FieldSpec>;

export const LATENCY_OUTLIER_FIELDS = {
  factor: { kind: 'number', min: 1, max: 1000 },
  minRequests: { kind: 'int', min: 1, max: 1_000_000 },
  minExcessMs: { kind: 'int', min: 0, max: 3_600_000 },
} as const satisfies Record<string, FieldSpec>;

export type FieldSpec =
  | { readonly kind: 'int'; readonly min: number; readonly max: number; readonly off?: true }
  | { readonly kind: 'number'; readonly min: number; readonly max: number }
  | { readonly kind: 'bool' }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  | { readonly kind: 'list'; readonly of: FieldSpec }
  | { readonly kind: 'section'; readonly fields: SectionSpec<object> };

/** One spec per field of T: a section's YAML keys are exactly its output keys. */
export type SectionSpec<T> = { readonly [K in keyof T]-?: FieldSpec };

/** An hour, for server-side waits a person configures (slowloris, keep-alive, drain). */
const MAX_SERVER_MS = 3_600_000;
export const PORT_MAX = 65535;

export const TIMEOUT_FIELDS: SectionSpec<TimeoutPolicy> = {
  connectMs: { kind: 'int', min: 1, max: MAX_MS },
  requestMs: { kind: 'int', min: 1, max: MAX_MS, off: true },
  perTryMs: { kind: 'int', min: 1, max: MAX_MS, off: true },
  idleMs: { kind: 'int', min: 1, max: MAX_MS, off: true },
};

export const RETRY_FIELDS: SectionSpec<RetryPolicy> = {
  maxAttempts: { kind: 'int', min: 1, max: 10 },
  retryOn: { kind: 'list', of: { kind: 'enum', values: RETRY_CONDITIONS } },
  retryOnStatuses: { kind: 'list', of: { kind: 'int', min: 100, max: 599 } },
  retryOnGrpcStatuses: { kind: 'list', of: { kind: 'enum', values: GRPC_STATUS_NAMES.filter((n) => n !== 'OK') } },
  backoff: {
    kind: 'section',
    fields: {
      baseMs: { kind: 'int', min: 1, max: MAX_MS },
      capMs: { kind: 'int', min: 1, max: MAX_MS },
    },
  },
  retryAfterMaxMs: { kind: 'int', min: 0, max: MAX_MS },
  bufferLimitBytes: { kind: 'int', min: 0, max: 64 * 1024 * 1024 },
  retryNonIdempotent: { kind: 'bool' },
};

export const RETRY_BUDGET_FIELDS: SectionSpec<RetryBudgetPolicy> = {
  ratio: { kind: 'number', min: 0, max: 1 },
  windowMs: { kind: 'int', min: 1000, max: 600_000 },
  minRetriesPerSecond: { kind: 'int', min: 0, max: 10_000 },
  maxConcurrentRetries: { kind: 'int', min: 1, max: 100_000 },
};

export const LIMITS_FIELDS: SectionSpec<ServerLimits> = {
  maxHeaderBytes: { kind: 'int', min: 1024, max: 1024 * 1024 },
  maxRetryBufferBytes: { kind: 'int', min: 0, max: 4 * 1024 * 1024 * 1024 },
  headersTimeoutMs: { kind: 'int', min: 1, max: MAX_SERVER_MS },
  keepAliveTimeoutMs: { kind: 'int', min: 1, max: MAX_SERVER_MS },
};

export const SHUTDOWN_FIELDS: SectionSpec<{ graceMs: number }> = {
  graceMs: { kind: 'int', min: 0, max: MAX_SERVER_MS },
};

export const ACCESS_LOG_FIELDS: SectionSpec<AccessLogPolicy> = {
  sampleRate: { kind: 'number', min: 0, max: 1 },
  errorSampleRate: { kind: 'number', min: 0, max: 1 },
};

/** Written means on: every request, until a rate says otherwise. */
export const ACCESS_LOG_DEFAULTS: AccessLogPolicy = { sampleRate: 1, errorSampleRate: 1 };

export const MAX_CONNECTIONS: FieldSpec = { kind: 'int', min: 1, max: 65536 };
export const MAX_DEADLINE: FieldSpec = { kind: 'int', min: 1, max: MAX_MS, off: true };

/** Reads a value by its spec; BAD when it is invalid (the error is recorded). */
export function readValue(f: Field, spec: FieldSpec, base: unknown): unknown {
  switch (spec.kind) {
    case 'int':
      return spec.off ? f.intOrOff(spec.min, spec.max) : f.int(spec.min, spec.max);
    case 'number':
      return f.number(spec.min, spec.max);
    case 'bool':
      return f.bool();
    case 'enum':
      return f.oneOf(spec.values);
    case 'list': {
      const items = f.list();
      if (items === BAD) return BAD;
      const values = items.map((item) => readValue(item, spec.of, undefined));
      // Lists replace the inherited list whole; repeats carry no meaning, so they are dropped.
      return values.includes(BAD) ? BAD : [...new Set(values)];
    }
    case 'section':
      return readSection(f, spec.fields, base as object);
  }
}

/**
 * Merges a YAML map over `base` field by field: what the map sets wins, the rest is inherited.
 * Invalid fields keep the inherited value so reading can go on and report every error.
 */
export function readSection<T extends object>(f: Field, spec: SectionSpec<T>, base: T): T {
  const keys = Object.keys(spec) as (keyof T & string)[];
  const m = f.map(keys);
  if (m === BAD) return base;
  const out = { ...base };
  for (const key of keys) {
    const child = m.get(key);
    if (!child) continue;
    const v = readValue(child, spec[key], base[key]);
    if (v !== BAD) out[key] = v as T[typeof key];
  }
  return out;
}
