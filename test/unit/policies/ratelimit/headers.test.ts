import { describe, expect, it } from 'vitest';
import { limitItem, policyItem, refusalHeaders, sfString, waitSeconds } from '../../../../src/policies/ratelimit/headers.ts';

describe('IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11)', () => {
  it.each([
    ['per-tenant', 100, 1, '"per-tenant";q=100;w=1'],
    ['slow', 30, 60, '"slow";q=30;w=60'],
    ['frac', 5, 2, '"frac";q=5;w=2'],
  ])('RateLimit-Policy for %s', (name, q, w, want) => {
    expect(policyItem(name, q, w)).toBe(want);
  });

  it.each([
    [0, 1, '"p";r=0;t=1'],
    [2.9, 0.2, '"p";r=2;t=1'], // available rounds down, the window up: never promise more than there is
    [-1, 0, '"p";r=0;t=0'],
  ])('RateLimit with %s available in %s s', (r, t, want) => {
    expect(limitItem('p', r, t)).toBe(want);
  });

  it('escapes sf-strings and refuses what they cannot hold', () => {
    expect(sfString('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(() => sfString('é')).toThrow(RangeError);
  });

  it.each([
    [0, 1],
    [1, 1],
    [1000, 1],
    [1001, 2],
    [60_000, 60],
    [Number.NaN, 1],
  ])('waits %s ms as %s whole seconds (at least 1)', (ms, s) => {
    expect(waitSeconds(ms)).toBe(s);
  });

  it('builds both fields of a refusal under their lower-case names', () => {
    expect(refusalHeaders({ name: 'per-tenant', quota: 100, windowS: 1 }, 0, 2)).toEqual({
      'ratelimit-policy': '"per-tenant";q=100;w=1',
      ratelimit: '"per-tenant";r=0;t=2',
    });
  });
});
