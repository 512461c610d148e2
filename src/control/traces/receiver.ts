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
import { decodeJson, decodeProtobuf, exportResponse, OtlpDecodeError } from './otlp.ts';
import { TraceStore, type TraceStoreLimits } from './store.ts';

/** An export's body as sent (compressed or not) and decoded. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const MAX_DECODED_BYTES = 16 * 1024 * 1024;
/** Exports read and decoded at once; more are answered 429 (an exporter retries after Retry-After). */
const MAX_EXPORTS_IN_FLIGHT = 8;
/** Exports waiting to be forwarded, in count and bytes; past either new ones are dropped (counted), never waited for. */
const FORWARD_QUEUE = 64;
const FORWARD_QUEUE_BYTES = 32 * 1024 * 1024;
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
  #queuedBytes = 0;
  #sending = 0;
  #inFlight = 0;
  #closed = false;

  constructor(o: TraceReceiverOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.store = new TraceStore(o.limits);
    const r = o.registry;
    this.#m = {
      received: counter(r, 'sluice_control_trace_spans_received_total', 'Spans received from sidecars over OTLP/HTTP, by encoding (protobuf, json).', ['encoding']),
      exports: counter(r, 'sluice_control_trace_exports_total', 'OTLP/HTTP exports received, by result: accepted, too_large (413), unsupported (415: content type or encoding), undecodable (400), busy (429), failed (500).', ['result']),
      dropped: counter(r, 'sluice_control_trace_spans_dropped_total', 'Spans of accepted exports not kept: trace_full (the per-trace cap), too_large (a span over the size cap).', ['why']),
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
    const refuse = (status: number, result: string, body: unknown, headers: Record<string, string> = {}): void => {
      this.#m.exports.labels({ result }).inc();
      // The body is not read: the connection closes after the answer instead of draining it.
      reply(res, status, body, { connection: 'close', ...headers });
    };
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    const json = type === 'application/json';
    if (!json && type !== 'application/x-protobuf') {
      return refuse(415, 'unsupported', { error: `content-type must be application/x-protobuf or application/json, got ${JSON.stringify(type)}` });
    }
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (encoding !== undefined && encoding !== 'gzip' && encoding !== 'identity') {
      return refuse(415, 'unsupported', { error: `content-encoding must be gzip or identity, got ${JSON.stringify(encoding)}` });
    }
    const tooLarge = { error: `an export is at most ${MAX_BODY_BYTES} bytes; send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)` };
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return refuse(413, 'too_large', tooLarge);
    if (this.#inFlight >= MAX_EXPORTS_IN_FLIGHT) return refuse(429, 'busy', { error: 'too many exports at once; retry' }, { 'retry-after': '1' });
    this.#inFlight++;
    // Counted until the answer is sent, or the sender goes away ('close' comes once, for either).
    res.once('close', () => this.#inFlight--);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (res.headersSent) return;
      size += c.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(c);
      chunks.length = 0;
      refuse(413, 'too_large', tooLarge);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      const body = Buffer.concat(chunks);
      void inflate(body, encoding === 'gzip').then(
        (raw) => this.#accept(res, raw, json, { body, contentType: type as string, contentEncoding: encoding }),
        (err: Error) =>
          err.message.includes('Cannot create a Buffer') || err.message.includes('maxOutputLength')
            ? refuse(413, 'too_large', { error: `gzip: inflates past ${MAX_DECODED_BYTES} bytes` })
            : refuse(400, 'undecodable', { error: `gzip: ${err.message}` }),
      );
    });
  }

  #accept(res: http.ServerResponse, raw: Buffer, json: boolean, original: Pending): void {
    try {
      const spans = json ? decodeJson(raw.toString('utf8')) : decodeProtobuf(raw);
      this.#m.received.labels({ encoding: json ? 'json' : 'protobuf' }).inc(spans.length);
      const { traceFull, tooLarge } = this.store.add(spans, this.#now());
      if (traceFull > 0) this.#m.dropped.labels({ why: 'trace_full' }).inc(traceFull);
      if (tooLarge > 0) this.#m.dropped.labels({ why: 'too_large' }).inc(tooLarge);
      this.#forward(original);
      const dropped = traceFull + tooLarge;
      const why = [traceFull > 0 ? 'a trace reached its span limit' : '', tooLarge > 0 ? 'a span was larger than the size limit' : ''].filter(Boolean).join('; ');
      const body = exportResponse(json, dropped, dropped > 0 ? `${why} at the config service` : '');
      this.#m.exports.labels({ result: 'accepted' }).inc();
      res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    } catch (err) {
      if (err instanceof OtlpDecodeError) {
        this.#m.exports.labels({ result: 'undecodable' }).inc();
        return reply(res, 400, { code: 3, message: `undecodable export: ${err.message}` });
      }
      // A defect here costs this export, never the service (it also pushes every policy).
      this.#m.exports.labels({ result: 'failed' }).inc();
      this.#o.log.error({ err: (err as Error).message }, 'trace export could not be taken');
      if (!res.headersSent) reply(res, 500, { error: 'the export could not be taken' });
    }
  }

  /** GET /v1/traces?errored=true&limit=N&service=S */
  handleList(res: http.ServerResponse, query: URLSearchParams): void {
    const limitText = query.get('limit') ?? '50';
    const limit = Number(limitText);
    if (!/^\d+$/.test(limitText) || limit < 1 || limit > 1000) return reply(res, 400, { error: `limit must be an integer from 1 to 1000, got ${JSON.stringify(limitText)}` });
    const errored = query.get('errored');
    const service = query.get('service') ?? undefined;
    this.store.expire(this.#now());
    reply(res, 200, { traces: this.store.list({ errored: errored === 'true' || errored === '1', limit, ...(service === undefined ? {} : { service }) }) });
  }

  /** GET /v1/traces/{traceId} */
  handleGet(res: http.ServerResponse, traceId: string): void {
    this.store.expire(this.#now());
    const t = /^[0-9a-f]{32}$/.test(traceId) ? this.store.get(traceId) : undefined;
    if (t === undefined) return reply(res, 404, { error: `no trace ${JSON.stringify(traceId.slice(0, 64))} here (kept: the last ${this.store.counts.recent} recent and ${this.store.counts.errored} failed traces)` });
    reply(res, 200, t);
  }

  #forward(p: Pending): void {
    const url = this.#o.forwardUrl;
    if (url === undefined || this.#closed) return;
    if (this.#queue.length >= FORWARD_QUEUE || this.#queuedBytes + p.body.length > FORWARD_QUEUE_BYTES) {
      this.#m.forwards.labels({ result: 'dropped' }).inc();
      return;
    }
    this.#queue.push(p);
    this.#queuedBytes += p.body.length;
    this.#pump(url);
  }

  #pump(url: string): void {
    while (this.#sending < FORWARD_CONCURRENCY && this.#queue.length > 0 && !this.#closed) {
      const p = this.#queue.shift() as Pending;
      this.#queuedBytes -= p.body.length;
      this.#sending++;
      const headers: Record<string, string> = { 'content-type': p.contentType };
      if (p.contentEncoding !== undefined) headers['content-encoding'] = p.contentEncoding;
      // In an async function: a URL undici refuses (it throws, not rejects) is a failed forward too.
      (async () => request(url, { method: 'POST', body: p.body, headers, headersTimeout: FORWARD_TIMEOUT_MS, bodyTimeout: FORWARD_TIMEOUT_MS, signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS) }))()
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
    this.#queuedBytes = 0;
  }
}

function inflate(body: Buffer, gzipped: boolean): Promise<Buffer> {
  if (!gzipped) return Promise.resolve(body);
  // Bounded: a small gzip bomb must not inflate into memory without limit.
  return new Promise((resolve, reject) => gunzip(body, { maxOutputLength: MAX_DECODED_BYTES }, (err, out) => (err ? reject(err) : resolve(out))));
}

function reply(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
