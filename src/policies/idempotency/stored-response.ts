// A completed response as a duplicate gets it: what is kept of the original, what it costs in
// the store, and the response a replay hands back.
import type { BodySink, ProxyResponse, ResponseBody } from '../../stack/types.ts';
import { HOP_BY_HOP } from '../../proxy/headers.ts';

export type HeaderMap = Readonly<Record<string, string | readonly string[]>>;
export type Trailers = Readonly<Record<string, string | string[]>>;

export interface StoredResponse {
  readonly statusCode: number;
  /** End-to-end headers as the app sent them, minus those that describe one message (see below). */
  readonly headers: HeaderMap;
  /** null: the original had no body (HEAD, 204, 304), so none is sent. */
  readonly body: Buffer | null;
  readonly trailers: Trailers | null;
}

/** Marks a replay for the client (Stripe's Idempotent-Replayed, under sluice's own prefix). */
export const REPLAY_HEADER = 'sluice-idempotent-replay';

/**
 * Not kept: hop-by-hop fields (already stripped by the upstream client; dropped again in case
 * another layer made the response), `date` (a replay is a new message: Node stamps its own), and
 * `content-length` (recomputed from the stored body, so it can never disagree with it).
 * Everything else, Set-Cookie and Location included, is the outcome the key stands for.
 */
const NOT_KEPT: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'date', REPLAY_HEADER]);

/**
 * Whether an answer with this status is the outcome of the request. 5xx are not (the app failed;
 * a retry should run again), and neither are 408, 425 and 429: they say the request was not
 * processed and should be sent again later, so replaying them for the whole TTL would refuse the
 * very retry they ask for. Everything else, 4xx included, is replayed, as Stripe does.
 */
export function isStorableStatus(status: number): boolean {
  return status < 500 && status !== 408 && status !== 425 && status !== 429;
}

/**
 * A copy of the headers worth replaying, taken when the response arrives: layers outside this
 * one may add to the original's header object afterwards (grants, rate-limit fields), and those
 * belong to that exchange, not to the stored outcome.
 */
export function keptHeaders(headers: ProxyResponse['headers'], hasBody: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || NOT_KEPT.has(name)) continue;
    // A body-less answer (HEAD) keeps its Content-Length: it describes the body a GET would get.
    if (name === 'content-length' && hasBody) continue;
    out[name] = Array.isArray(value) ? [...(value as string[])] : value;
  }
  return out;
}

function fieldBytes(fields: HeaderMap | Trailers | null): number {
  if (fields === null) return 0;
  let n = 0;
  for (const name in fields) {
    const value = fields[name]!;
    if (typeof value === 'string') n += name.length + value.length;
    else for (const v of value) n += name.length + v.length;
  }
  return n;
}

/** What an entry costs against maxBytes: body, headers and trailers (names and values), in bytes. */
export function storedBytes(r: StoredResponse): number {
  return (r.body?.length ?? 0) + fieldBytes(r.headers) + fieldBytes(r.trailers);
}

/** The answer a duplicate gets: the stored one, marked as a replay, with its own header object. */
export function replayResponse(r: StoredResponse): ProxyResponse {
  const headers: Record<string, string | string[]> = {};
  for (const name in r.headers) {
    const value = r.headers[name]!;
    headers[name] = typeof value === 'string' ? value : [...value];
  }
  headers[REPLAY_HEADER] = 'true';
  if (r.body === null) return { statusCode: r.statusCode, headers, body: null };
  // Trailers need a chunked body, so a body with trailers is replayed as one that ends with them.
  if (r.trailers !== null) return { statusCode: r.statusCode, headers, body: new ReplayBody(r.body, r.trailers) };
  headers['content-length'] = String(r.body.length);
  return { statusCode: r.statusCode, headers, body: r.body };
}

/** A stored body with trailers, written whole in one end(). */
class ReplayBody implements ResponseBody {
  readonly #body: Buffer;
  readonly #trailers: Trailers;
  constructor(body: Buffer, trailers: Trailers) {
    this.#body = body;
    this.#trailers = trailers;
  }
  pipeTo(sink: BodySink): void {
    const trailers: Record<string, string | string[]> = {};
    for (const name in this.#trailers) {
      const v = this.#trailers[name]!;
      trailers[name] = typeof v === 'string' ? v : [...v];
    }
    sink.end(trailers, this.#body.length > 0 ? this.#body : undefined);
  }
  discard(): void {}
}
