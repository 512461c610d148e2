// The producer side of credits (outbound): a try goes out only on a credit its endpoint granted.
// With none free the request waits in the upstream's bounded queue (bounded in length, in time,
// and by its deadline) or is refused at once: 503 no-credit with Retry-After, before the wire.
// The upstream client spends the reserved credit on the endpoint it picks; the try's end gives
// it back.
import type { Clock, Layer, ProxyRequest, ProxyResponse, RequestContext } from '../../stack/types.ts';
import type { CreditBalance } from './balance.ts';
import type { CreditPool } from './pool.ts';
import { CREDIT_HEADER, takeHeader } from './protocol.ts';

export { declareCreditMetrics, type CreditMetrics } from './metrics.ts';

export interface CreditLayerBuild {
  readonly upstream: string;
  readonly pool: CreditPool;
  readonly clock: Clock;
  readonly metrics: import('./metrics.ts').CreditMetrics;
}

export function creditLayer(b: CreditLayerBuild): Layer {
  const { pool } = b;
  return (next) => {
    function send(req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
      const hold: { endpoint: number; balance: unknown } = { endpoint: -1, balance: undefined };
      ctx.credit = hold;
      const startedMs = b.clock.now();
      const settle = (): void => {
        if (ctx.credit === hold) ctx.credit = undefined;
        if (hold.endpoint < 0) pool.unreserve();
        else pool.giveBack(hold.balance as CreditBalance, b.clock.now() - startedMs);
      };
      let pending: Promise<ProxyResponse>;
      try {
        pending = next(req, ctx);
      } catch (err) {
        settle();
        throw err;
      }
      return pending.then(
        (res) => {
          settle();
          return res;
        },
        (err: unknown) => {
          settle();
          throw err;
        },
      );
    }
    return (req, ctx) => {
      // The claim is the sidecar's to make: an app's own header would be a second, forged one.
      takeHeader(req.headers as string[], CREDIT_HEADER);
      const waiting = pool.acquire(ctx);
      if (waiting === undefined) return send(req, ctx);
      if (ctx.trace === undefined) return waiting.then(() => send(req, ctx));
      const waitedFrom = b.clock.now();
      return waiting.then(() => {
        ctx.trace?.event('sluice.credit_wait', { 'sluice.upstream': b.upstream, 'sluice.waited_ms': Math.round(b.clock.now() - waitedFrom) });
        return send(req, ctx);
      });
    };
  };
}
