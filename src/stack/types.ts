// The one shape every protection has. A layer wraps the next handler; the stack order lives in
// ./order.ts. Handlers resolve when response *headers* are known: bodies stream afterwards, so a
// layer can decide (retry, classify) on status and headers without buffering the body.
import type { Readable } from 'node:stream';

/** Milliseconds on a monotonic clock. Injected so decisions can be tested with a fake clock. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

/** Header list in the flat form both Node and undici accept: [name, value, name, value, ...]. */
export type HeaderList = string[];

export interface ProxyRequest {
  readonly method: string;
  /** Origin-form target: path and query, always starting with '/'. */
  readonly path: string;
  /** host[:port] the client addressed (absolute-form target or Host header), lower-case. */
  readonly authority: string;
  /**
   * End-to-end request headers, hop-by-hop removed, Host as the client addressed it (kept: apps
   * route on it). The deadline header is not here; it is re-set per try.
   */
  readonly headers: HeaderList;
  /**
   * null: no body. Buffer: a body held in memory (replayable). Readable: the client's stream,
   * readable once.
   */
  readonly body: Buffer | Readable | null;
  /** Declared length of the body, undefined when chunked or absent. */
  readonly bodyLength: number | undefined;
}

/** A response body that streams from upstream; consumed once by pipeTo, or thrown away. */
export interface ResponseBody {
  pipeTo(sink: BodySink): void;
  /** Throw the body away (a retry will replace this response); frees the upstream request. */
  discard(): void;
}

/** Where a streamed body goes. write() returning false means: wait for onDrain before more. */
export interface BodySink {
  write(chunk: Buffer): boolean;
  /** Sends the response head now: the body has no bytes yet and the client should not wait. */
  flush(): void;
  onDrain(resume: () => void): void;
  /** Ends the body; `last` is a final chunk, so a body that arrived whole is written at once. */
  end(trailers: Record<string, string | string[]> | null, last?: Buffer): void;
  /** The upstream failed after headers were sent: the sink must cut the client connection. */
  fail(err: Error): void;
}

export interface ProxyResponse {
  readonly statusCode: number;
  /** Response headers, hop-by-hop removed, lower-case names. */
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: ResponseBody | Buffer | null;
}

export type Direction = 'outbound' | 'inbound';

/** Per-request state. Nothing here outlives the request. */
export interface RequestContext {
  readonly direction: Direction;
  /** Upstream name (outbound) or 'app' (inbound); a bounded label, never a raw host. */
  readonly upstream: string;
  /** Route name within the upstream, bounded label. */
  readonly route: string;
  /** When the request arrived (clock ms). */
  readonly startMs: number;
  /** Absolute deadline on the clock (ms); Infinity when no deadline applies. */
  deadlineMs: number;
  /**
   * Set once when the exchange is cancelled: the client went away or the deadline fired. A
   * plain slot instead of an AbortController: tries on one context are sequential, so one
   * listener suffices, and it costs nothing per request. Concurrent tries (hedging) each run in
   * a child context of their own.
   */
  cancelled: Error | undefined;
  /** The I/O in progress (a try, a back-off sleep) registers here to hear of cancellation. */
  onCancel: ((reason: Error) => void) | undefined;
  /** The deadline timer, armed by the deadline layer, disarmed by the listener at the end. */
  deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  /** The deadline header as received (remaining ms from the previous hop), if any. */
  readonly incomingDeadline: string | undefined;
  /** grpc-timeout as received (a gRPC request's deadline), if any. */
  readonly incomingGrpcTimeout: string | undefined;
  /** Idempotency-Key from the request, if any (retry eligibility). */
  readonly idempotencyKey: string | undefined;
  /** 1 for the first try; set by the retry layer. */
  attempt: number;
  /**
   * The current try has its answer's headers (a gRPC answer's are held until its first message,
   * so it can still be retried): per-try timeouts no longer apply to it, only the deadline.
   */
  answered: boolean;
  /** This try is a hedge (racing the attempt's first try), set in the hedge's own context. */
  readonly hedge: boolean;
  /** Index of the endpoint the last try went to (-1 before the first), so a retry goes elsewhere. */
  lastEndpoint: number;
  /** Why the current attempt is a retry, for telemetry. */
  retryReason: string | undefined;
  /**
   * The last try probed an ejected endpoint (set by the upstream client). Its failure is
   * retried without charging the retry budget: the probe was sluice's choice, not the load's.
   */
  probed: boolean;
  /** The local decision that ended the request, if any (a sluice-error code). */
  localReply: string | undefined;
  /**
   * The credit this try holds (credits layer, outbound): endpoint -1 while only reserved; the
   * upstream client sets the endpoint it spent the credit on and the balance it came from (the
   * credit goes back there). undefined without credits.
   */
  credit: { endpoint: number; balance: unknown } | undefined;
  /** Who sent the request: the client's address (a rate-limit descriptor). */
  readonly source: string;
  /** The HTTP version the client spoke: an upstream on protocol `auto` is spoken to in the same. */
  readonly protocol: 'http1' | 'http2';
  /**
   * A gRPC request (content-type application/grpc...): local replies are gRPC errors, grpc-timeout
   * is a deadline, and the answer is judged by its grpc-status.
   */
  readonly grpc: boolean;
  /**
   * What protections in shadow mode would have refused (sluice-error codes); sent back to the
   * client in the `sluice-shadow` response header. undefined until one would have.
   */
  shadowRefusals: string[] | undefined;
  /** The request's trace, when tracing is on (started by the telemetry layer). */
  trace: RequestTrace | undefined;
  /**
   * Called once by the listener when the exchange is over: the answer was written whole
   * (`complete`), or the client went away first. Set by whoever needs the end (trace, access log).
   */
  ended: ((complete: boolean) => void) | undefined;
}

/** Attribute values a trace event carries. */
export type TraceAttributes = Record<string, string | number | boolean>;

/**
 * A request's server span (src/telemetry/tracing.ts), seen from the layers: they note their
 * local decisions as events on it, and the upstream client opens a client span per try.
 */
export interface RequestTrace {
  readonly traceId: string;
  readonly spanId: string;
  /** A local decision on the request: a retry, a wait for credit, a refusal. */
  event(name: string, attributes?: TraceAttributes): void;
  /**
   * The answer's status went back to the caller; `localReply` when the sidecar gave it, and a
   * gRPC answer's grpc-status when its headers carry one (trailers-only).
   */
  responded(status: number, localReply: string | undefined, grpcStatus: string | string[] | undefined): void;
  /** A try goes out to `host`:`port`; its span is a child of the request's. */
  tryStarted(ctx: RequestContext, host: string, port: number): TryTrace;
  end(complete: boolean): void;
}

/** One try's client span. */
export interface TryTrace {
  /** The trace context headers this try carries, so the next hop's spans are its children. */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * The try's answer status at its headers, or its failure code (errorType, '' for none); and a
   * gRPC answer's grpc-status when its headers carry one (trailers-only).
   */
  settled(status: number | undefined, errorType: string, grpcStatus?: string | string[]): void;
}

/** Notes that a protection in shadow mode would have refused this request with `code`. */
export function noteShadowRefusal(ctx: RequestContext, code: string): void {
  ctx.trace?.event('sluice.shadow_refusal', { 'sluice.code': code });
  if (ctx.shadowRefusals === undefined) ctx.shadowRefusals = [code];
  else if (!ctx.shadowRefusals.includes(code)) ctx.shadowRefusals.push(code);
}

export type Handler = (req: ProxyRequest, ctx: RequestContext) => Promise<ProxyResponse>;
export type Layer = (next: Handler) => Handler;

/**
 * Empties the cancellation slot if `listener` still holds it. A try that ended late (undici
 * reporting on a request that was already given up) must not clear the slot of the try that
 * replaced it, or that try could no longer be cancelled.
 */
export function releaseCancel(ctx: RequestContext, listener: (reason: Error) => void): void {
  if (ctx.onCancel === listener) ctx.onCancel = undefined;
}

/**
 * Ends the current try only, with `reason` (a per-try timer firing, a probe given up): the
 * exchange goes on and the retry layer may try again. false when no try was waiting, or the try
 * has its answer's headers (only the deadline ends it then).
 */
export function abortTry(ctx: RequestContext, reason: Error): boolean {
  const listener = ctx.onCancel;
  if (listener === undefined || ctx.answered) return false;
  ctx.onCancel = undefined;
  listener(reason);
  return true;
}

/** Cancels the exchange once; whoever is doing I/O for it hears the reason. */
export function cancel(ctx: RequestContext, reason: Error): void {
  if (ctx.cancelled !== undefined) return;
  ctx.cancelled = reason;
  const listener = ctx.onCancel;
  ctx.onCancel = undefined;
  listener?.(reason);
}

/**
 * Waits `ms`, cut short (rejecting with the reason) if the exchange is cancelled meanwhile: the
 * one way a layer sleeps inside a request (a retry's back-off, a poll's pause).
 */
export function cancellableSleep(ms: number, ctx: RequestContext): Promise<void> {
  return new Promise((resolve, reject) => {
    const onCancel = (reason: Error): void => {
      clearTimeout(timer);
      reject(reason);
    };
    const timer = setTimeout(() => {
      releaseCancel(ctx, onCancel);
      resolve();
    }, ms);
    ctx.onCancel = onCancel;
  });
}
