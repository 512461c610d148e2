// Two timeout layers. The deadline layer fixes one absolute deadline for the whole exchange
// (policy timeout, shortened by the caller's propagated deadline) and arms a single timer that
// cancels whatever is in progress: a try, a back-off sleep, a body still streaming. The per-try
// layer bounds one try until response headers, so a hung endpoint costs one try, not the deadline.
import type { Counter, Registry } from 'prom-client';
import { SluiceError } from '../../stack/errors.ts';
import { abortTry, cancel, type Clock, type Direction, type Layer, type RequestContext } from '../../stack/types.ts';
import { counter } from '../../telemetry/registry.ts';
import { effectiveDeadlineMs, parseDeadlineHeader, parseGrpcDeadline, tighter } from './deadline.ts';

export interface TimeoutMetrics {
  readonly timeouts: Counter<'direction' | 'upstream' | 'kind'>;
}

export function declareTimeoutMetrics(registry: Registry): TimeoutMetrics {
  return {
    timeouts: counter(
      registry,
      'sluice_timeouts_total',
      'Timeouts that fired, by kind: deadline (whole exchange), per_try, expired_on_arrival.',
      ['direction', 'upstream', 'kind'],
    ),
  };
}

export interface DeadlineBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly requestMs: number | undefined;
  /** Cap on what a caller may ask for through the deadline header. */
  readonly maxDeadlineMs: number | undefined;
  readonly clock: Clock;
  readonly metrics: TimeoutMetrics;
}

export function deadlineLayer(b: DeadlineBuild): Layer {
  const labels = { direction: b.direction, upstream: b.upstream };
  const fired = b.metrics.timeouts.labels({ ...labels, kind: 'deadline' });
  const expired = b.metrics.timeouts.labels({ ...labels, kind: 'expired_on_arrival' });

  return (next) => (req, ctx) => {
    let incoming = parseDeadlineHeader(ctx.incomingDeadline, b.maxDeadlineMs);
    if (ctx.incomingGrpcTimeout !== undefined) incoming = tighter(incoming, parseGrpcDeadline(ctx.incomingGrpcTimeout, b.maxDeadlineMs));
    if (incoming.kind === 'expired') {
      expired.inc();
      throw new SluiceError('deadline-exceeded', 'the deadline passed before the request arrived');
    }
    if (incoming.kind === 'invalid') throw new SluiceError('bad-request', incoming.reason);
    const deadlineMs = effectiveDeadlineMs(ctx.startMs, b.requestMs, incoming.kind === 'ok' ? incoming.remainingMs : undefined);
    ctx.deadlineMs = deadlineMs;
    if (deadlineMs !== Infinity) {
      const waitMs = Math.max(0, deadlineMs - b.clock.now());
      ctx.deadlineTimer = setTimeout(onDeadline, waitMs, ctx, fired);
    }
    return next(req, ctx);
  };
}

function onDeadline(ctx: RequestContext, fired: { inc(): void }): void {
  ctx.deadlineTimer = undefined;
  fired.inc();
  cancel(ctx, new SluiceError('deadline-exceeded'));
}

export interface PerTryBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly perTryMs: number;
  readonly metrics: TimeoutMetrics;
}

export function perTryTimeoutLayer(b: PerTryBuild): Layer {
  const fired = b.metrics.timeouts.labels({ direction: b.direction, upstream: b.upstream, kind: 'per_try' });
  return (next) => (req, ctx) => {
    const timer = setTimeout(onPerTry, b.perTryMs, ctx, fired);
    return next(req, ctx).finally(() => clearTimeout(timer));
  };
}

/** The per-try timer: ends the try, counted when there was one to end that was still unanswered. */
function onPerTry(ctx: RequestContext, fired: { inc(): void }): void {
  if (abortTry(ctx, new SluiceError('per-try-timeout'))) fired.inc();
}
