// The per-request state both listeners (HTTP/1.1 and HTTP/2) start a request with.
import { isGrpcContentType } from '../stack/grpc.ts';
import type { Direction, RequestContext } from '../stack/types.ts';
import type { RequestHeaderFacts } from './headers.ts';
import type { RouteTarget } from './router.ts';

export function newRequestContext(
  direction: Direction,
  target: Pick<RouteTarget, 'upstream' | 'route'>,
  startMs: number,
  facts: RequestHeaderFacts,
  source: string | undefined,
  protocol: 'http1' | 'http2',
): RequestContext {
  return {
    direction,
    upstream: target.upstream,
    route: target.route,
    startMs,
    deadlineMs: Infinity,
    cancelled: undefined,
    onCancel: undefined,
    deadlineTimer: undefined,
    incomingDeadline: facts.deadline,
    incomingGrpcTimeout: facts.grpcTimeout,
    idempotencyKey: facts.idempotencyKey,
    attempt: 1,
    answered: false,
    hedge: false,
    lastEndpoint: -1,
    retryReason: undefined,
    probed: false,
    localReply: undefined,
    credit: undefined,
    source: source ?? '',
    shadowRefusals: undefined,
    trace: undefined,
    ended: undefined,
    protocol,
    grpc: isGrpcContentType(facts.contentType),
  };
}
