import { describe, expect, it } from 'vitest';
import { MISSING_KEY, descriptorKey, headerValue, pathPrefix, ruleApplies } from '../../../../src/policies/ratelimit/descriptor.ts';
import type { RateLimitDescriptor } from '../../../../src/policy/ratelimits.ts';
import type { ProxyRequest } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';

function request(over: Partial<ProxyRequest> = {}): ProxyRequest {
  return { method: 'GET', path: '/', authority: 'u', headers: [], body: null, bodyLength: undefined, ...over };
}

const ANY = { pathPrefix: undefined, methods: undefined, routes: undefined };

describe('descriptorKey', () => {
  const tenant: RateLimitDescriptor = { kind: 'header', name: 'x-tenant-id' };

  it.each<[string, RateLimitDescriptor, Partial<ProxyRequest>, string | undefined, string]>([
    ['one bucket', { kind: 'none' }, {}, undefined, ''],
    ['a header, any case', tenant, { headers: ['X-Tenant-ID', ' acme '] }, undefined, 'v:acme'],
    ['the first of repeated headers', tenant, { headers: ['x-tenant-id', 'a', 'x-tenant-id', 'b'] }, undefined, 'v:a'],
    ['a missing header', tenant, { headers: ['x-other', 'a'] }, undefined, MISSING_KEY],
    ['an empty header', tenant, { headers: ['x-tenant-id', ''] }, undefined, MISSING_KEY],
    ['the source', { kind: 'source' }, {}, '10.0.0.7', 'v:10.0.0.7'],
    ['an unknown source', { kind: 'source' }, {}, '', MISSING_KEY],
    ['a path prefix', { kind: 'path-prefix', segments: 2 }, { path: '/api/v1/orders?x=1' }, undefined, 'v:/api/v1'],
  ])('%s', (_name, by, req, source, want) => {
    expect(descriptorKey(by, request(req), testContext(source === undefined ? {} : { source }))).toBe(want);
  });

  it('hashes values that are long or not printable ASCII, so keys stay bounded', () => {
    const long = descriptorKey(tenant, request({ headers: ['x-tenant-id', 'x'.repeat(10_000)] }), testContext());
    expect(long).toMatch(/^h:[0-9a-f]{32}$/);
    const spaced = descriptorKey(tenant, request({ headers: ['x-tenant-id', 'a b'] }), testContext());
    expect(spaced).toMatch(/^h:[0-9a-f]{32}$/);
    expect(spaced).not.toBe(long);
    expect(descriptorKey(tenant, request({ headers: ['x-tenant-id', 'a b'] }), testContext())).toBe(spaced);
  });
});

describe('pathPrefix and headerValue', () => {
  it.each([
    ['/a/b/c', 1, '/a'],
    ['/a/b/c', 2, '/a/b'],
    ['/a/b/c', 5, '/a/b/c'],
    ['/a/', 1, '/a'],
    ['/', 1, '/'],
    ['/a?q=/b', 2, '/a'],
  ])('%s to %i segments is %s', (path, n, want) => {
    expect(pathPrefix(path, n)).toBe(want);
  });

  it('ignores a trailing name without a value', () => {
    expect(headerValue(['x-a'], 'x-a')).toBeUndefined();
  });
});

describe('ruleApplies', () => {
  it.each([
    [ANY, request(), true],
    [{ ...ANY, pathPrefix: '/api' }, request({ path: '/api/x' }), true],
    [{ ...ANY, pathPrefix: '/api' }, request({ path: '/web' }), false],
    [{ ...ANY, methods: ['POST'] }, request({ method: 'post' }), true],
    [{ ...ANY, methods: ['POST'] }, request({ method: 'GET' }), false],
    [{ ...ANY, routes: ['bulk'] }, request(), false],
    [{ pathPrefix: '/api', methods: ['GET'], routes: ['default'] }, request({ path: '/api' }), true],
  ])('%j for %j is %s', (match, req, want) => {
    expect(ruleApplies(match, req, testContext())).toBe(want);
  });
});
