// The config service's memory of traces: the most recent ones, and apart from them the most
// recent failed ones, so a burst of healthy traffic cannot push the failure someone is looking
// for out. Bounded by construction in traces, spans per trace, spans in all and age; it is a
// window for the status page, not a trace database (forward to a collector for that). Bounded in
// bytes too (a span's size as JSON, the API's own form), since spans are not all alike. Pure:
// time comes in as an argument.
import type { ReceivedSpan } from './otlp.ts';

export interface TraceStoreLimits {
  /** Traces without an error kept, newest by last update. */
  readonly maxTraces: number;
  /** Failed traces kept, apart from the others. */
  readonly maxErrored: number;
  /** Spans kept per trace; more are dropped (counted). */
  readonly maxSpansPerTrace: number;
  /** Spans kept in all; past it the oldest traces go, healthy ones first. */
  readonly maxSpans: number;
  /** A trace not updated for this long goes. */
  readonly maxAgeMs: number;
  /** Span data kept in all, as JSON bytes; past it the oldest traces go, as for maxSpans. */
  readonly maxBytes: number;
  /** A span larger than this as JSON is not kept (counted). */
  readonly maxSpanBytes: number;
}

export const DEFAULT_TRACE_LIMITS: TraceStoreLimits = Object.freeze({
  maxTraces: 500,
  maxErrored: 100,
  maxSpansPerTrace: 1000,
  maxSpans: 100_000,
  maxAgeMs: 3_600_000,
  maxBytes: 64 * 1024 * 1024,
  maxSpanBytes: 256 * 1024,
});

export interface TraceSummary {
  readonly traceId: string;
  readonly rootName: string;
  readonly rootService: string;
  readonly services: readonly string[];
  readonly startTime: string;
  readonly durationMs: number;
  readonly spanCount: number;
  readonly errored: boolean;
  /** The first failure's status message or error.type, when errored. */
  readonly error: string | null;
  /** The sidecars (service.instance.id) its spans came from. */
  readonly sidecars: readonly string[];
}

export interface SpanView extends ReceivedSpan {
  readonly startTime: string;
  readonly durationMs: number;
}

interface StoredTrace {
  readonly traceId: string;
  readonly spans: ReceivedSpan[];
  readonly spanIds: Set<string>;
  bytes: number;
  error: string | null;
  updatedMs: number;
  /** Update order, for newest-first lists (times can tie). */
  seq: number;
}

export interface AddResult {
  readonly accepted: number;
  /** Spans not kept because their trace had maxSpansPerTrace already. */
  readonly traceFull: number;
  /** Spans not kept because each was larger than maxSpanBytes. */
  readonly tooLarge: number;
}

const isoOfNanos = (n: bigint): string => new Date(Number(n / 1_000_000n)).toISOString();

/** Why a span marks its trace as failed, or null: an ERROR status, or a 5xx it served. */
function failureOf(s: ReceivedSpan): string | null {
  const status = s.attributes['http.response.status_code'];
  if (s.status.code !== 'ERROR' && !(s.kind === 'SERVER' && typeof status === 'number' && status >= 500)) return null;
  if (s.status.message !== '') return s.status.message;
  const type = s.attributes['error.type'];
  return typeof type === 'string' ? type : `${s.name} failed`;
}

export class TraceStore {
  readonly #limits: TraceStoreLimits;
  /** Map order is last-update order: the first entry is the stalest. */
  readonly #healthy = new Map<string, StoredTrace>();
  readonly #failed = new Map<string, StoredTrace>();
  #spans = 0;
  #bytes = 0;
  #seq = 0;

  constructor(limits: TraceStoreLimits = DEFAULT_TRACE_LIMITS) {
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`trace store ${k} must be an integer >= 1, got ${v}`);
    }
    this.#limits = limits;
  }

  get counts(): { readonly recent: number; readonly errored: number; readonly spans: number; readonly bytes: number } {
    return { recent: this.#healthy.size, errored: this.#failed.size, spans: this.#spans, bytes: this.#bytes };
  }

  add(spans: readonly ReceivedSpan[], nowMs: number): AddResult {
    let accepted = 0;
    let traceFull = 0;
    let tooLarge = 0;
    const touched = new Set<string>();
    for (const span of spans) {
      const id = span.traceId;
      let t = this.#failed.get(id) ?? this.#healthy.get(id);
      if (t === undefined) t = { traceId: id, spans: [], spanIds: new Set(), bytes: 0, error: null, updatedMs: nowMs, seq: 0 };
      // An exporter retries a batch it got no answer for: a span it sent twice is kept once.
      if (t.spanIds.has(span.spanId)) continue;
      if (t.spans.length >= this.#limits.maxSpansPerTrace) {
        traceFull++;
        continue;
      }
      const bytes = Buffer.byteLength(JSON.stringify(span));
      if (bytes > this.#limits.maxSpanBytes) {
        tooLarge++;
        continue;
      }
      t.spans.push(span);
      t.spanIds.add(span.spanId);
      t.bytes += bytes;
      this.#bytes += bytes;
      this.#spans++;
      accepted++;
      t.error ??= failureOf(span);
      t.updatedMs = nowMs;
      t.seq = ++this.#seq;
      touched.add(id);
      // Re-inserted at the end: the newest by update, in the map its state says.
      this.#healthy.delete(id);
      this.#failed.delete(id);
      (t.error === null ? this.#healthy : this.#failed).set(id, t);
    }
    this.#evict(nowMs, touched);
    return { accepted, traceFull, tooLarge };
  }

  /** Forgets traces not updated within maxAgeMs; add() does it too, a reader calls it before reading. */
  expire(nowMs: number): void {
    for (const map of [this.#healthy, this.#failed]) {
      for (const t of map.values()) {
        if (nowMs - t.updatedMs <= this.#limits.maxAgeMs) break;
        this.#drop(map, t);
      }
    }
  }

  #drop(map: Map<string, StoredTrace>, t: StoredTrace): void {
    map.delete(t.traceId);
    this.#spans -= t.spans.length;
    this.#bytes -= t.bytes;
  }

  #evict(nowMs: number, touched: ReadonlySet<string>): void {
    const l = this.#limits;
    this.expire(nowMs);
    while (this.#healthy.size > l.maxTraces) this.#drop(this.#healthy, this.#healthy.values().next().value as StoredTrace);
    while (this.#failed.size > l.maxErrored) this.#drop(this.#failed, this.#failed.values().next().value as StoredTrace);
    // Over the span or byte budget: the stalest healthy trace goes, then the stalest failed one;
    // what this export just added goes last.
    while (this.#spans > l.maxSpans || this.#bytes > l.maxBytes) {
      const victim = stalest(this.#healthy, touched) ?? stalest(this.#failed, touched) ?? stalest(this.#healthy) ?? stalest(this.#failed);
      if (victim === undefined) break;
      this.#drop(this.#failed.has(victim.traceId) ? this.#failed : this.#healthy, victim);
    }
  }

  /** Newest first; `errored` keeps the failed ones only, `service` those with a span of it. */
  list(opts: { readonly errored?: boolean; readonly service?: string; readonly limit: number }): TraceSummary[] {
    const pool = opts.errored === true ? [...this.#failed.values()] : [...this.#healthy.values(), ...this.#failed.values()];
    pool.sort((a, b) => b.seq - a.seq);
    const out: TraceSummary[] = [];
    for (const t of pool) {
      if (out.length >= opts.limit) break;
      if (opts.service !== undefined && !t.spans.some((s) => s.service === opts.service)) continue;
      out.push(summary(t));
    }
    return out;
  }

  get(traceId: string): { readonly traceId: string; readonly spans: readonly SpanView[] } | undefined {
    const t = this.#failed.get(traceId) ?? this.#healthy.get(traceId);
    if (t === undefined) return undefined;
    return {
      traceId,
      spans: byStart(t.spans).map((s) => {
        const start = BigInt(s.startTimeUnixNano);
        return { ...s, startTime: isoOfNanos(start), durationMs: Number(BigInt(s.endTimeUnixNano) - start) / 1e6 };
      }),
    };
  }
}

function stalest(map: ReadonlyMap<string, StoredTrace>, except?: ReadonlySet<string>): StoredTrace | undefined {
  for (const t of map.values()) if (except === undefined || !except.has(t.traceId)) return t;
  return undefined;
}

/** Spans by start time, ties in arrival order: the order they joined the trace (they arrive as they end, innermost first). */
function byStart(spans: readonly ReceivedSpan[]): ReceivedSpan[] {
  return [...spans].sort((a, b) => {
    const d = BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano);
    return d < 0n ? -1 : d > 0n ? 1 : 0;
  });
}

function summary(t: StoredTrace): TraceSummary {
  const spans = byStart(t.spans);
  const ids = new Set(spans.map((s) => s.spanId));
  // The root is the earliest span whose parent is not here (the caller's, or none).
  const root = spans.find((s) => s.parentSpanId === '' || !ids.has(s.parentSpanId));
  const first = spans.length === 0 ? 0n : BigInt((spans[0] as ReceivedSpan).startTimeUnixNano);
  let end = 0n;
  for (const s of spans) {
    const e = BigInt(s.endTimeUnixNano);
    if (e > end) end = e;
  }
  return {
    traceId: t.traceId,
    rootName: root?.name ?? '',
    rootService: root?.service ?? '',
    services: [...new Set(spans.map((s) => s.service))],
    startTime: isoOfNanos(first),
    durationMs: end > first ? Number(end - first) / 1e6 : 0,
    spanCount: spans.length,
    errored: t.error !== null,
    error: t.error,
    sidecars: [...new Set(spans.map((s) => s.resource['service.instance.id']).filter((v): v is string => typeof v === 'string'))],
  };
}
