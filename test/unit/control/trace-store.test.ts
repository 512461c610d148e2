// The config service's trace memory: bounded in traces, spans per trace, spans in all and age;
// failed traces kept apart so healthy traffic cannot push them out. Time is an argument.
import { describe, expect, it } from 'vitest';
import type { ReceivedSpan } from '../../../src/control/traces/otlp.ts';
import { DEFAULT_TRACE_LIMITS, TraceStore } from '../../../src/control/traces/store.ts';

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');

function span(trace: number, id: number, over: Partial<ReceivedSpan> = {}): ReceivedSpan {
  return {
    traceId: hex(trace, 32),
    spanId: hex(id, 16),
    parentSpanId: '',
    name: `span ${id}`,
    kind: 'SERVER',
    startTimeUnixNano: String(1_700_000_000_000_000_000n + BigInt(id) * 1_000_000n),
    endTimeUnixNano: String(1_700_000_000_000_000_000n + BigInt(id) * 1_000_000n + 5_000_000n),
    service: 'producer',
    resource: { 'service.name': 'producer', 'service.instance.id': 'pod-a' },
    attributes: {},
    events: [],
    status: { code: 'UNSET', message: '' },
    ...over,
  };
}

const failed = (trace: number, id: number): ReceivedSpan => span(trace, id, { status: { code: 'ERROR', message: 'circuit-open' } });
const ids = (list: readonly { traceId: string }[]): number[] => list.map((t) => parseInt(t.traceId, 16));

describe('trace store', () => {
  it('groups spans by trace and summarises one: root, services, duration, sidecars', () => {
    const s = new TraceStore();
    // Innermost first, as spans end and are exported; services are listed in call order.
    s.add([span(1, 3, { parentSpanId: hex(2, 16), service: 'consumer', resource: { 'service.name': 'consumer', 'service.instance.id': 'pod-b' } })], 0);
    s.add([span(1, 2, { parentSpanId: hex(1, 16), kind: 'CLIENT', service: 'producer' }), span(1, 1, { name: 'GET orders' })], 10);
    const [t] = s.list({ limit: 10 });
    expect(t).toEqual({
      traceId: hex(1, 32),
      rootName: 'GET orders',
      rootService: 'producer',
      services: ['producer', 'consumer'],
      startTime: new Date(1_700_000_000_001).toISOString(),
      durationMs: 7,
      spanCount: 3,
      errored: false,
      error: null,
      sidecars: ['pod-a', 'pod-b'],
    });
    expect(s.get(hex(1, 32))?.spans.map((x) => [x.spanId, x.durationMs])).toEqual([
      [hex(1, 16), 5],
      [hex(2, 16), 5],
      [hex(3, 16), 5],
    ]);
  });

  it('a span with an ERROR status, or a server span that answered 5xx, makes its trace failed', () => {
    const s = new TraceStore();
    s.add([span(1, 1), failed(1, 2)], 0);
    s.add([span(2, 3, { attributes: { 'http.response.status_code': 503, 'error.type': 'no-endpoints' } })], 0);
    s.add([span(3, 4, { kind: 'CLIENT', attributes: { 'http.response.status_code': 503 } })], 0);
    expect(s.list({ errored: true, limit: 10 }).map((t) => [parseInt(t.traceId, 16), t.error])).toEqual([
      [2, 'no-endpoints'],
      [1, 'circuit-open'],
    ]);
  });

  it('keeps the newest traces by last update, and failed ones apart: healthy churn cannot push them out', () => {
    const s = new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxTraces: 3, maxErrored: 2 });
    s.add([failed(100, 1)], 0);
    for (let t = 1; t <= 10; t++) s.add([span(t, t + 1)], t);
    expect(ids(s.list({ limit: 100 }))).toEqual([10, 9, 8, 100]);
    // An update makes a trace the newest again.
    s.add([span(8, 50)], 20);
    expect(ids(s.list({ limit: 2 }))).toEqual([8, 10]);
    s.add([failed(101, 60)], 21);
    s.add([failed(102, 61)], 22);
    expect(ids(s.list({ errored: true, limit: 10 }))).toEqual([102, 101]);
    expect(s.counts).toMatchObject({ recent: 3, errored: 2, spans: 6 });
  });

  it('keeps a span sent twice (an exporter retrying) once', () => {
    const s = new TraceStore();
    s.add([span(1, 1)], 0);
    s.add([span(1, 1), span(1, 2)], 1);
    expect(s.get(hex(1, 32))?.spans.map((x) => x.spanId)).toEqual([hex(1, 16), hex(2, 16)]);
  });

  it('caps spans per trace and counts the rest as dropped', () => {
    const s = new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxSpansPerTrace: 2 });
    expect(s.add([span(1, 1), span(1, 2), span(1, 3)], 0)).toEqual({ accepted: 2, traceFull: 1, tooLarge: 0 });
    expect(s.get(hex(1, 32))?.spans).toHaveLength(2);
  });

  it('caps spans in all: the oldest healthy traces go first, then failed ones', () => {
    const s = new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxSpans: 4 });
    s.add([failed(1, 1), failed(1, 2)], 0);
    s.add([span(2, 3), span(2, 4)], 1);
    s.add([span(3, 5)], 2);
    expect(ids(s.list({ limit: 10 }))).toEqual([3, 1]);
    s.add([span(4, 6), span(4, 7), span(4, 8)], 3);
    expect(ids(s.list({ limit: 10 }))).toEqual([4]);
    expect(s.counts.spans).toBe(3);
  });

  it('forgets traces not updated within maxAgeMs', () => {
    const s = new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxAgeMs: 1000 });
    s.add([span(1, 1)], 0);
    s.add([failed(2, 2)], 500);
    s.add([span(3, 3)], 1001);
    expect(ids(s.list({ limit: 10 }))).toEqual([3, 2]);
    s.add([span(4, 4)], 1501);
    expect(ids(s.list({ limit: 10 }))).toEqual([4, 3]);
    // Also when nothing arrives any more: a reader expires them first.
    s.expire(2600);
    expect(ids(s.list({ limit: 10 }))).toEqual([]);
    expect(s.counts).toEqual({ recent: 0, errored: 0, spans: 0, bytes: 0 });
  });

  it('caps span data in bytes: a span over the per-span cap is refused, the oldest traces make room', () => {
    const size = Buffer.byteLength(JSON.stringify(span(1, 1)));
    const s = new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxBytes: size * 4, maxSpanBytes: size + 100 });
    expect(s.add([span(1, 1, { name: 'x'.repeat(200) })], 0)).toEqual({ accepted: 0, traceFull: 0, tooLarge: 1 });
    s.add([failed(1, 1)], 0);
    s.add([span(2, 2), span(2, 3)], 1);
    expect(s.counts.bytes).toBeLessThanOrEqual(size * 4);
    // Over the budget: the stalest healthy trace goes, the failed one stays.
    s.add([span(3, 4)], 2);
    expect(ids(s.list({ limit: 10 }))).toEqual([3, 1]);
    expect(s.counts.bytes).toBeLessThanOrEqual(size * 4);
  });

  it('filters by service and refuses nonsense bounds', () => {
    const s = new TraceStore();
    s.add([span(1, 1), span(2, 2, { service: 'billing' })], 0);
    expect(ids(s.list({ service: 'billing', limit: 10 }))).toEqual([2]);
    expect(() => new TraceStore({ ...DEFAULT_TRACE_LIMITS, maxTraces: 0 })).toThrow('trace store maxTraces must be an integer >= 1, got 0');
  });
});
