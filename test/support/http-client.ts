// A small client over node:http for tests: one request, one fresh connection (no pooled sockets
// leaking between tests), the whole response collected, and body failures reported instead of
// thrown, because "the client saw a broken body" is itself something tests assert.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { ByteTally } from './pattern.ts';

export interface SendOptions {
  readonly port: number;
  readonly method?: string;
  /** Request target: origin-form ('/x') or absolute-form ('http://orders/x') for forward-proxying. */
  readonly path?: string;
  /** Host header; needed for origin-form through the outbound listener. */
  readonly host?: string;
  readonly headers?: Record<string, string | string[]>;
  readonly body?: string | Buffer | Readable;
  /** Give up (and destroy the request) after this long; default 5000 ms. */
  readonly timeoutMs?: number;
  /** Count and hash the body instead of keeping it (large downloads). */
  readonly tallyOnly?: boolean;
  /** Called with each body chunk as it arrives. */
  readonly onData?: (chunk: Buffer) => void;
  readonly signal?: AbortSignal;
}

export interface SendResult {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly trailers: Record<string, string | undefined>;
  /** The body (empty when tallyOnly). */
  readonly body: Buffer;
  readonly text: string;
  readonly bodyBytes: number;
  readonly bodyDigest: string;
  /** The body ended with an error (connection cut mid-body), or never completed. */
  readonly bodyError: string | undefined;
  /** ms from sending the request to the response head. */
  readonly headMs: number;
  /** ms from sending the request to the end (or failure) of the body. */
  readonly totalMs: number;
}

export class RequestFailed extends Error {
  readonly code: string | undefined;
  readonly elapsedMs: number;
  constructor(message: string, code: string | undefined, elapsedMs: number) {
    super(message);
    this.code = code;
    this.elapsedMs = elapsedMs;
  }
}

/** Send one request; resolves with the response (even a broken one), rejects if no head came. */
export function send(opts: SendOptions): Promise<SendResult> {
  const started = performance.now();
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise<SendResult>((resolve, reject) => {
    const headers: Record<string, string | string[]> = { ...opts.headers };
    if (opts.host !== undefined) headers['host'] = opts.host;
    const req = httpRequest({
      host: '127.0.0.1',
      port: opts.port,
      method: opts.method ?? 'GET',
      path: opts.path ?? '/',
      headers,
      agent: false,
      setHost: opts.host === undefined && !Object.keys(headers).some((k) => k.toLowerCase() === 'host'),
      signal: opts.signal,
    });
    let headMs = 0;
    let settled = false;
    const timer = setTimeout(() => {
      req.destroy(new Error(`test client timeout after ${timeoutMs} ms`));
    }, timeoutMs);
    const fail = (e: NodeJS.ErrnoException): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new RequestFailed(`request failed before a response: ${e.message}`, e.code, performance.now() - started));
    };
    req.on('error', fail);
    req.on('response', (res) => {
      headMs = performance.now() - started;
      settled = true;
      const parts: Buffer[] = [];
      const tally = new ByteTally();
      let bodyError: string | undefined;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        const body = Buffer.concat(parts);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          trailers: res.trailers,
          body,
          text: body.toString('utf8'),
          bodyBytes: tally.bytes,
          bodyDigest: tally.digest(),
          bodyError,
          headMs,
          totalMs: performance.now() - started,
        });
      };
      res.on('data', (c: Buffer) => {
        tally.add(c);
        if (!opts.tallyOnly) parts.push(c);
        opts.onData?.(c);
      });
      res.on('error', (e) => {
        bodyError ??= e.message || 'error';
        finish();
      });
      res.on('aborted', () => {
        bodyError ??= 'aborted';
      });
      res.on('end', finish);
      res.on('close', () => {
        if (!res.complete) bodyError ??= 'incomplete';
        finish();
      });
    });
    const body = opts.body;
    if (body === undefined) req.end();
    else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
    else {
      body.on('error', (e) => req.destroy(e));
      body.pipe(req);
    }
  });
}
