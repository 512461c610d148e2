// A lead's turn at a shared key: claim it in Redis, or learn its state there. While another
// replica holds it, poll with bounded back-off (each poll is a claim, so a key freed meanwhile is
// taken in the same call) until its outcome is in, this request's deadline, or its cancellation.
import { SluiceError } from '../../stack/errors.ts';
import { cancellableSleep, type Clock, type RequestContext } from '../../stack/types.ts';
import { decodeShared, type SharedState } from './redis-codec.ts';
import { SharedStoreUnavailable, type SharedStore } from './redis-store.ts';

/** Polls of a key another replica holds: 5, 10, 20 ... ms, at most 200 ms apart. */
const POLL_BASE_MS = 5;
const POLL_CAP_MS = 200;
/** An in-flight marker outlives its request's deadline by this much, then frees the key. */
const MARKER_MARGIN_MS = 1000;

export type SharedLookup =
  /** The key is ours in Redis now. */
  | { readonly kind: 'claimed' }
  /** Redis was unusable before anything was learnt: decide in memory. */
  | { readonly kind: 'fallback' }
  /** Another request's outcome, kept in Redis for `pttlMs` more; `polled`: it was in flight first. */
  | { readonly kind: 'found'; readonly state: Exclude<SharedState, { kind: 'in-flight' }>; readonly pttlMs: number; readonly polled: boolean }
  /** An answer for this request and its waiters alike (mismatch, conflict). */
  | { readonly kind: 'error'; readonly error: SluiceError };

export interface ClaimRequest {
  readonly store: SharedStore;
  /** The Redis key (redisKey()). */
  readonly key: string;
  /** Our in-flight marker (encodeInFlight()). */
  readonly marker: Buffer;
  readonly fingerprint: string;
  /** The policy's TTL: a marker never outlives it. */
  readonly ttlMs: number;
  readonly clock: Clock;
  /** Counts this request among those waiting while it polls another replica's claim. */
  readonly waiting?: { inc(): void; dec(): void };
}

/** Rejects only with the cancellation reason or deadline-exceeded; every other end is a lookup. */
export async function claimShared(c: ClaimRequest, ctx: RequestContext): Promise<SharedLookup> {
  let counted = false;
  try {
    return await poll(c, ctx, () => {
      if (counted) return;
      counted = true;
      c.waiting?.inc();
    });
  } finally {
    if (counted) c.waiting?.dec();
  }
}

async function poll(c: ClaimRequest, ctx: RequestContext, polling: () => void): Promise<SharedLookup> {
  for (let polls = 0; ; polls++) {
    let existing;
    try {
      existing = await c.store.claim(c.key, c.marker, markerTtlMs(c, ctx), ctx);
    } catch (err) {
      if (!(err instanceof SharedStoreUnavailable)) throw err;
      if (polls === 0) return { kind: 'fallback' };
      // Another replica is running it: running it here too would be the duplicate effect this
      // layer exists to prevent. The client's retry finds Redis back, or falls back from the start.
      const error = new SluiceError('idempotency-conflict', 'the original request is in flight on another replica and the shared store became unreachable', {
        retryAfterS: 1,
        cause: err,
      });
      return { kind: 'error', error };
    }
    if (existing === null) return { kind: 'claimed' };
    const state = decodeShared(existing.value);
    if (state === undefined) {
      return { kind: 'error', error: new SluiceError('idempotency-conflict', 'the shared store holds a state for this key that this version cannot read') };
    }
    if (state.fingerprint !== c.fingerprint) {
      return { kind: 'error', error: new SluiceError('idempotency-mismatch', 'the key was first used with another method or path') };
    }
    if (state.kind !== 'in-flight') return { kind: 'found', state, pttlMs: existing.pttlMs, polled: polls > 0 };
    polling();
    await pause(Math.min(POLL_BASE_MS * 2 ** Math.min(polls, 10), POLL_CAP_MS), ctx, c.clock);
  }
}

/** The marker lives as long as its request can, so a dead owner's key frees itself. */
function markerTtlMs(c: ClaimRequest, ctx: RequestContext): number {
  const leftMs = ctx.deadlineMs - c.clock.now();
  if (leftMs === Infinity) return c.ttlMs;
  return Math.min(c.ttlMs, Math.max(0, leftMs) + MARKER_MARGIN_MS);
}

/** A poll's pause: never past the deadline (then deadline-exceeded), left on cancellation. */
function pause(ms: number, ctx: RequestContext, clock: Clock): Promise<void> {
  if (ctx.cancelled !== undefined) return Promise.reject(ctx.cancelled);
  const leftMs = ctx.deadlineMs - clock.now();
  if (leftMs <= 0) {
    return Promise.reject(new SluiceError('deadline-exceeded', 'while the original request with this Idempotency-Key runs on another replica'));
  }
  return cancellableSleep(Math.min(ms, leftMs), ctx);
}
