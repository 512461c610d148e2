// Which requests may be sent twice. A retry replays a request the upstream may already have acted
// on, so only methods whose repetition has the same effect (RFC 9110 §9.2.2) are retried unless the
// client vouches with an Idempotency-Key or the route opts in.
import type { RetryPolicy } from '../../policy/types.ts';

/**
 * RFC 9110 §9.2.2. Methods are case-sensitive (§9.1): "get" is not GET, and an unknown method is
 * not known to be idempotent.
 */
export function isIdempotentMethod(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'TRACE':
    case 'PUT':
    case 'DELETE':
      return true;
    default:
      return false;
  }
}

/**
 * Whether a request with this method may ever be retried under `policy`: the policy allows more than
 * one attempt, and the method is idempotent, or the client sent an Idempotency-Key, or the route
 * opted in (retryNonIdempotent). CONNECT never is: a tunnel's bytes cannot be replayed.
 */
export function mayRetry(method: string, hasIdempotencyKey: boolean, policy: RetryPolicy): boolean {
  if (policy.maxAttempts <= 1 || method === 'CONNECT') return false;
  return isIdempotentMethod(method) || hasIdempotencyKey || policy.retryNonIdempotent;
}
