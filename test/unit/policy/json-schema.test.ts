// The JSON Schema editors check policy files against (config/sluice-policy.schema.json) says what
// parsePolicy says: the committed file is the generator's output, every example in the repo and in
// the tests passes both, documents the parser rejects fail the schema too, every map knows exactly
// the parser's fields, and every field agrees with the parser over a spread of values. Where the
// schema cannot follow (comparisons between values, ports, uniqueness) only the parser rejects,
// and only for the reasons listed in NOT_EXPRESSIBLE.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { SCHEMA_FILE, policyJsonSchema, policyJsonSchemaText } from '../../../src/policy/json-schema.ts';
import { formatPolicyError, parsePolicy, type PolicyError } from '../../../src/policy/parse.ts';
import { HEADER, doc } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCHEMA = policyJsonSchema() as Schema;

// strictTypes and strictRequired are Ajv's style rules, not JSON Schema's: a branch of an `if`
// need not repeat `type`. The two extra keywords are yaml-language-server's messages.
const ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allowUnionTypes: true, allErrors: true });
ajv.addVocabulary(['errorMessage', 'patternErrorMessage']);
const validate = ajv.compile(SCHEMA);

/** Where the schema finds fault, as JSON pointers (an unknown field points at itself). */
function schemaErrors(text: string): string[] {
  if (validate(YAML.parse(text))) return [];
  return (validate.errors ?? []).map((e) =>
    e.keyword === 'additionalProperties' ? `${e.instancePath}/${String(e.params.additionalProperty)}` : e.instancePath,
  );
}

function parserErrors(text: string): readonly PolicyError[] {
  const r = parsePolicy(text, 't.yaml');
  return r.ok ? [] : r.errors;
}

/** `spec.outbound.upstreams[0].name` as a JSON pointer. */
function pointer(field: string): string {
  return field === '' ? '' : `/${field.replace(/\[(\d+)\]/g, '.$1').split('.').join('/')}`;
}

/** The parser's rejections that JSON Schema cannot state; see the header of json-schema.ts. */
const NOT_EXPRESSIBLE = [/must be at (least|most) /, /is used by both/, /listed twice|already claimed|duplicate /];

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? yamlFiles(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

describe('config/sluice-policy.schema.json', () => {
  it('is what the generator writes now', () => {
    const committed = readFileSync(join(ROOT, SCHEMA_FILE), 'utf8');
    expect(committed, `${SCHEMA_FILE} is out of date: run \`npm run schema\` and commit it`).toBe(policyJsonSchemaText());
  });

  it('is a valid draft 2020-12 schema', () => {
    expect(ajv.validateSchema(SCHEMA), JSON.stringify(ajv.errors)).toBe(true);
  });
});

describe('every policy file in config/', () => {
  const files = yamlFiles(join(ROOT, 'config'));

  it('there are examples to check', () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
  });

  it.each(files.map((f) => [f.slice(ROOT.length), f]))('%s names the schema on its first line and passes it', (_name, path) => {
    const text = readFileSync(path, 'utf8');
    const modeline = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text);
    expect(modeline, 'first line: # yaml-language-server: $schema=<path to the schema>').not.toBeNull();
    expect(resolve(dirname(path), modeline![1]!)).toBe(join(ROOT, SCHEMA_FILE));
    expect(parserErrors(text).map(formatPolicyError)).toEqual([]);
    expect(schemaErrors(text)).toEqual([]);
  });
});

describe('the README policy examples the parser accepts', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const docs = blocks
    .map((b) => (b.startsWith('apiVersion:') ? b : b.startsWith('spec:') ? HEADER.replace('spec:\n', '') + b : undefined))
    .filter((b): b is string => b !== undefined && parserErrors(b).length === 0);

  it('exist', () => {
    expect(docs.length).toBeGreaterThanOrEqual(2);
  });

  it.each(docs.map((d, i) => [i, d]))('block %i passes the schema', (_i, text) => {
    expect(schemaErrors(text)).toEqual([]);
  });
});

/** Valid documents from the other policy tests (spec fragments at column 1). */
const VALID: Record<string, string> = {
  'an empty spec': '',
  'route over upstream over defaults': `
outbound:
  defaults: {timeouts: {requestMs: 9000}, retry: {retryAfterMaxMs: 100}}
  upstreams:
    - name: orders
      hosts: [orders]
      endpoints: [127.0.0.1:8081]
      timeouts: {perTryMs: 300}
      retry: {maxAttempts: 4, backoff: {capMs: 500}}
      routes:
        - name: bulk
          timeouts: {requestMs: 60000}
          retry: {backoff: {baseMs: 50}, retryOnStatuses: [503]}`,
  'circuit breakers, slowCall on and off, a route breaker': `
outbound:
  defaults: {circuitBreaker: {minRequests: 5}}
  upstreams:
    - name: orders
      hosts: [orders]
      endpoints: [127.0.0.1:8081]
      circuitBreaker: {failureRatio: 0.25, maxPending: off, slowCall: {thresholdMs: 200}}
      routes:
        - {name: bulk, circuitBreaker: {openMs: 1000, slowCall: off}}
        - name: plain
        - {name: r, circuitBreaker: off}`,
  'timeouts off and on again': `
outbound:
  defaults: {timeouts: {requestMs: off}}
  upstreams:
    - {name: a, hosts: [a], endpoints: ["a:1"], timeouts: {perTryMs: off, idleMs: off}, routes: [{name: r, timeouts: {idleMs: 1000}, retry: off}]}`,
  'retry and budget off in defaults, on per upstream': `
outbound:
  defaults: {retry: off, retryBudget: off}
  upstreams:
    - {name: a, hosts: [a], endpoints: ["a:1"]}
    - {name: b, hosts: [b], endpoints: ["b:1"], retry: {maxAttempts: 2}, retryBudget: {ratio: 0.5}}`,
  'empty sections': 'outbound:\n  defaults:\n    retry:\n    timeouts:\n',
  'listeners off': 'inbound:\n  listener: off\noutbound:\n  listener: off',
  'port 0 and an IPv6 wildcard': 'admin: {port: 0}\ninbound:\n  app: {port: 9000, protocol: http2}\n  listener: {address: "::"}',
  'hosts, IPv6 endpoints, methods in any case': `
outbound:
  upstreams:
    - name: orders
      hosts: [Orders.Default.svc, "ORDERS:8080", "[::1]:80", "[fe80::1%eth0]"]
      endpoints: [Orders-0.local:8081, "[::1]:8082", 10.0.0.7:80, "[::ffff:10.0.0.1]:08080"]
      protocol: http1
      maxConnectionsPerEndpoint: 65536
      routes:
        - name: ingest
          match: {pathPrefix: /ingest, methods: [post, PUT, Post]}`,
  'repeated list entries': 'outbound:\n  defaults:\n    retry: {retryOnStatuses: [503, 503, 429], retryOnGrpcStatuses: [UNAVAILABLE, RESOURCE_EXHAUSTED]}',
  'anchors and aliases': `
outbound:
  defaults:
    timeouts: &fast {requestMs: 100}
  upstreams:
    - {name: a, hosts: [a], endpoints: ["a:1"], timeouts: *fast}`,
  'backpressure sections turned on empty': 'inbound:\n  admission: {}\n  credits: {}\n  idempotency: {}',
  'admission with a static limit and credit weights': 'inbound:\n  admission: {adaptive: off, maxConcurrency: 8, queue: {maxWaitMs: 5}, priorityHeader: x-prio}\n  credits: {weights: {checkout: 3, orders.v2: 0.5}}',
  'credits and hedging down the levels': `
outbound:
  defaults:
    credits: {maxWaitMs: 10}
    hedge: {delayMs: 40}
  upstreams:
    - {name: a, hosts: [a], endpoints: [127.0.0.1:1], credits: {maxWaiting: 5}, routes: [{name: writes, match: {methods: [POST]}, hedge: off}]}
    - {name: b, hosts: [b], endpoints: [127.0.0.1:2], credits: off, hedge: {delayMs: p95}}`,
  'a selector': "selector:\n  service: orders\n  matchLabels: {tier: backend, 'app.kubernetes.io/part-of': shop, canary: 'true', ready: true, v: 2, empty: ''}",
  'rate limits with every field, redis on': `
redis: {}
inbound:
  rateLimits:
    - {name: producers, mode: shadow, requestsPerMinute: 30, burst: 5, by: path-prefix:2, maxKeys: 50, scope: global, onRedisDown: deny, match: {pathPrefix: /api, methods: [post, PUT], routes: [bulk]}}
    - {name: tenants, requestsPerSecond: 2.5, by: "header:X-Tenant-Id"}
    - {name: sources, requestsPerSecond: 0.01, by: source}
  idempotency: {store: redis}`,
  'rate limits off and empty': 'inbound:\n  rateLimits: off\noutbound:\n  defaults: {rateLimits: []}',
  'redis with every field': 'redis: {address: Redis.Shared.svc, port: 6380, keyPrefix: "orders:v1", connectTimeoutMs: 500, commandTimeoutMs: 20, probeIntervalMs: 250, replicas: 6}',
  'redis replicas auto with a floor': 'redis: {replicas: auto, minReplicas: 3}',
  'outlier detection sub-sections off': `
outbound:
  defaults: {outlierDetection: {mode: shadow, latency: off}, loadBalancer: {algorithm: round-robin}}
  upstreams:
    - {name: a, hosts: [a], endpoints: ["127.0.0.1:1"], outlierDetection: {consecutiveFailures: 2, successRate: off, probeIntervalMs: off}}`,
  'dns with every field': 'outbound:\n  defaults:\n    dns: {minTtlMs: 500, maxTtlMs: 60000, refreshMs: 2000, failureRetryMs: 250, family: ipv6, maxEndpoints: 8}',
};

describe('valid documents pass the parser and the schema', () => {
  it.each(Object.entries(VALID))('%s', (_name, spec) => {
    const text = doc(spec);
    expect(parserErrors(text).map(formatPolicyError)).toEqual([]);
    expect(schemaErrors(text)).toEqual([]);
  });
});

const UP = 'outbound:\n  upstreams:\n    - ';
const RULE = 'inbound:\n  rateLimits:\n    - ';

/** Documents the parser rejects (from the other policy tests); the schema must reject them too. */
const INVALID: Record<string, string> = {
  'a typo in a field name': 'admn:\n  port: 1',
  'a typo deep in a section': 'outbound:\n  defaults:\n    retry:\n      maxAttempt: 2',
  'an unknown field': 'shutdown:\n  drainMode: fast',
  'a string where an integer belongs': 'limits:\n  maxHeaderBytes: 16k',
  'an integer out of range': 'outbound:\n  defaults:\n    retry: {maxAttempts: 0}',
  'a share out of range': 'outbound:\n  defaults:\n    retryBudget: {ratio: 1.5}',
  'a window too short': 'outbound:\n  defaults:\n    retryBudget: {windowMs: 500}',
  'a list where a map belongs': 'inbound: [a]',
  'yes is not a boolean in YAML 1.2': 'outbound:\n  defaults:\n    retry:\n      retryNonIdempotent: yes',
  'connectMs cannot be off': 'outbound:\n  defaults:\n    timeouts: {connectMs: off}',
  'the admin listener cannot be off': 'admin: off',
  'the app cannot be off': 'inbound: {app: off}',
  'a timeout with a unit': 'inbound:\n  timeouts: {requestMs: 5s}',
  'retry: true': 'outbound:\n  defaults: {retry: true}',
  'a host with a path': `${UP}{name: a, hosts: [orders/v1], endpoints: [127.0.0.1:1]}`,
  'an endpoint without a port': `${UP}{name: a, hosts: [a], endpoints: [orders]}`,
  'an endpoint on port 0': `${UP}{name: a, hosts: [a], endpoints: ["127.0.0.1:0"]}`,
  'an endpoint with a bad IPv6 address': `${UP}{name: a, hosts: [a], endpoints: ["[zz]:80"]}`,
  'an IPv6 endpoint without brackets': `${UP}{name: a, hosts: [a], endpoints: ["::1:80"]}`,
  'an endpoint that is a number': `${UP}{name: a, hosts: [a], endpoints: [8080]}`,
  'a host on port 65536': `${UP}{name: a, hosts: ["a:65536"], endpoints: ["a:1"]}`,
  'a host name label of 64 characters': `${UP}{name: a, hosts: [${'a'.repeat(64)}], endpoints: ["a:1"]}`,
  'an endpoint listed twice': `${UP}{name: a, hosts: [a], endpoints: ["a:1", "a:1"]}`,
  'missing hosts': `${UP}name: a\n      endpoints: [a:1]`,
  'empty endpoints': `${UP}{name: a, hosts: [a], endpoints: []}`,
  'an upstream that is not a map': 'outbound:\n  upstreams: [orders]',
  'upstreams empty': 'outbound:\n  upstreams:',
  'an unknown retry condition': 'outbound:\n  defaults:\n    retry: {retryOn: [rest]}',
  'a status out of range': 'outbound:\n  defaults:\n    retry: {retryOnStatuses: [99]}',
  'OK is not retried': 'outbound:\n  defaults:\n    retry: {retryOnGrpcStatuses: [OK]}',
  'a route named default': `${UP}{name: a, hosts: [a], endpoints: ["a:1"], routes: [{name: default}]}`,
  'a path prefix without /': `${UP}{name: a, hosts: [a], endpoints: ["a:1"], routes: [{name: r, match: {pathPrefix: api}}]}`,
  'no methods': `${UP}{name: a, hosts: [a], endpoints: ["a:1"], routes: [{name: r, match: {methods: []}}]}`,
  'a route without a name': `${UP}{name: a, hosts: [a], endpoints: ["a:1"], routes: [{match: {pathPrefix: /}}]}`,
  'an upstream name that is not a DNS label': `${UP}{name: Orders_1, hosts: [a], endpoints: [127.0.0.1:1]}`,
  'unknownHosts misspelt': 'outbound: {unknownHosts: rejct}',
  'a deadline header in upper case': 'deadlineHeader: X-Deadline',
  'a listener address that is no host': 'outbound:\n  listener: {address: "not a host"}',
  'a listener port out of range': 'outbound:\n  listener: {port: 70000}',
  'the app on port 0': 'inbound:\n  app: {port: 0}',
  'an unknown app protocol': 'inbound:\n  app: {protocol: h2}',
  'maxDeadlineMs zero': 'inbound: {maxDeadlineMs: 0}',
  'credits without admission': 'inbound:\n  credits: {}',
  'credits with admission off': 'inbound:\n  admission: off\n  credits: {}',
  'credits with admission mode off': 'inbound:\n  admission: {mode: off}\n  credits: {}',
  'an unknown admission field': 'inbound:\n  admission: {maxConcurency: 4}',
  'a sheddable share out of range': 'inbound:\n  admission: {sheddableShare: 1.5}',
  'a priority header in upper case': 'inbound:\n  admission: {priorityHeader: X-Prio}',
  'a weight that is not a number': 'inbound:\n  admission: {}\n  credits: {weights: {checkout: lots}}',
  'a weight keyed by no service name': 'inbound:\n  admission: {}\n  credits: {weights: {Checkout: 1}}',
  'an idempotency store that does not exist': 'inbound:\n  idempotency: {store: disk}',
  'a redis store without spec.redis': 'inbound:\n  idempotency: {store: redis}',
  'a redis store with redis off': 'redis: off\ninbound:\n  idempotency: {store: redis}',
  'a hedge delay neither ms nor p95': 'outbound:\n  defaults:\n    hedge: {delayMs: p99}',
  'too many hedges': 'outbound:\n  defaults:\n    hedge: {maxHedges: 5}',
  'credits that are not a map': 'outbound:\n  defaults:\n    credits: yes',
  'an unknown algorithm': 'outbound:\n  defaults:\n    loadBalancer: {algorithm: p2c}',
  'outlier mode on': 'outbound:\n  defaults:\n    outlierDetection: {mode: on}',
  'outlierDetection cannot be off': 'outbound:\n  defaults:\n    outlierDetection: off',
  'a failure ratio in percent': 'outbound:\n  defaults:\n    circuitBreaker: {failureRatio: 50}',
  'a slow-call ratio out of range': 'outbound:\n  defaults:\n    circuitBreaker: {slowCall: {ratio: 2}}',
  'no half-open probes': 'outbound:\n  defaults:\n    circuitBreaker: {halfOpenProbes: 0}',
  'maxPending below zero': 'outbound:\n  defaults:\n    circuitBreaker: {maxPending: -1}',
  'a route breaker with an unknown field': `${UP}{name: a, hosts: [a], endpoints: ["a:1"], routes: [{name: r, circuitBreaker: {slowCalls: off}}]}`,
  'a service that is not a DNS label': 'selector:\n  service: Orders_1',
  'a label key with a space': 'selector:\n  matchLabels: {"bad key!": x}',
  'a label value with a space': 'selector:\n  matchLabels: {tier: "no spaces"}',
  'a negative label value': 'selector:\n  matchLabels: {tier: -1}',
  'selector labels instead of matchLabels': 'selector:\n  labels: {}',
  'a dns interval too short': 'outbound:\n  defaults:\n    dns: {minTtlMs: 50}',
  'too many dns endpoints': 'outbound:\n  defaults:\n    dns: {maxEndpoints: 5000}',
  'a fractional dns interval': 'outbound:\n  defaults:\n    dns: {failureRetryMs: 1500.5}',
  'an unknown dns family': 'outbound:\n  defaults:\n    dns: {family: dual}',
  'dns cannot be off': 'outbound:\n  defaults:\n    dns: off',
  'rate limits that are not a list': 'inbound:\n  rateLimits: {name: a}',
  'a rate-limit typo': `${RULE}{name: a, requestsPerSecond: 1, brust: 2}`,
  'a rule without a name': `${RULE}{requestsPerSecond: 1}`,
  'a rule name with capitals': `${RULE}{name: Per_Tenant, requestsPerSecond: 1}`,
  'a rule without a rate': `${RULE}{name: a, burst: 3}`,
  'a rule with both rates': `${RULE}{name: a, requestsPerSecond: 1, requestsPerMinute: 60}`,
  'a rate of zero': `${RULE}{name: a, requestsPerSecond: 0}`,
  'a fractional per-minute rate': `${RULE}{name: a, requestsPerMinute: 1.5}`,
  'burst zero': `${RULE}{name: a, requestsPerSecond: 1, burst: 0}`,
  'a misspelt mode': `${RULE}{name: a, requestsPerSecond: 1, mode: enforced}`,
  'an unknown descriptor': `${RULE}{name: a, requestsPerSecond: 1, by: tenant}`,
  'a header descriptor with a space': `${RULE}{name: a, requestsPerSecond: 1, by: "header:x tenant"}`,
  'a path-prefix descriptor of 17 segments': `${RULE}{name: a, requestsPerSecond: 1, by: path-prefix:17}`,
  'maxKeys without by': `${RULE}{name: a, requestsPerSecond: 1, maxKeys: 10}`,
  'onRedisDown on a local rule': `${RULE}{name: a, requestsPerSecond: 1, onRedisDown: allow}`,
  'a global rule without redis': `${RULE}{name: a, requestsPerSecond: 1, scope: global}`,
  'a global upstream rule with redis off': `redis: off\n${UP}{name: a, hosts: [a], endpoints: ["a:1"], rateLimits: [{name: r, requestsPerSecond: 1, scope: global}]}`,
  'a global default rule without redis': 'outbound:\n  defaults:\n    rateLimits: [{name: r, requestsPerSecond: 1, scope: global}]',
  'rule match fields': `${RULE}{name: a, requestsPerSecond: 1, match: {routes: [Bulk], host: x}}`,
  'redis not a map': 'redis: 127.0.0.1:6379',
  'a redis address with a port': 'redis: {address: "redis:6379"}',
  'a redis key prefix with a space': 'redis: {keyPrefix: "my prefix"}',
  'a redis timeout with a unit': 'redis: {commandTimeoutMs: 50ms}',
  'no redis replicas': 'redis: {replicas: 0}',
  'minReplicas with a fixed count': 'redis: {replicas: 3, minReplicas: 2}',
};

/** Whole files the parser rejects. */
const INVALID_FILES: Record<string, string> = {
  'another kind': 'apiVersion: sluice.dev/v1alpha1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 3}\n',
  'another apiVersion': 'apiVersion: sluice.dev/v1\nkind: SidecarPolicy\nmetadata: {name: x}\n',
  'no metadata.name': 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {}\n',
  'no metadata': 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\n',
  'metadata.name with a space': 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: Orders Producer\n',
  'an unknown top-level field': `${HEADER}  {}\nstatus: {}\n`,
  'a document that is a list': '- a\n',
};

describe('documents the parser rejects fail the schema, in the same map', () => {
  const cases = [...Object.entries(INVALID).map(([n, s]) => [n, doc(s)] as const), ...Object.entries(INVALID_FILES)];
  it.each(cases)('%s', (_name, text) => {
    const parser = parserErrors(text);
    expect(parser, 'the parser accepts this document').not.toEqual([]);
    const schema = schemaErrors(text);
    // At the field the parser names, or within the map that holds it.
    for (const e of parser.filter((e) => e.field !== '')) {
      const at = pointer(e.field);
      const within = at.slice(0, Math.max(0, at.lastIndexOf('/')));
      expect(schema.some((p) => p === at || p.startsWith(`${within}/`) || p === within), `${formatPolicyError(e)}; schema: ${schema.join(', ')}`).toBe(true);
    }
    expect(schema).not.toEqual([]);
  });
});

// ---- Walking the schema: every map and every field, each with a document that reaches it. ----

type Schema = { [key: string]: unknown };
/** A path into a document: keys, `[]` for an item of a list, `*` for an entry of a data map. */
type Path = readonly string[];

function deref(s: Schema): Schema {
  const ref = s.$ref as string | undefined;
  if (ref === undefined) return s;
  const target = (SCHEMA.$defs as Record<string, Schema>)[ref.replace('#/$defs/', '')];
  if (!target) throw new Error(`no ${ref}`);
  return { ...target, ...s, $ref: undefined };
}

/** A schema and its anyOf/oneOf alternatives: the shapes a value there may take. */
function shapes(s: Schema): Schema[] {
  const r = deref(s);
  const alternatives = [...((r.anyOf as Schema[]) ?? []), ...((r.oneOf as Schema[]) ?? [])];
  return [r, ...alternatives.flatMap(shapes)];
}

interface Site {
  readonly path: Path;
  readonly schema: Schema;
}

function sites(s: Schema, path: Path = [], out = new Map<string, Site>()): Site[] {
  out.set(path.join('.'), { path, schema: s });
  for (const shape of shapes(s)) {
    for (const [key, child] of Object.entries((shape.properties as Record<string, Schema>) ?? {})) sites(child, [...path, key], out);
    if (shape.items) sites(shape.items as Schema, [...path, '[]'], out);
    if (typeof shape.additionalProperties === 'object') sites(shape.additionalProperties as Schema, [...path, '*'], out);
  }
  return [...out.values()];
}

/** Closed maps: a site with a shape that lists its properties and allows no others. */
function closedMaps(): { path: Path; fields: string[] }[] {
  return sites(SCHEMA).flatMap(({ path, schema }) =>
    shapes(schema)
      .filter((s) => s.additionalProperties === false)
      .map((s) => ({ path, fields: Object.keys(s.properties as object) })),
  );
}

/** What a list item needs to be read at all. */
const ITEMS: Record<string, Schema> = {
  upstreams: { name: 'u', hosts: ['u'], endpoints: ['u:1'] },
  routes: { name: 'r' },
  rateLimits: { name: 'r', requestsPerSecond: 1 },
};

/** A policy with `value` at `path`, and what the fields on the way need to be valid. */
function documentAt(path: Path, value: unknown): string {
  const root: Schema = { apiVersion: 'sluice.dev/v1alpha1', kind: 'SidecarPolicy', metadata: { name: 't' } };
  let at: Schema = root;
  for (const [i, key] of path.entries()) {
    if (key === '[]') continue;
    const name = key === '*' ? 'k' : key;
    const last = i === path.length - 1;
    if (last) at[name] = value;
    else if (path[i + 1] === '[]') {
      const item = ITEMS[name] ? structuredClone(ITEMS[name]) : undefined;
      if (i + 1 === path.length - 1) at[name] = [value];
      else if (!item) throw new Error(`no item for ${path.join('.')}`);
      else at = (at[name] = [item])[0] as Schema;
    } else at = (at[name] ??= {}) as Schema;
    if (last) companions(root, at, name);
  }
  return YAML.stringify(root);
}

/** Fields whose meaning needs another: written, so the value itself is what is tested. */
function companions(root: Schema, at: Schema, key: string): void {
  if (key === 'requestsPerMinute') delete at.requestsPerSecond;
  if (key === 'maxKeys') at.by = 'source';
  if (key === 'onRedisDown') {
    at.scope = 'global';
    (root.spec as Schema).redis = {};
  }
  const inbound = (root.spec as Schema | undefined)?.inbound as Schema | undefined;
  if (typeof inbound === 'object' && inbound !== null && 'credits' in inbound && !('admission' in inbound)) inbound.admission = {};
}

const PROBE = 'zzzzzzzz';

describe('every map in the schema knows exactly the fields the parser knows there', () => {
  const maps = closedMaps();

  it('covers every section', () => {
    expect(maps.length).toBeGreaterThan(60);
  });

  it.each(maps.map((m) => [m.path.join('.') || '(document)', m]))('%s', (_name, { path, fields }) => {
    const text = documentAt([...path, PROBE], 1);
    const unknown = parserErrors(text).find((e) => e.field.endsWith(PROBE));
    const known = /known fields are (.*)$/.exec(unknown?.reason ?? '');
    expect(known, `parser: ${parserErrors(text).map(formatPolicyError).join('; ')}`).not.toBeNull();
    expect(fields.toSorted()).toEqual(known![1]!.split(', ').toSorted());
  });
});

const STRINGS = [
  '', 'x', 'A', 'ab-c', 'a_b', 'a-', '-a', 'a.b', 'a..b', 'a/b', 'a b', 'x'.repeat(63), 'x'.repeat(64),
  `${`${'a'.repeat(63)}.`.repeat(3)}${'a'.repeat(61)}`, `${`${'a'.repeat(63)}.`.repeat(3)}${'a'.repeat(62)}`,
  '1.2.3.4', '::', '::1', '[::1]', '[::1]:80', 'fe80::1%eth0', '[fe80::1%eth0]:1', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8:9',
  'a:80', 'a:0', 'a:00000', 'a:65535', 'a:65536', 'a:080', 'a:', ':80', 'a:b:c', '[zz]:80', '[::1]:', 'UPPER.case:1',
  'header:x-a', 'header:X_A', 'header:', 'header:a b', 'header:a:b', 'path-prefix:1', 'path-prefix:16', 'path-prefix:17',
  'path-prefix:01', 'path-prefix:0', 'path-prefix:001', 'source', 'source:x', '/api', '/', 'api', 'GET', 'get', 'G E T',
  'x-prio', 'X-Prio', 'default', 'orders:v1', 'Orders_1', 'k'.repeat(65), 'off', 'auto', 'p95', 'p99', 'memory', 'redis',
  'local', 'global', 'enforce', 'shadow', 'on', 'yes', 'reset', 'UNAVAILABLE', 'OK', 'http2', 'sluice.dev/v1alpha1', 'SidecarPolicy',
];
const OTHERS = [null, true, false, -1, 0, 0.5, 1, 1.5, 2, 100, 1e21, {}, [], [null], ['x', 'x']];

/** Values worth trying at a site: the general ones, and each bound of the site's schema and beside it. */
function candidates(site: Site): unknown[] {
  const out = new Set<unknown>([...OTHERS, ...STRINGS]);
  const around = (s: Schema): unknown[] => {
    const values: unknown[] = [...((s.enum as unknown[]) ?? []), ...(s.const === undefined ? [] : [s.const])];
    for (const bound of [s.minimum, s.maximum, s.exclusiveMaximum]) {
      if (typeof bound === 'number') values.push(bound - 1, bound - 0.001, bound, bound + 0.001, bound + 1);
    }
    return values;
  };
  for (const shape of shapes(site.schema)) {
    for (const v of around(shape)) out.add(v);
    if (shape.items) for (const item of shapes(shape.items as Schema)) for (const v of [...around(item), 'x', 1]) out.add([v]);
  }
  return [...out];
}

describe('every field agrees with the parser on a spread of values', () => {
  const fields = sites(SCHEMA).filter((s) => s.path.length > 0);

  it('covers every field', () => {
    expect(fields.length).toBeGreaterThan(300);
  });

  it.each(fields.map((s) => [s.path.join('.'), s]))('%s', (_name, site) => {
    const disagreements: string[] = [];
    for (const value of candidates(site)) {
      const text = documentAt(site.path, value);
      const parser = parserErrors(text);
      const schema = schemaErrors(text);
      const onlyParser = parser.length > 0 && schema.length === 0;
      if (onlyParser && parser.every((e) => NOT_EXPRESSIBLE.some((re) => re.test(e.reason)))) continue;
      if (onlyParser) disagreements.push(`${JSON.stringify(value)}: only the parser rejects: ${parser.map((e) => e.reason).join('; ')}`);
      if (parser.length === 0 && schema.length > 0) disagreements.push(`${JSON.stringify(value)}: only the schema rejects, at ${schema.join(', ')}`);
    }
    expect(disagreements).toEqual([]);
  });
});

describe('hover text', () => {
  it('every field has a description', () => {
    const bare = sites(SCHEMA)
      .filter((s) => s.path.length > 0 && !['[]', '*'].includes(s.path.at(-1)!))
      .filter((s) => typeof deref(s.schema).description !== 'string')
      .map((s) => s.path.join('.'));
    expect(bare).toEqual([]);
  });
});
