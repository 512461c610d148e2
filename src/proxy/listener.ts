// A listener for HTTP/1.1 and cleartext HTTP/2 on one port: turns each request (an HTTP/2
// stream: ./h2-streams.ts) into a ProxyRequest, runs the route's stack, writes the answer. Which
// protocol a connection speaks is told by its first bytes: HTTP/2 with prior knowledge, as gRPC
// clients speak it, opens with the connection preface `PRI * HTTP/2.0`; anything else is HTTP/1.
// Malformed input never reaches the stack: Node's strict parser (llhttp) rejects bad request
// lines, conflicting Content-Length/Transfer-Encoding (smuggling) and oversized heads, and
// `clientError` below answers those with a 4xx that names sluice; nghttp2 does the same for
// HTTP/2 framing.
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2Session } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ListenerAddress, ServerLimits } from '../policy/types.ts';
import { SluiceError, toLocalReply, type LocalReplyCode } from '../stack/errors.ts';
import { isGrpcContentType } from '../stack/grpc.ts';
import { cancel, type BodySink, type Clock, type Direction, type ProxyResponse, type RequestContext } from '../stack/types.ts';
import {
  appendForwarded,
  forwardRequestHeaders,
  hasVia,
  isValidAuthority,
  newRequestHeaderFacts as newFacts,
  type RequestHeaderFacts,
} from './headers.ts';
import type { RouteTarget } from './router.ts';
import { h2StreamHandler } from './h2-streams.ts';
import { listen } from './listen.ts';
import { newRequestContext } from './request-context.ts';
import { openTunnel, refuseTunnel } from './tunnel.ts';

export interface ListenerDeps {
  readonly direction: Direction;
  readonly clock: Clock;
  readonly log: Logger;
  /** Current settings; read per request so a policy update applies to the next request. */
  settings(): { readonly limits: ServerLimits; readonly deadlineHeader: string; readonly idleMs: number | undefined };
  /** A route for the request, or a typed refusal (no-route, bad authority). */
  resolve(authority: string, method: string, path: string): RouteTarget | SluiceError;
  /** Counts a refusal made before any route's stack ran (no route, bad target, draining tunnel). */
  refused(code: LocalReplyCode): void;
}

export interface Listener {
  readonly address: AddressInfo;
  /** Requests and tunnels in progress. */
  inFlight(): number;
  /** Stops accepting; resolves when in-flight work is done or `graceMs` passed (then cuts). */
  drain(graceMs: number): Promise<void>;
  close(): Promise<void>;
}

const CLIENT_GONE = new SluiceError('client-closed');

/** Streams a client may open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
const H2_MAX_STREAMS = 1000;
/** The HTTP/2 client connection preface (RFC 9113 §3.4); its first 3 bytes tell it from any HTTP/1 method. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * Reads a connection's first bytes to tell HTTP/2 with prior knowledge from HTTP/1, then puts
 * them back for whichever parser takes the connection. A connection that sends nothing within
 * `timeoutMs` is closed ('none'), as an HTTP/1 one that sends no request head would be.
 */
function sniffProtocol(socket: Socket, timeoutMs: number, decided: (protocol: 'http1' | 'http2' | 'none') => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => finish('none'), timeoutMs);
  const finish = (protocol: 'http1' | 'http2' | 'none'): void => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('close', onClose);
    if (protocol === 'none') {
      socket.destroy();
      decided('none');
      return;
    }
    socket.pause();
    if (seen.length > 0) socket.unshift(seen);
    decided(protocol);
    if (protocol === 'http1') socket.resume();
  };
  const onClose = (): void => finish('none');
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, 3);
    if (seen.compare(PREFACE, 0, n, 0, n) !== 0) finish('http1');
    else if (seen.length >= 3) finish('http2');
    // else: 'P' or 'PR' could still be POST or PROPFIND; wait for more.
  };
  socket.on('data', onData);
  socket.on('close', onClose);
  socket.on('error', () => undefined);
}

class ResponseSink implements BodySink {
  readonly #res: ServerResponse;
  constructor(res: ServerResponse) {
    this.#res = res;
  }
  write(chunk: Buffer): boolean {
    return this.#res.write(chunk);
  }
  flush(): void {
    this.#res.flushHeaders();
  }
  onDrain(resume: () => void): void {
    this.#res.once('drain', resume);
  }
  end(trailers: Record<string, string | string[]> | null, last?: Buffer): void {
    if (trailers !== null) this.#res.addTrailers(trailers);
    this.#res.end(last);
  }
  fail(err: Error): void {
    // Headers are out: the only honest signal left is an incomplete message, so cut the socket.
    this.#res.destroy(err);
  }
}

/** The local reply for an error, written whole. */
function writeReply(res: ServerResponse, err: unknown, grpc = false): void {
  const reply = toLocalReply(err, grpc);
  res.writeHead(reply.statusCode, reply.headers);
  res.end(reply.body);
}

/** host:port of the socket's local end, bracketed for IPv6. */
function localAuthority(req: IncomingMessage): string {
  const host = req.socket.localAddress ?? '127.0.0.1';
  return `${host.includes(':') ? `[${host}]` : host}:${req.socket.localPort ?? 0}`;
}

/** Splits an absolute-form target (`http://host:port/path?q`) into authority and path. */
export function splitAbsolute(url: string): { authority: string; path: string } | undefined {
  if (!url.startsWith('http://')) return undefined;
  let end = 7;
  while (end < url.length && url[end] !== '/' && url[end] !== '?') end++;
  const authority = url.slice(7, end);
  const rest = url.slice(end);
  return { authority, path: rest === '' ? '/' : rest[0] === '?' ? `/${rest}` : rest };
}

export async function startListener(addr: ListenerAddress, deps: ListenerDeps): Promise<Listener> {
  const { clock, log, direction } = deps;
  const initial = deps.settings();
  let draining = false;
  let active = 0;
  const tunnels = new Set<Duplex>();
  // This listener's Via entry. Seeing it on an incoming request means the request came round
  // (e.g. a Host naming this sidecar by an address we cannot recognise): refuse, don't recurse.
  const via = `1.1 sluice-${randomBytes(6).toString('hex')}`;

  /** Refusals every request gets checked for before routing. */
  function precheck(authority: string, headers: string[], facts: RequestHeaderFacts): SluiceError | undefined {
    if (!isValidAuthority(authority)) return new SluiceError('bad-request', 'missing or malformed Host or request-target authority');
    if (hasVia(headers, facts, via)) return new SluiceError('loop-detected');
    return undefined;
  }
  let idleWaiter: (() => void) | undefined;

  const done = (): void => {
    active--;
    if (active === 0 && tunnels.size === 0) idleWaiter?.();
  };

  const server = http.createServer({
    maxHeaderSize: initial.limits.maxHeaderBytes,
    headersTimeout: initial.limits.headersTimeoutMs,
    // Node checks header/request timeouts on this interval (default 30 s, far too coarse).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(initial.limits.headersTimeoutMs / 4))),
    // Whole-request time is the deadline's job, per route; this is only Node's backstop.
    requestTimeout: 0,
    keepAliveTimeout: initial.limits.keepAliveTimeoutMs,
    requireHostHeader: true,
    joinDuplicateHeaders: false,
  });
  if (initial.idleMs !== undefined) server.timeout = initial.idleMs;

  /** Answers a request the stack never saw; counted like every other local reply. */
  function writeLocal(res: ServerResponse, err: SluiceError, facts?: RequestHeaderFacts): void {
    deps.refused(err.code);
    writeReply(res, err, isGrpcContentType(facts?.contentType));
  }

  function refuse(socket: Duplex, err: SluiceError): void {
    deps.refused(err.code);
    refuseTunnel(socket, err.status, err.message, err.code);
  }

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const startMs = clock.now();
    active++;
    const { deadlineHeader } = deps.settings();
    const facts = newFacts();
    const headers = forwardRequestHeaders(req.rawHeaders, deadlineHeader, facts);
    const method = req.method as string;
    let path = req.url as string;
    let authority = facts.host;
    if (path.charCodeAt(0) !== 47 /* '/' */) {
      const split = splitAbsolute(path);
      if (split === undefined) {
        res.once('close', done);
        writeLocal(res, new SluiceError('bad-request', 'request target must be origin-form or http:// absolute-form'), facts);
        return;
      }
      // RFC 9112 §3.2.2: a proxy replaces Host with the absolute-form target's authority.
      authority = split.authority;
      path = split.path;
    }
    // Node already refuses HTTP/1.1 without Host; an HTTP/1.0 client (a health checker, say)
    // reaching the inbound port names the address it connected to.
    authority = authority?.toLowerCase() ?? (direction === 'inbound' ? localAuthority(req) : '');
    const target = precheck(authority, headers, facts) ?? deps.resolve(authority, method, path);
    if (target instanceof SluiceError) {
      res.once('close', done);
      writeLocal(res, target, facts);
      return;
    }
    headers.push('host', authority);
    appendForwarded(headers, facts, req.socket.remoteAddress, authority, via);
    // 100 Continue goes out only when the stack starts reading the body, so a request refused
    // first (deadline passed, no route) never makes the client send its body. HTTP/1.0 clients
    // do not understand 1xx: their expectation is ignored (RFC 9110 §10.1.1).
    if (facts.expectContinue && req.httpVersionMinor >= 1) req.once('resume', () => res.writeContinue());
    if (draining) res.shouldKeepAlive = false;

    const hasBody = facts.chunked || (facts.contentLength !== undefined && facts.contentLength !== '0');
    const bodyLength = facts.contentLength === undefined ? undefined : Number(facts.contentLength);
    const ctx = newRequestContext(direction, target, startMs, facts, req.socket.remoteAddress, 'http1');
    res.once('close', () => {
      if (ctx.deadlineTimer !== undefined) clearTimeout(ctx.deadlineTimer);
      // Closed before the last byte went out: the client left, so whatever runs for it stops.
      if (!res.writableFinished) cancel(ctx, CLIENT_GONE);
      ctx.ended?.(res.writableFinished);
      done();
    });
    target
      .handler({ method, path, authority, headers, body: hasBody ? req : null, bodyLength }, ctx)
      .then((response) => respond(res, response, ctx), (err: unknown) => {
        // The telemetry layer turns errors into replies; reaching here is a bug, answered anyway.
        log.error({ err }, 'stack rejected instead of replying');
        if (res.headersSent) res.destroy();
        else writeReply(res, err, ctx.grpc);
      });
  }

  function respond(res: ServerResponse, response: ProxyResponse, ctx: RequestContext): void {
    const body = response.body;
    if (res.destroyed) {
      if (body !== null && !Buffer.isBuffer(body)) body.discard();
      return;
    }
    if (ctx.shadowRefusals !== undefined) res.setHeader('sluice-shadow', ctx.shadowRefusals.join(', '));
    res.writeHead(response.statusCode, response.headers as http.OutgoingHttpHeaders);
    if (body === null) res.end();
    else if (Buffer.isBuffer(body)) res.end(body);
    else body.pipeTo(new ResponseSink(res));
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const { deadlineHeader } = deps.settings();
    const facts = newFacts();
    const headers = forwardRequestHeaders(req.rawHeaders, deadlineHeader, facts);
    const authority = (facts.host ?? '').toLowerCase();
    const target =
      precheck(authority, headers, facts) ??
      (draining ? new SluiceError('draining') : deps.resolve(authority, req.method as string, req.url as string));
    if (target instanceof SluiceError) {
      refuse(socket, target);
      return;
    }
    const endpoint = target.endpoints[Math.floor(Math.random() * target.endpoints.length)];
    if (facts.upgrade === undefined) {
      refuse(socket, new SluiceError('bad-request', 'no Upgrade header for the tunnel'));
      return;
    }
    if (endpoint === undefined) {
      refuse(socket, new SluiceError('no-endpoints', target.upstream));
      return;
    }
    headers.push('host', authority, 'connection', 'upgrade', 'upgrade', facts.upgrade);
    appendForwarded(headers, facts, req.socket.remoteAddress, authority, via);
    let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) lines += `${headers[i]}: ${headers[i + 1]}\r\n`;
    openTunnel(
      socket,
      head,
      { endpoint, connectMs: target.connectMs, idleMs: target.idleMs },
      (upstream) => upstream.write(`${lines}\r\n`),
      trackTunnel,
    );
  }

  function onConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const authority = (req.url ?? '').toLowerCase();
    const target = !isValidAuthority(authority)
      ? new SluiceError('bad-request', 'CONNECT needs host:port')
      : draining
        ? new SluiceError('draining')
        : deps.resolve(authority, 'CONNECT', '/');
    if (target instanceof SluiceError) {
      refuse(socket, target);
      return;
    }
    const endpoint = target.endpoints[0];
    if (endpoint === undefined) {
      refuse(socket, new SluiceError('no-endpoints', target.upstream));
      return;
    }
    openTunnel(
      socket,
      head,
      { endpoint, connectMs: target.connectMs, idleMs: target.idleMs },
      () => socket.write('HTTP/1.1 200 Connection Established\r\n\r\n'),
      trackTunnel,
    );
  }

  function trackTunnel(sockets: Duplex[]): void {
    const client = sockets[0] as Duplex;
    tunnels.add(client);
    client.once('close', () => {
      tunnels.delete(client);
      if (active === 0 && tunnels.size === 0) idleWaiter?.();
    });
  }

  server.on('request', onRequest);
  // Handling checkContinue stops Node from answering 100 by itself before we decide.
  server.on('checkContinue', onRequest);
  server.on('upgrade', onUpgrade);
  server.on('connect', onConnect);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // A response still being written on this connection (pipelining) must not be overtaken by
    // a raw 400: cut the connection instead, as Node's own handler does.
    const inProgress = (socket as Duplex & { _httpMessage?: unknown })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || (inProgress !== undefined && inProgress !== null)) {
      socket.destroy();
      return;
    }
    const [status, reason] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT'
          ? [408, 'Request Timeout']
          : [400, 'Bad Request'];
    const detail = `${reason}: ${err.code ?? 'parse error'}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nsluice-error: bad-request\r\ncontent-type: text/plain; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(detail)}\r\nconnection: close\r\n\r\n${detail}`,
    );
  });

  // HTTP/2 on the same port: connections whose first bytes are the HTTP/2 preface go to an
  // HTTP/2 server that never listens itself; the rest to Node's HTTP/1 connection handling.
  const sessions = new Set<Http2Session>();
  const h2 = http2.createServer({
    settings: { maxHeaderListSize: initial.limits.maxHeaderBytes, maxConcurrentStreams: H2_MAX_STREAMS },
    maxHeaderListPairs: 256,
  });
  h2.on(
    'stream',
    h2StreamHandler({
      direction,
      clock,
      log,
      via,
      deadlineHeader: () => deps.settings().deadlineHeader,
      precheck,
      resolve: (authority, method, path) => (draining ? new SluiceError('draining') : deps.resolve(authority, method, path)),
      refused: deps.refused,
      started: () => {
        active++;
      },
      ended: done,
    }),
  );
  h2.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.on('error', () => undefined);
    session.once('close', () => sessions.delete(session));
    let open = 0;
    session.on('stream', (stream: Duplex) => {
      open++;
      stream.once('close', () => open--);
    });
    // A session with no streams, idle this long, closes like an idle keep-alive connection
    // (GOAWAY); a long-lived stream that is quiet keeps it open.
    session.setTimeout(initial.limits.keepAliveTimeoutMs, () => {
      if (open === 0) session.close();
    });
    if (draining) session.close();
  });
  const [h1Connection] = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const sniffing = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sniffing.add(socket);
    sniffProtocol(socket, initial.limits.headersTimeoutMs, (protocol) => {
      sniffing.delete(socket);
      if (protocol === 'http2') h2.emit('connection', socket);
      else if (protocol === 'http1') h1Connection?.call(server, socket);
    });
  });

  const address = await listen(server, addr);
  log.info({ direction, address: address.address, port: address.port }, 'listener up');

  return {
    address,
    inFlight: () => active + tunnels.size,
    async drain(graceMs: number): Promise<void> {
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // GOAWAY: no new streams, the ones in progress finish.
      for (const session of sessions) session.close();
      for (const socket of sniffing) socket.destroy();
      if (active > 0 || tunnels.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise<void>((resolve) => {
            idleWaiter = resolve;
          }),
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, graceMs);
          }),
        ]);
        clearTimeout(timer);
      }
      for (const socket of tunnels) socket.destroy();
      for (const session of sessions) session.destroy();
      for (const socket of sniffing) socket.destroy();
      server.closeAllConnections();
      await closed;
    },
    async close(): Promise<void> {
      draining = true;
      for (const socket of tunnels) socket.destroy();
      for (const session of sessions) session.destroy();
      for (const socket of sniffing) socket.destroy();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
