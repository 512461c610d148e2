// The outermost layer: every request passes it exactly once, so it is where any error from the
// stack becomes the one local reply the client sees (via toLocalReply), and where request
// duration and local decisions are counted. Nothing below it needs to know how errors look.
import type { Counter, Registry } from 'prom-client';
import { toLocalReply, type LocalReplyCode } from '../stack/errors.ts';
import type { Clock, Direction, Layer, ProxyResponse, RequestContext } from '../stack/types.ts';
import { hotHistogram, type HotHistogram } from './hot-metrics.ts';
import { counter } from './registry.ts';

/** OpenTelemetry's recommended HTTP duration buckets, in seconds. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Methods kept as label values; anything else is `_OTHER` (OTel semconv), bounding cardinality. */
const METHODS = ['_OTHER', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
const METHOD_INDEX = new Map(METHODS.map((m, i) => [m, i]));

type DurationLabels = 'upstream' | 'route' | 'http_request_method' | 'http_response_status_code' | 'error_type';

export interface TelemetryMetrics {
  readonly clientDuration: HotHistogram<DurationLabels>;
  readonly serverDuration: HotHistogram<DurationLabels>;
  readonly localReplies: Counter<'direction' | 'upstream' | 'code'>;
}

export function declareTelemetryMetrics(registry: Registry): TelemetryMetrics {
  const labels = ['upstream', 'route', 'http_request_method', 'http_response_status_code', 'error_type'] as const;
  return {
    clientDuration: hotHistogram(
      registry,
      'http_client_request_duration_seconds',
      'Outbound requests: time from arrival at the sidecar until response headers were sent back.',
      labels,
      DURATION_BUCKETS,
    ),
    serverDuration: hotHistogram(
      registry,
      'http_server_request_duration_seconds',
      'Inbound requests: time from arrival at the sidecar until response headers were sent back.',
      labels,
      DURATION_BUCKETS,
    ),
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
  const family = b.direction === 'outbound' ? b.metrics.clientDuration : b.metrics.serverDuration;
  // Children are bound once per (method, status, error) and reused: labels() hashes on every
  // call. Upstream answers are keyed by a number, so the hot path builds no string.
  const answered = new Map<number, { observe(v: number): void }>();
  const local = new Map<string, { observe(v: number): void }>();
  const replies = new Map<LocalReplyCode, { inc(): void }>();

  function observe(method: string, status: number, errorType: string, seconds: number): void {
    const index = METHOD_INDEX.get(method) ?? 0;
    const key = status * 16 + index;
    let child = errorType === '' ? answered.get(key) : local.get(`${key} ${errorType}`);
    if (child === undefined) {
      child = family.labels({
        upstream: b.upstream,
        route: b.route,
        http_request_method: METHODS[index] as string,
        http_response_status_code: String(status),
        error_type: errorType,
      });
      if (errorType === '') answered.set(key, child);
      else local.set(`${key} ${errorType}`, child);
    }
    child.observe(seconds);
  }

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
