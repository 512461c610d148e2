// Inbound admission (build lifetime: one per sidecar's app): a concurrency limit on the app
// (adaptive, ./limit.ts, or static), priority shedding when the app is at its limit
// (./admission-queue.ts), and deadline-aware refusal of requests that cannot finish in time.
//
// A request is in flight from admission until its response headers (the handler settles), the
// span the rest of the stack measures; that span is the limit's latency sample. Every path out
// (answer, error, cancellation) releases its slot exactly once, then hands it to the next
// waiter. What the limit learns from:
// - an answer: a latency sample, except a 503, which is a drop (the app says it is full);
// - the deadline or a per-try timer firing while the app worked on it: a drop;
// - the client going away: nothing (its latency is the client's, not the app's);
// - any other failure (connection refused, reset): nothing (not a measure of queueing).
import type { AdmissionPolicy, Priority } from '../../policy/types.ts';
import { SluiceError } from '../../stack/errors.ts';
import {
  noteShadowRefusal,
  releaseCancel,
  type Clock,
  type Handler,
  type Layer,
  type ProxyRequest,
  type ProxyResponse,
  type RequestContext,
} from '../../stack/types.ts';
import { decide, WaitQueue, type ShedReason, type WaitNode } from './admission-queue.ts';
import { ConcurrencyLimit } from './limit.ts';
import type { AdmissionGauges, AdmissionMetrics } from './metrics.ts';
import { readPriority } from './priority.ts';

export { declareAdmissionMetrics, type AdmissionMetrics } from './metrics.ts';

export interface AdmissionDeps {
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: AdmissionMetrics;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

/** Seconds a shed client is told to wait: a slot frees within a latency, but Retry-After counts whole seconds. */
export const SHED_RETRY_AFTER_S = 1;

type Outcome = 'sample' | 'drop' | 'timeout' | 'none';

interface Waiter {
  readonly ctx: RequestContext;
  readonly priority: Priority;
  node: WaitNode<Waiter> | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The timer is the deadline (not maxWaitMs): its firing is deadline-exceeded. */
  byDeadline: boolean;
  readonly onCancel: (reason: Error) => void;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

function checkPolicy(p: AdmissionPolicy): void {
  if (!(p.sheddableShare >= 0 && p.sheddableShare <= 1)) {
    throw new RangeError(`admission sheddableShare must be in [0, 1], got ${p.sheddableShare}`);
  }
  const { maxWaiting, maxWaitMs } = p.queue;
  if (!(Number.isSafeInteger(maxWaiting) && maxWaiting >= 0)) {
    throw new RangeError(`admission queue.maxWaiting must be an integer >= 0, got ${maxWaiting}`);
  }
  if (!(maxWaitMs >= 0 && Number.isFinite(maxWaitMs))) throw new RangeError(`admission queue.maxWaitMs must be a finite number >= 0, got ${maxWaitMs}`);
}

/** What a finished exchange teaches the limit. */
function outcomeOf(response: ProxyResponse | undefined, err: unknown, ctx: RequestContext): Outcome {
  const cancelled = ctx.cancelled instanceof SluiceError ? ctx.cancelled.code : undefined;
  if (cancelled === 'client-closed') return 'none';
  if (response !== undefined) return response.statusCode === 503 ? 'drop' : 'sample';
  const code = err instanceof SluiceError ? err.code : undefined;
  if (code === 'client-closed') return 'none';
  if (code === 'deadline-exceeded' || code === 'per-try-timeout' || cancelled === 'deadline-exceeded') return 'timeout';
  return 'none';
}

export class AdmissionControl {
  #policy: AdmissionPolicy;
  readonly #clock: Clock;
  readonly #metrics: AdmissionMetrics;
  readonly #log: AdmissionDeps['log'];
  readonly #limit: ConcurrencyLimit;
  readonly #queue = new WaitQueue<Waiter>();
  readonly #gauges: AdmissionGauges;
  #inFlight = 0;
  #closed = false;

  constructor(policy: AdmissionPolicy, deps: AdmissionDeps) {
    checkPolicy(policy);
    this.#policy = policy;
    this.#clock = deps.clock;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    const { limitChanges, probes } = deps.metrics;
    const up = limitChanges.labels({ direction: 'up' });
    const down = limitChanges.labels({ direction: 'down' });
    this.#limit = new ConcurrencyLimit(policy.adaptive, policy.maxConcurrency, deps.clock, deps.random, {
      onChange: (direction) => (direction === 'up' ? up : down).inc(),
      onProbe: () => probes.inc(),
    });
    this.#gauges = {
      limit: () => this.limit(),
      inFlight: () => this.#inFlight,
      queueDepth: () => this.#queue.size,
      minRttMs: () => this.#limit.minRttMs(),
    };
    deps.metrics.live.add(this.#gauges);
  }

  /** A policy update: the learned limit carries over where its meaning is unchanged. */
  reconfigure(policy: AdmissionPolicy): void {
    checkPolicy(policy);
    const before = this.#policy;
    this.#limit.reconfigure(policy.adaptive, policy.maxConcurrency);
    this.#policy = policy;
    if (policy.adaptive !== undefined && before.adaptive?.initialLimit !== policy.adaptive.initialLimit) {
      this.#log.info({ initialLimit: policy.adaptive.initialLimit, maxConcurrency: policy.maxConcurrency }, 'admission: adaptive limit learning from the start');
    }
    // A higher limit, or shadow mode, may let waiters go now.
    this.#pump();
  }

  /** The limit now: requests the app is given at once (lowered during a min RTT probe). Credits share this out. */
  limit(): number {
    return this.#limit.limit();
  }

  /** Requests in flight to the app now. */
  inFlight(): number {
    return this.#inFlight;
  }

  /** Requests waiting for room now. */
  waiting(): number {
    return this.#queue.size;
  }

  /** The app's latency now (ms), as deadline-aware admission sees it; undefined when not known. */
  expectedLatencyMs(): number | undefined {
    return this.#limit.expectedLatencyMs();
  }

  /** The learned limit (probes aside) and the no-load latency, for tests and the admin page. */
  learned(): { readonly limit: number; readonly minRttMs: number | undefined; readonly probing: boolean } {
    return { limit: this.#limit.learnedLimit(), minRttMs: this.#limit.minRttMs(), probing: this.#limit.probing() };
  }

  /** The layer, in the inbound stack between credit grant and idempotency. Cheap: call it per build. */
  layer(): Layer {
    return (next) => (req, ctx) => this.#admit(next, req, ctx);
  }

  /**
   * The sidecar is closing, or admission was turned off: the gauges stop reporting this control,
   * and whoever is waiting goes ahead (there is no limit to wait for any more).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#metrics.live.delete(this.#gauges);
    this.#pump();
  }

  #admit(next: Handler, req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
    const policy = this.#policy;
    const priority = readPriority(req.headers, policy.priorityHeader);
    this.#pump();
    // Off (the wiring builds no layer then, but a layer built before may still be called).
    if (this.#closed || policy.mode === 'off') return this.#run(next, req, ctx);
    const now = this.#clock.now();
    const decision = decide(
      priority,
      { inFlight: this.#inFlight, limit: this.#limit.limit(), waiting: this.#queue.size, waitingDefault: this.#queue.defaults },
      policy,
      ctx.deadlineMs - now,
      this.#expected(policy),
    );
    const shadow = policy.mode === 'shadow';
    switch (decision.kind) {
      case 'admit':
        return this.#run(next, req, ctx);
      case 'refuse': {
        const err = this.#refusal(priority, decision.reason, ctx);
        this.#metrics.shed.labels({ priority, reason: decision.reason, mode: shadow ? 'shadow' : 'enforce' }).inc();
        if (!shadow) return Promise.reject(err);
        noteShadowRefusal(ctx, err.code);
        return this.#run(next, req, ctx);
      }
      case 'wait':
      case 'wait-evicting':
        // Shadow mode refuses nobody, so nobody waits either.
        if (shadow) return this.#run(next, req, ctx);
        if (ctx.cancelled !== undefined) return Promise.reject(ctx.cancelled);
        if (decision.kind === 'wait-evicting') {
          const evicted = this.#queue.popNewestDefault();
          if (evicted !== undefined) this.#shed(evicted, 'queue_full');
        }
        return this.#wait(ctx, priority).then(() => this.#start(next, req, ctx));
    }
  }

  #expected(policy: AdmissionPolicy): number | undefined {
    return policy.deadlineAware ? this.#limit.expectedLatencyMs() : undefined;
  }

  #refusal(priority: Priority, reason: ShedReason, ctx: RequestContext): SluiceError {
    if (reason === 'deadline') {
      const left = Math.max(0, Math.round(ctx.deadlineMs - this.#clock.now()));
      return new SluiceError('deadline-too-short', `${left} ms left, the app takes about ${Math.round(this.#limit.expectedLatencyMs() ?? 0)} ms now`);
    }
    const detail =
      reason === 'queue_full'
        ? `${priority} request: ${this.#queue.size} requests already waiting`
        : reason === 'wait_timeout'
          ? `${priority} request waited ${this.#policy.queue.maxWaitMs} ms`
          : `${priority} request: ${this.#inFlight} of ${this.#limit.limit()} in flight`;
    // A slot frees within about one of the app's latencies; before one is known, a second.
    const expected = this.#limit.expectedLatencyMs();
    return new SluiceError('shed', detail, { retryAfterS: expected === undefined ? SHED_RETRY_AFTER_S : Math.min(SHED_RETRY_AFTER_S, expected / 1000) });
  }

  /** Takes a slot now and starts the request. */
  #run(next: Handler, req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
    this.#inFlight += 1;
    return this.#start(next, req, ctx);
  }

  /** The request holds a slot (counted in #inFlight): start it, and give the slot back once when it settles. */
  #start(next: Handler, req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
    const startMs = this.#clock.now();
    const inFlight = this.#inFlight;
    // Granted a slot, but the client left before it could start: nothing to do for it.
    if (ctx.cancelled !== undefined) {
      this.#release(startMs, inFlight, 'none');
      return Promise.reject(ctx.cancelled);
    }
    let pending: Promise<ProxyResponse>;
    try {
      pending = next(req, ctx);
    } catch (err) {
      pending = Promise.reject(err);
    }
    return pending.then(
      (response) => {
        this.#release(startMs, inFlight, outcomeOf(response, undefined, ctx));
        return response;
      },
      (err: unknown) => {
        this.#release(startMs, inFlight, outcomeOf(undefined, err, ctx));
        throw err;
      },
    );
  }

  #release(startMs: number, inFlight: number, outcome: Outcome): void {
    this.#inFlight -= 1;
    const elapsedMs = this.#clock.now() - startMs;
    if (outcome === 'sample') this.#limit.sample(startMs, elapsedMs, inFlight);
    else if (outcome === 'drop') this.#limit.drop();
    else if (outcome === 'timeout') this.#limit.timedOut(elapsedMs);
    this.#pump();
  }

  /** Waits for a slot (granted by #pump, which counts it), or leaves the queue refused or cancelled. */
  #wait(ctx: RequestContext, priority: Priority): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        ctx,
        priority,
        node: undefined,
        timer: undefined,
        byDeadline: false,
        // cancel() emptied the slot before calling: leaving the queue is all there is to do.
        onCancel: (reason) => {
          this.#leave(waiter);
          reject(reason);
        },
        resolve,
        reject,
      };
      waiter.node = this.#queue.push(priority === 'critical' ? 'critical' : 'default', waiter);
      ctx.onCancel = waiter.onCancel;
      const untilDeadlineMs = ctx.deadlineMs - this.#clock.now();
      const maxWaitMs = this.#policy.queue.maxWaitMs;
      waiter.byDeadline = untilDeadlineMs <= maxWaitMs;
      waiter.timer = setTimeout(() => this.#expire(waiter), Math.max(0, Math.min(maxWaitMs, untilDeadlineMs)));
    });
  }

  #expire(waiter: Waiter): void {
    waiter.timer = undefined;
    if (waiter.byDeadline) {
      this.#leave(waiter);
      waiter.reject(new SluiceError('deadline-exceeded', 'while waiting for the app to have room'));
      return;
    }
    this.#shed(waiter, 'wait_timeout');
  }

  /** Refuses a waiter (evicted, waited too long), counted. */
  #shed(waiter: Waiter, reason: ShedReason): void {
    this.#leave(waiter);
    const err = this.#refusal(waiter.priority, reason, waiter.ctx);
    this.#metrics.shed.labels({ priority: waiter.priority, reason, mode: 'enforce' }).inc();
    waiter.reject(err);
  }

  /** Out of the queue, timer and cancellation slot released; safe to call twice. */
  #leave(waiter: Waiter): void {
    if (waiter.node !== undefined) this.#queue.remove(waiter.node);
    if (waiter.timer !== undefined) clearTimeout(waiter.timer);
    waiter.timer = undefined;
    releaseCancel(waiter.ctx, waiter.onCancel);
  }

  /** Hands free slots to waiters, critical first; all of them when admission no longer applies. */
  #pump(): void {
    if (this.#queue.size === 0) return;
    const everyone = this.#closed || this.#policy.mode !== 'enforce';
    const expected = this.#expected(this.#policy);
    while (this.#queue.size > 0 && (everyone || this.#inFlight < this.#limit.limit())) {
      const waiter = this.#queue.shift()!;
      this.#leave(waiter);
      // It waited: maybe too long to be answered in time now.
      if (!everyone && expected !== undefined && waiter.ctx.deadlineMs - this.#clock.now() < expected) {
        this.#metrics.shed.labels({ priority: waiter.priority, reason: 'deadline', mode: 'enforce' }).inc();
        waiter.reject(this.#refusal(waiter.priority, 'deadline', waiter.ctx));
        continue;
      }
      this.#inFlight += 1;
      waiter.resolve();
    }
  }
}
