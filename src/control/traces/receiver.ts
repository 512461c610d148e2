// OTLP/HTTP trace receiver of the config service (POST /v1/traces), the read API the status page
// uses (GET /v1/traces, GET /v1/traces/{id}), and the forwarder to a real collector. Sidecars
// export here so an operator sees failed traces without running a tracing backend; with
// --traces-forward every export also goes on, unchanged, to one.
import type http from 'node:http';
import { gunzip } from 'node:zlib';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { request } from 'undici';
import { counter, gauge } from '../../telemetry/registry.ts';
import { decodeJson, decodeProtobuf, exportResponse, OtlpDecodeError, type ReceivedSpan } from './otlp.ts';
import { TraceStore, type TraceStoreLimits } from './store.ts';

/** An export's body as sent (compressed or not) and decoded. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const MAX_DECODED_BYTES = 16 * 1024 * 1024;
/** Exports waiting to be forwarded; past it new ones are dropped (counted), never waited for. */
const FORWARD_QUEUE = 64;
const FORWARD_CONCURRENCY = 2;
const FORWARD_TIMEOUT_MS = 5000;

export interface TraceReceiverOptions {
  readonly registry: Registry;
  readonly log: Logger;
  readonly limits?: TraceStoreLimits;
  /** A collector's OTLP/HTTP traces URL; undefined: keep only. */
  readonly forwardUrl?: string | undefined;
  readonly now?: () => number;
}

interface Pending {
  readonly body: Buffer;
  readonly contentType: string;
  readonly contentEncoding: string | undefined;
}

export class TraceReceiver {
  readonly store: TraceStore;
  readonly #o: TraceReceiverOptions;
  readonly #now: () => number;
  readonly #m;
  readonly #queue: Pending[] = [];
  #sending = 0;
  #closed = false;

  constructor(o: TraceReceiverOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.store = new TraceStore(o.limits);
    const r = o.registry;
    this.#m = {
      received: counter(r, 'sluice_control_trace_spans_received_total', 'Spans received from sidecars over OTLP/HTTP, by encoding (protobuf, json).', ['encoding']),
      dropped: counter(r, 'sluice_control_trace_spans_dropped_total', 'Spans received and not kept: trace_full (the per-trace cap), undecodable (the export was refused).', ['why']),
      stored: gauge(r, 'sluice_control_traces_stored', 'Traces kept in memory now: recent, and errored (kept apart).', ['kind']),
      forwards: counter(r, 'sluice_control_trace_forwards_total', 'Exports forwarded to the collector: sent, failed (error or non-2xx), dropped (queue full).', ['result']),
    };
    (this.#m.stored as unknown as { collect?: () => void }).collect = () => {
      const c = this.store.counts;
      this.#m.stored.set({ kind: 'recent' }, c.recent);
      this.#m.stored.set({ kind: 'errored' }, c.errored);
    };
  }

  /** POST /v1/traces. */
  handleExport(req: http.IncomingMessage, res: http.ServerResponse): void {
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    const json = type === 'application/json';
    if (!json && type !== 'application/x-protobuf') {
      req.resume();
      return reply(res, 415, { error: `content-type must be application/x-protobuf or application/json, got ${JSON.stringify(type)}` });
    }
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (encoding !== undefined && encoding !== 'gzip' && encoding !== 'identity') {
      req.resume();
      return reply(res, 415, { error: `content-encoding must be gzip or identity, got ${JSON.stringify(encoding)}` });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooBig = true;
      else chunks.push(c);
    });
    req.on('end', () => {
      if (tooBig) return reply(res, 413, { error: `an export is at most ${MAX_BODY_BYTES} bytes; send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)` });
      const body = Buffer.concat(chunks);
      void inflate(body, encoding === 'gzip').then(
        (raw) => this.#accept(res, raw, json, { body, contentType: type as string, contentEncoding: encoding }),
        (err: Error) => reply(res, err.message.includes('Cannot create a Buffer') || err.message.includes('maxOutputLength') ? 413 : 400, { error: `gzip: ${err.message}` }),
      );
    });
  }

  #accept(res: http.ServerResponse, raw: Buffer, json: boolean, original: Pending): void {
    let spans: ReceivedSpan[];
    try {
      spans = json ? decodeJson(raw.toString('utf8')) : decodeProtobuf(raw);
    } catch (err) {
      if (!(err instanceof OtlpDecodeError)) throw err;
      this.#m.dropped.labels({ why: 'undecodable' }).inc();
      return reply(res, 400, { code: 3, message: `undecodable export: ${err.message}` });
    }
    this.#m.received.labels({ encoding: json ? 'json' : 'protobuf' }).inc(spans.length);
    const { dropped } = this.store.add(spans, this.#now());
    if (dropped > 0) this.#m.dropped.labels({ why: 'trace_full' }).inc(dropped);
    this.#forward(original);
    const body = exportResponse(json, dropped, dropped > 0 ? 'a trace reached its span limit at the config service' : '');
    res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** GET /v1/traces?errored=true&limit=N&service=S */
  handleList(res: http.ServerResponse, query: URLSearchParams): void {
    const limitText = query.get('limit') ?? '50';
    const limit = Number(limitText);
    if (!/^\d+$/.test(limitText) || limit < 1 || limit > 1000) return reply(res, 400, { error: `limit must be an integer from 1 to 1000, got ${JSON.stringify(limitText)}` });
    const errored = query.get('errored');
    const service = query.get('service') ?? undefined;
    reply(res, 200, { traces: this.store.list({ errored: errored === 'true' || errored === '1', limit, ...(service === undefined ? {} : { service }) }) });
  }

  /** GET /v1/traces/{traceId} */
  handleGet(res: http.ServerResponse, traceId: string): void {
    const t = /^[0-9a-f]{32}$/.test(traceId) ? this.store.get(traceId) : undefined;
    if (t === undefined) return reply(res, 404, { error: `no trace ${JSON.stringify(traceId.slice(0, 64))} here (kept: the last ${this.store.counts.recent} recent and ${this.store.counts.errored} failed traces)` });
    reply(res, 200, t);
  }

  #forward(p: Pending): void {
    const url = this.#o.forwardUrl;
    if (url === undefined || this.#closed) return;
    if (this.#queue.length >= FORWARD_QUEUE) {
      this.#m.forwards.labels({ result: 'dropped' }).inc();
      return;
    }
    this.#queue.push(p);
    this.#pump(url);
  }

  #pump(url: string): void {
    while (this.#sending < FORWARD_CONCURRENCY && this.#queue.length > 0 && !this.#closed) {
      const p = this.#queue.shift() as Pending;
      this.#sending++;
      const headers: Record<string, string> = { 'content-type': p.contentType };
      if (p.contentEncoding !== undefined) headers['content-encoding'] = p.contentEncoding;
      request(url, { method: 'POST', body: p.body, headers, headersTimeout: FORWARD_TIMEOUT_MS, bodyTimeout: FORWARD_TIMEOUT_MS, signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS) })
        .then(async (r) => {
          await r.body.dump();
          this.#m.forwards.labels({ result: r.statusCode < 300 ? 'sent' : 'failed' }).inc();
          if (r.statusCode >= 300) this.#o.log.warn({ url, status: r.statusCode }, 'trace forward refused by the collector');
        })
        .catch((err: unknown) => {
          this.#m.forwards.labels({ result: 'failed' }).inc();
          this.#o.log.warn({ url, err: (err as Error).message }, 'trace forward failed');
        })
        .finally(() => {
          this.#sending--;
          this.#pump(url);
        });
    }
  }

  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
  }
}

function inflate(body: Buffer, gzipped: boolean): Promise<Buffer> {
  if (!gzipped) return Promise.resolve(body);
  // Bounded: a small gzip bomb must not inflate into memory without limit.
  return new Promise((resolve, reject) => gunzip(body, { maxOutputLength: MAX_DECODED_BYTES }, (err, out) => (err ? reject(err) : resolve(out))));
}

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
