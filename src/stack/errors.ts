// Every refusal or local failure is one typed error with a stable code. The code names the layer
// in the `sluice-error` header, and `toLocalReply` is the only place that maps errors to replies,
// so a client always sees the same status, header and body for the same cause.
import { encodeGrpcMessage, grpcStatusForLocal } from './grpc.ts';
import type { ProxyResponse } from './types.ts';

export type LocalReplyCode =
  | 'bad-request' // malformed request the HTTP parser let through (400)
  | 'no-route' // outbound host matches no upstream and the policy refuses unknown hosts (502)
  | 'deadline-exceeded' // the overall deadline passed, here or before arrival (504)
  | 'per-try-timeout' // the last attempt timed out and no retry was possible (504)
  | 'idle-timeout' // no body bytes either way for too long (504)
  | 'connect-failure' // could not open a connection to the upstream (503)
  | 'upstream-reset' // upstream closed the connection before a response (502)
  | 'upstream-error' // any other upstream protocol failure (502)
  | 'draining' // the sidecar is shutting down (503)
  | 'loop-detected' // the request already passed this listener: it would circle forever (508)
  | 'overloaded' // a local bound was hit: queue, buffer, concurrency (503)
  | 'circuit-open' // the upstream's circuit breaker is open: it failed too often just now (503)
  | 'rate-limited' // a rate limit refused the request (429)
  | 'no-endpoints' // the upstream has no endpoints now: its names resolved to no address (503)
  | 'no-credit' // the upstream granted no credit now and none came back in time (503)
  | 'shed' // inbound admission: the app is at its concurrency limit; lower priorities go first (503)
  | 'deadline-too-short' // inbound admission: less time left than the app is taking now (504)
  | 'idempotency-conflict' // a duplicate whose original cannot be replayed (too large, or failed) (409)
  | 'idempotency-mismatch' // an Idempotency-Key reused for a different method or path (422)
  | 'client-closed'; // the client went away; nobody reads this reply, it names the outcome (499)

interface ReplyShape {
  readonly status: number;
  readonly message: string;
}

const REPLIES: Readonly<Record<LocalReplyCode, ReplyShape>> = {
  'bad-request': { status: 400, message: 'malformed request' },
  'no-route': { status: 502, message: 'no upstream is configured for this host' },
  'deadline-exceeded': { status: 504, message: 'request deadline exceeded' },
  'per-try-timeout': { status: 504, message: 'upstream did not answer in time' },
  'idle-timeout': { status: 504, message: 'no data flowed for too long' },
  'connect-failure': { status: 503, message: 'could not connect to upstream' },
  'upstream-reset': { status: 502, message: 'upstream reset the connection' },
  'upstream-error': { status: 502, message: 'upstream protocol error' },
  draining: { status: 503, message: 'sidecar is shutting down' },
  'loop-detected': { status: 508, message: 'request loops back through this sidecar' },
  overloaded: { status: 503, message: 'sidecar is at a configured limit' },
  'circuit-open': { status: 503, message: 'circuit breaker is open for this upstream' },
  'rate-limited': { status: 429, message: 'rate limit exceeded' },
  'no-endpoints': { status: 503, message: 'upstream has no endpoints' },
  'no-credit': { status: 503, message: 'no credit from the upstream: it is at capacity' },
  shed: { status: 503, message: 'the app is at its concurrency limit' },
  'deadline-too-short': { status: 504, message: 'less time left than the app takes to answer now' },
  'idempotency-conflict': { status: 409, message: 'a request with this Idempotency-Key cannot be replayed' },
  'idempotency-mismatch': { status: 422, message: 'this Idempotency-Key was used for a different request' },
  'client-closed': { status: 499, message: 'client closed the connection' },
};

/** A sub-second retry hint, ms, next to the whole seconds of Retry-After. */
export const RETRY_AFTER_MS_HEADER = 'sluice-retry-after-ms';

export class SluiceError extends Error {
  readonly code: LocalReplyCode;
  /** Seconds the client should wait before trying again, when waiting would help. */
  readonly retryAfterS: number | undefined;
  /** Further reply headers the refusing layer defines (e.g. RateLimit-Policy), lower-case names. */
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(
    code: LocalReplyCode,
    detail?: string,
    options?: { cause?: unknown; retryAfterS?: number; headers?: Readonly<Record<string, string>> },
  ) {
    super(detail ? `${REPLIES[code].message}: ${detail}` : REPLIES[code].message, { cause: options?.cause });
    this.name = 'SluiceError';
    this.code = code;
    this.retryAfterS = options?.retryAfterS;
    this.headers = options?.headers;
  }

  get status(): number {
    return REPLIES[this.code].status;
  }

  /** The same refusal with further reply headers (a layer further out adds its own). */
  withHeaders(extra: Readonly<Record<string, string>>): SluiceError {
    const copy = new SluiceError(this.code, undefined, {
      cause: this.cause,
      ...(this.retryAfterS === undefined ? {} : { retryAfterS: this.retryAfterS }),
      headers: { ...this.headers, ...extra },
    });
    copy.message = this.message;
    return copy;
  }
}

/**
 * The one mapping from an error to the reply a client sees. Unknown errors are upstream errors.
 * A gRPC request gets a gRPC error: trailers-only (HTTP 200, grpc-status and grpc-message in the
 * one header block, no body), which is all a gRPC client can read.
 */
export function toLocalReply(err: unknown, grpc = false): ProxyResponse & { code: LocalReplyCode } {
  const e = err instanceof SluiceError ? err : new SluiceError('upstream-error', undefined, { cause: err });
  if (grpc) return grpcReply(e);
  const body = Buffer.from(`${e.message}\n`);
  const headers: Record<string, string> = {
    ...e.headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(body.length),
    'sluice-error': e.code,
  };
  if (e.retryAfterS !== undefined) {
    headers['retry-after'] = String(Math.max(0, Math.ceil(e.retryAfterS)));
    // Retry-After counts whole seconds; a slot or a credit usually frees within milliseconds.
    // Peer sidecars (and clients that know it) read the precise wait here.
    if (e.retryAfterS < 1) headers[RETRY_AFTER_MS_HEADER] = String(Math.max(0, Math.round(e.retryAfterS * 1000)));
  }
  return { statusCode: e.status, headers, body, code: e.code };
}

function grpcReply(e: SluiceError): ProxyResponse & { code: LocalReplyCode } {
  const headers: Record<string, string> = {
    ...e.headers,
    'content-type': 'application/grpc',
    'grpc-status': String(grpcStatusForLocal(e.code)),
    'grpc-message': encodeGrpcMessage(e.message),
    'sluice-error': e.code,
  };
  if (e.retryAfterS !== undefined) {
    const ms = String(Math.max(0, Math.round(e.retryAfterS * 1000)));
    // gRPC's retry policy reads its own hint (gRFC A6); peer sidecars read theirs.
    headers['grpc-retry-pushback-ms'] = ms;
    headers[RETRY_AFTER_MS_HEADER] = ms;
  }
  return { statusCode: 200, headers, body: null, code: e.code };
}
