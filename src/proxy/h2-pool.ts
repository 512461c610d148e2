// Cleartext HTTP/2 (h2c, prior knowledge) connections to one endpoint, as an undici Dispatcher so
// the rest of the proxy sends tries to it exactly as it does to an HTTP/1.1 pool.
//
// Why not undici's own HTTP/2 client: under backpressure it loses data. When its consumer pauses
// it and the peer's trailers arrive while body bytes still wait in the paused stream, it stops
// listening for data and completes with the trailers, so those bytes are never delivered (undici
// 8.12-8.14, lib/dispatcher/client-h2.js onTrailers). A gRPC stream to a slow reader always ends
// that way. Here trailers are kept aside and delivered after the last byte, on 'end'.
//
// Connections are reused: a try takes a stream on the first connection with room (fewer open
// streams than the peer allows and our own cap), a new connection opens only when all are full,
// up to `connections`; beyond that tries wait in a queue bounded by the breaker's caps.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import { Dispatcher } from 'undici';

const { NGHTTP2_NO_ERROR, HTTP2_HEADER_STATUS } = http2.constants;

/** Headers that describe one HTTP/1 connection; HTTP/2 forbids them (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'expect']);

export interface H2PoolOptions {
  readonly connectMs: number;
  /** Connections to the endpoint at most. */
  readonly connections: number;
  /** Streams one connection carries at once at most (the peer's SETTINGS may lower it). */
  readonly maxStreams: number;
}

interface Connection {
  readonly session: ClientHttp2Session;
  connected: boolean;
  /**
   * Streams the connection takes at once: ours, lowered by the peer's SETTINGS. Kept here because
   * session.remoteSettings builds a new object on each read, and every try asks.
   */
  maxStreams: number;
  /** GOAWAY received or sent: finishes its streams, takes no new ones. */
  closing: boolean;
  streams: number;
}

type DispatchOptions = Dispatcher.DispatchOptions;
type Handler = Dispatcher.DispatchHandler;

/** An error with the code undici would give, so the one classifier reads both pools alike. */
function coded(message: string, code: string, name = 'Error'): Error {
  const err = new Error(message) as Error & { code: string };
  err.code = code;
  err.name = name;
  return err;
}

/** One try's lifetime: the controller its handler drives, and the stream once it has one. */
class Exchange implements Dispatcher.DispatchController {
  readonly opts: DispatchOptions;
  readonly handler: Handler;
  readonly #pool: H2Pool;
  stream: ClientHttp2Stream | undefined;
  #aborted = false;
  #paused = false;
  #reason: Error | null = null;
  #settled = false;
  #trailers: IncomingHttpHeaders = {};

  constructor(pool: H2Pool, opts: DispatchOptions, handler: Handler) {
    this.#pool = pool;
    this.opts = opts;
    this.handler = handler;
  }

  get aborted(): boolean {
    return this.#aborted;
  }
  get paused(): boolean {
    return this.#paused;
  }
  get reason(): Error | null {
    return this.#reason;
  }

  abort(reason: Error): void {
    if (this.#aborted || this.#settled) return;
    this.#aborted = true;
    this.#reason = reason;
    if (this.stream === undefined) this.#pool.unqueue(this);
    // destroy(reason), not close(code): close() first ends our side cleanly (END_STREAM), so the
    // upstream would take a cut request body for a whole one. destroy() resets the stream.
    else if (!this.stream.destroyed) this.stream.destroy(reason);
    this.fail(reason);
  }

  pause(): void {
    this.#paused = true;
    this.stream?.pause();
    // Held back by our reader, not idle: the body timeout does not run meanwhile.
    if (this.opts.bodyTimeout) this.stream?.setTimeout(0);
  }

  resume(): void {
    this.#paused = false;
    if (this.opts.bodyTimeout) this.stream?.setTimeout(this.opts.bodyTimeout);
    this.stream?.resume();
  }

  fail(err: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    this.handler.onResponseError?.(this, err);
  }

  /** Sends the request on `session` and wires the answer to the handler. */
  start(session: ClientHttp2Session, authority: string): ClientHttp2Stream {
    const body = this.opts.body as Buffer | Readable | string | null | undefined;
    const stream = session.request(requestHeaders(this.opts, authority), { endStream: body == null });
    this.stream = stream;
    if (this.#paused) stream.pause();
    if (this.opts.bodyTimeout) {
      stream.setTimeout(this.opts.bodyTimeout, () =>
        this.abort(coded('Body Timeout Error', 'UND_ERR_BODY_TIMEOUT', 'BodyTimeoutError')),
      );
    }
    stream.on('response', (headers) => {
      const status = Number(headers[HTTP2_HEADER_STATUS]);
      delete headers[HTTP2_HEADER_STATUS];
      if (!this.#settled) this.handler.onResponseStart?.(this, status, headers);
    });
    stream.on('data', (chunk: Buffer) => {
      if (!this.#settled) this.handler.onResponseData?.(this, chunk);
    });
    // Kept for 'end': trailers can arrive while body bytes still wait in a paused stream.
    stream.on('trailers', (trailers) => {
      this.#trailers = trailers;
    });
    stream.on('end', () => {
      if (this.#settled) return;
      // Node ends the readable side of a stream whose session died too: closed already, with a
      // code other than NO_ERROR, it is a cut, not the end of the answer.
      if (stream.closed && stream.rstCode !== NGHTTP2_NO_ERROR) {
        this.fail(coded(`stream reset before the answer ended (code ${stream.rstCode})`, 'ERR_HTTP2_STREAM_CANCEL'));
        return;
      }
      this.#settled = true;
      this.handler.onResponseEnd?.(this, this.#trailers);
    });
    stream.on('error', (err: Error) => this.fail(err));
    stream.on('close', () => {
      // Closed without an end or an error: reset with NO_ERROR before the answer was complete.
      if (!this.#settled) this.fail(coded(`stream closed before the answer ended (code ${stream.rstCode ?? 0})`, 'ERR_HTTP2_STREAM_CANCEL'));
    });
    if (body != null) sendBody(stream, body, (err) => this.abort(err));
    return stream;
  }
}

function sendBody(stream: ClientHttp2Stream, body: Buffer | Readable | string, failed: (err: Error) => void): void {
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    stream.end(body);
    return;
  }
  // pipe(), not pipeline(): a request body that fails must not take the stream's answer with it
  // before abort() has reported why.
  body.on('error', failed);
  stream.once('close', () => body.unpipe(stream));
  body.pipe(stream);
}

function requestHeaders(opts: DispatchOptions, authority: string): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {
    ':method': opts.method,
    ':path': opts.path,
    ':scheme': 'http',
    ':authority': authority,
  };
  const add = (name: string, value: string): void => {
    const lower = name.toLowerCase();
    if (lower === 'host') {
      out[':authority'] = value;
      return;
    }
    if (CONNECTION_SPECIFIC.has(lower) || (lower === 'te' && value !== 'trailers')) return;
    const prev = out[lower];
    out[lower] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  };
  const h = opts.headers;
  if (Array.isArray(h)) for (let i = 0; i + 1 < h.length; i += 2) add(String(h[i]), String(h[i + 1]));
  else if (h != null) {
    for (const [name, value] of Object.entries(h as Record<string, string | string[] | undefined>)) {
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) add(name, v);
    }
  }
  return out;
}

export class H2Pool extends Dispatcher {
  readonly #origin: string;
  readonly #authority: string;
  readonly #options: H2PoolOptions;
  readonly #connections: Connection[] = [];
  readonly #queue: Exchange[] = [];
  #closed = false;

  constructor(host: string, port: number, options: H2PoolOptions) {
    super();
    const hostPart = host.includes(':') ? `[${host}]` : host;
    this.#origin = `http://${hostPart}:${port}`;
    this.#authority = `${hostPart}:${port}`;
    this.#options = options;
  }

  override dispatch(opts: DispatchOptions, handler: Handler): boolean {
    const exchange = new Exchange(this, opts, handler);
    handler.onRequestStart?.(exchange, {});
    if (exchange.aborted) return true;
    if (this.#closed) {
      exchange.fail(coded('The client is destroyed', 'UND_ERR_DESTROYED', 'ClientDestroyedError'));
      return true;
    }
    this.#queue.push(exchange);
    this.#drain();
    return true;
  }

  /** A queued try given up before it got a stream. */
  unqueue(exchange: Exchange): void {
    const at = this.#queue.indexOf(exchange);
    if (at >= 0) this.#queue.splice(at, 1);
  }

  /** Streams in flight, and tries waiting for one. */
  get stats(): { readonly running: number; readonly pending: number } {
    let running = 0;
    for (const c of this.#connections) running += c.streams;
    return { running, pending: this.#queue.length };
  }

  #room(c: Connection): boolean {
    return c.connected && !c.closing && !c.session.destroyed && c.streams < c.maxStreams;
  }

  /** Starts queued tries on connections with room, opening one when all are full. */
  #drain(): void {
    while (this.#queue.length > 0) {
      const c = this.#connections.find((x) => this.#room(x));
      if (c === undefined) break;
      const exchange = this.#queue.shift() as Exchange;
      c.streams++;
      let stream: ClientHttp2Stream;
      try {
        stream = exchange.start(c.session, this.#authority);
      } catch (err) {
        c.streams--;
        exchange.fail(err as Error);
        continue;
      }
      stream.once('close', () => {
        c.streams--;
        this.#drain();
      });
    }
    if (this.#queue.length === 0) return;
    let opening = 0;
    for (const c of this.#connections) if (!c.connected) opening++;
    if (this.#queue.length > opening * this.#options.maxStreams && this.#connections.length < this.#options.connections) this.#connect();
  }

  #connect(): void {
    const session = http2.connect(this.#origin, { settings: { enablePush: false } });
    const c: Connection = { session, connected: false, closing: false, streams: 0, maxStreams: this.#options.maxStreams };
    this.#connections.push(c);
    const timer = setTimeout(() => {
      session.destroy(coded(`Connect Timeout Error (${this.#origin}, timeout: ${this.#options.connectMs} ms)`, 'UND_ERR_CONNECT_TIMEOUT', 'ConnectTimeoutError'));
    }, this.#options.connectMs);
    session.once('connect', () => {
      clearTimeout(timer);
      c.connected = true;
      this.#drain();
    });
    // The peer's SETTINGS may raise how many streams fit.
    session.on('remoteSettings', (settings: http2.Settings) => {
      c.maxStreams = Math.min(this.#options.maxStreams, settings.maxConcurrentStreams ?? Infinity);
      this.#drain();
    });
    session.on('goaway', () => {
      c.closing = true;
    });
    session.on('error', (err: Error) => {
      if (c.connected) return; // its streams report it themselves
      clearTimeout(timer);
      // The tries waiting for this connection fail as a connect failure, as undici's would: they
      // were never sent, so the retry layer may send them elsewhere. Keeping them queued would
      // have the session's close open the next connection at once, and the next, in a loop.
      for (const exchange of this.#queue.splice(0)) exchange.fail(err);
    });
    session.once('close', () => {
      clearTimeout(timer);
      const at = this.#connections.indexOf(c);
      if (at >= 0) this.#connections.splice(at, 1);
      if (!this.#closed) this.#drain();
    });
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#closed = true;
    const done = Promise.all(
      this.#connections.map((c) => new Promise<void>((resolve) => (c.session.closed ? resolve() : c.session.close(resolve)))),
    ).then(() => undefined);
    if (callback === undefined) return done;
    void done.then(callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    this.#closed = true;
    const err = typeof a === 'function' ? null : (a ?? null);
    const callback = typeof a === 'function' ? a : b;
    const gone = coded('The client is destroyed', 'UND_ERR_DESTROYED', 'ClientDestroyedError');
    for (const exchange of this.#queue.splice(0)) exchange.fail(err ?? gone);
    const done = Promise.all(
      this.#connections.map((c) => new Promise<void>((resolve) => {
        if (c.session.destroyed) return resolve();
        c.session.once('close', () => resolve());
        c.session.destroy();
      })),
    ).then(() => undefined);
    if (callback === undefined) return done;
    void done.then(callback);
  }
}
