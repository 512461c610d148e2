// The credits a producer holds for one upstream (build lifetime: one per upstream runtime): a
// balance per endpoint, the reservations tries hold between the credits layer and the endpoint
// pick, the bounded queue of requests waiting for a credit, and the fetches that ask an endpoint
// for its first grant. A request reserves a credit from the upstream as a whole; the upstream
// client then picks among endpoints that have one and spends it there, so no endpoint is ever
// sent more than it granted.
import type { CreditPolicy } from '../../policy/types.ts';
import { SluiceError } from '../../stack/errors.ts';
import { releaseCancel, type Clock, type RequestContext } from '../../stack/types.ts';
import { CreditBalance } from './balance.ts';
import { formatClaim, parseGrant } from './protocol.ts';

/** Who this producer is, in every claim it sends. */
export interface ProducerIdentity {
  readonly id: string;
  readonly svc: string;
}

/** What a fetch of an endpoint's credits came back with. */
export type FetchResult =
  | { readonly status: number; readonly grant: string | undefined; readonly sidecarError?: boolean }
  | { readonly error: unknown };

/** Asks endpoint `i` for a grant: GET /.sluice/v1/credits with the claim header. */
export type CreditFetcher = (i: number, claim: string) => Promise<FetchResult>;

/** After a failed fetch (endpoint unreachable), tries go out unmetered this long before asking again. */
const FETCH_FAILED_RECHECK_MS = 1000;
/**
 * With requests short of credit, a granted endpoint is asked again (with the demand now) at most
 * this often: answers carry fresh grants anyway, but slow answers would leave the producer on a
 * stale window. Bounded: ≤ 20 fetches a second per endpoint, and only while credits are short.
 */
const REFRESH_MS = 50;
/** Demand is the peak of (in flight + waiting + 1) over this window and the one before. */
const DEMAND_WINDOW_MS = 1000;
const MAX_WANT = 1_000_000;

interface Waiter {
  readonly ctx: RequestContext;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
  readonly onCancel: (reason: Error) => void;
}

/** The reason a request got no credit, for the refusal metric. */
export type Refusal = 'queue_full' | 'expected_wait' | 'wait_timeout' | 'deadline';

/** Weight of one try in the moving average of how long a credit is held. */
const HOLD_EWMA_WEIGHT = 0.1;

export interface CreditPoolEvents {
  refused(reason: Refusal): void;
  waited(): void;
  fetched(result: 'granted' | 'uncredited' | 'failed'): void;
}

export class CreditPool {
  readonly upstream: string;
  /** Per endpoint of the endpoint set in force, by index; a rebind re-maps them by key. */
  balances: readonly CreditBalance[];
  /** Every balance by endpoint key: kept across rebinds, so tries in flight return to them. */
  #byKey = new Map<string, CreditBalance>();
  #policy: CreditPolicy;
  readonly #clock: Clock;
  readonly #identity: ProducerIdentity;
  #fetch: CreditFetcher;
  readonly #events: CreditPoolEvents;
  reserved = 0;
  readonly #waiters: Waiter[] = [];
  /** Scratch eligibility for the endpoint pick, reused per try. */
  #eligible: boolean[];
  #demandNow = 0;
  #demandBefore = 0;
  #demandWindowStart = 0;
  #closed = false;
  /** Moving average of how long a try holds its credit, ms; undefined before the first. */
  #holdMs: number | undefined;

  constructor(o: {
    upstream: string;
    endpoints: readonly string[];
    policy: CreditPolicy;
    clock: Clock;
    identity: ProducerIdentity;
    fetch: CreditFetcher;
    events: CreditPoolEvents;
  }) {
    this.upstream = o.upstream;
    this.#policy = o.policy;
    this.#clock = o.clock;
    this.#identity = o.identity;
    this.#fetch = o.fetch;
    this.#events = o.events;
    this.balances = [];
    this.#eligible = [];
    this.#demandWindowStart = o.clock.now();
    this.rebind(o.endpoints, o.policy, o.fetch);
  }

  /**
   * The upstream's endpoints or credit policy changed (a policy update, a DNS answer): the same
   * pool goes on over the new list. Endpoints that stay keep their balance object, so tries in
   * flight give their credit back where they took it, and waiters keep their place.
   */
  rebind(endpoints: readonly string[], policy: CreditPolicy, fetch: CreditFetcher): void {
    this.#policy = policy;
    this.#fetch = fetch;
    const byKey = new Map<string, CreditBalance>();
    this.balances = endpoints.map((key) => {
      const b = this.#byKey.get(key) ?? new CreditBalance();
      byKey.set(key, b);
      return b;
    });
    // Balances of endpoints that left are dropped: their tries still hold the objects.
    this.#byKey = byKey;
    this.#eligible = new Array<boolean>(this.balances.length).fill(false);
    // "Fetched before the first request": ask every endpoint without a grant now.
    this.#fetchWhereNeeded(this.#clock.now());
    this.#wake();
  }

  /** Credits that can be reserved now across endpoints (Infinity if any is uncredited). */
  available(): number {
    const now = this.#clock.now();
    let sum = 0;
    for (const b of this.balances) sum += Math.max(0, b.available(now));
    return sum - this.reserved;
  }

  /** Requests waiting for a credit now. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Tries in flight on spent credits, all endpoints. */
  inFlight(): number {
    let sum = 0;
    for (const b of this.balances) sum += b.inFlight;
    return sum;
  }

  /** Valid granted windows, summed (uncredited endpoints count 0). */
  granted(): number {
    const now = this.#clock.now();
    let sum = 0;
    for (const b of this.balances) if (b.available(now) !== Infinity && b.state === 'granted') sum += b.n;
    return sum;
  }

  /**
   * Reserves a credit: at once when one is free, else after a bounded wait (the queue's length,
   * maxWaitMs, and the request's deadline). Rejects with no-credit (503, Retry-After) or with the
   * cancellation reason.
   */
  acquire(ctx: RequestContext): Promise<void> | undefined {
    if (ctx.cancelled !== undefined) return Promise.reject(ctx.cancelled);
    if (this.#closed) return Promise.reject(this.#refusal('queue_full'));
    const now = this.#clock.now();
    this.#noteDemand(now);
    this.#fetchWhereNeeded(now);
    if (this.#waiters.length === 0 && this.available() >= 1) {
      this.reserved++;
      return undefined;
    }
    this.#refreshGrants(now);
    const waitMs = Math.min(this.#policy.maxWaitMs, ctx.deadlineMs - now);
    // Credits come back about every holdMs / granted: a request that would only get one after
    // its wait ran out is refused now, fast, instead of after waiting for nothing.
    const granted = this.granted();
    if (this.#holdMs !== undefined && granted > 0 && waitMs > 0) {
      const expectedMs = ((this.#waiters.length + 1) * this.#holdMs) / granted;
      if (expectedMs > waitMs) {
        const reason: Refusal = waitMs < this.#policy.maxWaitMs ? 'deadline' : 'expected_wait';
        this.#events.refused(reason);
        return Promise.reject(this.#refusal(reason));
      }
    }
    if (this.#waiters.length >= this.#policy.maxWaiting || waitMs <= 0) {
      const reason: Refusal = this.#waiters.length >= this.#policy.maxWaiting || this.#policy.maxWaitMs <= 0 ? 'queue_full' : 'deadline';
      this.#events.refused(reason);
      return Promise.reject(this.#refusal(reason));
    }
    this.#events.waited();
    return new Promise<void>((resolve, reject) => {
      const onCancel = (reason: Error): void => {
        this.#remove(waiter);
        reject(reason);
      };
      const timer = setTimeout(() => {
        releaseCancel(ctx, onCancel);
        this.#remove(waiter);
        const reason: Refusal = waitMs < this.#policy.maxWaitMs ? 'deadline' : 'wait_timeout';
        this.#events.refused(reason);
        reject(this.#refusal(reason));
      }, waitMs);
      const waiter: Waiter = { ctx, resolve, reject, timer, onCancel };
      ctx.onCancel = onCancel;
      this.#waiters.push(waiter);
    });
  }

  /** A reservation that was never spent (the try did not go out). */
  unreserve(): void {
    if (this.reserved > 0) this.reserved--;
    this.#wake();
  }

  /** Endpoints a reserved try may go to now: those with a credit to spend. */
  eligible(): readonly boolean[] {
    const now = this.#clock.now();
    for (let i = 0; i < this.balances.length; i++) this.#eligible[i] = (this.balances[i] as CreditBalance).available(now) >= 1;
    return this.#eligible;
  }

  /**
   * The reserved credit is spent on endpoint i; returns the balance it came from (the try gives
   * it back there, whatever rebinds happen meanwhile) and the claim header value for the try.
   */
  spend(i: number): { readonly balance: CreditBalance; readonly claim: string } {
    if (this.reserved > 0) this.reserved--;
    const b = this.balances[i] as CreditBalance;
    b.spend();
    return { balance: b, claim: this.#claim(b) };
  }

  /** A try ended (headers or failure) after holding its credit `heldMs`: it comes back. */
  giveBack(balance: CreditBalance, heldMs?: number): void {
    balance.giveBack();
    if (heldMs !== undefined && heldMs >= 0) {
      this.#holdMs = this.#holdMs === undefined ? heldMs : this.#holdMs + HOLD_EWMA_WEIGHT * (heldMs - this.#holdMs);
    }
    this.#wake();
  }

  /** How long a try holds its credit now, on average (ms); undefined before the first. */
  get holdMs(): number | undefined {
    return this.#holdMs;
  }

  /** An answer from endpoint i carried a grant header. */
  onAnswer(i: number, header: string): void {
    const g = parseGrant(header);
    const b = this.balances[i];
    if (g === undefined || b === undefined) return;
    if (b.onGrant(g, this.#clock.now())) this.#wake();
  }

  /** Credits off for the upstream, or the upstream or sidecar goes: waiting requests are refused. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      releaseCancel(w.ctx, w.onCancel);
      this.#events.refused('queue_full');
      w.reject(this.#refusal('queue_full'));
    }
  }

  #refusal(reason: Refusal): SluiceError {
    const why =
      reason === 'queue_full'
        ? 'the wait queue is full'
        : reason === 'expected_wait'
          ? 'none would come back within the wait'
          : reason === 'deadline'
            ? 'no time left to wait'
            : 'none came back in time';
    // When the next credit is likely back: about one holding time over the window (Retry-After
    // rounds it up to a second; sluice-retry-after-ms carries it exactly).
    const granted = this.granted();
    const hintMs = this.#holdMs === undefined || granted === 0 ? 1000 : Math.min(1000, Math.max(1, this.#holdMs / granted));
    return new SluiceError('no-credit', `${this.upstream}: ${why}`, { retryAfterS: hintMs / 1000 });
  }

  #remove(w: Waiter): void {
    clearTimeout(w.timer);
    const at = this.#waiters.indexOf(w);
    if (at >= 0) this.#waiters.splice(at, 1);
  }

  /** Hands free credits to waiters, oldest first. */
  #wake(): void {
    while (this.#waiters.length > 0 && this.available() >= 1) {
      const w = this.#waiters.shift() as Waiter;
      clearTimeout(w.timer);
      releaseCancel(w.ctx, w.onCancel);
      this.reserved++;
      w.resolve();
    }
  }

  #noteDemand(now: number): void {
    if (now - this.#demandWindowStart >= DEMAND_WINDOW_MS) {
      // A window with no requests at all leaves nothing before it either.
      this.#demandBefore = now - this.#demandWindowStart >= 2 * DEMAND_WINDOW_MS ? 0 : this.#demandNow;
      this.#demandNow = 0;
      this.#demandWindowStart = now;
    }
    const d = this.inFlight() + this.reserved + this.#waiters.length + 1;
    if (d > this.#demandNow) this.#demandNow = d;
  }

  #claim(b: CreditBalance): string {
    const { epoch, ack } = b.ack();
    const want = Math.min(MAX_WANT, Math.ceil(Math.max(this.#demandNow, this.#demandBefore, 1) / this.balances.length));
    return formatClaim({ id: this.#identity.id, svc: this.#identity.svc, epoch, ack, want });
  }

  #fetchWhereNeeded(now: number): void {
    if (this.#closed) return;
    for (let i = 0; i < this.balances.length; i++) {
      const b = this.balances[i] as CreditBalance;
      if (b.needsFetch(now)) this.#startFetch(i, b, now);
    }
  }

  /** Short of credit: ask granted endpoints again, so a grown share is learned without an answer. */
  #refreshGrants(now: number): void {
    if (this.#closed) return;
    for (let i = 0; i < this.balances.length; i++) {
      const b = this.balances[i] as CreditBalance;
      if (b.state === 'granted' && !b.refreshing && now - b.lastFetchMs >= REFRESH_MS) this.#startFetch(i, b, now);
    }
  }

  #startFetch(i: number, b: CreditBalance, now: number): void {
    b.fetching(now);
    // The claim is written once the current burst of requests is counted: a burst arriving in
    // one turn of the event loop asks once, with its whole demand.
    setImmediate(() => {
      if (this.#closed) return;
      void this.#fetch(i, this.#claim(b)).then((r) => this.#fetched(b, r));
    });
  }

  #fetched(b: CreditBalance, r: FetchResult): void {
    if (this.#closed) return;
    const now = this.#clock.now();
    const refresh = b.refreshing;
    b.fetched();
    if (refresh && !('error' in r) && r.grant !== undefined) {
      const g = parseGrant(r.grant);
      const before = b.n;
      if (g === undefined || !b.onGrant(g, now)) return;
      this.#wake();
      // Still short after a grant that grew: the share may grow further, ask again at once.
      const i = this.balances.indexOf(b);
      if (b.n > before && this.#waiters.length > 0 && i >= 0) {
        this.#noteDemand(now);
        this.#startFetch(i, b, now);
      }
      return;
    }
    // A failed refresh keeps the grant held: the answers to tries in flight will renew it.
    if (refresh) return;
    if ('error' in r) {
      // Unreachable: tries go out and fail as they would without credits, and ejection and the
      // breaker handle the endpoint; refusing them locally would hide the real failure.
      b.uncredited(now + FETCH_FAILED_RECHECK_MS);
      this.#events.fetched('failed');
    } else {
      const g = r.grant === undefined ? undefined : parseGrant(r.grant);
      if (g !== undefined) {
        // A stale grant (reordered) leaves it without one: asked again at the next request.
        if (!b.onGrant(g, now)) b.lapse();
        this.#events.fetched('granted');
      } else if (r.sidecarError) {
        // A sidecar refused the fetch (its rate limit, draining): it does grant credits, so
        // ask again soon rather than sending unmetered while it is under load.
        b.uncredited(now + FETCH_FAILED_RECHECK_MS);
        this.#events.fetched('failed');
      } else {
        // Answered without a grant: no sidecar with credits there.
        b.uncredited(now + this.#policy.recheckMs);
        this.#events.fetched('uncredited');
      }
    }
    this.#wake();
  }
}
