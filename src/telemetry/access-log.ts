// The access log: one JSON line per request (pino), sampled. Written when the exchange is over,
// so it has the whole story: the status, how long the body took, whether the client stayed,
// how many attempts it took and which local decision ended it, with the trace id to jump to.
// Failures have a sample rate of their own: during an incident every error can be kept while
// successes stay at a trickle, and at a million 503s a second neither floods stdout unbounded.
import type { Logger } from 'pino';
import type { Clock, ProxyRequest, RequestContext } from '../stack/types.ts';

export interface AccessLogPolicy {
  /** Share of answered, successful requests logged, 0..1. */
  readonly sampleRate: number;
  /** Share of failed ones (5xx, a local reply, the client gone) logged, 0..1. */
  readonly errorSampleRate: number;
}

export class AccessLog {
  readonly #policy: AccessLogPolicy;
  readonly #log: Logger;
  readonly #random: () => number;

  constructor(policy: AccessLogPolicy, log: Logger, random: () => number) {
    this.#policy = policy;
    this.#log = log;
    this.#random = random;
  }

  start(req: ProxyRequest, ctx: RequestContext, clock: Clock): AccessEntry {
    return new AccessEntry(this, req, ctx, clock);
  }

  /** Called at the end: the sample is drawn once per request, by its outcome. */
  keep(failed: boolean): boolean {
    const rate = failed ? this.#policy.errorSampleRate : this.#policy.sampleRate;
    return rate >= 1 || (rate > 0 && this.#random() < rate);
  }

  write(line: Record<string, unknown>): void {
    this.#log.info(line, 'access');
  }
}

class AccessEntry {
  readonly #log: AccessLog;
  readonly #req: ProxyRequest;
  readonly #ctx: RequestContext;
  readonly #clock: Clock;
  #headersMs: number | undefined;

  constructor(log: AccessLog, req: ProxyRequest, ctx: RequestContext, clock: Clock) {
    this.#log = log;
    this.#req = req;
    this.#ctx = ctx;
    this.#clock = clock;
  }

  responded(clock: Clock): void {
    this.#headersMs = clock.now() - this.#ctx.startMs;
  }

  end(status: number, complete: boolean): void {
    const ctx = this.#ctx;
    const failed = status >= 500 || status === 0 || ctx.localReply !== undefined || !complete;
    if (!this.#log.keep(failed)) return;
    const req = this.#req;
    const q = req.path.indexOf('?');
    this.#log.write({
      kind: 'access',
      direction: ctx.direction,
      upstream: ctx.upstream,
      route: ctx.route,
      method: req.method,
      authority: req.authority,
      // The query is left out: it is where tokens and personal data end up.
      path: q < 0 ? req.path : req.path.slice(0, q),
      protocol: ctx.protocol,
      grpc: ctx.grpc,
      status,
      attempts: ctx.attempt,
      retryReason: ctx.attempt > 1 ? ctx.retryReason : undefined,
      localReply: ctx.localReply,
      shadow: ctx.shadowRefusals,
      complete,
      headersMs: this.#headersMs === undefined ? undefined : Math.round(this.#headersMs * 1000) / 1000,
      durationMs: Math.round((this.#clock.now() - ctx.startMs) * 1000) / 1000,
      source: ctx.source,
      traceId: ctx.trace?.traceId,
      spanId: ctx.trace?.spanId,
    });
  }
}
