// Which rules apply to a request, and which bucket of a rule it counts against. Keys are bounded in
// length whatever the client sends (a long header value is hashed), because they are held per key
// in memory and written into Redis key names.
import { createHash } from 'node:crypto';
import type { RateLimitDescriptor, RateLimitPolicy } from '../../policy/ratelimits.ts';
import type { ProxyRequest, RequestContext } from '../../stack/types.ts';

/** The key of requests that lack the descriptor (no such header, no known source): one shared bucket. */
export const MISSING_KEY = 'none';
/** Values kept as written: printable ASCII without spaces, up to this length; others are hashed. */
const MAX_RAW_LENGTH = 96;
const PRINTABLE = /^[\x21-\x7e]+$/;

/** Does `rule` apply to this request? Every condition the rule's match gives must hold. */
export function ruleApplies(match: RateLimitPolicy['match'], req: ProxyRequest, ctx: RequestContext): boolean {
  if (match.pathPrefix !== undefined && !req.path.startsWith(match.pathPrefix)) return false;
  if (match.methods !== undefined && !match.methods.includes(req.method.toUpperCase())) return false;
  if (match.routes !== undefined && !match.routes.includes(ctx.route)) return false;
  return true;
}

/**
 * The bucket key for a request: '' for a rule with one bucket; `v:<value>` for a short printable
 * value; `h:<sha256 prefix>` for any other value (so `v:` and `h:` keys cannot collide); MISSING_KEY
 * when the request has no value for the descriptor.
 */
export function descriptorKey(by: RateLimitDescriptor, req: ProxyRequest, ctx: RequestContext): string {
  switch (by.kind) {
    case 'none':
      return '';
    case 'header':
      return keyOf(headerValue(req.headers, by.name));
    case 'source':
      return keyOf(ctx.source);
    case 'path-prefix':
      return keyOf(pathPrefix(req.path, by.segments));
  }
}

function keyOf(value: string | undefined): string {
  if (value === undefined || value === '') return MISSING_KEY;
  if (value.length <= MAX_RAW_LENGTH && PRINTABLE.test(value)) return `v:${value}`;
  return `h:${createHash('sha256').update(value).digest('hex').slice(0, 32)}`;
}

/** First value of a header in a flat [name, value, ...] list; names compared case-insensitively. */
export function headerValue(headers: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) return headers[i + 1]!.trim();
  }
  return undefined;
}

/** `/a/b/c?q` with 2 segments is `/a/b`; a shorter path is itself (without its query). */
export function pathPrefix(path: string, segments: number): string {
  const q = path.indexOf('?');
  const p = q < 0 ? path : path.slice(0, q);
  let at = 0;
  for (let i = 0; i < segments; i++) {
    const next = p.indexOf('/', at + 1);
    if (next < 0) return p;
    at = next;
  }
  return p.slice(0, at);
}
