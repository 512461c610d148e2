// HTTP/2 cleartext (prior knowledge) for tests: a client that sends one request and reports
// everything about its answer, and an upstream whose behaviour is chosen per request (answer
// with trailers, reset the stream, die mid-body, hang), counting the sessions it accepted so a
// test can see connection reuse.
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { waiters } from './waiters.ts';

export interface H2Result {
  readonly status: number | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly trailers: IncomingHttpHeaders | undefined;
  /** RST_STREAM code when the stream was reset (0 for a clean end). */
  readonly rstCode: number | undefined;
  readonly error: Error | undefined;
}

export interface H2Request {
  readonly method?: string;
  readonly path?: string;
  readonly authority?: string;
  readonly headers?: Record<string, string>;
  readonly body?: Buffer | string;
}

/** One request on `session`; resolves when the stream closed, never rejects. */
export function h2Request(session: ClientHttp2Session, req: H2Request = {}): Promise<H2Result> {
  return new Promise((resolve) => {
    const method = req.method ?? 'GET';
    const headers = {
      ':method': method,
      // CONNECT names only an authority (RFC 9113 §8.5).
      ...(method === 'CONNECT' ? {} : { ':path': req.path ?? '/' }),
      ...(req.authority === undefined ? {} : { ':authority': req.authority }),
      ...req.headers,
    };
    const stream = session.request(headers, { endStream: req.body === undefined });
    let status: number | undefined;
    let resHeaders: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    let error: Error | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      resHeaders = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('error', (e: Error) => {
      error = e;
    });
    stream.on('close', () =>
      resolve({ status, headers: resHeaders, body: Buffer.concat(chunks), trailers, rstCode: stream.rstCode, error }),
    );
    if (req.body !== undefined) stream.end(req.body);
  });
}

/** Closes a client session; resolves at once when the peer already closed it. */
export function closeSession(session: ClientHttp2Session): Promise<void> {
  if (session.closed || session.destroyed) return Promise.resolve();
  return new Promise((resolve) => session.close(() => resolve()));
}

/** A client session to 127.0.0.1:port, closed by the test (or `open` cleanup). */
export function h2Connect(port: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

export interface H2Step {
  readonly status?: number;
  readonly body?: string;
  readonly headers?: Record<string, string>;
  readonly trailers?: Record<string, string>;
  /** Reset the stream with this code instead of answering. */
  readonly rst?: number;
  /** Send the headers and half the body, then destroy the whole session. */
  readonly die?: boolean;
  /** Never answer. */
  readonly hang?: boolean;
}

export interface RecordedH2Request {
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface H2Upstream {
  readonly port: number;
  readonly endpoint: string;
  readonly requests: readonly RecordedH2Request[];
  /** HTTP/2 sessions (connections) accepted so far. */
  readonly sessions: number;
  setScript(steps: readonly H2Step[]): void;
  waitUntil(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startH2Upstream(script: readonly H2Step[] = []): Promise<H2Upstream> {
  const server = http2.createServer();
  const requests: RecordedH2Request[] = [];
  const open = new Set<ServerHttp2Session>();
  const wait = waiters('h2 upstream', () => `${requests.length} requests`);
  let steps = script;
  let sessions = 0;
  server.on('session', (s: ServerHttp2Session) => {
    sessions++;
    open.add(s);
    s.on('error', () => undefined);
    s.once('close', () => open.delete(s));
    wait.poke();
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on('error', () => undefined);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const index = requests.length;
      requests.push({ headers, body: Buffer.concat(chunks) });
      wait.poke();
      const step = steps[index] ?? {};
      if (step.hang) return;
      if (step.rst !== undefined) {
        stream.close(step.rst);
        return;
      }
      const body = step.body ?? 'ok';
      const hasTrailers = step.trailers !== undefined;
      stream.respond({ ':status': step.status ?? 200, ...step.headers }, { waitForTrailers: hasTrailers });
      if (hasTrailers) stream.once('wantTrailers', () => stream.sendTrailers(step.trailers ?? {}));
      if (step.die) {
        stream.write(body.slice(0, Math.ceil(body.length / 2)), () => stream.session?.destroy());
        return;
      }
      stream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    endpoint: `127.0.0.1:${port}`,
    requests,
    get sessions() {
      return sessions;
    },
    setScript(next) {
      steps = next;
    },
    waitUntil: (check, what, timeoutMs) => wait.waitUntil(check, what, timeoutMs),
    async close() {
      wait.clear();
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
