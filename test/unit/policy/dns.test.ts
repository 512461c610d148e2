// The `dns:` section on its own: defaults, merging over the level above, and every rejection with
// its exact text. Documents here are just `dns: ...` at the top, so line 1 is the `dns:` line.
import { LineCounter, parseDocument } from 'yaml';
import { describe, expect, it } from 'vitest';
import { DNS_DEFAULTS, readDns, type DnsPolicy } from '../../../src/policy/dns.ts';
import { formatPolicyError } from '../../../src/policy/errors.ts';
import { BAD, Reader } from '../../../src/policy/reader.ts';

function read(yaml: string, base: DnsPolicy = DNS_DEFAULTS): { dns: DnsPolicy; errors: string[] } {
  const lines = new LineCounter();
  const reader = new Reader('t.yaml', lines, parseDocument(yaml, { lineCounter: lines }));
  const m = reader.root().map(['dns', 'other']);
  const dns = readDns(m === BAD ? undefined : m.get('dns'), base);
  // In file order, as parsePolicy reports them.
  const errors = [...reader.errors].sort((a, b) => a.line - b.line || a.col - b.col);
  return { dns, errors: errors.map(formatPolicyError) };
}

/** What an upstream inherits from an outbound.defaults that set a few fields. */
const PARENT: DnsPolicy = { ...DNS_DEFAULTS, minTtlMs: 2000, maxTtlMs: 10000, family: 'ipv4' };

describe('readDns: values', () => {
  it('defaults are what the docs say', () => {
    expect(DNS_DEFAULTS).toEqual({ minTtlMs: 1000, maxTtlMs: 30000, refreshMs: 5000, failureRetryMs: 1000, family: 'any', maxEndpoints: 64 });
    expect(Object.isFrozen(DNS_DEFAULTS)).toBe(true);
  });

  it.each<[string, string, DnsPolicy, DnsPolicy]>([
    ['no section inherits everything', 'other: 1', PARENT, PARENT],
    ['an empty section inherits everything', 'dns:', PARENT, PARENT],
    ['an empty map inherits everything', 'dns: {}', PARENT, PARENT],
    [
      'every field set',
      'dns: {minTtlMs: 500, maxTtlMs: 60000, refreshMs: 2000, failureRetryMs: 250, family: ipv6, maxEndpoints: 8}',
      DNS_DEFAULTS,
      { minTtlMs: 500, maxTtlMs: 60000, refreshMs: 2000, failureRetryMs: 250, family: 'ipv6', maxEndpoints: 8 },
    ],
    ['fields merge over the level above', 'dns: {maxEndpoints: 4, family: any}', PARENT, { ...PARENT, maxEndpoints: 4, family: 'any' }],
    ['bounds may be equal', 'dns: {minTtlMs: 5000, maxTtlMs: 5000}', DNS_DEFAULTS, { ...DNS_DEFAULTS, minTtlMs: 5000, maxTtlMs: 5000 }],
    ['range ends are accepted', 'dns: {minTtlMs: 100, maxTtlMs: 86400000, maxEndpoints: 1024}', DNS_DEFAULTS, { ...DNS_DEFAULTS, minTtlMs: 100, maxTtlMs: 86400000, maxEndpoints: 1024 }],
  ])('%s', (_name, yaml, base, expected) => {
    const { dns, errors } = read(yaml, base);
    expect(errors).toEqual([]);
    expect(dns).toEqual(expected);
  });

  it('returns the base itself when the section is absent', () => {
    expect(read('other: 1', PARENT).dns).toBe(PARENT);
  });
});

describe('readDns: errors', () => {
  it.each<[string, string, string[], DnsPolicy?]>([
    ['below the range', 'dns:\n  minTtlMs: 50', ['t.yaml:2:13: dns.minTtlMs: must be an integer from 100 to 86400000, got 50']],
    ['above the range', 'dns:\n  maxEndpoints: 5000', ['t.yaml:2:17: dns.maxEndpoints: must be an integer from 1 to 1024, got 5000']],
    ['zero endpoints', 'dns: {maxEndpoints: 0}', ['t.yaml:1:21: dns.maxEndpoints: must be an integer from 1 to 1024, got 0']],
    ['a unit suffix', 'dns: {refreshMs: 5s}', ['t.yaml:1:18: dns.refreshMs: must be an integer from 100 to 86400000, got "5s"']],
    ['a fraction', 'dns: {failureRetryMs: 1500.5}', ['t.yaml:1:23: dns.failureRetryMs: must be an integer from 100 to 86400000, got 1500.5']],
    ['an interval cannot be off', 'dns: {maxTtlMs: off}', ['t.yaml:1:17: dns.maxTtlMs: cannot be off; must be an integer from 100 to 86400000']],
    ['an unknown family', 'dns: {family: dual}', ['t.yaml:1:15: dns.family: must be one of any, ipv4, ipv6, got "dual"']],
    ['a family close to a known one', 'dns: {family: ipv5}', ['t.yaml:1:15: dns.family: must be one of any, ipv4, ipv6, got "ipv5"; did you mean ipv4?']],
    ['a typo in a field name', 'dns:\n  maxEndpoint: 3', ['t.yaml:2:3: dns.maxEndpoint: unknown field; did you mean maxEndpoints?']],
    [
      'an unknown field lists the known ones',
      'dns: {ttl: 3}',
      ['t.yaml:1:7: dns.ttl: unknown field; known fields are minTtlMs, maxTtlMs, refreshMs, failureRetryMs, family, maxEndpoints'],
    ],
    ['the section cannot be off', 'dns: off', ['t.yaml:1:6: dns: cannot be off; must be a map']],
    ['a list is not a section', 'dns: [1]', ['t.yaml:1:6: dns: must be a map, got a list']],
    [
      'maxTtlMs below minTtlMs, both written',
      'dns: {minTtlMs: 5000, maxTtlMs: 1000}',
      ['t.yaml:1:33: dns.maxTtlMs: must be at least minTtlMs (5000), got 1000'],
    ],
    ['maxTtlMs below an inherited minTtlMs', 'dns: {maxTtlMs: 1500}', ['t.yaml:1:17: dns.maxTtlMs: must be at least minTtlMs (2000), got 1500'], PARENT],
    ['minTtlMs above an inherited maxTtlMs', 'dns: {minTtlMs: 20000}', ['t.yaml:1:17: dns.minTtlMs: must be at most maxTtlMs (10000), got 20000'], PARENT],
    [
      'a bound that did not read is reported once, not compared',
      'dns: {minTtlMs: 40000, maxTtlMs: soon}',
      ['t.yaml:1:34: dns.maxTtlMs: must be an integer from 100 to 86400000, got "soon"'],
    ],
    [
      'every bad field is reported',
      'dns:\n  family: both\n  maxEndpoints: -1\n  refreshMs: 0',
      [
        't.yaml:2:11: dns.family: must be one of any, ipv4, ipv6, got "both"',
        't.yaml:3:17: dns.maxEndpoints: must be an integer from 1 to 1024, got -1',
        't.yaml:4:14: dns.refreshMs: must be an integer from 100 to 86400000, got 0',
      ],
    ],
  ])('%s', (_name, yaml, expected, base = DNS_DEFAULTS) => {
    const { dns, errors } = read(yaml, base);
    expect(errors).toEqual(expected);
    // What did not read stays inherited, so reading goes on and a caller still gets a whole policy.
    for (const key of Object.keys(DNS_DEFAULTS) as (keyof DnsPolicy)[]) expect(dns[key]).toBeDefined();
  });
});
