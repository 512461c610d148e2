// The outermost layer: every request passes it exactly once, so it is where any error from the
// stack becomes the one local reply the client sees (via toLocalReply), and where request
// duration and local decisions are counted. Nothing below it needs to know how errors look.
import type { Counter, Registry } from 'prom-client';
import { toLocalReply, type LocalReplyCode } from '../stack/errors.ts';
import type { Clock, Direction, Layer, ProxyRequest, ProxyResponse, RequestContext } from '../stack/types.ts';
import type { AccessLog } from './access-log.ts';
import { serverTraces, type Tracing } from './tracing.ts';
import { RouteDurations, serverDurations, type DurationFamily } from './http-durations.ts';
import { counter } from './registry.ts';

export interface TelemetryMetrics {
  readonly serverDuration: DurationFamily;
  readonly localReplies: Counter<'direction' | 'upstream' | 'code'>;
}

export function declareTelemetryMetrics(registry: Registry): TelemetryMetrics {
  return {
    serverDuration: serverDurations(registry),
    localReplies: counter(
      registry,
      'sluice_local_replies_total',
      'Requests answered by the sidecar itself, by the sluice-error code naming the layer.',
      ['direction', 'upstream', 'code'],
    ),
  };
}

export interface TelemetryBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly route: string;
  readonly clock: Clock;
  readonly metrics: TelemetryMetrics;
  /** undefined: tracing off (traceparent passes through untouched). */
  readonly tracing: Tracing | undefined;
  /** undefined: no access log. */
  readonly accessLog: AccessLog | undefined;
}

export function telemetryLayer(b: TelemetryBuild): Layer {
  const { tracing, accessLog } = b;
  const startTrace = tracing === undefined ? undefined : serverTraces(tracing);
  const durations = new RouteDurations(b.metrics.serverDuration, b.direction, b.upstream, b.route);
  const replies = new Map<LocalReplyCode, { inc(): void }>();

  function localReply(err: unknown, method: string, ctx: RequestContext): ProxyResponse {
    const reply = toLocalReply(err, ctx.grpc);
    ctx.localReply = reply.code;
    let inc = replies.get(reply.code);
    if (inc === undefined) {
      inc = b.metrics.localReplies.labels({ direction: b.direction, upstream: b.upstream, code: reply.code });
      replies.set(reply.code, inc);
    }
    inc.inc();
    durations.observe(method, reply.statusCode, reply.code, (b.clock.now() - ctx.startMs) / 1000);
    return reply;
  }

  return (next) => {
    function answer(req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
      let pending: Promise<ProxyResponse>;
      try {
        pending = next(req, ctx);
      } catch (err) {
        return Promise.resolve(localReply(err, req.method, ctx));
      }
      return pending.then(
        (res) => {
          durations.observe(req.method, res.statusCode, '', (b.clock.now() - ctx.startMs) / 1000);
          return res;
        },
        (err: unknown) => localReply(err, req.method, ctx),
      );
    }

    /** With a trace or an access log, the request is followed to its end. */
    function followed(req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
      const span = startTrace?.(req, ctx);
      ctx.trace = span;
      const entry = accessLog?.start(req, ctx, b.clock);
      let status = 0;
      let answered = false;
      let endedComplete: boolean | undefined;
      const finish = (complete: boolean): void => {
        span?.end(complete);
        entry?.end(status, complete);
      };
      // A client that leaves before the answer ends the exchange first; the span and the log line
      // still wait for the answer (quick: leaving cancels the work) to say what it was.
      ctx.ended = (complete) => {
        if (answered) finish(complete);
        else endedComplete = complete;
      };
      return answer(req, ctx).then((res) => {
        status = res.statusCode;
        span?.responded(status, ctx.localReply, ctx.grpc ? res.headers['grpc-status'] : undefined);
        entry?.responded(b.clock);
        answered = true;
        if (endedComplete !== undefined) finish(endedComplete);
        return res;
      });
    }

    return tracing === undefined && accessLog === undefined ? answer : followed;
  };
}
