// An HTTP/1.1 upstream whose behaviour is chosen per request, so one test can say "fail twice,
// then answer" or "hang on the third request" without timing luck. It records every request it
// sees (and whether the request was closed under it), and `close()` tears down everything it
// opened, including hung exchanges, so no test leaks a socket or a timer.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ByteTally, patternChunk } from './pattern.ts';
import type { RecordedRequest, ReplyStep, Script, Step } from './steps.ts';
import { listenLocal } from './raw-upstream.ts';
import { waiters } from './waiters.ts';

export type * from './steps.ts';

export interface ScriptedUpstreamOptions {
  /** Body bytes kept per request for assertions (the rest is only counted and hashed). */
  readonly captureBytes?: number;
  /**
   * Decided when a request head arrives: true = never read its body and never answer (a stuck
   * consumer, for backpressure tests). The request is recorded but never complete.
   */
  readonly stallBody?: (req: RecordedRequest) => boolean;
  /** Listen address (default 127.0.0.1) and port (default: any free one). */
  readonly host?: string;
  readonly port?: number;
}

export interface ScriptedUpstream {
  readonly port: number;
  /** "127.0.0.1:<port>", as a policy endpoint. */
  readonly endpoint: string;
  readonly url: string;
  readonly requests: readonly RecordedRequest[];
  readonly count: number;
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Replace the script; the queue position starts over. */
  setScript(script: Script): void;
  /** Resolves with the n-th request (1-based) once its body has been read. */
  waitForRequest(n: number, timeoutMs?: number): Promise<RecordedRequest>;
  /** Resolves with the n-th request (1-based) as soon as its head arrived, body or not. */
  waitForHead(n: number, timeoutMs?: number): Promise<RecordedRequest>;
  /** Resolves once `check` holds; re-checked whenever a request arrives, ends or closes. */
  waitUntil(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** True once 'die' ran or close() was called. */
  readonly closed: boolean;
  close(): Promise<void>;
}

const DEFAULT_STEP: ReplyStep = { status: 200, body: 'ok' };

export async function startScriptedUpstream(script: Script = [], options: ScriptedUpstreamOptions = {}): Promise<ScriptedUpstream> {
  const captureBytes = options.captureBytes ?? 1024 * 1024;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const requests: RecordedRequest[] = [];
  const wait = waiters('scripted upstream', () => `${requests.length} requests`);
  const complete = new Set<number>();
  let current: Script = script;
  let queuePos = 0;
  let connections = 0;
  let closed = false;
  let closing: Promise<void> | undefined;

  const server: Server = createServer({ keepAliveTimeout: 5000 });

  function later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  function pickStep(rec: RecordedRequest): Step {
    if (typeof current === 'function') return current(rec, rec.n);
    const { queue, otherwise } = Array.isArray(current)
      ? { queue: current as readonly Step[], otherwise: DEFAULT_STEP }
      : (current as { queue: readonly Step[]; otherwise: Step });
    const step = queue[queuePos];
    if (step !== undefined) {
      queuePos++;
      return step;
    }
    return otherwise;
  }

  function record(req: IncomingMessage, upgraded: boolean, ended: Promise<'complete' | 'closed'>): RecordedRequest {
    const rec: RecordedRequest = {
      n: requests.length + 1,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      httpVersion: req.httpVersion,
      arrivedAt: performance.now(),
      bodyLength: 0,
      bodyDigest: '',
      sentBytes: 0,
      body: Buffer.alloc(0),
      trailers: {},
      upgraded,
      ended,
    };
    requests.push(rec);
    void ended.then(poke);
    queueMicrotask(poke);
    return rec;
  }

  // Every event that could satisfy a waiter re-runs all waiters' checks: few waiters, few events.
  const poke = wait.poke;
  const waitUntil = wait.waitUntil;

  server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    let settle: (v: 'complete' | 'closed') => void = () => {};
    const ended = new Promise<'complete' | 'closed'>((resolve) => (settle = resolve));
    res.on('close', () => settle(res.writableFinished ? 'complete' : 'closed'));
    const rec = record(req, false, ended);
    if (options.stallBody?.(rec)) {
      req.pause();
      return;
    }
    const tally = new ByteTally();
    const kept: Buffer[] = [];
    let keptBytes = 0;
    req.on('data', (chunk: Buffer) => {
      tally.add(chunk);
      if (keptBytes < captureBytes) {
        const part = chunk.subarray(0, captureBytes - keptBytes);
        kept.push(Buffer.from(part));
        keptBytes += part.length;
      }
    });
    req.on('error', () => {});
    req.on('end', () => {
      rec.bodyLength = tally.bytes;
      rec.bodyDigest = tally.digest();
      rec.body = Buffer.concat(kept);
      rec.trailers = { ...(req.trailers as Record<string, string>) };
      complete.add(rec.n);
      poke();
      if (closed) return;
      run(pickStep(rec), rec, req, res);
    });
  });

  // WebSocket-style upgrade: answer 101 and echo every byte back until either side closes.
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const ended = new Promise<'complete' | 'closed'>((resolve) => socket.on('close', () => resolve('closed')));
    const rec = record(req, true, ended);
    rec.bodyDigest = new ByteTally().digest();
    complete.add(rec.n);
    socket.on('error', () => {});
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade ?? 'websocket'}\r\nConnection: Upgrade\r\n\r\n`);
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });

  function run(step: Step, rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    if (step === 'hang') return;
    if (step === 'reset') {
      req.socket.resetAndDestroy(); // a real TCP RST, not a polite FIN
      return;
    }
    if (step === 'die') {
      void shutdown();
      return;
    }
    if ('delayMs' in step) {
      later(step.delayMs, () => {
        if (!closed && !res.destroyed) run(step.then, rec, req, res);
      });
      return;
    }
    if ('after' in step) {
      const go = (): void => {
        if (!closed && !res.destroyed) run(step.then, rec, req, res);
      };
      step.after.then(go, go);
      return;
    }
    if ('resetMidBody' in step) {
      const declared = step.declaredBytes ?? Math.max(step.resetMidBody * 2, step.resetMidBody + 1);
      res.writeHead(step.status ?? 200, { 'content-length': String(declared), 'content-type': 'application/octet-stream' });
      // A close (FIN), not an RST: an RST can make the peer drop bytes it has not read yet, and
      // then the break would look like a reset *before* the response, which is another test.
      res.write(Buffer.alloc(step.resetMidBody, 0x61), () => {
        req.socket.destroy();
      });
      return;
    }
    if ('trickle' in step) {
      const t = step.trickle;
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...step.headers };
      if (!t.chunked) headers['content-length'] = String(t.chunks * t.chunkBytes);
      res.writeHead(step.status ?? 200, headers);
      res.flushHeaders();
      let sent = 0;
      const tick = (): void => {
        if (closed || res.destroyed) return;
        res.write(Buffer.alloc(t.chunkBytes, 0x62));
        sent++;
        if (sent >= t.chunks) res.end();
        else later(t.intervalMs, tick);
      };
      later(t.intervalMs, tick);
      return;
    }
    if ('echo' in step) {
      if (step.format === 'raw') {
        res.writeHead(step.status ?? 200, {
          'content-type': rec.headers['content-type'] ?? 'application/octet-stream',
          'content-length': String(rec.body.length),
        });
        res.end(rec.body);
        return;
      }
      const body = JSON.stringify({
        method: rec.method,
        url: rec.url,
        headers: rec.headers,
        rawHeaders: rec.rawHeaders,
        body: rec.body.toString('utf8'),
        bodyLength: rec.bodyLength,
        trailers: rec.trailers,
      });
      res.writeHead(step.status ?? 200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
      return;
    }
    if ('stream' in step) {
      const { totalBytes, chunkBytes = 64 * 1024, chunked = false } = step.stream;
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (!chunked) headers['content-length'] = String(totalBytes);
      res.writeHead(step.status ?? 200, headers);
      let sent = 0;
      const pump = (): void => {
        while (sent < totalBytes && !res.destroyed) {
          const n = Math.min(chunkBytes, totalBytes - sent);
          const ok = res.write(patternChunk(sent, n));
          sent += n;
          rec.sentBytes = sent;
          if (!ok) {
            res.once('drain', pump);
            return;
          }
        }
        if (!res.destroyed) res.end();
      };
      pump();
      return;
    }
    // A plain reply.
    const headers: Record<string, string | string[]> = { ...step.headers };
    const body = step.body === undefined ? Buffer.alloc(0) : Buffer.from(step.body);
    if (step.trailers) {
      headers['trailer'] = Object.keys(step.trailers).join(', ');
      res.writeHead(step.status, headers);
      // Two writes so the body is really chunked, not coalesced into a Content-Length reply.
      if (body.length > 0) res.write(body);
      res.addTrailers(step.trailers);
      res.end();
      return;
    }
    const lower = Object.keys(headers).map((k) => k.toLowerCase());
    if (!lower.includes('content-length') && !lower.includes('transfer-encoding') && rec.method !== 'HEAD') {
      headers['content-length'] = String(body.length);
    }
    res.writeHead(step.status, headers);
    res.end(rec.method === 'HEAD' ? undefined : body);
  }

  function shutdown(): Promise<void> {
    if (closing) return closing;
    closed = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    closing = new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
    });
    return closing;
  }

  const host = options.host ?? '127.0.0.1';
  const port = await listenLocal(server, host, options.port ?? 0);

  return {
    port,
    endpoint: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    get count() {
      return requests.length;
    },
    get connections() {
      return connections;
    },
    get closed() {
      return closed;
    },
    setScript(s: Script) {
      current = s;
      queuePos = 0;
    },
    async waitForRequest(n: number, timeoutMs = 5000) {
      await waitUntil(() => complete.has(n), `request #${n} with its body`, timeoutMs);
      return requests[n - 1]!;
    },
    async waitForHead(n: number, timeoutMs = 5000) {
      await waitUntil(() => requests.length >= n, `request #${n}`, timeoutMs);
      return requests[n - 1]!;
    },
    waitUntil,
    close: shutdown,
  };
}
