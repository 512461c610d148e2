// Header rewriting at the proxy boundary. Hop-by-hop fields (RFC 9110 §7.6.1) describe one
// connection, so forwarding them would let a client steer our pooled upstream connections
// (keep-alive, framing) or smuggle headers past us through `Connection: x-secret`.
import type { HeaderList } from '../stack/types.ts';

/** Fields that are always hop-by-hop, lower-case. `trailer` is end-to-end in RFC 9110. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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
  // The usual values name nothing: skip the split.
  if (value === undefined || value === 'keep-alive' || value === 'close') return null;
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
  /** `TE: trailers`: the client reads trailers (every gRPC client says so); forwarded as sent. */
  teTrailers: boolean;
  /** grpc-timeout as received: a gRPC deadline, re-set per try like the deadline header. */
  grpcTimeout: string | undefined;
  /** Content-Type as received. */
  contentType: string | undefined;
  /** Positions of the values of forwarding headers in the output list, -1 when absent. */
  xffAt: number;
  forwardedAt: number;
  viaAt: number;
  hasXfProto: boolean;
  hasXfHost: boolean;
}

export function newRequestHeaderFacts(): RequestHeaderFacts {
  return {
    host: undefined,
    deadline: undefined,
    idempotencyKey: undefined,
    expectContinue: false,
    contentLength: undefined,
    chunked: false,
    upgrade: undefined,
    teTrailers: false,
    grpcTimeout: undefined,
    contentType: undefined,
    xffAt: -1,
    forwardedAt: -1,
    viaAt: -1,
    hasXfProto: false,
    hasXfHost: false,
  };
}

/**
 * Copies raw request headers minus hop-by-hop, Host, and the deadline headers (re-set per try),
 * collecting the few facts the stack needs on the way: one pass per request in the common case.
 * HTTP/2 pseudo-headers (`:path`...) are the listener's to read, never forwarded as fields.
 */
export function forwardRequestHeaders(raw: string[], deadlineHeader: string, facts: RequestHeaderFacts): HeaderList {
  let connection: string | undefined;
  const out: HeaderList = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    const lower = name.toLowerCase();
    if (lower === 'host') {
      facts.host ??= value;
      continue;
    }
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'te') {
        // The one TE value HTTP/2 allows, and the one gRPC needs end to end: the next hop may
        // answer with trailers because the client reads them.
        if (value.trim().toLowerCase() === 'trailers') {
          facts.teTrailers = true;
          out.push('te', 'trailers');
        }
      } else if (lower === 'connection') connection = connection === undefined ? value : `${connection},${value}`;
      else if (lower === 'expect' && value.toLowerCase() === '100-continue') facts.expectContinue = true;
      else if (lower === 'transfer-encoding') facts.chunked = true;
      else if (lower === 'upgrade') facts.upgrade = value;
      continue;
    }
    if (lower === deadlineHeader) {
      facts.deadline = value;
      continue;
    }
    switch (lower) {
      case 'grpc-timeout':
        facts.grpcTimeout = value;
        continue;
      case 'content-type':
        facts.contentType = value;
        break;
      case 'content-length':
        facts.contentLength = value;
        break;
      case 'idempotency-key':
        facts.idempotencyKey = value;
        break;
      case 'x-forwarded-for':
        facts.xffAt = out.length + 1;
        break;
      case 'forwarded':
        facts.forwardedAt = out.length + 1;
        break;
      case 'via':
        facts.viaAt = out.length + 1;
        break;
      case 'x-forwarded-proto':
        facts.hasXfProto = true;
        break;
      case 'x-forwarded-host':
        facts.hasXfHost = true;
        break;
    }
    out.push(name, value);
  }
  const named = connectionNamed(connection);
  return named === null ? out : withoutNamed(out, named, facts);
}

/** Rare path: the client named extra hop-by-hop fields in Connection; drop them too. */
function withoutNamed(headers: HeaderList, named: Set<string>, facts: RequestHeaderFacts): HeaderList {
  const out: HeaderList = [];
  facts.xffAt = -1;
  facts.forwardedAt = -1;
  facts.viaAt = -1;
  for (let i = 0; i < headers.length; i += 2) {
    const lower = (headers[i] as string).toLowerCase();
    if (named.has(lower)) {
      if (lower === 'x-forwarded-proto') facts.hasXfProto = false;
      else if (lower === 'x-forwarded-host') facts.hasXfHost = false;
      else if (lower === 'content-length') facts.contentLength = undefined;
      else if (lower === 'idempotency-key') facts.idempotencyKey = undefined;
      continue;
    }
    if (lower === 'x-forwarded-for') facts.xffAt = out.length + 1;
    else if (lower === 'forwarded') facts.forwardedAt = out.length + 1;
    else if (lower === 'via') facts.viaAt = out.length + 1;
    out.push(headers[i] as string, headers[i + 1] as string);
  }
  return out;
}

/** An authority as RFC 9110 allows it here: reg-name or IP literal, optional port. */
const AUTHORITY = /^(?:\[[0-9a-f:.]+\]|[a-z0-9._~-]+)(?::\d{1,5})?$/;

/** Whether a (lower-cased) Host or absolute-form authority is well-formed. */
export function isValidAuthority(authority: string): boolean {
  return AUTHORITY.test(authority);
}

/** True when the request already passed the listener whose Via token this is: a loop. */
export function hasVia(headers: HeaderList, facts: RequestHeaderFacts, token: string): boolean {
  return facts.viaAt >= 0 && (headers[facts.viaAt] as string).includes(token);
}

/**
 * Adds Via (RFC 9110 §7.6.3; its token lets the listener recognise its own traffic coming back),
 * X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) for the client we accepted. `host` is
 * the effective authority, already validated, so it cannot break out of the quoted string.
 */
export function appendForwarded(
  headers: HeaderList,
  facts: RequestHeaderFacts,
  clientIp: string | undefined,
  host: string,
  via: string,
): void {
  const ip = clientIp ?? 'unknown';
  if (facts.viaAt >= 0) headers[facts.viaAt] = `${headers[facts.viaAt]}, ${via}`;
  else headers.push('via', via);
  if (facts.xffAt >= 0) headers[facts.xffAt] = `${headers[facts.xffAt]}, ${ip}`;
  else headers.push('x-forwarded-for', ip);
  if (!facts.hasXfProto) headers.push('x-forwarded-proto', 'http');
  if (!facts.hasXfHost) headers.push('x-forwarded-host', host);
  // IPv6 addresses must be quoted and bracketed in Forwarded (RFC 7239 §6).
  const node = ip.includes(':') ? `"[${ip}]"` : ip;
  const element = `for=${node};host="${host}";proto=http`;
  if (facts.forwardedAt >= 0) headers[facts.forwardedAt] = `${headers[facts.forwardedAt]}, ${element}`;
  else headers.push('forwarded', element);
}

/** Removes hop-by-hop fields from undici's parsed response headers, in place. */
export function stripResponseHopByHop(headers: Record<string, string | string[] | undefined>): void {
  const connection = headers.connection;
  // Plain property checks, not a loop over HOP_BY_HOP: this runs on every response, and most
  // carry only connection/keep-alive (and transfer-encoding when chunked).
  if (connection !== undefined) delete headers.connection;
  if (headers['keep-alive'] !== undefined) delete headers['keep-alive'];
  if (headers['transfer-encoding'] !== undefined) delete headers['transfer-encoding'];
  if (headers.upgrade !== undefined) delete headers.upgrade;
  if (headers['proxy-connection'] !== undefined) delete headers['proxy-connection'];
  if (headers['proxy-authenticate'] !== undefined) delete headers['proxy-authenticate'];
  if (headers['proxy-authorization'] !== undefined) delete headers['proxy-authorization'];
  if (headers.te !== undefined) delete headers.te;
  const named = connectionNamed(Array.isArray(connection) ? connection.join(',') : connection);
  if (named !== null) for (const name of named) delete headers[name];
}
