// Traces (OpenTelemetry): a SERVER span per request the sidecar receives, a CLIENT span per try
// it sends (attempt number, retry reason, hedge), and an event on the server span for each local
// decision (retry, credit wait, refusal). Context is passed explicitly on the RequestContext, not
// through AsyncLocalStorage: the proxy knows which request every callback belongs to, and no
// async hook runs per request. With tracing off nothing here runs and `traceparent` passes
// through untouched, as any end-to-end header does.
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import type { HeaderList, ProxyRequest, RequestContext, RequestTrace, TraceAttributes, TryTrace } from '../stack/types.ts';

/** What both OpenTelemetry's global propagation API and a single propagator offer. */
export interface Propagator {
  inject(context: Context, carrier: unknown, setter: TextMapSetter): void;
  extract(context: Context, carrier: unknown, getter: TextMapGetter): Context;
  /** The header names it reads and writes (traceparent, tracestate, baggage, b3, ...). */
  fields(): string[];
}

export interface Tracing {
  readonly tracer: Tracer;
  /** W3C trace context (and whatever OTEL_PROPAGATORS adds, when it is the global API). */
  readonly propagator: Propagator;
}

/** Reads a flat [name, value, ...] header list; names there are lower-case. */
const headerGetter: TextMapGetter<HeaderList> = {
  keys(headers) {
    const out: string[] = [];
    for (let i = 0; i < headers.length; i += 2) out.push(headers[i] as string);
    return out;
  },
  get(headers, key) {
    for (let i = 0; i < headers.length; i += 2) if (headers[i] === key) return headers[i + 1];
    return undefined;
  },
};

/** Collects what a propagator injects, to be set per try. */
const fieldSetter: TextMapSetter<Record<string, string>> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

/** UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);


/**
 * Removes the incoming context headers of every configured propagator (W3C trace context, and
 * baggage or b3 when OTEL_PROPAGATORS adds them) from the forwarded headers: each try carries
 * its own client span's context instead, baggage included (set by the upstream client), so the
 * next hop is its child and no header goes twice.
 */
function dropTraceHeaders(headers: HeaderList, fields: ReadonlySet<string>): void {
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    const name = headers[r] as string;
    if (fields.has(name)) continue;
    headers[w] = name;
    headers[w + 1] = headers[r + 1] as string;
    w += 2;
  }
  headers.length = w;
}

function pathOnly(target: string): string {
  const q = target.indexOf('?');
  return q < 0 ? target : target.slice(0, q);
}

class ServerTrace implements RequestTrace {
  readonly span: Span;
  readonly #tracing: Tracing;
  readonly #context: Context;
  readonly #method: string;
  #ended = false;

  constructor(tracing: Tracing, span: Span, context: Context, method: string) {
    this.#tracing = tracing;
    this.span = span;
    this.#context = context;
    this.#method = method;
  }

  get traceId(): string {
    return this.span.spanContext().traceId;
  }

  get spanId(): string {
    return this.span.spanContext().spanId;
  }

  event(name: string, attributes?: TraceAttributes): void {
    this.span.addEvent(name, attributes);
  }

  responded(status: number, localReply: string | undefined, grpcStatus: string | string[] | undefined): void {
    this.span.setAttribute('http.response.status_code', status);
    if (localReply !== undefined) {
      this.span.setAttribute('error.type', localReply);
      this.span.setAttribute('sluice.local_reply', localReply);
      this.span.addEvent(`sluice.${localReply}`);
    }
    const grpc = typeof grpcStatus === 'string' ? Number(grpcStatus) : undefined;
    if (grpc !== undefined) this.span.setAttribute('rpc.grpc.status_code', grpc);
    // Server spans: 5xx is an error, 4xx is the caller's (OTel HTTP semantic conventions); a
    // gRPC server span errs on the codes that are the server's fault (OTel gRPC conventions).
    if (status >= 500 || (grpc !== undefined && GRPC_SERVER_ERRORS.has(grpc))) {
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: localReply ?? (grpc !== undefined && status < 500 ? `grpc-status ${grpc}` : `HTTP ${status}`) });
    }
  }

  tryStarted(ctx: RequestContext, host: string, port: number): TryTrace {
    const hedge = ctx.hedge;
    const attributes: Attributes = {
      'http.request.method': this.#method,
      'server.address': host,
      'server.port': port,
      'sluice.attempt': ctx.attempt,
    };
    // OTel's resend count: the attempts before this one.
    if (ctx.attempt > 1) attributes['http.request.resend_count'] = ctx.attempt - 1;
    if (ctx.retryReason !== undefined && ctx.attempt > 1 && !hedge) attributes['sluice.retry_reason'] = ctx.retryReason;
    if (hedge) attributes['sluice.hedge'] = true;
    const span = this.#tracing.tracer.startSpan(this.#method, { kind: SpanKind.CLIENT, attributes }, this.#context);
    const fields: Record<string, string> = {};
    this.#tracing.propagator.inject(trace.setSpan(this.#context, span), fields, fieldSetter);
    return new ClientTrace(span, fields);
  }

  end(complete: boolean): void {
    if (this.#ended) return;
    this.#ended = true;
    // The client left before the whole answer was written: say so, the status alone would not.
    if (!complete) this.span.addEvent('sluice.client_gone');
    this.span.end();
  }
}

class ClientTrace implements TryTrace {
  readonly #span: Span;
  readonly headers: Readonly<Record<string, string>>;

  constructor(span: Span, headers: Record<string, string>) {
    this.#span = span;
    this.headers = headers;
  }

  settled(status: number | undefined, errorType: string, grpcStatus?: string | string[]): void {
    if (status !== undefined) this.#span.setAttribute('http.response.status_code', status);
    const grpc = typeof grpcStatus === 'string' && /^\d+$/.test(grpcStatus) ? Number(grpcStatus) : undefined;
    if (grpc !== undefined) this.#span.setAttribute('rpc.grpc.status_code', grpc);
    if (errorType !== '') {
      this.#span.setAttribute('error.type', errorType);
      this.#span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
    } else if (status !== undefined && status >= 400) {
      // Client spans: any 4xx or 5xx is an error of the try.
      this.#span.setAttribute('error.type', String(status));
      this.#span.setStatus({ code: SpanStatusCode.ERROR });
    } else if (grpc !== undefined && grpc !== 0) {
      // gRPC client spans: any status but OK (OTel gRPC conventions), here a trailers-only answer.
      this.#span.setAttribute('error.type', String(grpc));
      this.#span.setStatus({ code: SpanStatusCode.ERROR, message: `grpc-status ${grpc}` });
    }
    this.#span.end();
  }
}

/**
 * What starts a layer's server spans: the propagator's header names (lower-case) are fixed once
 * tracing starts, so they are worked out here, once, not per request.
 */
export function serverTraces(tracing: Tracing): (req: ProxyRequest, ctx: RequestContext) => RequestTrace {
  const traceHeaders: ReadonlySet<string> = new Set(tracing.propagator.fields().map((f) => f.toLowerCase()));
  return (req, ctx) => startServerTrace(tracing, traceHeaders, req, ctx);
}

/**
 * Starts the request's server span, its parent taken from the incoming trace context (parent-
 * based sampling follows the caller's decision), and clears that context from the forwarded
 * headers. Called by the telemetry layer, outermost, so every layer below can note events.
 */
function startServerTrace(tracing: Tracing, traceHeaders: ReadonlySet<string>, req: ProxyRequest, ctx: RequestContext): RequestTrace {
  const parent = tracing.propagator.extract(ROOT_CONTEXT, req.headers, headerGetter);
  dropTraceHeaders(req.headers, traceHeaders);
  const attributes: Attributes = {
    'http.request.method': req.method,
    'url.path': pathOnly(req.path),
    'server.address': req.authority,
    'network.protocol.version': ctx.protocol === 'http2' ? '2' : '1.1',
    'sluice.direction': ctx.direction,
    'sluice.upstream': ctx.upstream,
    'sluice.route': ctx.route,
  };
  if (ctx.source !== '') attributes['client.address'] = ctx.source;
  if (ctx.grpc) attributes['rpc.system'] = 'grpc';
  // Named by bounded parts only: a span name is a grouping key in every tracing backend.
  const span = tracing.tracer.startSpan(`${req.method} ${ctx.upstream}`, { kind: SpanKind.SERVER, attributes }, parent);
  return new ServerTrace(tracing, span, trace.setSpan(parent, span), req.method);
}
