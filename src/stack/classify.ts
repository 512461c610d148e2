// The one classifier. Retry, breaker, budget, ejection and metrics all take its verdict, so they
// can never disagree about what a failure is. Two rules shape it:
// - our own refusals (SluiceError codes that name a local bound) and a client going away are not
//   upstream failures: counting them would let the sidecar open breakers on healthy upstreams;
// - verdicts are shared frozen objects and reasons are fixed strings, so classifying allocates
//   nothing and metric labels stay bounded.
import type { RetryCondition, RetryPolicy } from '../policy/types.ts';
import { type LocalReplyCode, SluiceError } from './errors.ts';
import { GRPC_STATUS_NAMES, grpcStatusOf, httpStatusForGrpc, type GrpcStatusName } from './grpc.ts';

export type FailureKind = RetryCondition | 'status' | 'grpc' | 'local' | 'protocol' | 'aborted';

export interface Verdict {
  /** Counts against the upstream (breaker, ejection, error rate). */
  readonly failure: boolean;
  /** undefined for a success. */
  readonly kind: FailureKind | undefined;
  /**
   * Bounded metric label: 'ok', 'status_5xx' per code (e.g. 'status_503'), 'status_invalid',
   * 'connect_failure', 'reset', 'refused_stream', 'per_try_timeout', 'protocol', 'local', 'aborted'.
   * 'grpc_unavailable' and so on per gRPC status. VERDICT_REASONS lists them all.
   */
  readonly reason: string;
  /** kind 'grpc': the grpc-status the answer carried (retryOnGrpcStatuses matches on it). */
  readonly grpcStatus?: number;
}

function verdict(failure: boolean, kind: FailureKind | undefined, reason: string, grpcStatus?: number): Verdict {
  return Object.freeze(grpcStatus === undefined ? { failure, kind, reason } : { failure, kind, reason, grpcStatus });
}

const OK = verdict(false, undefined, 'ok');
const CONNECT_FAILURE = verdict(true, 'connect-failure', 'connect_failure');
const RESET = verdict(true, 'reset', 'reset');
const REFUSED_STREAM = verdict(true, 'refused-stream', 'refused_stream');
const PER_TRY_TIMEOUT = verdict(true, 'per-try-timeout', 'per_try_timeout');
const PROTOCOL = verdict(true, 'protocol', 'protocol');
const LOCAL = verdict(false, 'local', 'local');
const ABORTED = verdict(false, 'aborted', 'aborted');
/** A status outside 100..599 is not HTTP: the upstream spoke nonsense. */
const STATUS_INVALID = verdict(true, 'protocol', 'status_invalid');
/** Interned per code at load time: classifyResponse never builds a string. */
const STATUS_5XX: readonly Verdict[] = Array.from({ length: 100 }, (_, i) => verdict(true, 'status', `status_${500 + i}`));

/**
 * A peer sidecar's own push-back (its admission shed the request, it had no credit, a rate limit
 * or cap refused): an honest "not now", not the upstream failing. Breakers and ejection must not
 * count it, or an overloaded consumer's shedding would eject it and open breakers on it; retries
 * still may take it (it is a status like any other, and the budget bounds them).
 */
const PUSHBACK = verdict(false, 'status', 'pushback');
const PUSHBACK_CODES = new Set(['shed', 'overloaded', 'no-credit', 'rate-limited', 'deadline-too-short', 'draining']);

/**
 * A gRPC answer with a non-OK grpc-status, judged as the HTTP status it stands for (UNAVAILABLE
 * as a 503, INVALID_ARGUMENT as the caller's 400), one interned verdict per status. Index 0 (OK)
 * is never used: OK is the plain OK verdict.
 */
const GRPC: readonly Verdict[] = GRPC_STATUS_NAMES.map((name, status) =>
  verdict(httpStatusForGrpc(status) >= 500, 'grpc', `grpc_${name.toLowerCase()}`, status),
);
const GRPC_PUSHBACK: readonly Verdict[] = GRPC_STATUS_NAMES.map((_, status) => verdict(false, 'grpc', 'pushback', status));

/** Every reason a verdict can carry, for declaring metric label values up front. */
export const VERDICT_REASONS: readonly string[] = Object.freeze([
  ...[OK, CONNECT_FAILURE, RESET, REFUSED_STREAM, PER_TRY_TIMEOUT, PROTOCOL, LOCAL, ABORTED, STATUS_INVALID, PUSHBACK].map(
    (v) => v.reason,
  ),
  ...STATUS_5XX.map((v) => v.reason),
  ...GRPC.slice(1).map((v) => v.reason),
]);

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/**
 * 5xx is a failure; every other real status is a success (4xx is the caller's problem). With the
 * response headers, a peer sidecar's push-back (see PUSHBACK) is no failure either. A gRPC answer
 * is an HTTP 200 whatever happened: its grpc-status (in a trailers-only answer, or the trailers
 * merged in) decides, so a 200 with grpc-status 14 is an UNAVAILABLE failure.
 */
export function classifyResponse(statusCode: number, headers?: Headers): Verdict {
  if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) return STATUS_INVALID;
  if (statusCode === 200 && headers !== undefined) {
    const grpc = grpcStatusOf(headers);
    if (grpc === undefined || grpc === 0) return OK;
    const code = headers['sluice-error'];
    return typeof code === 'string' && PUSHBACK_CODES.has(code) ? GRPC_PUSHBACK[grpc]! : GRPC[grpc]!;
  }
  if (statusCode < 500) return OK;
  if (headers !== undefined && (statusCode === 503 || statusCode === 504)) {
    const code = headers['sluice-error'];
    if (typeof code === 'string' && PUSHBACK_CODES.has(code)) return PUSHBACK;
  }
  return STATUS_5XX[statusCode - 500]!;
}

// A Record over every code: adding a LocalReplyCode fails to compile until someone decides here
// whether it is an upstream failure.
const SLUICE_VERDICTS: Readonly<Record<LocalReplyCode, Verdict>> = {
  'connect-failure': CONNECT_FAILURE,
  'upstream-reset': RESET,
  'per-try-timeout': PER_TRY_TIMEOUT,
  // By definition "any other upstream protocol failure": an upstream failure, not a local one.
  'upstream-error': PROTOCOL,
  'bad-request': LOCAL,
  'no-route': LOCAL,
  'deadline-exceeded': LOCAL, // the caller's budget ran out; the upstream may be fine
  'idle-timeout': LOCAL, // either side may have stalled
  draining: LOCAL,
  'loop-detected': LOCAL,
  overloaded: LOCAL,
  'circuit-open': LOCAL, // our refusal: counting it would keep the breaker open forever
  'rate-limited': LOCAL,
  'no-endpoints': LOCAL, // nothing was tried: no endpoint to count it against
  'no-credit': LOCAL, // our refusal before the wire: the upstream did nothing wrong
  shed: LOCAL, // our own shedding never counts as an upstream failure
  'deadline-too-short': LOCAL,
  'idempotency-conflict': LOCAL,
  'idempotency-mismatch': LOCAL,
  'client-closed': ABORTED, // the client went away: nobody waits, nothing failed upstream
};

/** undici wraps (InformationalError, SocketError with cause): look this many causes deep. */
const MAX_CAUSE_DEPTH = 2;
/** RST_STREAM code REFUSED_STREAM (RFC 9113 §7): the peer did not process the stream. */
const H2_REFUSED_STREAM = 7;

/**
 * Classify an error from a try: undici v8 errors, Node socket/DNS/HTTP/2 errors, abort reasons and
 * SluiceErrors. The first recognised error in the cause chain decides; anything unrecognised is an
 * upstream protocol failure.
 */
export function classifyError(err: unknown): Verdict {
  return recognise(err, MAX_CAUSE_DEPTH) ?? PROTOCOL;
}

function recognise(err: unknown, depth: number): Verdict | undefined {
  let e: unknown = err;
  for (let d = depth; d >= 0 && e != null; d--) {
    const v = classifyOne(e);
    if (v !== undefined) {
      // A SluiceError naming an upstream failure is coarse (a refused stream travels as
      // 'upstream-reset'), so a failure recognised in its cause is more precise. The specific
      // codes are never downgraded (a per-try timeout carried out by aborting the try stays one);
      // 'upstream-error' is the catch-all, so its cause decides outright (our pool closed: local).
      if (v.failure && d > 0 && e instanceof SluiceError) {
        const inner = recognise(causeOf(e), d - 1);
        if (inner !== undefined && (inner.failure || e.code === 'upstream-error')) return inner;
      }
      return v;
    }
    e = causeOf(e);
  }
  return undefined;
}

interface ErrorLike {
  readonly code?: unknown;
  readonly name?: unknown;
  readonly message?: unknown;
  readonly syscall?: unknown;
  readonly http2ErrorCode?: unknown;
}

function classifyOne(e: unknown): Verdict | undefined {
  if (e instanceof SluiceError) return SLUICE_VERDICTS[e.code];
  if (typeof e !== 'object' || e === null) return undefined;
  const { code, name } = e as ErrorLike;
  // DOMException (AbortSignal without a reason, code 20), undici RequestAbortedError/AbortError,
  // Node's AbortError: the request was abandoned by our side, the upstream did nothing wrong.
  if (name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'UND_ERR_ABORT' || code === 'ABORT_ERR') {
    return ABORTED;
  }
  switch (code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return CONNECT_FAILURE;
    case 'ETIMEDOUT':
      // From connect (autoSelectFamily attempt timeout) it never connected; on an open socket
      // (keep-alive probes, retransmits gave up) the connection died under us.
      return (e as ErrorLike).syscall === 'read' || (e as ErrorLike).syscall === 'write' ? RESET : CONNECT_FAILURE;
    case 'ECONNRESET':
    case 'ECONNABORTED':
    case 'EPIPE':
    case 'UND_ERR_SOCKET': // "other side closed", "closed", HTTP/2 GOAWAY or unresponsive
    case 'ERR_HTTP2_SESSION_ERROR': // GOAWAY with an error code
    case 'ERR_HTTP2_STREAM_CANCEL': // session went away under the stream
      return RESET;
    case 'ERR_HTTP2_STREAM_ERROR':
      return isRefusedStream(e as ErrorLike) ? REFUSED_STREAM : RESET;
    case 'UND_ERR_HEADERS_TIMEOUT':
      return PER_TRY_TIMEOUT;
    case 'UND_ERR_DESTROYED': // our pool was destroyed/closed (reconfigure, shutdown)
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH': // the client's body disagreed with its own length
      return LOCAL;
    default:
      return undefined; // wrappers (UND_ERR_INFO, ...) and unknowns: try the cause
  }
}

function isRefusedStream(e: ErrorLike): boolean {
  // undici copies the RST code onto the error; Node's message names it.
  return (
    e.http2ErrorCode === H2_REFUSED_STREAM ||
    (typeof e.message === 'string' && e.message.includes('NGHTTP2_REFUSED_STREAM'))
  );
}

function causeOf(e: unknown): unknown {
  if (typeof e !== 'object' || e === null) return undefined;
  const cause = (e as { cause?: unknown }).cause;
  if (cause !== undefined) return cause;
  // net.connect with autoSelectFamily fails with an AggregateError of the per-address errors.
  if (e instanceof AggregateError) return e.errors[0];
  return undefined;
}

function isRetryCondition(kind: FailureKind | undefined): kind is RetryCondition {
  return kind === 'connect-failure' || kind === 'reset' || kind === 'refused-stream' || kind === 'per-try-timeout';
}

/**
 * Whether the policy retries this outcome: a failure kind listed in retryOn, or a response whose
 * status is listed in retryOnStatuses. Listed non-5xx statuses (e.g. 429) retry too, though they are
 * not failures. Local refusals and aborts never retry.
 */
export function isRetryable(verdict: Verdict, statusCode: number | undefined, policy: RetryPolicy): boolean {
  const kind = verdict.kind;
  if (kind === 'grpc') return policy.retryOnGrpcStatuses.includes(GRPC_STATUS_NAMES[verdict.grpcStatus as number] as GrpcStatusName);
  if (kind === 'status' || kind === undefined) {
    return statusCode !== undefined && policy.retryOnStatuses.includes(statusCode);
  }
  return isRetryCondition(kind) && policy.retryOn.includes(kind);
}
