// A RequestContext as the listener makes one, for testing a layer alone over a fake `next`.
import type { RequestContext } from '../../src/stack/types.ts';

export function testContext(over: Partial<RequestContext> = {}): RequestContext {
  return {
    direction: 'outbound',
    upstream: 'u',
    route: 'default',
    startMs: 0,
    deadlineMs: Infinity,
    cancelled: undefined,
    onCancel: undefined,
    deadlineTimer: undefined,
    incomingDeadline: undefined,
    incomingGrpcTimeout: undefined,
    idempotencyKey: undefined,
    attempt: 1,
    answered: false,
    lastEndpoint: -1,
    retryReason: undefined,
    probed: false,
    localReply: undefined,
    credit: undefined,
    source: '127.0.0.1',
    protocol: 'http1',
    grpc: false,
    shadowRefusals: undefined,
    ...over,
  };
}
