// The outermost layer: every request passes it exactly once, so it is where any error from the
// stack becomes the one local reply the client sees (via toLocalReply), and where request
// duration and local decisions are counted. Nothing below it needs to know how errors look.
import type { Counter, Registry } from 'prom-client';
import { toLocalReply, type LocalReplyCode } from '../stack/errors.ts';
import type { Clock, Direction, Layer, ProxyResponse, RequestContext } from '../stack/types.ts';
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
}

export function telemetryLayer(b: TelemetryBuild): Layer {
  const durations = new RouteDurations(b.metrics.serverDuration, b.direction, b.upstream, b.route);
  const replies = new Map<LocalReplyCode, { inc(): void }>();
  const observe = (method: string, status: number, errorType: string, seconds: number): void => durations.observe(method, status, errorType, seconds);

  function localReply(err: unknown, method: string, ctx: RequestContext): ProxyResponse {
    const reply = toLocalReply(err, ctx.grpc);
    ctx.localReply = reply.code;
    let inc = replies.get(reply.code);
    if (inc === undefined) {
      inc = b.metrics.localReplies.labels({ direction: b.direction, upstream: b.upstream, code: reply.code });
      replies.set(reply.code, inc);
    }
    inc.inc();
    observe(method, reply.statusCode, reply.code, (b.clock.now() - ctx.startMs) / 1000);
    return reply;
  }

  return (next) => (req, ctx) => {
    let pending: Promise<ProxyResponse>;
    try {
      pending = next(req, ctx);
    } catch (err) {
      return Promise.resolve(localReply(err, req.method, ctx));
    }
    return pending.then(
      (res) => {
        observe(req.method, res.statusCode, '', (b.clock.now() - ctx.startMs) / 1000);
        return res;
      },
      (err: unknown) => localReply(err, req.method, ctx),
    );
  };
}
