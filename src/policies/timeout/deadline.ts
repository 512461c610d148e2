// Deadline propagation. The caller's remaining time rides to the next hop in a header (the policy's
// `deadlineHeader`) as whole milliseconds, so a request nobody waits for any more is not worked on
// downstream. Remaining time, not an absolute timestamp: pods do not share a clock.
import { parseGrpcTimeout } from '../../stack/grpc.ts';
import type { Clock } from '../../stack/types.ts';

/**
 * Longest remaining time we act on: 2^31 - 1 ms (~24.8 days). Node timers fire at once (with a
 * TimeoutOverflowWarning) for larger delays, so a caller asking for "forever" must not turn into
 * an immediate timeout.
 */
export const MAX_DEADLINE_MS = 2_147_483_647;

export type DeadlineHeader =
  | { readonly kind: 'none' }
  | { readonly kind: 'ok'; readonly remainingMs: number }
  | { readonly kind: 'expired' }
  | { readonly kind: 'invalid'; readonly reason: string };

const NONE: DeadlineHeader = Object.freeze({ kind: 'none' });
const EXPIRED: DeadlineHeader = Object.freeze({ kind: 'expired' });
const EMPTY: DeadlineHeader = Object.freeze({ kind: 'invalid', reason: 'empty value' });
const NOT_INTEGER: DeadlineHeader = Object.freeze({ kind: 'invalid', reason: 'not an integer number of milliseconds' });

const INTEGER = /^-?\d+$/;

/**
 * Reads the deadline header: remaining milliseconds as a decimal integer.
 * - absent → none; 0 or negative → expired; anything but an integer → invalid (with a fixed reason);
 * - otherwise ok, capped at `maxMs` (the longest deadline a caller may ask for; undefined = no
 *   policy cap) and at MAX_DEADLINE_MS.
 */
export function parseDeadlineHeader(value: string | undefined, maxMs: number | undefined): DeadlineHeader {
  if (value === undefined) return NONE;
  const v = value.trim();
  if (v === '') return EMPTY;
  if (!INTEGER.test(v)) return NOT_INTEGER;
  const n = Number(v);
  if (n <= 0) return EXPIRED; // also "-0"
  return { kind: 'ok', remainingMs: Math.min(n, maxMs ?? MAX_DEADLINE_MS, MAX_DEADLINE_MS) };
}

/**
 * Reads grpc-timeout (a gRPC caller's deadline) the same way: capped at `maxMs` and
 * MAX_DEADLINE_MS; 0 is expired; a malformed value is invalid with the reason.
 */
export function parseGrpcDeadline(value: string | undefined, maxMs: number | undefined): DeadlineHeader {
  if (value === undefined) return NONE;
  const t = parseGrpcTimeout(value.trim());
  if (t.kind === 'invalid') return t;
  // Below a millisecond is no time to do anything in.
  if (t.ms < 1) return EXPIRED;
  return { kind: 'ok', remainingMs: Math.min(Math.ceil(t.ms), maxMs ?? MAX_DEADLINE_MS, MAX_DEADLINE_MS) };
}

/** The caller's tighter deadline when it sent both headers (a gRPC client behind a sidecar). */
export function tighter(a: DeadlineHeader, b: DeadlineHeader): DeadlineHeader {
  if (a.kind === 'none') return b;
  if (b.kind === 'none' || a.kind === 'invalid' || a.kind === 'expired') return a;
  if (b.kind !== 'ok') return b;
  return a.remainingMs <= b.remainingMs ? a : b;
}

/**
 * Absolute deadline on the clock (ms) for a request that arrived at `startMs`: the earlier of the
 * policy's overall timeout and the caller's remaining time; Infinity when neither applies.
 */
export function effectiveDeadlineMs(
  startMs: number,
  policyRequestMs: number | undefined,
  headerRemainingMs: number | undefined,
): number {
  const byPolicy = policyRequestMs === undefined ? Infinity : startMs + policyRequestMs;
  const byHeader = headerRemainingMs === undefined ? Infinity : startMs + headerRemainingMs;
  return Math.min(byPolicy, byHeader);
}

/** Time left until `deadlineMs` (clock ms), never below 0; Infinity for no deadline. */
export function remainingMs(deadlineMs: number, clock: Clock): number {
  return Math.max(0, deadlineMs - clock.now());
}

/**
 * Header value for the next hop: whole milliseconds, rounded down (never promise more time than is
 * left), never below 0, at most MAX_DEADLINE_MS (so never exponent notation). Undefined when there
 * is no deadline to propagate (Infinity, or NaN from a bug upstream of here).
 */
export function formatDeadlineHeader(remainingMs: number): string | undefined {
  if (!(remainingMs < Infinity)) return undefined;
  return String(Math.min(MAX_DEADLINE_MS, Math.max(0, Math.floor(remainingMs))));
}
