// What a valid policy turns into: defaults, field-by-field overrides down the levels (built-in <
// outbound.defaults < upstream < route), `off`, normalised addresses, and frozen output.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_POLICY_PATH } from '../../../src/policy/load.ts';
import { formatPolicyError, parsePolicy } from '../../../src/policy/parse.ts';
import type { SidecarPolicy } from '../../../src/policy/types.ts';
import { HEADER, policyOf } from './helpers.ts';

const CONFIG_DIR = join(DEFAULT_POLICY_PATH, '..');

function parseFile(path: string): SidecarPolicy {
  const r = parsePolicy(readFileSync(path, 'utf8'), path);
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join('\n'));
  return r.policy;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? yamlFiles(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

const UPSTREAM = '- name: orders\n  hosts: [orders]\n  endpoints: [127.0.0.1:8081]\n';

/** A spec with one upstream; `upstream` (more fields of it) and `defaults` are indented into place. */
function withUpstream(upstream: string, defaults = ''): SidecarPolicy {
  const indent = (s: string, n: number): string => s.replace(/^(?=.)/gm, ' '.repeat(n));
  const spec = `outbound:\n${defaults ? `  defaults:\n${indent(defaults, 4)}` : ''}  upstreams:\n${indent(
    UPSTREAM + indent(upstream, 2),
    4,
  )}`;
  return policyOf(spec);
}

describe('the embedded default policy', () => {
  const policy = parseFile(DEFAULT_POLICY_PATH);

  it('has the documented values', () => {
    expect(policy.name).toBe('default');
    expect(policy.admin).toEqual({ host: '127.0.0.1', port: 15000 });
    expect(policy.inbound.listener).toEqual({ host: '0.0.0.0', port: 15006 });
    expect(policy.inbound.app).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(policy.inbound.timeouts).toEqual({ connectMs: 1000, requestMs: 30000, perTryMs: undefined, idleMs: 60000 });
    expect(policy.inbound.maxDeadlineMs).toBe(300000);
    expect(policy.outbound.listener).toEqual({ host: '127.0.0.1', port: 15001 });
    expect(policy.outbound.unknownHosts).toBe('forward');
    expect(policy.outbound.defaults.timeouts).toEqual({ connectMs: 1000, requestMs: 15000, perTryMs: 5000, idleMs: 60000 });
    expect(policy.outbound.defaults.retry).toEqual({
      maxAttempts: 3,
      retryOn: ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'],
      retryOnStatuses: [502, 503, 504],
      retryOnGrpcStatuses: ['UNAVAILABLE'],
      backoff: { baseMs: 25, capMs: 1000 },
      retryAfterMaxMs: 5000,
      bufferLimitBytes: 65536,
      retryNonIdempotent: false,
    });
    expect(policy.outbound.defaults.retryBudget).toEqual({
      ratio: 0.2,
      windowMs: 10000,
      minRetriesPerSecond: 10,
      maxConcurrentRetries: 100,
    });
    expect(policy.outbound.defaults.maxConnectionsPerEndpoint).toBe(128);
    expect(policy.outbound.defaults.routes.map((r) => r.name)).toEqual(['default']);
    expect(policy.outbound.upstreams).toEqual([]);
    expect(policy.limits).toEqual({ maxHeaderBytes: 16384, headersTimeoutMs: 10000, keepAliveTimeoutMs: 5000, maxRetryBufferBytes: 67108864 });
    expect(policy.shutdown).toEqual({ graceMs: 20000 });
    expect(policy.deadlineHeader).toBe('sluice-timeout-ms');
    expect(policy.accessLog).toBeUndefined();
  });

  it('an access log written as {} logs every request; rates narrow it; off is none', () => {
    const read = (spec: string) => parsePolicy(`${HEADER}${spec}`, 'a.yaml');
    expect(read('  accessLog: {}\n')).toMatchObject({ ok: true, policy: { accessLog: { sampleRate: 1, errorSampleRate: 1 } } });
    expect(read('  accessLog: {sampleRate: 0.01}\n')).toMatchObject({ ok: true, policy: { accessLog: { sampleRate: 0.01, errorSampleRate: 1 } } });
    expect(read('  accessLog: off\n')).toMatchObject({ ok: true, policy: { accessLog: undefined } });
  });

  it('says what the built-in defaults are: an empty spec parses to the same policy', () => {
    const empty = parsePolicy(HEADER.replace('name: t', 'name: default'), 'empty.yaml');
    expect(empty).toEqual({ ok: true, policy });
  });
});

describe('every file in config/ parses', () => {
  it.each(yamlFiles(CONFIG_DIR).map((f) => [f.slice(CONFIG_DIR.length + 1), f]))('%s', (_name, path) => {
    expect(parseFile(path).name).toMatch(/^[a-z0-9.-]+$/);
  });

  it('the orders example merges as its comments say', () => {
    const p = parseFile(join(CONFIG_DIR, 'examples', 'orders.yaml'));
    const [orders, search] = p.outbound.upstreams;
    expect(p.outbound.unknownHosts).toBe('reject');
    expect(orders?.retryBudget?.ratio).toBe(0.1);
    expect(orders?.retryBudget?.windowMs).toBe(10000);
    expect(orders?.routes.map((r) => r.name)).toEqual(['ingest', 'default']);
    expect(orders?.routes[0]?.timeouts).toEqual({ connectMs: 1000, requestMs: 30000, perTryMs: 2000, idleMs: 60000 });
    expect(orders?.routes[0]?.retry?.retryNonIdempotent).toBe(true);
    expect(orders?.routes[1]?.retry?.retryNonIdempotent).toBe(false);
    expect(search?.hosts).toEqual(['search:9200']);
    expect(search?.retry).toBeUndefined();
    expect(search?.routes[0]?.retry).toBeUndefined();
  });
});

describe('overrides', () => {
  it('route over upstream over defaults over built-in, field by field', () => {
    const p = withUpstream(
      `timeouts: {perTryMs: 300}
retry: {maxAttempts: 4, backoff: {capMs: 500}}
routes:
  - name: bulk
    timeouts: {requestMs: 60000}
    retry: {backoff: {baseMs: 50}, retryOnStatuses: [503]}
`,
      'timeouts: {requestMs: 9000}\nretry: {retryAfterMaxMs: 100}\n',
    );
    const u = p.outbound.upstreams[0]!;
    expect(p.outbound.defaults.timeouts).toEqual({ connectMs: 1000, requestMs: 9000, perTryMs: 5000, idleMs: 60000 });
    expect(u.timeouts).toEqual({ connectMs: 1000, requestMs: 9000, perTryMs: 300, idleMs: 60000 });
    expect(u.retry).toMatchObject({ maxAttempts: 4, retryAfterMaxMs: 100, backoff: { baseMs: 25, capMs: 500 } });
    const [bulk, catchAll] = u.routes;
    expect(bulk?.timeouts).toEqual({ connectMs: 1000, requestMs: 60000, perTryMs: 300, idleMs: 60000 });
    expect(bulk?.retry).toEqual({
      maxAttempts: 4,
      retryOn: ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'],
      retryOnStatuses: [503],
      retryOnGrpcStatuses: ['UNAVAILABLE'],
      backoff: { baseMs: 50, capMs: 500 },
      retryAfterMaxMs: 100,
      bufferLimitBytes: 65536,
      retryNonIdempotent: false,
    });
    expect(catchAll).toEqual({
      name: 'default',
      match: { pathPrefix: undefined, methods: undefined },
      timeouts: u.timeouts,
      retry: u.retry,
      circuitBreaker: u.circuitBreaker,
      ownBreaker: false,
    });
  });

  it('circuitBreaker merges field by field; a route that sets it owns a breaker; slowCall may be off', () => {
    const p = withUpstream(
      `circuitBreaker: {failureRatio: 0.25, maxPending: off, slowCall: {thresholdMs: 200}}
routes:
  - name: bulk
    circuitBreaker: {openMs: 1000, slowCall: off}
  - name: plain
`,
      'circuitBreaker: {minRequests: 5}\n',
    );
    const u = p.outbound.upstreams[0]!;
    expect(u.circuitBreaker).toEqual({
      mode: 'enforce',
      windowMs: 10000,
      minRequests: 5,
      failureRatio: 0.25,
      slowCall: { thresholdMs: 200, ratio: 0.5 },
      openMs: 5000,
      maxOpenMs: 60000,
      halfOpenProbes: 3,
      maxRequests: 1024,
      maxPending: undefined,
    });
    const [bulk, plain] = u.routes;
    expect(bulk?.ownBreaker).toBe(true);
    expect(bulk?.circuitBreaker).toEqual({ ...u.circuitBreaker, openMs: 1000, slowCall: undefined });
    expect(plain?.ownBreaker).toBe(false);
    expect(plain?.circuitBreaker).toBe(u.circuitBreaker);
  });

  it('circuitBreaker: off turns breaker and caps off and keeps the settings for a level below', () => {
    const p = withUpstream('circuitBreaker: off\nroutes:\n  - name: r\n    circuitBreaker: {mode: enforce}\n');
    const u = p.outbound.upstreams[0]!;
    expect(u.circuitBreaker).toEqual({ ...p.outbound.defaults.circuitBreaker, mode: 'off' });
    expect(u.routes[0]?.circuitBreaker).toEqual(p.outbound.defaults.circuitBreaker);
  });

  it('timeouts may be off, and off can be overridden again below', () => {
    const p = withUpstream(
      'timeouts: {perTryMs: off, idleMs: off}\nroutes:\n  - name: r\n    timeouts: {idleMs: 1000}\n',
      'timeouts: {requestMs: off}\n',
    );
    const u = p.outbound.upstreams[0]!;
    expect(u.timeouts).toEqual({ connectMs: 1000, requestMs: undefined, perTryMs: undefined, idleMs: undefined });
    expect(u.routes[0]?.timeouts).toEqual({ connectMs: 1000, requestMs: undefined, perTryMs: undefined, idleMs: 1000 });
  });

  it('retry: off on a route disables retry for that route only', () => {
    const u = withUpstream('routes:\n  - name: once\n    retry: off\n').outbound.upstreams[0]!;
    expect(u.routes[0]?.retry).toBeUndefined();
    expect(u.retry?.maxAttempts).toBe(3);
    expect(u.routes[1]?.retry?.maxAttempts).toBe(3);
  });

  it('retry off in defaults is inherited; turned on again it merges over the built-in defaults', () => {
    const p = policyOf(`
outbound:
  defaults:
    retry: off
    retryBudget: off
  upstreams:
    - {name: a, hosts: [a], endpoints: ["a:1"]}
    - {name: b, hosts: [b], endpoints: ["b:1"], retry: {maxAttempts: 2}, retryBudget: {ratio: 0.5}}`);
    const [a, b] = p.outbound.upstreams;
    expect(p.outbound.defaults.retry).toBeUndefined();
    expect(p.outbound.defaults.retryBudget).toBeUndefined();
    expect(a?.retry).toBeUndefined();
    expect(a?.retryBudget).toBeUndefined();
    expect(a?.routes[0]?.retry).toBeUndefined();
    expect(b?.retry).toMatchObject({ maxAttempts: 2, backoff: { baseMs: 25, capMs: 1000 }, retryOnStatuses: [502, 503, 504] });
    expect(b?.retryBudget).toEqual({ ratio: 0.5, windowMs: 10000, minRetriesPerSecond: 10, maxConcurrentRetries: 100 });
  });

  it('a route turning retry on under an upstream with it off merges over outbound.defaults', () => {
    const u = withUpstream(
      'retry: off\nroutes:\n  - name: r\n    retry: {retryNonIdempotent: true}\n',
      'retry: {maxAttempts: 5}\n',
    ).outbound.upstreams[0]!;
    expect(u.retry).toBeUndefined();
    expect(u.routes[0]?.retry).toMatchObject({ maxAttempts: 5, retryNonIdempotent: true });
  });

  it('an empty section keeps every default', () => {
    const p = policyOf('outbound:\n  defaults:\n    retry:\n    timeouts:\n');
    expect(p.outbound.defaults.retry?.maxAttempts).toBe(3);
    expect(p.outbound.defaults.timeouts.perTryMs).toBe(5000);
  });

  it('listeners may be off', () => {
    const p = policyOf('inbound:\n  listener: off\noutbound:\n  listener: off');
    expect(p.inbound.listener).toBeUndefined();
    expect(p.outbound.listener).toBeUndefined();
    expect(p.admin.port).toBe(15000);
  });

  it('listener fields merge over their defaults; port 0 picks a free port', () => {
    const p = policyOf('admin: {port: 0}\ninbound:\n  app: {port: 9000}\n  listener: {address: "::"}');
    expect(p.admin).toEqual({ host: '127.0.0.1', port: 0 });
    expect(p.inbound.app).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(p.inbound.listener).toEqual({ host: '::', port: 15006 });
  });
});

describe('normalisation', () => {
  it('lower-cases hosts, splits endpoints (IPv6 unbracketed), upper-cases methods', () => {
    const p = policyOf(`
outbound:
  upstreams:
    - name: orders
      hosts: [Orders.Default.svc, "ORDERS:8080", "[::1]:80"]
      endpoints: [Orders-0.local:8081, "[::1]:8082", 10.0.0.7:80]
      routes:
        - name: ingest
          match: {pathPrefix: /ingest, methods: [post, PUT, Post]}`);
    const u = p.outbound.upstreams[0]!;
    expect(u.hosts).toEqual(['orders.default.svc', 'orders:8080', '[::1]:80']);
    expect(u.endpoints).toEqual([
      { host: 'orders-0.local', port: 8081 },
      { host: '::1', port: 8082 },
      { host: '10.0.0.7', port: 80 },
    ]);
    expect(u.routes[0]?.match).toEqual({ pathPrefix: '/ingest', methods: ['POST', 'PUT'] });
  });

  it('repeated list entries carry no meaning and are dropped', () => {
    const p = policyOf('outbound:\n  defaults:\n    retry: {retryOnStatuses: [503, 503, 429]}');
    expect(p.outbound.defaults.retry?.retryOnStatuses).toEqual([503, 429]);
  });

  it('anchors and aliases are followed', () => {
    const p = policyOf(`
outbound:
  defaults:
    timeouts: &fast {requestMs: 100}
  upstreams:
    - {name: a, hosts: [a], endpoints: ["a:1"], timeouts: *fast}`);
    expect(p.outbound.upstreams[0]?.timeouts.requestMs).toBe(100);
  });
});

describe('output', () => {
  it('is deeply frozen', () => {
    const p = withUpstream('routes:\n  - name: r\n    match: {methods: [GET]}\n');
    const frozen: unknown[] = [];
    const walk = (v: unknown): void => {
      if (typeof v !== 'object' || v === null) return;
      frozen.push(Object.isFrozen(v));
      Object.values(v).forEach(walk);
    };
    walk(p);
    expect(frozen.length).toBeGreaterThan(20);
    expect(frozen.every(Boolean)).toBe(true);
    expect(() => {
      (p.outbound.upstreams[0]!.routes[0]!.match.methods as string[]).push('POST');
    }).toThrow(TypeError);
  });
});
