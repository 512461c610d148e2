// HTTP/2 streams into the same stack as HTTP/1.1 requests. Each stream is one request: its
// pseudo-headers become method, path and authority, its DATA the body, and the answer goes back
// on the stream with trailers when the client reads them (`te: trailers`, which every gRPC
// client sends). Flow control is HTTP/2's own: the request body is a Readable whose window only
// opens as the upstream takes bytes, and the response is written through a sink that waits for
// 'drain', so a slow reader slows the upstream instead of growing a buffer here.
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { SluiceError, toLocalReply, type LocalReplyCode } from '../stack/errors.ts';
import { encodeGrpcMessage, grpcStatusForLocal, GRPC_STATUS, isGrpcContentType } from '../stack/grpc.ts';
import { cancel, type BodySink, type Clock, type Direction, type ProxyResponse, type RequestContext } from '../stack/types.ts';
import { appendForwarded, forwardRequestHeaders, newRequestHeaderFacts, type RequestHeaderFacts } from './headers.ts';
import { newRequestContext } from './request-context.ts';
import type { RouteTarget } from './router.ts';

const CLIENT_GONE = new SluiceError('client-closed');
/** How long a failed gRPC stream's status trailers may take to leave before the stream is reset. */
const TRAILERS_GRACE_MS = 1000;
const { NGHTTP2_NO_ERROR } = http2.constants;

export interface H2StreamDeps {
  readonly direction: Direction;
  readonly clock: Clock;
  readonly log: Logger;
  deadlineHeader(): string;
  /** Refusals every request gets checked for before routing (authority, loops). */
  precheck(authority: string, headers: string[], facts: RequestHeaderFacts): SluiceError | undefined;
  resolve(authority: string, method: string, path: string): RouteTarget | SluiceError;
  refused(code: LocalReplyCode): void;
  /** This listener's Via entry. */
  readonly via: string;
  /** A request started and ended (for draining). */
  started(): void;
  ended(): void;
}

/** Writes a streamed body to an HTTP/2 stream; trailers go out when the stream asks for them. */
class StreamSink implements BodySink {
  readonly #stream: ServerHttp2Stream;
  readonly #grpc: boolean;
  #trailers: OutgoingHttpHeaders = {};

  constructor(stream: ServerHttp2Stream, grpc: boolean, waitsForTrailers: boolean) {
    this.#stream = stream;
    this.#grpc = grpc;
    if (waitsForTrailers) {
      stream.once('wantTrailers', () => {
        try {
          stream.sendTrailers(h2Fields(this.#trailers, {}));
        } catch (err) {
          stream.destroy(err as Error);
        }
      });
    }
  }
  write(chunk: Buffer): boolean {
    return this.#stream.write(chunk);
  }
  flush(): void {
    // respond() already sent the headers.
  }
  onDrain(resume: () => void): void {
    this.#stream.once('drain', resume);
  }
  end(trailers: Record<string, string | string[]> | null, last?: Buffer): void {
    if (trailers !== null) this.#trailers = trailers;
    if (last === undefined) this.#stream.end();
    else this.#stream.end(last);
  }
  fail(err: Error): void {
    if (this.#stream.destroyed) return;
    if (this.#grpc) {
      // A gRPC client reads the failure in the status trailers; a reset would reach it only as
      // "stream closed", without saying why.
      const e = err instanceof SluiceError ? err : undefined;
      this.#trailers = {
        'grpc-status': String(e === undefined ? GRPC_STATUS.UNAVAILABLE : grpcStatusForLocal(e.code)),
        'grpc-message': encodeGrpcMessage(err.message),
      };
      if (e !== undefined) this.#trailers['sluice-error'] = e.code;
      // The trailers queue behind the bytes already written. A client that stopped reading would
      // never get them and the stream would stay open past its deadline: reset it then instead.
      const stream = this.#stream;
      if (stream.writableNeedDrain) {
        stream.destroy(err);
        return;
      }
      const timer = setTimeout(() => stream.destroy(err), TRAILERS_GRACE_MS);
      stream.once('close', () => clearTimeout(timer));
      stream.end();
      return;
    }
    // Headers are out: a reset stream is the honest signal left. destroy(err), not close(code):
    // close() ends the stream cleanly first, and the client would take the cut body as whole.
    this.#stream.destroy(err);
  }
}

/**
 * Fields HTTP/2 forbids in a response or its trailers (RFC 9113 §8.2.2): an HTTP/1.1 upstream may
 * send them, and Node refuses the whole header block (it throws) if one is there.
 */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

/**
 * The fields that may cross into HTTP/2, added to `out`; pseudo-headers from upstream never do.
 * Names are lower-case already (undici's, and every local reply's: ProxyResponse says so).
 */
function h2Fields(fields: Readonly<Record<string, string | string[] | number | undefined>>, out: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (const name in fields) {
    const v = fields[name];
    if (v === undefined || name.charCodeAt(0) === 58 /* ':' */) continue;
    if (CONNECTION_SPECIFIC.has(name) || (name === 'te' && v !== 'trailers')) continue;
    out[name] = v;
  }
  return out;
}

function h2Headers(response: ProxyResponse, ctx: RequestContext): OutgoingHttpHeaders {
  const out = h2Fields(response.headers, { ':status': response.statusCode });
  if (ctx.shadowRefusals !== undefined) out['sluice-shadow'] = ctx.shadowRefusals.join(', ');
  return out;
}

/**
 * Sends an answer on the stream. The stream may be gone by now (the client reset it), and Node
 * throws on a header block it will not send: the stream is reset then, the process lives on.
 */
function respond(stream: ServerHttp2Stream, response: ProxyResponse, ctx: RequestContext, facts: RequestHeaderFacts): void {
  try {
    send(stream, response, ctx, facts);
  } catch (err) {
    const body = response.body;
    if (body !== null && !Buffer.isBuffer(body)) body.discard();
    stream.destroy(err as Error);
  }
}

function send(stream: ServerHttp2Stream, response: ProxyResponse, ctx: RequestContext, facts: RequestHeaderFacts): void {
  const body = response.body;
  if (stream.destroyed || stream.closed) {
    if (body !== null && !Buffer.isBuffer(body)) body.discard();
    return;
  }
  const headers = h2Headers(response, ctx);
  if (body === null) {
    // A trailers-only gRPC answer is exactly this: one HEADERS frame that ends the stream.
    stream.respond(headers, { endStream: true });
  } else if (Buffer.isBuffer(body)) {
    stream.respond(headers);
    stream.end(body);
  } else {
    const waitsForTrailers = facts.teTrailers || ctx.grpc || response.headers['trailer'] !== undefined;
    stream.respond(headers, { waitForTrailers: waitsForTrailers });
    body.pipeTo(new StreamSink(stream, ctx.grpc, waitsForTrailers));
  }
}

/** A reply the stack never saw (bad pseudo-headers, no route), in the request's own language. */
function reject(stream: ServerHttp2Stream, deps: H2StreamDeps, err: SluiceError, grpc: boolean): void {
  deps.refused(err.code);
  if (stream.destroyed || stream.closed) return;
  const reply = toLocalReply(err, grpc);
  const headers = h2Fields(reply.headers, { ':status': reply.statusCode });
  const body = reply.body as Buffer | null;
  try {
    if (body === null || body.length === 0) stream.respond(headers, { endStream: true });
    else {
      stream.respond(headers);
      stream.end(body);
    }
  } catch (err) {
    stream.destroy(err as Error);
  }
}

/** host:port of the stream's local end, bracketed for IPv6 (an HTTP/1.0-style request with no authority). */
function localAuthority(stream: ServerHttp2Stream): string {
  const socket = stream.session?.socket;
  const host = socket?.localAddress ?? '127.0.0.1';
  return `${host.includes(':') ? `[${host}]` : host}:${socket?.localPort ?? 0}`;
}

/**
 * The request body as a Readable of its own. The stream itself cannot be handed on: it is also
 * where the answer goes, and whoever reads a body may destroy it at the end (undici does, for a
 * stream that does not destroy itself). Backpressure passes through: the stream is paused while
 * the reader is full, so HTTP/2 flow control holds the client back, and at most one
 * highWaterMark (16 KiB) waits here.
 */
function requestBody(stream: ServerHttp2Stream): Readable {
  const onData = (chunk: Buffer): void => {
    if (!body.push(chunk)) stream.pause();
  };
  const onEnd = (): void => {
    // Node ends the readable side of a reset stream too: that is a cut body, not its end.
    if (stream.closed && stream.rstCode !== NGHTTP2_NO_ERROR) onClose();
    else body.push(null);
  };
  const onClose = (): void => {
    // Closed before its end: the client reset the stream mid-body.
    if ((!stream.readableEnded || stream.rstCode !== NGHTTP2_NO_ERROR) && !body.destroyed && !body.readableEnded) body.destroy(new SluiceError('client-closed', 'the client reset the stream before its body ended'));
  };
  const body: Readable = new Readable({
    read: () => {
      stream.resume();
    },
    destroy: (err, callback) => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      callback(err);
    },
  });
  // Nobody may be reading when the client resets (a refusal answered without reading the body).
  body.on('error', () => undefined);
  stream.on('data', onData);
  stream.pause();
  stream.on('end', onEnd);
  stream.on('close', onClose);
  return body;
}

/** The 'stream' handler of an HTTP/2 server. */
export function h2StreamHandler(deps: H2StreamDeps) {
  const { clock, direction } = deps;
  return (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]): void => {
    const startMs = clock.now();
    deps.started();
    let ctx: RequestContext | undefined;
    // A reset from the client surfaces as an error on the stream: the close handler below is
    // where it is dealt with.
    stream.on('error', () => undefined);
    stream.once('close', () => {
      if (ctx !== undefined) {
        if (ctx.deadlineTimer !== undefined) clearTimeout(ctx.deadlineTimer);
        // Closed before our last byte went out: the client left, whatever runs for it stops.
        if (!stream.writableFinished) cancel(ctx, CLIENT_GONE);
        ctx.ended?.(stream.writableFinished);
      }
      deps.ended();
    });

    const facts = newRequestHeaderFacts();
    const forwarded = forwardRequestHeaders(rawHeaders, deps.deadlineHeader(), facts);
    const grpc = isGrpcContentType(facts.contentType);
    const method = headers[':method'] as string;
    const path = headers[':path'];
    if (method === 'CONNECT') {
      reject(stream, deps, new SluiceError('bad-request', 'CONNECT over HTTP/2 is not supported: open the tunnel over HTTP/1.1'), grpc);
      return;
    }
    if (path === undefined || path.charCodeAt(0) !== 47 /* '/' */) {
      reject(stream, deps, new SluiceError('bad-request', ':path must be an origin-form path'), grpc);
      return;
    }
    const named = headers[':authority'] ?? facts.host;
    const authority = named?.toLowerCase() ?? (direction === 'inbound' ? localAuthority(stream) : '');
    const socket = stream.session?.socket;
    const target = deps.precheck(authority, forwarded, facts) ?? deps.resolve(authority, method, path);
    if (target instanceof SluiceError) {
      reject(stream, deps, target, grpc);
      return;
    }
    forwarded.push('host', authority);
    appendForwarded(forwarded, facts, socket?.remoteAddress, authority, deps.via);
    const bodyLength = facts.contentLength === undefined ? undefined : Number(facts.contentLength);
    const context = newRequestContext(direction, target, startMs, facts, socket?.remoteAddress, 'http2');
    ctx = context;
    const hasBody = !stream.endAfterHeaders;
    target
      .handler({ method, path, authority, headers: forwarded, body: hasBody ? requestBody(stream) : null, bodyLength }, context)
      .then(
        (response) => respond(stream, response, context, facts),
        (err: unknown) => {
          deps.log.error({ err }, 'stack rejected instead of replying');
          if (!stream.headersSent) respond(stream, toLocalReply(err, grpc), context, facts);
          else stream.destroy(err instanceof Error ? err : new Error(String(err)));
        },
      );
  };
}
