// Raw bytes on a TCP socket, for requests no well-behaved client library would send: malformed
// request lines, smuggling attempts, oversized or slowly sent heads, hand-driven Expect/Upgrade.
// Every wait is bounded; a timeout is reported in the result, never left hanging.
import { connect, type Socket } from 'node:net';

export interface ParsedResponse {
  readonly status: number;
  readonly reason: string;
  /** Lower-case names; repeated headers joined with ', '. */
  readonly headers: Record<string, string>;
  readonly rawHead: string;
  readonly body: Buffer;
  /** Bytes after this response (a pipelined next response, or upgraded-protocol bytes). */
  readonly rest: Buffer;
  /** The body was complete per its framing (Content-Length / chunked / close-delimited + closed). */
  readonly complete: boolean;
  readonly trailers: Record<string, string>;
}

/** Parse one HTTP/1.1 response at the front of `buf`; undefined if the head is not all there. */
export function parseResponse(buf: Buffer, opts: { closed?: boolean; head?: boolean } = {}): ParsedResponse | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const rawHead = buf.subarray(0, end).toString('latin1');
  const [statusLine = '', ...lines] = rawHead.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`);
  const status = Number(m[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const after = buf.subarray(end + 4);
  const noBody = opts.head || status === 204 || status === 304 || (status >= 100 && status < 200);
  if (noBody) return { status, reason: m[2] ?? '', headers, rawHead, body: Buffer.alloc(0), rest: after, complete: true, trailers: {} };
  if ((headers['transfer-encoding'] ?? '').toLowerCase().includes('chunked')) {
    const parts: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const lineEnd = after.indexOf('\r\n', pos);
      if (lineEnd < 0) break;
      const size = parseInt(after.subarray(pos, lineEnd).toString('latin1').split(';')[0]!, 16);
      if (Number.isNaN(size)) break;
      if (size === 0) {
        // Trailer section: header lines up to an empty line.
        const trailers: Record<string, string> = {};
        let tpos = lineEnd + 2;
        for (;;) {
          const tEnd = after.indexOf('\r\n', tpos);
          if (tEnd < 0) return { status, reason: m[2] ?? '', headers, rawHead, body: Buffer.concat(parts), rest: Buffer.alloc(0), complete: false, trailers };
          if (tEnd === tpos) {
            return { status, reason: m[2] ?? '', headers, rawHead, body: Buffer.concat(parts), rest: after.subarray(tEnd + 2), complete: true, trailers };
          }
          const line = after.subarray(tpos, tEnd).toString('latin1');
          const i = line.indexOf(':');
          trailers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
          tpos = tEnd + 2;
        }
      }
      if (after.length < lineEnd + 2 + size + 2) {
        parts.push(after.subarray(lineEnd + 2, Math.min(after.length, lineEnd + 2 + size)));
        break;
      }
      parts.push(after.subarray(lineEnd + 2, lineEnd + 2 + size));
      pos = lineEnd + 2 + size + 2;
    }
    return { status, reason: m[2] ?? '', headers, rawHead, body: Buffer.concat(parts), rest: Buffer.alloc(0), complete: false, trailers: {} };
  }
  if (headers['content-length'] !== undefined) {
    const len = Number(headers['content-length']);
    const body = after.subarray(0, len);
    return { status, reason: m[2] ?? '', headers, rawHead, body, rest: after.subarray(len), complete: body.length === len, trailers: {} };
  }
  return { status, reason: m[2] ?? '', headers, rawHead, body: after, rest: Buffer.alloc(0), complete: !!opts.closed, trailers: {} };
}

export interface RawResult {
  /** Every byte received. */
  readonly raw: Buffer;
  readonly text: string;
  /** The peer closed (or reset) the connection before our timeout. */
  readonly closed: boolean;
  readonly timedOut: boolean;
  /** A socket error (e.g. ECONNRESET, ECONNREFUSED), if one happened. */
  readonly error: string | undefined;
  /** The first response, if a full head arrived. */
  readonly response: ParsedResponse | undefined;
}

/** A piece of a request to send after waiting `delayMs` (for slowloris-style heads). */
export interface TimedPiece {
  readonly data: string | Buffer;
  readonly delayMs: number;
}

/**
 * Send `data` (or timed pieces) and collect everything until the server closes, or until the first
 * response is complete when `untilResponse`, or until `timeoutMs`. The socket is always destroyed.
 */
export async function rawRequest(
  port: number,
  data: string | Buffer | readonly TimedPiece[],
  opts: { timeoutMs?: number; untilResponse?: boolean; head?: boolean; host?: string } = {},
): Promise<RawResult> {
  const conn = await RawConnection.open(port, opts.host);
  try {
    if (typeof data === 'string' || Buffer.isBuffer(data)) conn.write(data);
    else void conn.writePieces(data);
    const timeoutMs = opts.timeoutMs ?? 3000;
    if (opts.untilResponse) {
      await conn.waitFor((buf, closed) => {
        const r = tryParse(buf, closed, opts.head);
        return (r !== undefined && r.complete) || closed;
      }, timeoutMs);
    } else {
      await conn.waitFor((_buf, closed) => closed, timeoutMs);
    }
    return conn.result(opts.head);
  } finally {
    conn.destroy();
  }
}

function tryParse(buf: Buffer, closed: boolean, head?: boolean): ParsedResponse | undefined {
  try {
    return parseResponse(buf, { closed, head });
  } catch {
    return undefined;
  }
}

/** A socket driven by hand: write, wait for bytes, inspect. */
export class RawConnection {
  private readonly socket: Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private isClosed = false;
  private timedOutFlag = false;
  private err: string | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly pending = new Set<NodeJS.Timeout>();

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.buffered += c.length;
      this.poke();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.err = e.code ?? e.message;
    });
    socket.on('close', () => {
      this.isClosed = true;
      this.poke();
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host });
      const onErr = (e: Error): void => reject(e);
      s.once('error', onErr);
      s.once('connect', () => {
        s.off('error', onErr);
        resolve(new RawConnection(s));
      });
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get error(): string | undefined {
    return this.err;
  }

  get bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  get received(): number {
    return this.buffered;
  }

  write(data: string | Buffer): boolean {
    if (this.isClosed || this.socket.destroyed) return false;
    return this.socket.write(data);
  }

  /** Write pieces with a delay before each; stops quietly if the server closes on us. */
  async writePieces(pieces: readonly TimedPiece[]): Promise<void> {
    for (const p of pieces) {
      if (p.delayMs > 0) await this.sleep(p.delayMs);
      if (this.isClosed || this.socket.destroyed) return;
      this.socket.write(p.data);
    }
  }

  /** Half-close: we are done sending. */
  end(): void {
    this.socket.end();
  }

  /** For closeAfterEach: same as destroy(). */
  close(): Promise<void> {
    this.destroy();
    return Promise.resolve();
  }

  destroy(): void {
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
    this.socket.destroy();
  }

  /** Resolve true once `check(bytes, closed)` holds; false on timeout (never rejects). */
  waitFor(check: (buf: Buffer, closed: boolean) => boolean, timeoutMs: number): Promise<boolean> {
    if (check(this.bytes, this.isClosed)) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        this.listeners.delete(run);
        this.timedOutFlag = true;
        resolve(false);
      }, timeoutMs);
      const run = (): void => {
        if (!check(this.bytes, this.isClosed)) return;
        this.listeners.delete(run);
        clearTimeout(t);
        resolve(true);
      };
      this.listeners.add(run);
    });
  }

  /** Wait until the received bytes contain `text` (latin1), or the connection closes. */
  waitForText(text: string, timeoutMs: number): Promise<boolean> {
    return this.waitFor((buf, closed) => buf.includes(text, 0, 'latin1') || closed, timeoutMs).then(() => this.bytes.includes(text, 0, 'latin1'));
  }

  /** Wait for the first complete response (or close); returns it parsed if a head arrived. */
  async waitForResponse(timeoutMs: number, head = false): Promise<ParsedResponse | undefined> {
    await this.waitFor((buf, closed) => {
      const r = tryParse(buf, closed, head);
      return (r !== undefined && r.complete) || closed;
    }, timeoutMs);
    return tryParse(this.bytes, this.isClosed, head);
  }

  waitForClose(timeoutMs: number): Promise<boolean> {
    return this.waitFor((_b, closed) => closed, timeoutMs);
  }

  /**
   * Wait for the final (non-1xx) response, skipping interim ones; `interim` lists the 1xx statuses
   * that came before it.
   */
  async waitForFinalResponse(timeoutMs: number): Promise<{ response: ParsedResponse | undefined; interim: number[] }> {
    const split = (buf: Buffer, closed: boolean): { response: ParsedResponse | undefined; interim: number[] } => {
      const interim: number[] = [];
      let rest = buf;
      for (;;) {
        const r = tryParse(rest, closed);
        if (r === undefined || r.status >= 200 || r.status < 100) return { response: r, interim };
        interim.push(r.status);
        rest = r.rest;
      }
    };
    await this.waitFor((buf, closed) => {
      const { response } = split(buf, closed);
      return (response !== undefined && response.complete) || closed;
    }, timeoutMs);
    return split(this.bytes, this.isClosed);
  }

  /** Drop what has been received so far (e.g. after a 100 Continue). */
  consume(n: number): void {
    const b = this.bytes;
    this.chunks = [b.subarray(n)];
  }

  result(head?: boolean): RawResult {
    const raw = this.bytes;
    return {
      raw,
      text: raw.toString('latin1'),
      closed: this.isClosed,
      timedOut: this.timedOutFlag,
      error: this.err,
      response: tryParse(raw, this.isClosed, head),
    };
  }

  private poke(): void {
    for (const l of [...this.listeners]) l();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.pending.delete(t);
        resolve();
      }, ms);
      this.pending.add(t);
    });
  }
}
