// `rateLimits:` and `redis:` as the policy reader sees them: what valid YAML turns into (defaults,
// both rate forms, descriptors), and every rejection with its exact position and message. The
// fragments are whole documents whose top-level keys sit at column 1.
import { LineCounter, parseDocument } from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatPolicyError } from '../../../src/policy/errors.ts';
import {
  REDIS_DEFAULTS,
  checkGlobalRateLimits,
  readRateLimits,
  readRedis,
  type RateLimitPolicy,
  type RedisPolicy,
} from '../../../src/policy/ratelimits.ts';
import { BAD, Reader } from '../../../src/policy/reader.ts';

const INHERITED: readonly RateLimitPolicy[] = [
  {
    name: 'inherited',
    mode: 'enforce',
    ratePerSecond: 1,
    quota: 1,
    windowS: 1,
    burst: 1,
    by: { kind: 'none' },
    maxKeys: 10_000,
    scope: 'local',
    onRedisDown: 'local-share',
    match: { pathPrefix: undefined, methods: undefined, routes: undefined },
  },
];

function read(text: string): { rules: readonly RateLimitPolicy[]; redis: RedisPolicy | undefined; errors: string[] } {
  const lines = new LineCounter();
  const reader = new Reader('t.yaml', lines, parseDocument(text, { lineCounter: lines }));
  const m = reader.root().map(['rateLimits', 'redis']);
  if (m === BAD) throw new Error('test documents are maps');
  const rules = readRateLimits(m.get('rateLimits'), INHERITED);
  const redis = readRedis(m.get('redis'));
  checkGlobalRateLimits(rules, redis);
  const errors = [...reader.errors].sort((a, b) => a.line - b.line || a.col - b.col);
  return { rules, redis, errors: errors.map(formatPolicyError) };
}

function valid(text: string) {
  const r = read(text);
  expect(r.errors).toEqual([]);
  return r;
}

describe('rateLimits', () => {
  it('fills defaults around the fields a rule sets', () => {
    const { rules } = valid('rateLimits:\n  - name: per-tenant\n    requestsPerSecond: 100\n    by: header:X-Tenant-Id\n');
    expect(rules).toEqual([
      {
        name: 'per-tenant',
        mode: 'enforce',
        ratePerSecond: 100,
        quota: 100,
        windowS: 1,
        burst: 100,
        by: { kind: 'header', name: 'x-tenant-id' },
        maxKeys: 10_000,
        scope: 'local',
        onRedisDown: 'local-share',
        match: { pathPrefix: undefined, methods: undefined, routes: undefined },
      },
    ]);
  });

  it('reads every field', () => {
    const { rules } = valid(`
rateLimits:
  - name: producers
    mode: shadow
    requestsPerMinute: 30
    burst: 5
    by: path-prefix:2
    maxKeys: 50
    scope: global
    onRedisDown: deny
    match: { pathPrefix: /api, methods: [post, PUT, POST], routes: [bulk] }
redis: {}
`);
    expect(rules[0]).toEqual({
      name: 'producers',
      mode: 'shadow',
      ratePerSecond: 0.5,
      quota: 30,
      windowS: 60,
      burst: 5,
      by: { kind: 'path-prefix', segments: 2 },
      maxKeys: 50,
      scope: 'global',
      onRedisDown: 'deny',
      match: { pathPrefix: '/api', methods: ['POST', 'PUT'], routes: ['bulk'] },
    });
  });

  it.each([
    [2.5, 5, 2],
    [0.5, 1, 2],
    [0.01, 1, 100],
    [0.1, 1, 10],
    [1 / 3, 1, 3],
    [0.123, 12, 100], // no whole window up to 100 s: advertised approximately
  ])('advertises %s requests per second as q=%i per w=%i s', (rps, quota, windowS) => {
    const { rules } = valid(`rateLimits:\n  - {name: a, requestsPerSecond: ${rps}}\n`);
    expect(rules[0]).toMatchObject({ ratePerSecond: rps, quota, windowS, burst: quota });
  });

  it('reads the source descriptor', () => {
    expect(valid('rateLimits:\n  - {name: a, requestsPerSecond: 1, by: source}\n').rules[0]!.by).toEqual({ kind: 'source' });
  });

  it('inherits the list above when absent; off or [] means none', () => {
    expect(valid('redis: off\n').rules).toBe(INHERITED);
    expect(valid('rateLimits: off\n').rules).toEqual([]);
    expect(valid('rateLimits: []\n').rules).toEqual([]);
  });

  it('a list replaces the inherited one whole', () => {
    expect(valid('rateLimits:\n  - {name: own, requestsPerSecond: 1}\n').rules.map((r) => r.name)).toEqual(['own']);
  });
});

describe('redis', () => {
  it('is off when absent or off', () => {
    expect(valid('rateLimits: []\n').redis).toBeUndefined();
    expect(valid('redis: off\n').redis).toBeUndefined();
  });

  it('an empty section is Redis on 127.0.0.1:6379 with every default', () => {
    expect(valid('redis: {}\n').redis).toEqual(REDIS_DEFAULTS);
    expect(valid('redis:\n').redis).toEqual(REDIS_DEFAULTS);
  });

  it('reads every field', () => {
    const { redis } = valid(`
redis:
  address: Redis.Shared.svc
  port: 6380
  keyPrefix: orders:v1
  connectTimeoutMs: 500
  commandTimeoutMs: 20
  probeIntervalMs: 250
  replicas: 6
`);
    expect(redis).toEqual({
      host: 'redis.shared.svc',
      port: 6380,
      keyPrefix: 'orders:v1',
      connectTimeoutMs: 500,
      commandTimeoutMs: 20,
      probeIntervalMs: 250,
      replicas: 6,
      minReplicas: 1,
    });
    expect(valid('redis: {replicas: auto, minReplicas: 3}\n').redis).toMatchObject({ replicas: 'auto', minReplicas: 3 });
  });
});

interface Case {
  readonly name: string;
  readonly yaml: string;
  readonly errors: readonly string[];
}

const RL = 'rateLimits:\n  - ';

const cases: Case[] = [
  {
    name: 'not a list',
    yaml: 'rateLimits: {name: a}\n',
    errors: ['t.yaml:1:13: rateLimits: must be a list, got a map'],
  },
  {
    name: 'typo in a field name',
    yaml: `${RL}{name: a, requestsPerSecond: 1, brust: 2}\n`,
    errors: ['t.yaml:2:37: rateLimits[0].brust: unknown field; did you mean burst?'],
  },
  {
    name: 'name missing',
    yaml: `${RL}{requestsPerSecond: 1}\n`,
    errors: ['t.yaml:2:5: rateLimits[0].name: is required'],
  },
  {
    name: 'name not a DNS label',
    yaml: `${RL}{name: Per_Tenant, requestsPerSecond: 1}\n`,
    errors: [
      `t.yaml:2:12: rateLimits[0].name: must be a DNS label (lower-case letters, digits and '-', at most 63 characters), got "Per_Tenant"`,
    ],
  },
  {
    name: 'duplicate name',
    yaml: `${RL}{name: a, requestsPerSecond: 1}\n  - {name: a, requestsPerSecond: 2}\n`,
    errors: ['t.yaml:3:12: rateLimits[1].name: duplicate rate limit name "a", first used at line 2'],
  },
  {
    name: 'no rate',
    yaml: `${RL}{name: a, burst: 3}\n`,
    errors: ['t.yaml:2:5: rateLimits[0]: needs a rate: requestsPerSecond or requestsPerMinute'],
  },
  {
    name: 'both rates',
    yaml: `${RL}{name: a, requestsPerSecond: 1, requestsPerMinute: 60}\n`,
    errors: ['t.yaml:2:56: rateLimits[0].requestsPerMinute: cannot be set together with requestsPerSecond; write the rate once'],
  },
  {
    name: 'rate out of range',
    yaml: `${RL}{name: a, requestsPerSecond: 0}\n`,
    errors: ['t.yaml:2:34: rateLimits[0].requestsPerSecond: must be a number from 0.01 to 1000000, got 0'],
  },
  {
    name: 'a per-minute rate with a fraction',
    yaml: `${RL}{name: a, requestsPerMinute: 1.5}\n`,
    errors: ['t.yaml:2:34: rateLimits[0].requestsPerMinute: must be an integer from 1 to 60000000, got 1.5'],
  },
  {
    name: 'a rate with a unit',
    yaml: `${RL}{name: a, requestsPerSecond: 10/s}\n`,
    errors: ['t.yaml:2:34: rateLimits[0].requestsPerSecond: must be a number from 0.01 to 1000000, got "10/s"'],
  },
  {
    name: 'burst zero',
    yaml: `${RL}{name: a, requestsPerSecond: 1, burst: 0}\n`,
    errors: ['t.yaml:2:44: rateLimits[0].burst: must be an integer from 1 to 10000000, got 0'],
  },
  {
    name: 'mode misspelt',
    yaml: `${RL}{name: a, requestsPerSecond: 1, mode: enforced}\n`,
    errors: ['t.yaml:2:43: rateLimits[0].mode: must be one of enforce, shadow, off, got "enforced"; did you mean enforce?'],
  },
  {
    name: 'unknown descriptor',
    yaml: `${RL}{name: a, requestsPerSecond: 1, by: tenant}\n`,
    errors: ['t.yaml:2:41: rateLimits[0].by: must be header:<name>, source or path-prefix:<segments>, got "tenant"'],
  },
  {
    name: 'header descriptor without a valid name',
    yaml: `${RL}{name: a, requestsPerSecond: 1, by: "header:x tenant"}\n`,
    errors: ['t.yaml:2:41: rateLimits[0].by: header:<name> needs an HTTP header name, got "header:x tenant"'],
  },
  {
    name: 'path-prefix with a prefix instead of a count',
    yaml: `${RL}{name: a, requestsPerSecond: 1, by: path-prefix:/api}\n`,
    errors: ['t.yaml:2:41: rateLimits[0].by: path-prefix:<segments> needs a segment count from 1 to 16, got "path-prefix:/api"'],
  },
  {
    name: 'maxKeys without a descriptor',
    yaml: `${RL}{name: a, requestsPerSecond: 1, maxKeys: 10}\n`,
    errors: ['t.yaml:2:46: rateLimits[0].maxKeys: has no effect without by (the rule keeps one bucket)'],
  },
  {
    name: 'maxKeys out of range',
    yaml: `${RL}{name: a, requestsPerSecond: 1, by: source, maxKeys: 0}\n`,
    errors: ['t.yaml:2:58: rateLimits[0].maxKeys: must be an integer from 1 to 1000000, got 0'],
  },
  {
    name: 'onRedisDown on a local rule',
    yaml: `${RL}{name: a, requestsPerSecond: 1, onRedisDown: allow}\n`,
    errors: ['t.yaml:2:50: rateLimits[0].onRedisDown: applies only to scope: global (a local rule never needs Redis)'],
  },
  {
    name: 'onRedisDown beside a misspelt scope: the scope alone is reported',
    yaml: `${RL}{name: a, requestsPerSecond: 1, scope: globl, onRedisDown: allow}\n`,
    errors: ['t.yaml:2:44: rateLimits[0].scope: must be one of local, global, got "globl"; did you mean global?'],
  },
  {
    name: 'onRedisDown value',
    yaml: `${RL}{name: a, requestsPerSecond: 1, scope: global, onRedisDown: share}\nredis: {}\n`,
    errors: ['t.yaml:2:65: rateLimits[0].onRedisDown: must be one of local-share, allow, deny, got "share"'],
  },
  {
    name: 'a global rule with no redis section',
    yaml: `${RL}{name: a, requestsPerSecond: 1, scope: global}\n`,
    errors: ['t.yaml:2:44: rateLimits[0].scope: scope: global needs a redis section (spec.redis) to share the limit through'],
  },
  {
    name: 'match fields',
    yaml: `${RL}name: a\n    requestsPerSecond: 1\n    match: {pathPrefix: api, methods: [], routes: [Bulk], host: x}\n`,
    errors: [
      "t.yaml:4:25: rateLimits[0].match.pathPrefix: must start with '/', got \"api\"",
      't.yaml:4:39: rateLimits[0].match.methods: must list at least one HTTP method',
      `t.yaml:4:52: rateLimits[0].match.routes[0]: must be a DNS label (lower-case letters, digits and '-', at most 63 characters), got "Bulk"`,
      't.yaml:4:59: rateLimits[0].match.host: unknown field; known fields are pathPrefix, methods, routes',
    ],
  },
  {
    name: 'a bad method',
    yaml: `${RL}{name: a, requestsPerSecond: 1, match: {methods: ["GET POST"]}}\n`,
    errors: ['t.yaml:2:55: rateLimits[0].match.methods[0]: must be an HTTP method name, got "GET POST"'],
  },
  {
    name: 'every bad rule is reported, not just the first',
    yaml: `${RL}{name: a, requestsPerSecond: -1}\n  - {name: b, requestsPerMinute: 0}\n`,
    errors: [
      't.yaml:2:34: rateLimits[0].requestsPerSecond: must be a number from 0.01 to 1000000, got -1',
      't.yaml:3:34: rateLimits[1].requestsPerMinute: must be an integer from 1 to 60000000, got 0',
    ],
  },
  {
    name: 'redis not a map',
    yaml: 'redis: 127.0.0.1:6379\n',
    errors: ['t.yaml:1:8: redis: must be a map, got "127.0.0.1:6379"'],
  },
  {
    name: 'redis address and port',
    yaml: 'redis: {address: "redis:6379", port: 0}\n',
    errors: [
      't.yaml:1:18: redis.address: must be an IP address or a host name, got "redis:6379"',
      't.yaml:1:38: redis.port: must be an integer from 1 to 65535, got 0',
    ],
  },
  {
    name: 'redis key prefix',
    yaml: 'redis: {keyPrefix: "my prefix"}\n',
    errors: [`t.yaml:1:20: redis.keyPrefix: must be 1 to 64 of letters, digits, '.', '_', ':' and '-', got "my prefix"`],
  },
  {
    name: 'redis timeouts',
    yaml: 'redis: {connectTimeoutMs: 0, commandTimeoutMs: 50ms, probeIntervalMs: 10}\n',
    errors: [
      't.yaml:1:27: redis.connectTimeoutMs: must be an integer from 1 to 60000, got 0',
      't.yaml:1:48: redis.commandTimeoutMs: must be an integer from 1 to 10000, got "50ms"',
      't.yaml:1:71: redis.probeIntervalMs: must be an integer from 100 to 60000, got 10',
    ],
  },
  {
    name: 'redis replicas',
    yaml: 'redis: {replicas: 0}\n',
    errors: ['t.yaml:1:19: redis.replicas: must be auto or an integer from 1 to 10000, got 0'],
  },
  {
    name: 'minReplicas with a fixed count',
    yaml: 'redis: {replicas: 3, minReplicas: 2}\n',
    errors: ['t.yaml:1:35: redis.minReplicas: applies only with replicas: auto'],
  },
  {
    name: 'redis typo',
    yaml: 'redis: {comandTimeoutMs: 5}\n',
    errors: ['t.yaml:1:9: redis.comandTimeoutMs: unknown field; did you mean commandTimeoutMs?'],
  },
];

describe('rejections name the field, the value and the allowed range', () => {
  it.each(cases)('$name', ({ yaml, errors }) => {
    expect(read(yaml).errors).toEqual(errors);
  });
});
