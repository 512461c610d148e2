// One key while its original runs on this sidecar: the request leading it, and the duplicates
// waiting for its outcome (bounded). A waiter leaves on its own cancellation or deadline, never
// later; the lead's outcome reaches every waiter still there.
//
// When the lead ends without a storable outcome (5xx, an error, a cut body), the key is free
// again: a retry would run anyway, and the waiters *are* retries. So the oldest waiter becomes
// the lead and runs the request itself; the others go on waiting, now for it. That keeps "the
// app sees each key once at a time" and answers every duplicate with a real outcome rather than
// a 409 it would only retry.
import { SluiceError } from '../../stack/errors.ts';
import { releaseCancel, type Clock, type RequestContext } from '../../stack/types.ts';
import type { StoredResponse } from './stored-response.ts';

/** What a waiter learns: the stored answer, an error for it (conflict, mismatch), or its turn. */
export type FlightOutcome =
  | { readonly kind: 'stored'; readonly response: StoredResponse }
  | { readonly kind: 'error'; readonly error: SluiceError }
  | { readonly kind: 'lead' };

const MAX_TIMER_MS = 2 ** 31 - 1;

interface Waiter {
  readonly settle: (o: FlightOutcome) => void;
}

export class InFlight {
  /** method, authority and path of the request that holds the key. */
  readonly fingerprint: string;
  readonly #maxWaiters: number;
  readonly #waiters: Waiter[] = [];

  constructor(fingerprint: string, maxWaiters: number) {
    this.fingerprint = fingerprint;
    this.#maxWaiters = maxWaiters;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** No room for another waiter: the caller answers 409 instead of queueing without bound. */
  get full(): boolean {
    return this.#waiters.length >= this.#maxWaiters;
  }

  /**
   * Waits for the lead's outcome. Rejects with the cancellation reason when the exchange is
   * cancelled (client gone, deadline fired), or with deadline-exceeded when its deadline comes
   * first (a backstop: tested alone, nothing else may be watching the deadline).
   */
  wait(ctx: RequestContext, clock: Clock): Promise<FlightOutcome> {
    if (ctx.cancelled !== undefined) return Promise.reject(ctx.cancelled);
    const leftMs = ctx.deadlineMs - clock.now();
    if (leftMs <= 0) return Promise.reject(new SluiceError('deadline-exceeded', 'while waiting for the original request with this Idempotency-Key'));
    return new Promise<FlightOutcome>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const leave = (): void => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        if (timer !== undefined) clearTimeout(timer);
      };
      const onCancel = (reason: Error): void => {
        leave();
        reject(reason);
      };
      const waiter: Waiter = {
        settle: (o) => {
          if (timer !== undefined) clearTimeout(timer);
          releaseCancel(ctx, onCancel);
          resolve(o);
        },
      };
      // Longer than a timer can hold (2^31 - 1 ms, about 24 days): the deadline layer's cancel is enough.
      if (leftMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          timer = undefined;
          leave();
          releaseCancel(ctx, onCancel);
          reject(new SluiceError('deadline-exceeded', 'while waiting for the original request with this Idempotency-Key'));
        }, leftMs);
      }
      ctx.onCancel = onCancel;
      this.#waiters.push(waiter);
    });
  }

  /** The outcome is stored: every waiter replays it. */
  complete(response: StoredResponse): void {
    this.#settleAll({ kind: 'stored', response });
  }

  /** The outcome cannot be replayed: every waiter gets `error`. */
  fail(error: SluiceError): void {
    this.#settleAll({ kind: 'error', error });
  }

  /** The lead ended with nothing stored: the oldest waiter leads now. false when none waits. */
  promote(): boolean {
    const next = this.#waiters.shift();
    if (next === undefined) return false;
    next.settle({ kind: 'lead' });
    return true;
  }

  #settleAll(o: FlightOutcome): void {
    const waiters = this.#waiters.splice(0);
    for (const w of waiters) w.settle(o);
  }
}
