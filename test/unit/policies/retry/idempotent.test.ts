import { describe, expect, it } from 'vitest';
import type { RetryPolicy } from '../../../../src/policy/types.ts';
import { isIdempotentMethod, mayRetry } from '../../../../src/policies/retry/idempotent.ts';

const base: RetryPolicy = {
  maxAttempts: 3,
  retryOn: ['connect-failure', 'reset'],
  retryOnStatuses: [503],
  retryOnGrpcStatuses: ['UNAVAILABLE'],
  backoff: { baseMs: 25, capMs: 250 },
  retryAfterMaxMs: 1000,
  bufferLimitBytes: 65536,
  retryNonIdempotent: false,
};

describe('isIdempotentMethod (RFC 9110 §9.2.2)', () => {
  it.each(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])('%s is idempotent', (m) => {
    expect(isIdempotentMethod(m)).toBe(true);
  });
  it.each(['POST', 'PATCH', 'CONNECT', 'PROPFIND', 'get', 'Put', ''])('%j is not', (m) => {
    expect(isIdempotentMethod(m)).toBe(false);
  });
});

describe('mayRetry', () => {
  it.each([
    // method, idempotency key, retryNonIdempotent, maxAttempts, expected
    ['GET', false, false, 3, true],
    ['PUT', false, false, 3, true],
    ['POST', false, false, 3, false],
    ['POST', true, false, 3, true], // the client vouches with an Idempotency-Key
    ['PATCH', false, true, 3, true], // the route opted in
    ['GET', false, false, 1, false], // a policy of one attempt never retries
    ['POST', true, true, 1, false],
    ['CONNECT', true, true, 3, false], // a tunnel cannot be replayed
    ['get', false, false, 3, false],
  ] as const)('%s key=%s optIn=%s maxAttempts=%i → %s', (method, key, optIn, maxAttempts, expected) => {
    expect(mayRetry(method, key, { ...base, retryNonIdempotent: optIn, maxAttempts })).toBe(expected);
  });
});
