// A RequestContext as the listener makes one, for testing a layer alone over a fake `next`.
import { newRequestHeaderFacts } from '../../src/proxy/headers.ts';
import { newRequestContext } from '../../src/proxy/request-context.ts';
import type { RequestContext } from '../../src/stack/types.ts';

export function testContext(over: Partial<RequestContext> = {}): RequestContext {
  return {
    ...newRequestContext('outbound', { upstream: 'u', route: 'default' }, 0, newRequestHeaderFacts(), '127.0.0.1', 'http1'),
    ...over,
  };
}
