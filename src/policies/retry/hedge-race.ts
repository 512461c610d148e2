// One hedged attempt: the first try, then up to maxHedges more, one per delay, while none has
// answered. Each try runs in a child RequestContext of its own (its own cancellation slot,
// attempt number and endpoint), because the layers below (per-try timer, breaker, credits, the
// upstream client) keep one try's state in the context they are given, and two tries in flight
// must not overwrite each other's slot.
//
// Who wins (gRPC A6 hedging, Envoy's hedge_on_per_try_timeout): the first *answer* wins, an answer
// being a response the retry layer would not retry: not 5xx, not in retryOnStatuses. A failure
// (5xx, reset, per-try timeout, a local refusal of that one try) is non-fatal while another try
// is still out: the race waits for it. When every try has failed, the attempt fails with the
// first failed response (an upstream answer tells the client and the retry layer more than our
// own timeout does), else with the first try's error. Unlike gRPC, a failure does not send the
// next hedge at once: retrying after failures is the retry layer's job, with its back-off.
import { classifyResponse } from '../../stack/classify.ts';
import { cancel, noteShadowRefusal, releaseCancel, type Clock, type Handler, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../stack/types.ts';
import type { RetryBudget } from './budget.ts';
import type { LatencyTracker } from './latency-tracker.ts';

/** How the losers end. Named AbortError so the one classifier calls it aborted: no failure. */
export const HEDGE_LOST: Error = Object.assign(new Error('another try of this request answered first'), { name: 'AbortError' });

interface Count {
  inc(by?: number): void;
}

/** Build-lifetime parts a race needs (one object per layer, shared by its races). */
export interface RaceDeps {
  readonly next: Handler;
  readonly clock: Clock;
  readonly budget: RetryBudget | undefined;
  readonly latency: LatencyTracker;
  readonly maxHedges: number;
  /** Statuses that, like 5xx, do not end the race while another try is out. */
  readonly nonFatal: ReadonlySet<number>;
  readonly sent: Count;
  readonly won: Count;
  readonly lost: Count;
  readonly budgetRefused: Count;
  readonly noTime: Count;
}

interface Try {
  readonly ctx: RequestContext;
  readonly startedMs: number;
  readonly hedge: boolean;
  /** Holds a budget charge until it settles. */
  charged: boolean;
  settled: boolean;
  /** A failed response (5xx, retryable status) kept until the race ends. */
  response: ProxyResponse | undefined;
  error: unknown;
}

function discardBody(res: ProxyResponse | undefined): void {
  const body = res?.body;
  if (body != null && !Buffer.isBuffer(body)) body.discard();
}

/** Runs one attempt of `req` as a race; `delayMs` apart, hedges join while nothing answered. */
export function race(req: ProxyRequest, parent: RequestContext, delayMs: number, d: RaceDeps): Promise<ProxyResponse> {
  return new Promise((resolve, reject) => new HedgeRace(req, parent, delayMs, d, resolve, reject).start());
}

class HedgeRace {
  readonly #req: ProxyRequest;
  readonly #parent: RequestContext;
  readonly #delayMs: number;
  readonly #d: RaceDeps;
  readonly #resolve: (r: ProxyResponse) => void;
  readonly #reject: (e: unknown) => void;
  readonly #tries: Try[] = [];
  #pending = 0;
  #hedges = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The attempt's outcome is decided; tries still settling only clean up. */
  #done = false;
  /** The try whose response the attempt returned; the parent's cancellation goes to it. */
  #chosen: Try | undefined;
  /** The first try to fail with a response (not an error). */
  #firstFailedAnswer: Try | undefined;
  /** The parent's cancellation slot: reaches every live try, then the chosen one's body. */
  readonly #onCancel = (reason: Error): void => this.#cancelled(reason);

  constructor(
    req: ProxyRequest,
    parent: RequestContext,
    delayMs: number,
    d: RaceDeps,
    resolve: (r: ProxyResponse) => void,
    reject: (e: unknown) => void,
  ) {
    this.#req = req;
    this.#parent = parent;
    this.#delayMs = delayMs;
    this.#d = d;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  start(): void {
    this.#parent.onCancel = this.#onCancel;
    this.#send(false, false);
    this.#arm();
  }

  #arm(): void {
    if (this.#done || this.#hedges >= this.#d.maxHedges) return;
    this.#timer = setTimeout(() => this.#hedge(), this.#delayMs);
  }

  /** The delay passed with no answer: send a hedge if time and the budget allow. */
  #hedge(): void {
    this.#timer = undefined;
    if (this.#done) return;
    const { clock, budget, latency } = this.#d;
    // A hedge with less time left than a typical try takes would most likely be cut short by
    // the deadline: it would only add load. Before any estimate, any time left will do.
    const needMs = Math.max(1, latency.p50() ?? 0);
    if (this.#parent.deadlineMs - clock.now() < needMs) {
      this.#d.noTime.inc();
      return;
    }
    // Refused once, refused for this attempt: the budget refills in seconds, not per delay.
    if (budget !== undefined && !budget.tryAcquire()) {
      this.#d.budgetRefused.inc();
      return;
    }
    this.#hedges++;
    this.#d.sent.inc();
    this.#send(true, budget !== undefined);
    this.#arm();
  }

  #send(hedge: boolean, charged: boolean): void {
    const parent = this.#parent;
    const last = this.#tries[this.#tries.length - 1];
    // A hedge goes elsewhere: attempt > 1 makes the upstream client's pick avoid the endpoint
    // the latest try went to (and never probe an ejected one).
    const ctx: RequestContext = {
      ...parent,
      onCancel: undefined,
      attempt: hedge ? parent.attempt + 1 : parent.attempt,
      hedge,
      lastEndpoint: last === undefined ? parent.lastEndpoint : last.ctx.lastEndpoint,
      probed: false,
    };
    if (hedge) parent.trace?.event('sluice.hedge', { 'sluice.attempt': ctx.attempt });
    const t: Try = { ctx, startedMs: this.#d.clock.now(), hedge, charged, settled: false, response: undefined, error: undefined };
    this.#tries.push(t);
    this.#pending++;
    // A hedge gets its own header list: the upstream client rewrites the deadline header in it.
    const req = hedge ? { ...this.#req, headers: this.#req.headers.slice() } : this.#req;
    let tried: Promise<ProxyResponse>;
    try {
      tried = this.#d.next(req, ctx);
    } catch (err) {
      tried = Promise.reject(err);
    }
    tried.then(
      (res) => this.#answered(t, res),
      (err: unknown) => this.#failed(t, err),
    );
  }

  #settle(t: Try): void {
    t.settled = true;
    this.#pending--;
    if (t.charged) {
      t.charged = false;
      this.#d.budget?.release();
    }
  }

  #answered(t: Try, res: ProxyResponse): void {
    this.#settle(t);
    const upstreamFailure = classifyResponse(res.statusCode).failure;
    // Winner or not, every successful answer is a latency sample; a failure's time is none.
    if (!upstreamFailure) this.#d.latency.record(this.#d.clock.now() - t.startedMs);
    const failed = upstreamFailure || this.#d.nonFatal.has(res.statusCode);
    if (this.#done) {
      discardBody(res);
      return;
    }
    if (!failed) {
      this.#win(t, res);
      return;
    }
    t.response = res;
    this.#firstFailedAnswer ??= t;
    if (this.#pending === 0) this.#allFailed();
  }

  #failed(t: Try, err: unknown): void {
    this.#settle(t);
    if (this.#done) return;
    t.error = err;
    if (this.#pending === 0) this.#allFailed();
  }

  #win(winner: Try, res: ProxyResponse): void {
    this.#end();
    const now = this.#d.clock.now();
    const tookMs = now - winner.startedMs;
    for (const t of this.#tries) {
      if (t === winner) continue;
      if (t.settled) {
        discardBody(t.response);
        continue;
      }
      // A loser that ran longer than the winner took was at least that slow. Recorded (a lower
      // bound), or the slow tries hedging cuts off would never be sampled and the p95, so the
      // delay, would sink with every hedge that wins.
      const ranMs = now - t.startedMs;
      if (ranMs > tookMs) this.#d.latency.record(ranMs);
      cancel(t.ctx, HEDGE_LOST);
    }
    if (winner.hedge) this.#d.won.inc();
    if (this.#hedges > (winner.hedge ? 1 : 0)) this.#d.lost.inc(this.#hedges - (winner.hedge ? 1 : 0));
    this.#adopt(winner, res);
    this.#resolve(res);
  }

  /** Every try failed: the first failed response, else the first try's error. */
  #allFailed(): void {
    this.#end();
    if (this.#hedges > 0) this.#d.lost.inc(this.#hedges);
    const chosen = this.#firstFailedAnswer ?? (this.#tries[0] as Try);
    for (const t of this.#tries) if (t !== chosen) discardBody(t.response);
    const res = chosen.response;
    this.#adopt(chosen, res);
    if (res !== undefined) this.#resolve(res);
    else this.#reject(chosen.error);
  }

  /** The parent was cancelled (deadline, client gone): every try ends, the attempt with it. */
  #cancelled(reason: Error): void {
    if (this.#done) {
      // The chosen response's body is still streaming: it hears the cancellation too.
      if (this.#chosen !== undefined) cancel(this.#chosen.ctx, reason);
      return;
    }
    this.#end();
    if (this.#hedges > 0) this.#d.lost.inc(this.#hedges);
    for (const t of this.#tries) {
      if (t.settled) discardBody(t.response);
      else cancel(t.ctx, reason);
    }
    this.#adopt(this.#tries[0] as Try, undefined);
    this.#reject(reason);
  }

  #end(): void {
    this.#done = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * The parent takes the chosen try's view, so outer layers see one coherent try: where it went
   * (a retry avoids it), whether it probed (a failed probe is retried free). Shadow refusals of
   * every try are kept: each would have been refused.
   */
  #adopt(chosen: Try, res: ProxyResponse | undefined): void {
    const parent = this.#parent;
    parent.lastEndpoint = chosen.ctx.lastEndpoint;
    parent.probed = chosen.ctx.probed;
    parent.retryReason = chosen.ctx.retryReason;
    for (const t of this.#tries) {
      const codes = t.ctx.shadowRefusals;
      if (codes !== undefined && codes !== parent.shadowRefusals) for (const code of codes) noteShadowRefusal(parent, code);
    }
    const body = res?.body;
    if (body != null && !Buffer.isBuffer(body)) this.#chosen = chosen;
    else releaseCancel(parent, this.#onCancel);
  }
}
