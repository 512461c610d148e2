// Retries inside the deadline, bounded three ways: attempts per request, the upstream's retry
// budget (charged when a retry is decided, so retries sleeping in back-off already count), and
// the deadline itself (no retry is started that could not finish before it). A retry refused by
// any of these returns the last upstream answer, so the client sees what the upstream said.
import type { Readable } from 'node:stream';
import type { Counter, Registry } from 'prom-client';
import { classifyError, classifyResponse, isRetryable, type FailureKind, type Verdict } from '../../stack/classify.ts';
import { cancellableSleep, type Clock, type Direction, type Layer, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../stack/types.ts';
import { counter, gauge } from '../../telemetry/registry.ts';
import type { RetryPolicy } from '../../policy/types.ts';
import { backoffMs } from './backoff.ts';
import type { RetryBudget } from './budget.ts';
import { mayRetry } from './idempotent.ts';
import { bufferForReplay, ReplayTap, type ReplayAllowance } from './replay-body.ts';
import { parsePreciseRetryMs, parseRetryAfterMs } from './retry-after.ts';
import { RETRY_AFTER_MS_HEADER } from '../../stack/errors.ts';
import { parsePushbackMs } from '../../stack/grpc.ts';

export interface RetryMetrics {
  readonly retries: Counter<'direction' | 'upstream' | 'reason'>;
  readonly refused: Counter<'direction' | 'upstream' | 'why'>;
  /** Every live upstream's budget, read when Prometheus scrapes: nothing is counted per retry. */
  readonly budgets: Map<string, RetryBudget>;
}

export function declareRetryMetrics(registry: Registry): RetryMetrics {
  const budgets = new Map<string, RetryBudget>();
  const available = gauge(registry, 'sluice_retry_budget_available', 'Retries each upstream\'s retry budget would admit now (0: exhausted).', ['upstream']);
  // prom-client calls collect() on the gauge before each scrape.
  (available as unknown as { collect?: () => void }).collect = () => {
    available.reset();
    for (const [upstream, b] of budgets) available.labels({ upstream }).set(b.available());
  };
  return {
    budgets,
    retries: counter(registry, 'sluice_retries_total', 'Retries started, by the failure that caused them.', [
      'direction',
      'upstream',
      'reason',
    ]),
    refused: counter(
      registry,
      'sluice_retries_refused_total',
      'Retryable failures not retried, by why: budget (retry budget exhausted, or too many retries at once), deadline (no time left), attempts (max attempts reached), retry_after (upstream asked for a longer wait, or a gRPC server for none), body (request body too large to replay).',
      ['direction', 'upstream', 'why'],
    ),
  };
}

export interface RetryBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly policy: RetryPolicy;
  readonly budget: RetryBudget | undefined;
  /** Sidecar-wide bound on replay buffers. */
  readonly allowance: ReplayAllowance;
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: RetryMetrics;
}

const NOT_PROCESSED_OR_GRPC: ReadonlySet<FailureKind | undefined> = new Set<FailureKind>(['grpc', 'connect-failure', 'refused-stream']);

type Outcome = { readonly response: ProxyResponse; readonly error?: undefined } | { readonly response?: undefined; readonly error: unknown };

export function retryLayer(b: RetryBuild): Layer {
  const { policy, budget, clock } = b;
  const refusedBy = (why: string) => {
    const counter = b.metrics.refused.labels({ direction: b.direction, upstream: b.upstream, why });
    // The count, and on a traced request the decision as an event: why it was not retried.
    return {
      inc(ctx?: RequestContext): void {
        counter.inc();
        ctx?.trace?.event('sluice.retry_refused', { 'sluice.why': why });
      },
    };
  };
  const refused = {
    budget: refusedBy('budget'),
    deadline: refusedBy('deadline'),
    attempts: refusedBy('attempts'),
    retryAfter: refusedBy('retry_after'),
    body: refusedBy('body'),
  };
  const retried = new Map<string, { inc(): void }>();
  const countRetry = (reason: string): void => {
    let c = retried.get(reason);
    if (c === undefined) {
      c = b.metrics.retries.labels({ direction: b.direction, upstream: b.upstream, reason });
      retried.set(reason, c);
    }
    c.inc();
  };

  function settle(o: Outcome): ProxyResponse {
    if (o.response === undefined) throw o.error;
    return o.response;
  }

  return (next) => {
    /**
     * `grpcOnly`: a gRPC call the idempotency rules would not retry (every gRPC call is a POST).
     * As gRPC's own retry policy does, it is retried on the grpc-statuses the policy lists, and on
     * failures that prove it never reached the server (connect failure, refused stream); never
     * after a reset or a timeout, which the server may have acted on.
     */
    async function attempts(request: ProxyRequest, ctx: RequestContext, grpcOnly = false, tap?: ReplayTap): Promise<ProxyResponse> {
      /** This attempt is a retry the budget was charged for (and must be released). */
      let charged = false;
      for (let attempt = 1; ; attempt++) {
        ctx.attempt = attempt;
        if (tap !== undefined) request = { ...request, body: tap.next() };
        let outcome: Outcome;
        try {
          outcome = { response: await next(request, ctx) };
        } catch (error) {
          outcome = { error };
        }
        if (charged) budget?.release();
        charged = false;

        const status = outcome.response?.statusCode;
        const verdict: Verdict = status !== undefined ? classifyResponse(status, outcome.response?.headers) : classifyError(outcome.error);
        // isRetryable, not verdict.failure: a listed status such as 429 is retried though it is no failure.
        // A failed probe of an ejected endpoint is retried whatever it failed with: the client
        // must not see the errors of an endpoint sluice chose to look at.
        const retryable =
          (isRetryable(verdict, status, policy) && (!grpcOnly || NOT_PROCESSED_OR_GRPC.has(verdict.kind))) || (ctx.probed && verdict.failure);
        if (ctx.cancelled !== undefined || !retryable) return settle(outcome);
        if (attempt >= policy.maxAttempts) {
          refused.attempts.inc(ctx);
          return settle(outcome);
        }
        if (tap !== undefined && !tap.replayable) {
          refused.body.inc(ctx);
          return settle(outcome);
        }

        let waitMs = backoffMs(attempt, policy.backoff, b.random);
        // A gRPC server's own hint (gRFC A6): wait that long, or do not retry at all.
        const pushback = parsePushbackMs(outcome.response?.headers['grpc-retry-pushback-ms']);
        if (pushback === 'stop' || (pushback !== undefined && pushback > policy.retryAfterMaxMs)) {
          refused.retryAfter.inc(ctx);
          return settle(outcome);
        }
        if (pushback !== undefined) waitMs = Math.max(waitMs, pushback);
        const retryAfter = outcome.response?.headers['retry-after'];
        // A peer sidecar's precise hint wins over the whole seconds of Retry-After.
        const preciseMs = parsePreciseRetryMs(outcome.response?.headers[RETRY_AFTER_MS_HEADER]);
        if (preciseMs !== undefined) waitMs = Math.max(waitMs, preciseMs);
        else if (typeof retryAfter === 'string') {
          const askedMs = parseRetryAfterMs(retryAfter, Date.now());
          if (askedMs !== undefined) {
            if (askedMs > policy.retryAfterMaxMs) {
              refused.retryAfter.inc(ctx);
              return settle(outcome);
            }
            waitMs = Math.max(waitMs, askedMs);
          }
        }
        // A retry that cannot start before the deadline would only turn an answer into a 504.
        if (clock.now() + waitMs >= ctx.deadlineMs) {
          refused.deadline.inc(ctx);
          return settle(outcome);
        }
        // A failed probe of an ejected endpoint is retried free: probes are bounded by their
        // interval, and a client must not pay for sluice's look at a sick endpoint.
        if (budget !== undefined && !ctx.probed) {
          if (!budget.tryAcquire()) {
            refused.budget.inc(ctx);
            return settle(outcome);
          }
          charged = true;
        }
        const body = outcome.response?.body;
        if (body != null && !Buffer.isBuffer(body)) body.discard();
        countRetry(verdict.reason);
        ctx.retryReason = verdict.reason;
        ctx.trace?.event('sluice.retry', { 'sluice.attempt': attempt + 1, 'sluice.retry_reason': verdict.reason, 'sluice.backoff_ms': Math.round(waitMs) });
        try {
          if (waitMs > 0) await cancellableSleep(waitMs, ctx);
        } catch (err) {
          if (charged) budget?.release();
          throw err;
        }
      }
    }

    /** Reads a streamed body into a replay buffer (within the allowance), then tries. */
    async function buffered(req: ProxyRequest & { body: Readable }, ctx: RequestContext): Promise<ProxyResponse> {
      const reserve = Math.min(req.bodyLength ?? policy.bufferLimitBytes, policy.bufferLimitBytes);
      if ((req.bodyLength !== undefined && req.bodyLength > policy.bufferLimitBytes) || !b.allowance.tryReserve(reserve)) {
        refused.body.inc(ctx);
        return next(req, ctx);
      }
      try {
        if (ctx.cancelled !== undefined) throw ctx.cancelled;
        const replay = await bufferForReplay(req.body, policy.bufferLimitBytes, ctx);
        const request = { ...req, body: replay.body };
        if (replay.kind === 'buffer') return await attempts(request, ctx);
        refused.body.inc(ctx);
        return await next(request, ctx);
      } finally {
        b.allowance.release(reserve);
      }
    }

    /**
     * A gRPC call's streamed body goes out as it arrives (its next message may wait for an
     * answer), a copy kept for retries within the bound; see ReplayTap.
     */
    async function tapped(req: ProxyRequest & { body: Readable }, ctx: RequestContext, grpcOnly: boolean): Promise<ProxyResponse> {
      const reserve = policy.bufferLimitBytes;
      if (!b.allowance.tryReserve(reserve)) {
        refused.body.inc(ctx);
        return next(req, ctx);
      }
      const tap = new ReplayTap(req.body, policy.bufferLimitBytes);
      try {
        return await attempts(req, ctx, grpcOnly, tap);
      } finally {
        // The answer is in (or the call failed for good): the rest of the body only streams on.
        tap.release();
        b.allowance.release(reserve);
      }
    }

    // Not async itself: the common bodiless request goes straight to attempts().
    return (req, ctx) => {
      budget?.recordRequest();
      if (policy.maxAttempts <= 1) return next(req, ctx);
      const grpcOnly = !mayRetry(req.method, ctx.idempotencyKey !== undefined, policy);
      if (grpcOnly && !ctx.grpc) return next(req, ctx);
      if (req.body === null || Buffer.isBuffer(req.body)) return attempts(req, ctx, grpcOnly);
      if (ctx.grpc) return tapped(req as ProxyRequest & { body: Readable }, ctx, grpcOnly);
      // Only non-gRPC requests get here, and those are retried in full or not at all (above).
      return buffered(req as ProxyRequest & { body: Readable }, ctx);
    };
  };
}
