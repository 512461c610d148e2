// Header rewriting at the proxy boundary. Hop-by-hop fields (RFC 9110 §7.6.1) describe one
// connection, so forwarding them would let a client steer our pooled upstream connections
// (keep-alive, framing) or smuggle headers past us through `Connection: x-secret`.
import type { HeaderList } from '../stack/types.ts';

/** Fields that are always hop-by-hop, lower-case. `trailer` is end-to-end in RFC 9110. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'transfer-encoding',
  'upgrade',
  // Handled by the proxy itself: we answer 100-continue locally, undici refuses to forward it.
  'expect',
]);

/** Names listed in Connection values, lower-case; null when there are none (the common case). */
function connectionNamed(value: string | undefined): Set<string> | null {
  if (value === undefined) return null;
  let named: Set<string> | null = null;
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name === '' || name === 'close' || name === 'keep-alive') continue;
    (named ??= new Set()).add(name);
  }
  return named;
}

export interface RequestHeaderFacts {
  /** Host header as received, if any. */
  host: string | undefined;
  /** The deadline header's value, if present (name given by policy). */
  deadline: string | undefined;
  idempotencyKey: string | undefined;
  expectContinue: boolean;
  /** Content-Length as received (undefined when absent). */
  contentLength: string | undefined;
  /** A Transfer-Encoding was present: the request has a (chunked) body. */
  chunked: boolean;
  /** The Upgrade header's value (kept for tunnels, dropped for ordinary requests). */
  upgrade: string | undefined;
}

/**
 * Copies raw request headers minus hop-by-hop, Host, and the deadline header (re-set per try),
 * collecting the few facts the stack needs on the way, so headers are walked once per request.
 */
export function forwardRequestHeaders(raw: string[], deadlineHeader: string, facts: RequestHeaderFacts): HeaderList {
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === 10 && (raw[i] as string).toLowerCase() === 'connection') {
      connection = connection === undefined ? raw[i + 1] : `${connection},${raw[i + 1]}`;
    }
  }
  const named = connectionNamed(connection);
  const out: HeaderList = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === 'host') {
      facts.host ??= value;
      continue;
    }
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'expect' && value.toLowerCase() === '100-continue') facts.expectContinue = true;
      else if (lower === 'transfer-encoding') facts.chunked = true;
      else if (lower === 'upgrade') facts.upgrade = value;
      continue;
    }
    if (named !== null && named.has(lower)) continue;
    if (lower === deadlineHeader) {
      facts.deadline = value;
      continue;
    }
    if (lower === 'idempotency-key') facts.idempotencyKey = value;
    else if (lower === 'content-length') facts.contentLength = value;
    out.push(name, value);
  }
  return out;
}

/** Adds X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) for the client we accepted. */
export function appendForwarded(headers: HeaderList, clientIp: string | undefined, host: string | undefined): void {
  let xff: number = -1;
  let hasProto = false;
  let hasXHost = false;
  let fwd = -1;
  for (let i = 0; i < headers.length; i += 2) {
    const lower = (headers[i] as string).toLowerCase();
    if (lower === 'x-forwarded-for') xff = i + 1;
    else if (lower === 'x-forwarded-proto') hasProto = true;
    else if (lower === 'x-forwarded-host') hasXHost = true;
    else if (lower === 'forwarded') fwd = i + 1;
  }
  const ip = clientIp ?? 'unknown';
  if (xff >= 0) headers[xff] = `${headers[xff]}, ${ip}`;
  else headers.push('x-forwarded-for', ip);
  if (!hasProto) headers.push('x-forwarded-proto', 'http');
  if (!hasXHost && host !== undefined) headers.push('x-forwarded-host', host);
  // IPv6 addresses must be quoted and bracketed in Forwarded (RFC 7239 §6).
  const node = ip.includes(':') ? `"[${ip}]"` : ip;
  const element = host === undefined ? `for=${node};proto=http` : `for=${node};host="${host}";proto=http`;
  if (fwd >= 0) headers[fwd] = `${headers[fwd]}, ${element}`;
  else headers.push('forwarded', element);
}

/** Removes hop-by-hop fields from undici's parsed response headers, in place. */
export function stripResponseHopByHop(headers: Record<string, string | string[] | undefined>): void {
  const connection = headers.connection;
  const named = connectionNamed(Array.isArray(connection) ? connection.join(',') : connection);
  for (const name of HOP_BY_HOP) {
    if (headers[name] !== undefined) delete headers[name];
  }
  if (named !== null) for (const name of named) delete headers[name];
}
