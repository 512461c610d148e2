// The consumer side of credits (inbound): reads each request's claim, counts it against its
// producer, and puts the producer's grant on every answer, refusals included, so a producer
// learns its window on the same round trip that used it. Also answers credit fetches
// (GET /.sluice/v1/credits) itself: the app never sees them, nor the claim header.
import type { CreditGrantPolicy } from '../../policy/types.ts';
import { SluiceError } from '../../stack/errors.ts';
import type { Clock, Handler, Layer, ProxyRequest, ProxyResponse, RequestContext } from '../../stack/types.ts';
import { CreditLedger, type Producer } from './ledger.ts';
import type { CreditMetrics } from './metrics.ts';
import { CREDIT_HEADER, CREDITS_PATH, GRANT_HEADER, formatGrant, parseClaim, takeHeader } from './protocol.ts';

/** The sidecar's grants (build lifetime: one per sidecar, kept across policy updates). */
export class CreditGrants {
  readonly ledger: CreditLedger;
  /** The limit to share out, read per request: admission's adaptive limit moves. */
  readonly #capacity: () => number;
  readonly #metrics: CreditMetrics;

  constructor(policy: CreditGrantPolicy, clock: Clock, capacity: () => number, metrics: CreditMetrics, epoch: string) {
    this.ledger = new CreditLedger(policy, clock, epoch);
    this.#capacity = capacity;
    this.#metrics = metrics;
    metrics.liveGrants.add(this);
  }

  reconfigure(policy: CreditGrantPolicy): void {
    this.ledger.reconfigure(policy);
  }

  refresh(): CreditLedger {
    this.ledger.setCapacity(this.#capacity());
    return this.ledger;
  }

  retire(): void {
    this.#metrics.liveGrants.delete(this);
  }
}

function isFetch(path: string): boolean {
  return path.startsWith(CREDITS_PATH) && (path.length === CREDITS_PATH.length || path[CREDITS_PATH.length] === '?');
}

function fetchReply(ledger: CreditLedger, p: Producer | undefined): ProxyResponse {
  const grant = p === undefined ? undefined : ledger.grant(p);
  const body = Buffer.from(`${JSON.stringify(grant ?? { n: 0, reason: 'no claim, or too many producers' })}\n`);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(body.length) };
  if (grant !== undefined) headers[GRANT_HEADER] = formatGrant(grant);
  return { statusCode: grant === undefined ? 400 : 200, headers, body };
}

export function creditGrantLayer(grants: CreditGrants): Layer {
  return (next) => (req, ctx) => {
    const header = takeHeader(req.headers as string[], CREDIT_HEADER);
    const claim = header === undefined ? undefined : parseClaim(header);
    const ledger = grants.refresh();
    if (isFetch(req.path)) {
      return Promise.resolve(fetchReply(ledger, claim === undefined ? undefined : ledger.arrive(claim, false)));
    }
    const p = claim === undefined ? undefined : ledger.arrive(claim, true);
    if (p === undefined) {
      // No sidecar on the other side (or the ledger is full): plain admission serves it, and
      // what it holds is kept out of the grants.
      ledger.uncredited(1);
      return call(next, req, ctx).finally(() => ledger.uncredited(-1));
    }
    return call(next, req, ctx).then(
      (res) => {
        ledger.depart(p);
        (res.headers as Record<string, string | string[] | undefined>)[GRANT_HEADER] = formatGrant(ledger.grant(p));
        return res;
      },
      (err: unknown) => {
        ledger.depart(p);
        const grant = { [GRANT_HEADER]: formatGrant(ledger.grant(p)) };
        throw err instanceof SluiceError ? err.withHeaders(grant) : new SluiceError('upstream-error', undefined, { cause: err, headers: grant });
      },
    );
  };
}

/** next() as a promise even when it throws synchronously, so the ledger's counts always come back. */
function call(next: Handler, req: ProxyRequest, ctx: RequestContext): Promise<ProxyResponse> {
  try {
    return next(req, ctx);
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Inbound with credits off: the protocol still stops at the sidecar. A claim is dropped (the
 * app never sees it) and a fetch is answered 404 without a grant, which tells the producer this
 * consumer grants none.
 */
export function creditlessLayer(): Layer {
  return (next) => (req, ctx) => {
    if (takeHeader(req.headers as string[], CREDIT_HEADER) !== undefined && isFetch(req.path)) {
      const body = Buffer.from('credits are off on this sidecar\n');
      return Promise.resolve({
        statusCode: 404,
        headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length) },
        body,
      });
    }
    return next(req, ctx);
  };
}
