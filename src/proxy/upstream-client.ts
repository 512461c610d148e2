// The innermost handler: pick an endpoint, send one try on its keep-alive pool. Balancing and
// outlier ejection live here rather than in a layer of their own because both learn from each
// try's own outcome and latency, observed where the try settles, at no extra promise per try.
import { classifyError } from '../stack/classify.ts';
import { SluiceError } from '../stack/errors.ts';
import type { Registry } from 'prom-client';
import { abortTry, type Clock, type Direction, type Handler, type RequestContext } from '../stack/types.ts';
import { hotCounter, type HotCounter } from '../telemetry/hot-metrics.ts';
import { clientDurations, RouteDurations, type DurationFamily } from '../telemetry/http-durations.ts';
import type { EndpointSet } from './endpoints.ts';
import { dispatchTry } from './upstream-exchange.ts';
import { formatGrpcTimeout } from '../stack/grpc.ts';
import type { CreditPool } from '../policies/credits/pool.ts';
import { CREDIT_HEADER, GRANT_HEADER } from '../policies/credits/protocol.ts';

export interface UpstreamMetrics {
  readonly attempts: HotCounter<'direction' | 'upstream'>;
  readonly tries: DurationFamily;
}

export function declareUpstreamMetrics(registry: Registry): UpstreamMetrics {
  return {
    attempts: hotCounter(registry, 'sluice_upstream_attempts_total', 'Tries sent to upstream endpoints (first tries and retries).', [
      'direction',
      'upstream',
    ]),
    tries: clientDurations(registry),
  };
}

export interface UpstreamClientBuild {
  readonly direction: Direction;
  readonly upstream: string;
  readonly route: string;
  readonly metrics: UpstreamMetrics;
  /** The upstream's endpoints, balancer and outlier detector (shared by its routes). */
  readonly endpoints: EndpointSet;
  /** No body bytes from the upstream for this long ends the response (undefined = off). */
  readonly idleMs: number | undefined;
  readonly deadlineHeader: string;
  readonly clock: Clock;
  /**
   * The route retries (maxAttempts > 1): a first try of a GET/HEAD may probe an ejected
   * endpoint; the retry layer retries a failed probe whatever it failed with.
   */
  readonly probes: boolean;
  /** With credits on: tries go only to endpoints with a credit, and carry the claim. */
  readonly credits?: CreditPool | undefined;
}

/** Undici and socket errors become typed errors with a stable code; our own pass through. */
export function upstreamFailure(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  const verdict = classifyError(err);
  const code =
    verdict.kind === 'connect-failure'
      ? 'connect-failure'
      : verdict.kind === 'reset' || verdict.kind === 'refused-stream'
        ? 'upstream-reset'
        : verdict.kind === 'per-try-timeout'
          ? 'per-try-timeout'
          : 'upstream-error';
  const detail = err instanceof Error ? err.message : String(err);
  return new SluiceError(code, detail, { cause: err });
}

export function upstreamClient(b: UpstreamClientBuild): Handler {
  const { endpoints, deadlineHeader, clock, credits } = b;
  const bodyTimeout = b.idleMs ?? 0;
  const attempts = b.metrics.attempts.labels({ direction: b.direction, upstream: b.upstream });
  const durations = new RouteDurations(b.metrics.tries, b.direction, b.upstream, b.route);
  return (req, ctx) => {
    attempts.inc();
    const credit = credits === undefined ? undefined : ctx.credit;
    // Probes are bodiless GET/HEAD first tries: idempotent, and always replayable elsewhere.
    const probing =
      credit === undefined && b.probes && ctx.attempt === 1 && req.body === null && (req.method === 'GET' || req.method === 'HEAD') ? endpoints.probe() : -1;
    // A retry avoids the endpoint that just failed it, when there is another (Envoy's
    // previous_hosts predicate): retrying on the same bad endpoint wastes the budget.
    // With a credit reserved, only endpoints that have one to spend are candidates (and no probe:
    // an ejected endpoint's credits are spent like any other's, when the balancer picks it).
    const allowed = credit === undefined ? undefined : (credits as CreditPool).eligible();
    // The reservation promised a credit somewhere; if a grant shrank or lapsed since, there is
    // none to spend, and a try sent anyway would be one the consumer never granted.
    if (allowed !== undefined && !allowed.includes(true)) {
      return Promise.reject(new SluiceError('no-credit', `${b.upstream}: the grant shrank before the try went out`, { retryAfterS: 0.01 }));
    }
    const i =
      allowed !== undefined
        ? endpoints.pick(ctx.attempt > 1 ? ctx.lastEndpoint : -1, allowed)
        : probing >= 0
          ? probing
          : endpoints.pick(ctx.attempt > 1 ? ctx.lastEndpoint : -1);
    ctx.lastEndpoint = i;
    const probed = credit === undefined && probing >= 0;
    ctx.probed = probed;
    let headers = req.headers;
    if (credit !== undefined) {
      // This try's own list: the claim names the endpoint's grant, which differs per try.
      const spent = (credits as CreditPool).spend(i);
      headers = [...headers, CREDIT_HEADER, spent.claim];
      credit.endpoint = i;
      credit.balance = spent.balance;
    }
    if (ctx.deadlineMs !== Infinity) {
      // The next hop learns how much time is left, minus what we already spent; a gRPC server
      // learns it in its own header too.
      const remainingMs = Math.max(0, ctx.deadlineMs - clock.now());
      setPerTryHeader(headers, deadlineHeader, String(Math.floor(remainingMs)));
      if (ctx.grpc) setPerTryHeader(headers, 'grpc-timeout', formatGrpcTimeout(remainingMs));
    }
    // The try's own span: the next hop's spans are its children, through the headers it carries.
    const span = ctx.trace?.tryStarted(ctx, endpoints.endpoint(i).host, endpoints.endpoint(i).port);
    if (span !== undefined) for (const name in span.headers) setPerTryHeader(headers, name, span.headers[name] as string);
    const startedMs = clock.now();
    endpoints.start(i);
    ctx.answered = false;
    const tried = dispatchTry(
      endpoints.dispatcher(i, ctx.protocol === 'http2'),
      { path: req.path, method: req.method, headers, body: req.body, headersTimeout: 0, bodyTimeout },
      ctx,
      upstreamFailure,
      (status, error, resHeaders) => {
        if (credits !== undefined) {
          const grant = resHeaders?.[GRANT_HEADER];
          if (grant !== undefined) {
            // The consumer's grant is for this sidecar, not for the app.
            delete resHeaders?.[GRANT_HEADER];
            if (typeof grant === 'string') credits.onAnswer(i, grant);
          }
        }
        endpoints.settled(i, startedMs, status, error, probed, resHeaders);
        const errorType = error === undefined ? '' : upstreamFailure(error).code;
        durations.observe(req.method, status ?? 0, errorType, (clock.now() - startedMs) / 1000);
        span?.settled(status, errorType, ctx.grpc ? resHeaders?.['grpc-status'] : undefined);
      },
    );
    if (probing < 0) return tried;
    // A probe waits no longer than a healthy endpoint's answer may take: a still-hung endpoint
    // costs the client that long plus a retry, not a whole per-try timeout.
    const probeMs = endpoints.probeTimeoutMs(i);
    if (probeMs === undefined) return tried;
    const timer = setTimeout(abortProbe, probeMs, ctx);
    return tried.finally(() => clearTimeout(timer));
  };
}

/**
 * Sets a header that changes per try. The list is this request's own, and the per-try headers sit
 * at its end: a retry finds the value it set last time there and updates it.
 */
function setPerTryHeader(headers: string[], name: string, value: string): void {
  // The whole list, from its end: the deadline, grpc-timeout and however many headers the
  // configured propagators write (b3 alone writes up to five) are found wherever they are.
  for (let at = headers.length - 2; at >= 0; at -= 2) {
    if (headers[at] === name) {
      headers[at + 1] = value;
      return;
    }
  }
  headers.push(name, value);
}

/** Ends an unanswered probe as a per-try timeout, which the retry layer retries elsewhere. */
function abortProbe(ctx: RequestContext): void {
  abortTry(ctx, new SluiceError('per-try-timeout', 'probe of an ejected endpoint went unanswered'));
}
