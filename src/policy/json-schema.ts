// The JSON Schema of a policy file, for editors: yaml-language-server (VS Code's YAML extension,
// Neovim, JetBrains) completes, describes and checks a file whose first line names it. Built from
// the parser's own tables (schema.ts, dns.ts) and defaults where they exist, and written out here
// for the fields a reader function reads by hand. test/unit/policy/json-schema.test.ts holds the
// two together: at every map the schema knows exactly the parser's fields, and at every field it
// accepts what parsePolicy accepts. `npm run schema` writes config/sluice-policy.schema.json.
//
// The schema says draft 2020-12, but uses only keywords that mean the same in draft-07, because
// yaml-language-server validates with draft-07 rules: no dependentRequired, no unevaluated*, and
// `items` only as one schema. `errorMessage` and `patternErrorMessage` are yaml-language-server's
// own keywords: the parser's wording in place of "does not match the pattern".
//
// What JSON Schema cannot say is left to `sluice validate`: comparisons between two values
// (backoff capMs >= baseMs, maxEjectionMs >= baseEjectionMs, maxOpenMs >= openMs, dns maxTtlMs >=
// minTtlMs, adaptive minLimit <= initialLimit <= maxConcurrency, also against inherited values),
// listeners sharing a port, names unique in their list, a host claimed by two upstreams or written
// twice in other case, endpoints equal once normalised, YAML map keys that are not strings, and
// one document per file.
import { BACKPRESSURE_DEFAULTS } from './backpressure.ts';
import { DNS_DEFAULTS, DNS_FIELDS } from './dns.ts';
import { MAX_PATH_SEGMENTS, RATE_LIMIT_DEFAULTS, REDIS_DEFAULTS } from './ratelimits.ts';
import {
  API_VERSION,
  CIRCUIT_BREAKER_FIELDS,
  DEFAULTS,
  KIND,
  LATENCY_OUTLIER_FIELDS,
  LIMITS_FIELDS,
  LOAD_BALANCER_FIELDS,
  MAX_CONNECTIONS,
  MAX_DEADLINE,
  MAX_MS,
  OUTLIER_FIELDS,
  PORT_MAX,
  RETRY_BUDGET_FIELDS,
  RETRY_FIELDS,
  SHUTDOWN_FIELDS,
  ACCESS_LOG_FIELDS,
  ACCESS_LOG_DEFAULTS,
  SLOW_CALL_FIELDS,
  SUCCESS_RATE_FIELDS,
  TIMEOUT_FIELDS,
  type FieldSpec,
} from './schema.ts';
import { UPSTREAM_PROTOCOLS } from './types.ts';
import { DEFAULT_ROUTE, DNS_LABEL } from './upstreams.ts';

type Json = { [key: string]: unknown };
type Table = Readonly<Record<string, FieldSpec>>;
/** One meaning per field of a table; a nested section's fields are keyed `section.field`. */
type Describe<T> = { readonly [K in keyof T & string]-?: string } & Readonly<Record<string, string>>;

export const SCHEMA_FILE = 'config/sluice-policy.schema.json';

// Patterns: the parser's regular expressions, or (for its code checks) their equivalents.
const HOST_LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const HOST_NAME = `${HOST_LABEL}(?:\\.${HOST_LABEL})*`;
const V4_SEG = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const V4 = `(?:${V4_SEG}\\.){3}${V4_SEG}`;
const H = '[0-9a-fA-F]{1,4}';
/** node:net's isIPv6, zone id included. */
const IPV6 = `(?:${[
  `(?:${H}:){7}(?:${H}|:)`,
  `(?:${H}:){6}(?:${V4}|:${H}|:)`,
  `(?:${H}:){5}(?::${V4}|(?::${H}){1,2}|:)`,
  `(?:${H}:){4}(?:(?::${H}){0,1}:${V4}|(?::${H}){1,3}|:)`,
  `(?:${H}:){3}(?:(?::${H}){0,2}:${V4}|(?::${H}){1,4}|:)`,
  `(?:${H}:){2}(?:(?::${H}){0,3}:${V4}|(?::${H}){1,5}|:)`,
  `(?:${H}:){1}(?:(?::${H}){0,4}:${V4}|(?::${H}){1,6}|:)`,
  `(?::(?:(?::${H}){0,5}:${V4}|(?::${H}){1,7}|:))`,
].join('|')})(?:%[0-9a-zA-Z.:-]+)?`;
/** 1 to 65535 in at most five digits, leading zeros allowed (parseAuthority reads `\d{1,5}`). */
const PORT = '(?!0+$)(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])';
/** `host` (at most 253 characters) or `[v6]`, as parseAuthority splits them. */
const AUTHORITY_HOST = `(?:\\[${IPV6}\\]|(?=[^:]{1,253}(?::|$))${HOST_NAME})`;
const ADDRESS = `^(?:${IPV6}|(?=.{1,253}$)${HOST_NAME})$`;
const DNS_SUBDOMAIN = '[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*';
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const LOWER_TOKEN = "^[!#$%&'*+.^_`|~0-9a-z-]+$";
const LABEL_NAME = '[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?';
const SEGMENTS = Array.from({ length: MAX_PATH_SEGMENTS }, (_, i) => (i < 9 ? `0?${i + 1}` : `${i + 1}`)).join('|');
const DNS_LABEL_RULE = "a DNS label: lower-case letters, digits and '-', at most 63 characters";

const OFF = { const: 'off' };

function pattern(regex: string, message: string, extra: Json = {}): Json {
  return { type: 'string', minLength: 1, ...extra, pattern: regex, patternErrorMessage: `Must be ${message}.` };
}

function show(value: unknown): string {
  if (value === undefined) return 'off';
  if (Array.isArray(value)) return `[${value.join(', ')}]`;
  return String(value);
}

function unitOf(name: string): string {
  if (name.endsWith('Ms')) return 'ms, ';
  if (name.endsWith('Bytes')) return 'bytes, ';
  return '';
}

function rangeOf(spec: FieldSpec, name: string): string {
  switch (spec.kind) {
    case 'int':
    case 'number':
      return `${unitOf(name)}${spec.min}–${spec.max}${spec.kind === 'int' && spec.off ? ' or off' : ''}`;
    case 'bool':
      return 'true or false';
    case 'enum':
      return `one of ${spec.values.join(', ')}`;
    case 'list':
      return `a list, each ${rangeOf(spec.of, '')}`;
    case 'section':
      return '';
  }
}

/** The meaning, then range and default, as editors show it on hover. */
function text(meaning: string, range = '', def?: { value: unknown }): string {
  const facts = [range, def ? `default ${show(def.value)}` : ''].filter((f) => f !== '').join('; ');
  return facts === '' ? meaning : `${meaning}\n\n${facts}.`;
}

function need(about: Readonly<Record<string, string>>, key: string, where: string): string {
  const meaning = about[key];
  if (meaning === undefined) throw new Error(`json-schema: no description for ${where}.${key}`);
  return meaning;
}

/** A map that reports unknown fields; an empty value (`retry:`) reads as an empty map. */
function closed(properties: Json, extra: Json = {}, nullable = true): Json {
  return { type: nullable ? ['object', 'null'] : 'object', properties, additionalProperties: false, ...extra };
}

/** The value a spec accepts, without annotations. */
function bare(spec: FieldSpec): Json {
  switch (spec.kind) {
    case 'int': {
      const int = { type: 'integer', minimum: spec.min, maximum: spec.max };
      return spec.off ? { anyOf: [int, OFF] } : int;
    }
    case 'number':
      return { type: 'number', minimum: spec.min, maximum: spec.max };
    case 'bool':
      return { type: 'boolean' };
    case 'enum':
      return { enum: [...spec.values] };
    case 'list':
      return { type: 'array', items: bare(spec.of) };
    case 'section':
      throw new Error('json-schema: a section is built by section()');
  }
}

/** One field by its spec, with its meaning, range and default as hover text. */
function field(spec: FieldSpec, name: string, meaning: string, def: unknown, about: Readonly<Record<string, string>>, where: string): Json {
  if (spec.kind === 'section') {
    const s = section(spec.fields as Table, prefixed(about, name), def as object | undefined, `${where}.${name}`);
    return { description: text(meaning), ...s };
  }
  // An `off` field whose default is undefined is off by default.
  const hasDefault = def !== undefined || (spec.kind === 'int' && spec.off === true);
  return {
    description: text(meaning, rangeOf(spec, name), hasDefault ? { value: def } : undefined),
    ...bare(spec),
    ...(hasDefault ? { default: def ?? 'off' } : {}),
  };
}

function prefixed(about: Readonly<Record<string, string>>, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(about)) if (k.startsWith(`${name}.`)) out[k.slice(name.length + 1)] = v;
  return out;
}

/** A section of the parser's table: a field per entry, defaults from `defaults` (none: inherited). */
function section(table: Table, about: Readonly<Record<string, string>>, defaults: object | undefined, where: string): Json {
  const properties: Json = {};
  for (const [name, spec] of Object.entries(table)) {
    const def = defaults === undefined ? undefined : (defaults as Record<string, unknown>)[name];
    properties[name] = field(spec, name, need(about, name, where), def, about, where);
  }
  return closed(properties);
}

/**
 * A section that `off` turns off. No `default: off` even where it is off by default: editors
 * insert a default on completion, and who completes `hedge:` means to write one.
 */
function switchable(meaning: string, schema: Json): Json {
  return { description: meaning, anyOf: [schema, OFF] };
}

function ref(name: string, description?: string): Json {
  return { ...(description ? { description } : {}), $ref: `#/$defs/${name}` };
}

// ---- Meanings, from the README's policy reference. Ranges and defaults come from the tables. ----

const TIMEOUTS: Describe<typeof TIMEOUT_FIELDS> = {
  connectMs: 'Opening a connection to an endpoint.',
  requestMs: 'Deadline for the whole exchange, across all tries, until the response body ends.',
  perTryMs: 'One try, until response headers.',
  idleMs: 'No body bytes for this long ends the response.',
};

const INBOUND_TIMEOUTS: Describe<typeof TIMEOUT_FIELDS> = {
  connectMs: 'Connecting to the app.',
  requestMs: 'Deadline for an inbound request; a shorter propagated deadline wins.',
  perTryMs: 'Inbound makes one try, so this would only repeat requestMs.',
  idleMs: 'No bytes either way for this long closes the exchange.',
};

const RETRY: Describe<typeof RETRY_FIELDS> = {
  maxAttempts: 'Tries including the first; 1 = no retries.',
  retryOn: 'Failures without a response that are retried. The list replaces the inherited one whole.',
  retryOnStatuses: 'Response statuses that are retried.',
  retryOnGrpcStatuses: 'gRPC answers retried by their grpc-status, while no response message reached the client.',
  backoff: 'Exponential back-off with full jitter: uniform in [0, min(capMs, baseMs·2ⁿ⁻¹)). capMs must be at least baseMs (checked by sluice validate).',
  'backoff.baseMs': 'First back-off bound.',
  'backoff.capMs': 'Largest back-off bound; at least baseMs.',
  retryAfterMaxMs: 'A Retry-After up to this is honoured (if it fits the deadline); a longer one is not retried.',
  bufferLimitBytes: 'Request bodies up to this are held for replay; larger ones are sent once, never retried.',
  retryNonIdempotent: 'Retry POST/PATCH without an Idempotency-Key (opt in per route).',
};

const RETRY_BUDGET: Describe<typeof RETRY_BUDGET_FIELDS> = {
  ratio: 'Retries may add at most this share of requests over the window.',
  windowMs: 'Sliding window the ratio is measured over.',
  minRetriesPerSecond: 'Retries always allowed per second, for low-traffic upstreams.',
  maxConcurrentRetries: 'Retries in flight or waiting in back-off at once.',
};

const LOAD_BALANCER: Describe<typeof LOAD_BALANCER_FIELDS> = {
  algorithm: 'p2c-ewma: two random endpoints, the lower latency-EWMA × (in-flight + 1) wins; or round-robin.',
  decayMs: 'How fast the latency estimate forgets; it also decays while an endpoint gets no traffic.',
  defaultRttMs: "Latency assumed before an endpoint's first answer.",
};

const OUTLIER: Describe<typeof OUTLIER_FIELDS> = {
  mode: 'enforce: eject; shadow: count and log what would be ejected, eject nothing; off.',
  consecutiveFailures: 'Failed tries in a row (5xx, reset, connect failure, per-try timeout) that eject an endpoint; 0 = off.',
  baseEjectionMs: 'The n-th ejection in a row lasts n × this, at most maxEjectionMs.',
  maxEjectionMs: 'Longest ejection; at least baseEjectionMs (checked by sluice validate).',
  maxEjectionPercent: 'Never more than this share of endpoints ejected at once, and never the last one.',
  probeIntervalMs: 'An ejected endpoint gets one GET/HEAD first try this often; a probe answered without failure brings it back.',
};

const SUCCESS_RATE: Describe<typeof SUCCESS_RATE_FIELDS> = {
  windowMs: 'Window the success rate is measured over.',
  minRequests: 'Tries in the window before the rate counts.',
  minSuccessRate: 'An endpoint below this success rate is ejected.',
};

const LATENCY: Describe<typeof LATENCY_OUTLIER_FIELDS> = {
  factor: 'Eject an endpoint slower than this × the median of its peers...',
  minRequests: 'Answers before an endpoint is compared.',
  minExcessMs: '...and at least this much slower, so jitter at sub-millisecond latencies ejects nothing.',
};

const BREAKER: Describe<typeof CIRCUIT_BREAKER_FIELDS> = {
  mode: 'enforce, shadow (count, refuse nothing) or off; off also turns the caps below off.',
  windowMs: 'Rolling window of the failure and slow-call shares.',
  minRequests: 'Tries in the window before the breaker may open.',
  failureRatio: 'Opens when failed tries are more than this share.',
  openMs: 'Open period; each re-open from half-open doubles it, up to maxOpenMs.',
  maxOpenMs: 'Longest open period; at least openMs (checked by sluice validate).',
  halfOpenProbes: 'Tries let through after the open period; all must succeed to close, one failure re-opens.',
  maxRequests: 'Tries in flight to the upstream (all endpoints); beyond it, 503 overloaded at once.',
  maxPending: 'Tries waiting for a connection (in flight beyond maxConnectionsPerEndpoint × endpoints).',
};

const SLOW_CALL: Describe<typeof SLOW_CALL_FIELDS> = {
  thresholdMs: 'A try that takes this long or more to response headers is slow.',
  ratio: 'Opens when at least this share of the tries were slow.',
};

const DNS: Describe<typeof DNS_FIELDS> = {
  minTtlMs: 'Names are re-resolved no more often than this, whatever the TTL.',
  maxTtlMs: 'Names are re-resolved at least this often, whatever the TTL; at least minTtlMs (checked by sluice validate).',
  refreshMs: 'Re-resolution of names only the system resolver knows (/etc/hosts, search domains: no TTL).',
  failureRetryMs: 'After a failed lookup, doubling; the last addresses keep serving meanwhile.',
  family: 'Address families to resolve.',
  maxEndpoints: 'Addresses kept per name: a stable subset, spread over sidecars by POD_NAME.',
};

const LIMITS: Describe<typeof LIMITS_FIELDS> = {
  maxHeaderBytes: 'Request line plus headers; larger gets 431.',
  maxRetryBufferBytes: 'Request bodies held for replay by all requests together; past it a request is sent unbuffered and not retried.',
  headersTimeoutMs: 'A client must send its whole request head in this time (slowloris), else 408.',
  keepAliveTimeoutMs: 'Idle client connections are closed after this.',
};

// backpressure.ts keeps its tables private; these copies are held to it by the tests.
const MAX = 1_000_000;
const ADAPTIVE_FIELDS: Table = {
  initialLimit: { kind: 'int', min: 1, max: MAX },
  minLimit: { kind: 'int', min: 1, max: MAX },
  sampleWindowMs: { kind: 'int', min: 10, max: 60_000 },
  minSamples: { kind: 'int', min: 1, max: 100_000 },
  minRttProbeIntervalMs: { kind: 'int', min: 1000, max: 3_600_000 },
  probeRatio: { kind: 'number', min: 0.05, max: 1 },
};
const ADAPTIVE: Describe<typeof BACKPRESSURE_DEFAULTS.adaptive> = {
  initialLimit: 'Limit before the first samples; at most maxConcurrency (checked by sluice validate).',
  minLimit: 'The limit never falls below this; at most initialLimit (checked by sluice validate).',
  sampleWindowMs: 'Latency samples are aggregated per window before the limit moves.',
  minSamples: 'A window with fewer samples moves nothing.',
  minRttProbeIntervalMs: 'How often the no-load latency is re-measured (±10% jitter).',
  probeRatio: 'During that probe window the limit is this share of itself (at least minLimit).',
};

const ADMISSION_FIELDS: Table = {
  mode: { kind: 'enum', values: ['enforce', 'shadow', 'off'] },
  maxConcurrency: { kind: 'int', min: 1, max: MAX },
  queue: {
    kind: 'section',
    fields: { maxWaiting: { kind: 'int', min: 0, max: MAX }, maxWaitMs: { kind: 'int', min: 0, max: MAX_MS } },
  },
  sheddableShare: { kind: 'number', min: 0, max: 1 },
  deadlineAware: { kind: 'bool' },
};
const ADMISSION: Describe<Omit<typeof BACKPRESSURE_DEFAULTS.admission, 'adaptive' | 'priorityHeader'>> = {
  mode: 'shadow: count and name (sluice-shadow) what would be refused, refuse nothing.',
  maxConcurrency: 'Static maximum in flight to the app; the adaptive limit never passes it.',
  queue: 'Requests that find the app at its limit wait here (critical first), never past their deadline; then 503 shed.',
  'queue.maxWaiting': 'Requests waiting at once.',
  'queue.maxWaitMs': 'Longest wait of one request.',
  sheddableShare: 'Sheddable requests are refused once in-flight reaches this share of the limit; they never wait.',
  deadlineAware: "Refuse at once (504 deadline-too-short) a request whose remaining deadline is shorter than the app's latency now.",
};

const CREDIT_GRANT_FIELDS: Table = {
  leaseMs: { kind: 'int', min: 100, max: 3_600_000 },
  maxProducers: { kind: 'int', min: 1, max: 100_000 },
};
const CREDIT_GRANTS: Describe<Omit<typeof BACKPRESSURE_DEFAULTS.credits, 'weights'>> = {
  leaseMs: 'A grant lapses this long after its producer was last heard from.',
  maxProducers: 'Producers tracked at once; beyond it, new ones are served by plain admission.',
};

const CREDIT_FIELDS: Table = {
  maxWaiting: { kind: 'int', min: 0, max: MAX },
  maxWaitMs: { kind: 'int', min: 0, max: MAX_MS },
  recheckMs: { kind: 'int', min: 100, max: 3_600_000 },
};
const CREDITS: Describe<typeof BACKPRESSURE_DEFAULTS.producerCredits> = {
  maxWaiting: 'Requests waiting for a credit at once; then 503 no-credit.',
  maxWaitMs: 'How long each may wait for a credit (never past its deadline).',
  recheckMs: 'An endpoint that grants no credits (no sidecar there) is sent to unmetered and asked again after this.',
};

const IDEMPOTENCY_FIELDS: Table = {
  ttlMs: { kind: 'int', min: 1000, max: MAX_MS },
  maxEntries: { kind: 'int', min: 1, max: 10_000_000 },
  maxBytes: { kind: 'int', min: 0, max: 16 * 1024 * 1024 * 1024 },
  maxResponseBytes: { kind: 'int', min: 0, max: 64 * 1024 * 1024 },
  store: { kind: 'enum', values: ['memory', 'redis'] },
};
const IDEMPOTENCY: Describe<typeof BACKPRESSURE_DEFAULTS.idempotency> = {
  ttlMs: 'A completed answer is replayed to duplicates this long.',
  maxEntries: 'Keys remembered at once (LRU beyond it).',
  maxBytes: 'Bytes of stored answers at once, all keys (LRU beyond it).',
  maxResponseBytes: 'A larger answer is not stored: duplicates get 409 idempotency-conflict.',
  store: 'memory: this sidecar only; redis: shared by every replica through spec.redis (required then).',
};

// ---- Sections the parser reads by hand. ----

/** A listener or the app: `{address, port}` over the defaults `base`. */
function address(meaning: string, base: { host: string; port: number }, minPort: number, extra: Json = {}): Json {
  return { description: text(meaning), ...addressMap(base, minPort, extra) };
}

function addressMap(base: { host: string; port: number }, minPort: number, extra: Json = {}): Json {
  return closed({
    address: {
      description: text('An IP address or a host name.', '', { value: base.host }),
      ...pattern(ADDRESS, 'an IP address or a host name'),
      default: base.host,
    },
    port: {
      description: text(minPort === 0 ? 'Port; 0 picks a free port.' : 'Port.', `${minPort}–${PORT_MAX}`, { value: base.port }),
      type: 'integer',
      minimum: minPort,
      maximum: PORT_MAX,
      default: base.port,
    },
    ...extra,
  });
}

const PROTOCOL = (meaning: string): Json => ({
  description: text(meaning, `one of ${UPSTREAM_PROTOCOLS.join(', ')}`, { value: 'auto' }),
  enum: [...UPSTREAM_PROTOCOLS],
  default: 'auto',
});

function methods(): Json {
  return {
    description: text('HTTP methods (any case; matched upper-case).', 'a non-empty list of HTTP method names'),
    type: 'array',
    minItems: 1,
    items: pattern(`^${TOKEN}$`, 'an HTTP method name'),
  };
}

const PATH_PREFIX = { description: text('The path starts with this (a plain prefix).', "starts with '/'"), ...pattern('^/', "a path starting with '/'") };

function rateLimitRule(): Json {
  const modes = ['enforce', 'shadow', 'off'];
  return closed(
    {
      name: { description: text('Metric label and the name in RateLimit-Policy; unique in the list.', DNS_LABEL_RULE), ...pattern(DNS_LABEL.source, DNS_LABEL_RULE) },
      mode: { description: text('enforce: refuse with 429; shadow: count and annotate, refuse nothing; off.', `one of ${modes.join(', ')}`, { value: RATE_LIMIT_DEFAULTS.mode }), enum: modes, default: RATE_LIMIT_DEFAULTS.mode },
      requestsPerSecond: { description: text('Refill rate, requests per second (fractions allowed). Write this or requestsPerMinute.', '0.01–1000000'), type: 'number', minimum: 0.01, maximum: 1_000_000 },
      requestsPerMinute: { description: text('Refill rate, requests per minute. Write this or requestsPerSecond.', '1–60000000'), type: 'integer', minimum: 1, maximum: 60_000_000 },
      burst: { description: text("Bucket size: requests admitted at once after a quiet period; default one window's quota.", '1–10000000'), type: 'integer', minimum: 1, maximum: 10_000_000 },
      by: {
        description: text('One bucket per distinct value; requests without the value share one. Default: one bucket.', `header:<name>, source or path-prefix:<segments> (1–${MAX_PATH_SEGMENTS})`),
        ...pattern(`^(?:source|header:${TOKEN}|path-prefix:(?:${SEGMENTS}))$`, `header:<name>, source or path-prefix:<segments> (1 to ${MAX_PATH_SEGMENTS})`),
      },
      maxKeys: { description: text('Values tracked at once (only with by); past it, refilled values are forgotten, else new values share one overflow bucket.', '1–1000000', { value: RATE_LIMIT_DEFAULTS.maxKeys }), type: 'integer', minimum: 1, maximum: 1_000_000, default: RATE_LIMIT_DEFAULTS.maxKeys },
      scope: { description: text('local: this sidecar\'s bucket; global: one bucket for every sidecar with the same redis.keyPrefix, upstream and rule name (needs spec.redis).', 'one of local, global', { value: RATE_LIMIT_DEFAULTS.scope }), enum: ['local', 'global'], default: RATE_LIMIT_DEFAULTS.scope },
      onRedisDown: { description: text("Global rules while Redis is unreachable: this sidecar's share of rate and burst, admit all, or refuse all. Only with scope: global.", 'one of local-share, allow, deny', { value: RATE_LIMIT_DEFAULTS.onRedisDown }), enum: ['local-share', 'allow', 'deny'], default: RATE_LIMIT_DEFAULTS.onRedisDown },
      match: {
        description: text('Which requests the rule applies to; every condition given must hold. Default: all requests.'),
        ...closed({
          pathPrefix: PATH_PREFIX,
          methods: methods(),
          routes: { description: text('Route names of the upstream.', 'a non-empty list of route names'), type: 'array', minItems: 1, items: pattern(DNS_LABEL.source, DNS_LABEL_RULE) },
        }),
      },
    },
    {
      required: ['name'],
      // Exactly one rate; maxKeys needs by; onRedisDown needs scope: global.
      oneOf: [{ required: ['requestsPerSecond'] }, { required: ['requestsPerMinute'] }],
      allOf: [
        { if: { required: ['maxKeys'] }, then: { required: ['by'] } },
        {
          if: { required: ['onRedisDown'] },
          then: { required: ['scope'], properties: { scope: { const: 'global', errorMessage: 'onRedisDown applies only to scope: global (a local rule never needs Redis).' } } },
        },
      ],
    },
    false,
  );
}

function redis(): Json {
  const d = REDIS_DEFAULTS;
  const int = (meaning: string, min: number, max: number, def: number, name: string): Json => ({
    description: text(meaning, `${unitOf(name)}${min}–${max}`, { value: def }),
    type: 'integer',
    minimum: min,
    maximum: max,
    default: def,
  });
  const schema = closed(
    {
      address: { description: text('Redis server: an IP address or a host name.', '', { value: d.host }), ...pattern(ADDRESS, 'an IP address or a host name'), default: d.host },
      port: int('Redis port.', 1, PORT_MAX, d.port, 'port'),
      keyPrefix: { description: text('Prefix of every key this sidecar writes; give each service its own.', "1 to 64 of letters, digits, '.', '_', ':' and '-'", { value: d.keyPrefix }), ...pattern('^[A-Za-z0-9._:-]{1,64}$', "1 to 64 of letters, digits, '.', '_', ':' and '-'"), default: d.keyPrefix },
      connectTimeoutMs: int('Opening the connection; reconnects go on in the background.', 1, 60_000, d.connectTimeoutMs, 'connectTimeoutMs'),
      commandTimeoutMs: int('Longest a request waits for Redis; a slower answer marks Redis down.', 1, 10_000, d.commandTimeoutMs, 'commandTimeoutMs'),
      probeIntervalMs: int('Heartbeat (the replica count) and, while Redis is down, reconnect check.', 100, 60_000, d.probeIntervalMs, 'probeIntervalMs'),
      replicas: {
        description: text('Sidecars sharing each global limit, for the local share while Redis is down: auto = those seen live in Redis, or a fixed count.', 'auto or 1–10000', { value: d.replicas }),
        anyOf: [{ const: 'auto' }, { type: 'integer', minimum: 1, maximum: 10_000 }],
        default: d.replicas,
      },
      minReplicas: int('With replicas: auto, never count fewer; also the count before Redis was ever reached.', 1, 10_000, d.minReplicas, 'minReplicas'),
    },
    {
      if: { required: ['minReplicas'] },
      then: { properties: { replicas: { const: 'auto', errorMessage: 'minReplicas applies only with replicas: auto.' } } },
    },
  );
  return switchable(text('Where global rate limits and idempotency records are shared; off: no Redis.', 'a map or off', { value: undefined }), schema);
}

function hedge(): Json {
  const d = BACKPRESSURE_DEFAULTS.hedge;
  return switchable(
    text('Hedged requests: a second try of an idempotent request while the first is still out. Off unless written.', 'a map or off', { value: undefined }),
    closed({
      delayMs: {
        description: text("When a hedge goes out if the first try has no answer yet; p95: the upstream's observed p95 (no hedging before 20 samples).", `ms, 1–${MAX_MS} or p95`, { value: d.delayMs }),
        anyOf: [{ type: 'integer', minimum: 1, maximum: MAX_MS }, { const: 'p95' }],
        default: d.delayMs,
      },
      minDelayMs: { description: text('With p95, never sooner than this.', `ms, 0–${MAX_MS}`, { value: d.minDelayMs }), type: 'integer', minimum: 0, maximum: MAX_MS, default: d.minDelayMs },
      maxHedges: { description: text('Hedges per attempt, one per delay.', '1–3', { value: d.maxHedges }), type: 'integer', minimum: 1, maximum: 3, default: d.maxHedges },
    }),
  );
}

function admission(): Json {
  const d = BACKPRESSURE_DEFAULTS;
  const s = section(ADMISSION_FIELDS, ADMISSION, d.admission, 'admission');
  const properties = s.properties as Json;
  properties.adaptive = switchable(
    text("The limit follows the app's latency (Vegas-style); off: the limit is maxConcurrency.", 'a map or off; default on'),
    section(ADAPTIVE_FIELDS, ADAPTIVE, d.adaptive, 'admission.adaptive'),
  );
  properties.priorityHeader = {
    description: text('Header naming the priority: critical, default or sheddable; anything else is default.', 'a lower-case header name', { value: d.admission.priorityHeader }),
    ...pattern(LOWER_TOKEN, 'a lower-case HTTP header name'),
    default: d.admission.priorityHeader,
  };
  return switchable(text("Admission to the app: a concurrency limit learned from its latency, priority shedding, deadline-aware refusals. Off unless written; {} turns it on.", 'a map or off', { value: undefined }), s);
}

function creditGrants(): Json {
  const s = section(CREDIT_GRANT_FIELDS, CREDIT_GRANTS, BACKPRESSURE_DEFAULTS.credits, 'credits');
  (s.properties as Json).weights = {
    description: text('Relative shares by the producer\'s service name; others weigh 1.', '{<service>: 0.01–1000}; default {}'),
    type: ['object', 'null'],
    propertyNames: pattern(`^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$`, 'a producer service name (a DNS-1123 name)'),
    additionalProperties: { type: 'number', minimum: 0.01, maximum: 1000 },
  };
  return switchable(text("Credits: share out the app's admission limit among producer sidecars. Needs inbound.admission. Off unless written.", 'a map or off', { value: undefined }), s);
}

function selector(): Json {
  const labelValue = '^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$';
  return {
    description: text('Which sidecars this policy is for, when the config service hands policies out; empty: every sidecar.'),
    ...closed({
      service: { description: text("The sidecar's service; any when absent.", DNS_LABEL_RULE), ...pattern(DNS_LABEL.source, DNS_LABEL_RULE) },
      matchLabels: {
        description: text('Labels the sidecar must all have.', 'a map of Kubernetes label keys to label values'),
        type: ['object', 'null'],
        propertyNames: pattern(`^(?:(?=[^/]{1,253}/)${DNS_SUBDOMAIN}/)?${LABEL_NAME}$`, 'a Kubernetes label key ([prefix/]name, name at most 63 characters)'),
        // Numbers and booleans are read as their text (`canary: true` is "true").
        additionalProperties: {
          anyOf: [
            pattern(labelValue, "a Kubernetes label value (at most 63 characters of letters, digits, '-', '_' and '.')", { minLength: 0 }),
            { type: 'boolean' },
            { type: 'number', minimum: 0, exclusiveMaximum: 1e21 },
          ],
        },
      },
    }),
  };
}

// ---- Levels: outbound.defaults, an upstream, a route. ----

const LEVEL_DESCRIPTIONS = {
  protocol: 'HTTP version spoken to the endpoints: the client\'s (auto), HTTP/1.1, or h2c.',
  maxConnectionsPerEndpoint: 'Keep-alive pool size per endpoint (HTTP/2: connections, each with up to 100 streams).',
};

function level(): Json {
  const o = DEFAULTS.outbound;
  return {
    protocol: PROTOCOL(LEVEL_DESCRIPTIONS.protocol),
    maxConnectionsPerEndpoint: field(MAX_CONNECTIONS, 'maxConnectionsPerEndpoint', LEVEL_DESCRIPTIONS.maxConnectionsPerEndpoint, o.maxConnectionsPerEndpoint, {}, 'level'),
    timeouts: ref('timeouts'),
    retry: ref('retry'),
    retryBudget: ref('retryBudget'),
    loadBalancer: ref('loadBalancer'),
    outlierDetection: ref('outlierDetection'),
    circuitBreaker: ref('circuitBreaker'),
    dns: ref('dns'),
    rateLimits: ref('rateLimits'),
    credits: ref('credits'),
    hedge: ref('hedge'),
  };
}

function upstream(): Json {
  const authority = `^${AUTHORITY_HOST}(?::${PORT})?$`;
  const endpoint = `^${AUTHORITY_HOST}:${PORT}$`;
  return closed(
    {
      name: { description: text('Names the upstream in metrics and logs; unique.', DNS_LABEL_RULE), ...pattern(DNS_LABEL.source, DNS_LABEL_RULE) },
      hosts: {
        description: text('Authorities (absolute-form target or Host) that select this upstream; each claimed by one upstream.', 'a non-empty list of host or host:port'),
        type: 'array',
        minItems: 1,
        uniqueItems: true,
        items: pattern(authority, 'host or host:port (IPv6 in brackets: [::1]:8080)'),
      },
      endpoints: {
        description: text('Where requests go, balanced by loadBalancer; a host name is re-resolved per dns and every address it has is an endpoint.', 'a non-empty list of host:port or "[v6]:port" (quoted in YAML)'),
        type: 'array',
        minItems: 1,
        uniqueItems: true,
        items: pattern(endpoint, 'host:port, port 1 to 65535 (IPv6 in brackets: "[::1]:8080")'),
      },
      ...level(),
      routes: {
        description: text("Routes in match order; a request that matches none uses the upstream's own settings (route default)."),
        type: 'array',
        items: route(),
      },
    },
    { required: ['name', 'hosts', 'endpoints'] },
    false,
  );
}

function route(): Json {
  return closed(
    {
      name: {
        description: text('Names the route in metrics; unique in the upstream.', `${DNS_LABEL_RULE}, not ${DEFAULT_ROUTE}`),
        ...pattern(
          `^(?!${DEFAULT_ROUTE}$)${DNS_LABEL.source.slice(1)}`,
          `${DNS_LABEL_RULE}; "${DEFAULT_ROUTE}" is reserved for the catch-all route every upstream ends with`,
        ),
      },
      match: { description: text('Which requests take this route; every condition given must hold.'), ...closed({ pathPrefix: PATH_PREFIX, methods: methods() }) },
      timeouts: ref('timeouts', "Overrides the upstream's timeouts field by field."),
      retry: ref('retry', "Overrides the upstream's retry field by field, or off."),
      circuitBreaker: ref('circuitBreaker', "A route that sets it gets a breaker of its own, over the upstream's settings."),
      hedge: ref('hedge'),
    },
    { required: ['name'] },
    false,
  );
}

function defs(): Json {
  const o = DEFAULTS.outbound;
  const outlier = section(OUTLIER_FIELDS, OUTLIER, o.outlierDetection, 'outlierDetection');
  Object.assign(outlier.properties as Json, {
    successRate: switchable(
      text('Eject an endpoint whose success rate over the window is below minSuccessRate, given minRequests.', 'a map or off; default on'),
      section(SUCCESS_RATE_FIELDS, SUCCESS_RATE, o.outlierDetection.successRate, 'successRate'),
    ),
    latency: switchable(
      text('Eject an endpoint much slower than its peers.', 'a map or off; default on'),
      section(LATENCY_OUTLIER_FIELDS, LATENCY, o.outlierDetection.latency, 'latency'),
    ),
  });
  const breaker = section(CIRCUIT_BREAKER_FIELDS, BREAKER, o.circuitBreaker, 'circuitBreaker');
  (breaker.properties as Json).slowCall = switchable(
    text('Open when at least ratio of the tries took thresholdMs or more to response headers.', 'a map or off', { value: undefined }),
    // Turned on without fields, it is {thresholdMs: 1000, ratio: 0.5} (sections.ts).
    section(SLOW_CALL_FIELDS, SLOW_CALL, { thresholdMs: 1000, ratio: 0.5 }, 'slowCall'),
  );
  return {
    timeouts: { description: text('Timeouts; each merges over the level above.'), ...section(TIMEOUT_FIELDS, TIMEOUTS, o.timeouts, 'timeouts') },
    retry: switchable(text('Retries; fields merge over the level above; off: no retries.', 'a map or off'), section(RETRY_FIELDS, RETRY, o.retry, 'retry')),
    retryBudget: switchable(text('Per upstream, retries within the window may not exceed ratio × requests, beyond a floor of minRetriesPerSecond; off: unbounded.', 'a map or off'), section(RETRY_BUDGET_FIELDS, RETRY_BUDGET, o.retryBudget, 'retryBudget')),
    loadBalancer: { description: text('How an endpoint is picked.'), ...section(LOAD_BALANCER_FIELDS, LOAD_BALANCER, o.loadBalancer, 'loadBalancer') },
    outlierDetection: { description: text('Ejection of failing or slow endpoints.'), ...outlier },
    circuitBreaker: switchable(text('The breaker for when the upstream as a whole fails, and its caps on tries; off = mode: off.', 'a map or off'), breaker),
    dns: { description: text('How endpoint names are re-resolved.'), ...section(DNS_FIELDS, DNS, DNS_DEFAULTS, 'dns') },
    rateLimits: {
      description: text("Token buckets per request, before retries; a level's list replaces the inherited one whole; off or [] means none.", 'a list of rules or off', { value: [] }),
      anyOf: [{ type: 'array', items: rateLimitRule() }, OFF],
      default: [],
    },
    credits: switchable(
      text('Never more in flight to the upstream than its sidecars granted. Off unless written.', 'a map or off', { value: undefined }),
      section(CREDIT_FIELDS, CREDITS, BACKPRESSURE_DEFAULTS.producerCredits, 'credits'),
    ),
    hedge: hedge(),
    upstream: upstream(),
  };
}

// ---- The document. ----

/** Global rules and store: redis need spec.redis; stated where the parser reports it. */
const NEEDS_REDIS = 'needs a redis section (spec.redis) to share through.';
const LOCAL_RULES = { items: { properties: { scope: { const: 'local', errorMessage: `scope: global ${NEEDS_REDIS}` } } } };

function spec(): Json {
  const i = DEFAULTS.inbound;
  const o = DEFAULTS.outbound;
  const listener = (meaning: string, base: { host: string; port: number }): Json =>
    switchable(text(meaning, 'a map or off'), addressMap(base, 0));
  const inbound = closed(
    {
      listener: listener('The inbound listener: the port the pod exposes; off turns the inbound side off.', i.listener),
      app: address('Where the app listens.', i.app, 1, { protocol: PROTOCOL('HTTP version spoken to the app.') }),
      timeouts: { description: text('Timeouts of inbound requests.'), ...section(TIMEOUT_FIELDS, INBOUND_TIMEOUTS, i.timeouts, 'inbound.timeouts') },
      maxDeadlineMs: field(MAX_DEADLINE, 'maxDeadlineMs', 'Cap on the deadline a caller may ask for.', i.maxDeadlineMs, {}, 'inbound'),
      rateLimits: ref('rateLimits', 'Admission of inbound requests by rate.'),
      admission: admission(),
      credits: creditGrants(),
      idempotency: switchable(
        text('Retried requests with an Idempotency-Key reach the app once. Off unless written.', 'a map or off', { value: undefined }),
        section(IDEMPOTENCY_FIELDS, IDEMPOTENCY, BACKPRESSURE_DEFAULTS.idempotency, 'idempotency'),
      ),
    },
    {
      // Credits share out the admission limit: admission must be on (and not mode: off).
      if: { required: ['credits'], properties: { credits: { not: OFF } } },
      then: {
        required: ['admission'],
        properties: {
          admission: {
            type: ['object', 'null'],
            errorMessage: "credits share out the app's admission limit: turn on inbound.admission too.",
            properties: { mode: { enum: ['enforce', 'shadow'], errorMessage: "credits share out the app's admission limit: admission cannot be off." } },
          },
        },
      },
    },
  );
  const outbound = closed({
    listener: listener("The outbound listener: the app's outgoing requests; off turns the outbound side off.", o.listener),
    unknownHosts: {
      description: text('Hosts no upstream claims: forwarded as-is with outbound.defaults, or refused (502 no-route).', 'one of forward, reject', { value: o.unknownHosts }),
      enum: ['forward', 'reject'],
      default: o.unknownHosts,
    },
    defaults: { description: text('Every upstream starts from these, and forwarded unknown hosts use them.'), ...closed(level()) },
    upstreams: { description: text('Named upstreams, each selected by its hosts.', '', { value: [] }), type: 'array', items: ref('upstream'), default: [] },
  });
  return closed(
    {
      selector: selector(),
      admin: address('The admin listener (/healthz, /readyz, /config, /metrics); keep it on loopback.', DEFAULTS.admin, 0),
      limits: { description: text('Limits of the listeners.'), ...section(LIMITS_FIELDS, LIMITS, DEFAULTS.limits, 'limits') },
      shutdown: {
        description: text('Draining on SIGTERM.'),
        ...section(SHUTDOWN_FIELDS, { graceMs: 'How long in-flight requests may finish after SIGTERM.' }, DEFAULTS.shutdown, 'shutdown'),
      },
      deadlineHeader: {
        description: text('Header that carries the remaining deadline (ms) to the next hop.', 'a lower-case HTTP header name', { value: DEFAULTS.deadlineHeader }),
        ...pattern(LOWER_TOKEN, 'a lower-case HTTP header name'),
        default: DEFAULTS.deadlineHeader,
      },
      inbound: { description: text('The inbound side: requests to the app.'), ...inbound },
      outbound: { description: text("The outbound side: the app's requests to other services."), ...outbound },
      redis: redis(),
      accessLog: switchable(
        text('The access log: a JSON line per request on stdout, with its trace id. Off unless written; {} logs every request.', 'a map or off', { value: undefined }),
        section(
          ACCESS_LOG_FIELDS,
          {
            sampleRate: 'Share of successful requests logged, 0 to 1.',
            errorSampleRate: 'Share of failed requests (5xx, a local reply, the client gone) logged, 0 to 1.',
          },
          ACCESS_LOG_DEFAULTS,
          'accessLog',
        ),
      ),
    },
    {
      // No redis (absent or off): no global rule anywhere, no shared idempotency store.
      if: { properties: { redis: OFF } },
      then: {
        properties: {
          inbound: {
            properties: {
              rateLimits: LOCAL_RULES,
              idempotency: { properties: { store: { const: 'memory', errorMessage: `store: redis ${NEEDS_REDIS}` } } },
            },
          },
          outbound: { properties: { defaults: { properties: { rateLimits: LOCAL_RULES } }, upstreams: { items: { properties: { rateLimits: LOCAL_RULES } } } } },
        },
      },
    },
  );
}

/** The schema of a policy file (draft 2020-12, written for draft-07 editors too). */
export function policyJsonSchema(): object {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: `sluice ${KIND}`,
    description: 'A sluice sidecar policy. Every field is optional and takes its default when left out; `sluice validate` checks what this schema cannot (see the README, Policy reference).',
    $comment: `Generated by \`npm run schema\` from src/policy/json-schema.ts; do not edit.`,
    type: 'object',
    required: ['apiVersion', 'kind', 'metadata'],
    additionalProperties: false,
    properties: {
      apiVersion: { description: 'The policy format version.', const: API_VERSION },
      kind: { description: 'Always SidecarPolicy.', const: KIND },
      metadata: {
        description: 'Kubernetes-style object metadata: the policy name.',
        ...closed(
        {
          name: {
            description: text('The policy name.', "a DNS-1123 name: lower-case letters, digits, '-' and '.', at most 253 characters"),
            ...pattern(`^${DNS_SUBDOMAIN}$`, "a DNS-1123 name (lower-case letters, digits, '-' and '.', at most 253 characters)", { maxLength: 253 }),
          },
        },
        { required: ['name'] },
        false,
      ),
      },
      spec: { description: 'What this sidecar does; every field is optional.', ...spec() },
    },
    $defs: defs(),
  };
}

/** The file `npm run schema` writes: what the repository keeps. */
export function policyJsonSchemaText(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}
