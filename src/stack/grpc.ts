// gRPC's own language at the proxy boundary: its status codes, its deadline header and its
// trailers-only error replies (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
// A gRPC client reads grpc-status, never the HTTP status or a text body, so every decision the
// stack makes about a gRPC request is spoken back in these terms.
import type { LocalReplyCode } from './errors.ts';

/** The status codes of grpc/status.proto, by name. */
export const GRPC_STATUS = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});

export type GrpcStatusName = keyof typeof GRPC_STATUS;

export const GRPC_STATUS_NAMES: readonly GrpcStatusName[] = Object.freeze(Object.keys(GRPC_STATUS) as GrpcStatusName[]);

/** application/grpc, application/grpc+proto, application/grpc+json...; not grpc-web. */
export function isGrpcContentType(value: string | string[] | undefined): boolean {
  if (typeof value !== 'string' || !value.startsWith('application/grpc')) return false;
  const next = value.charCodeAt(16);
  return Number.isNaN(next) || next === 43 /* + */ || next === 59 /* ; */;
}

/**
 * The grpc-status a response carries: in its headers for a trailers-only response, or in the
 * trailers merged into them. undefined when absent or not a number in range.
 */
export function grpcStatusOf(headers: Readonly<Record<string, string | string[] | undefined>>): number | undefined {
  const v = headers['grpc-status'];
  if (typeof v !== 'string' || v.length === 0 || v.length > 2) return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 16 ? n : undefined;
}

/** Milliseconds per grpc-timeout unit: Hours, Minutes, Seconds, milliseconds, u(micro), nano. */
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

export type GrpcTimeout = { readonly kind: 'ok'; readonly ms: number } | { readonly kind: 'invalid'; readonly reason: string };

/** Parses grpc-timeout: at most 8 ASCII digits and one unit (the spec's TimeoutValue TimeoutUnit). */
export function parseGrpcTimeout(value: string): GrpcTimeout {
  const unit = TIMEOUT_UNIT_MS[value.slice(-1)];
  const digits = value.slice(0, -1);
  if (unit === undefined || digits.length === 0 || digits.length > 8 || !/^\d+$/.test(digits)) {
    return { kind: 'invalid', reason: `grpc-timeout must be 1-8 digits and a unit (H, M, S, m, u, n), got '${value.slice(0, 20)}'` };
  }
  return { kind: 'ok', ms: Number(digits) * unit };
}

/** grpc-timeout for the next hop: whole milliseconds while they fit in 8 digits, else seconds. */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.floor(ms));
  return whole < 100_000_000 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

/**
 * The status a gRPC client gets for each local decision. Push-back (open breaker, no credit,
 * shedding) is UNAVAILABLE, which gRPC clients and their retry policies treat as "try again";
 * a rate limit is RESOURCE_EXHAUSTED, as gRPC's own servers answer it; timeouts are
 * DEADLINE_EXCEEDED. A Record over every code: a new code must be mapped to compile.
 */
const LOCAL_GRPC_STATUS: Readonly<Record<LocalReplyCode, number>> = {
  'bad-request': GRPC_STATUS.INTERNAL,
  'no-route': GRPC_STATUS.UNAVAILABLE,
  'deadline-exceeded': GRPC_STATUS.DEADLINE_EXCEEDED,
  'per-try-timeout': GRPC_STATUS.DEADLINE_EXCEEDED,
  'idle-timeout': GRPC_STATUS.DEADLINE_EXCEEDED,
  'connect-failure': GRPC_STATUS.UNAVAILABLE,
  'upstream-reset': GRPC_STATUS.UNAVAILABLE,
  'upstream-error': GRPC_STATUS.INTERNAL,
  draining: GRPC_STATUS.UNAVAILABLE,
  'loop-detected': GRPC_STATUS.INTERNAL,
  overloaded: GRPC_STATUS.UNAVAILABLE,
  'circuit-open': GRPC_STATUS.UNAVAILABLE,
  'rate-limited': GRPC_STATUS.RESOURCE_EXHAUSTED,
  'no-endpoints': GRPC_STATUS.UNAVAILABLE,
  'no-credit': GRPC_STATUS.UNAVAILABLE,
  shed: GRPC_STATUS.UNAVAILABLE,
  'deadline-too-short': GRPC_STATUS.DEADLINE_EXCEEDED,
  'idempotency-conflict': GRPC_STATUS.ABORTED,
  'idempotency-mismatch': GRPC_STATUS.FAILED_PRECONDITION,
  'client-closed': GRPC_STATUS.CANCELLED,
};

export function grpcStatusForLocal(code: LocalReplyCode): number {
  return LOCAL_GRPC_STATUS[code];
}

/**
 * The HTTP status a gRPC status stands for, as Envoy maps them (grpc::Utility::grpcToHttpStatus),
 * so breakers, ejection and metrics judge a gRPC answer the way they judge an HTTP one:
 * UNAVAILABLE is a 503, INTERNAL a 500, INVALID_ARGUMENT the caller's 400.
 */
const GRPC_TO_HTTP: readonly number[] = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

export function httpStatusForGrpc(status: number): number {
  return GRPC_TO_HTTP[status] ?? 500;
}

/** grpc-message is percent-encoded UTF-8 (the spec's Percent-Encoded): space to '~' stay as is, but '%'. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** grpc-retry-pushback-ms (gRFC A6): a wait in ms, or 'stop' when the server says not to retry. */
export function parsePushbackMs(value: string | string[] | undefined): number | 'stop' | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^\d{1,10}$/.test(value)) return 'stop';
  return Number(value);
}
