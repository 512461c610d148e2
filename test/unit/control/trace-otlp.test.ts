// OTLP decoding: the SDK's own serializers make the bodies, so both encodings are what real
// exporters send; each decodes to the same spans.
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { decodeJson, decodeProtobuf, exportResponse, OtlpDecodeError, SPAN_LIMITS } from '../../../src/control/traces/otlp.ts';
import protobuf from 'protobufjs';

async function spans(): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ resource: resourceFromAttributes({ 'service.name': 'producer', 'service.instance.id': 'pod-a' }), spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = provider.getTracer('t');
  const root = tracer.startSpan('GET orders', { kind: SpanKind.SERVER, attributes: { 'http.response.status_code': 503, 'sluice.route': 'default' } });
  root.addEvent('sluice.retry', { 'sluice.attempt': 2, 'sluice.retry_reason': 'status_503' });
  root.setStatus({ code: SpanStatusCode.ERROR, message: 'circuit-open' });
  root.end();
  await provider.forceFlush();
  return exporter.getFinishedSpans();
}

describe('OTLP trace exports', () => {
  it('protobuf and JSON encodings of one export decode to the same spans', async () => {
    const list = await spans();
    const fromProto = decodeProtobuf(ProtobufTraceSerializer.serializeRequest(list) as Uint8Array);
    const fromJson = decodeJson(Buffer.from(JsonTraceSerializer.serializeRequest(list) as Uint8Array).toString('utf8'));
    expect(fromJson).toEqual(fromProto);
    const [s] = fromProto;
    const ctx = list[0]?.spanContext();
    expect(s).toMatchObject({
      traceId: ctx?.traceId,
      spanId: ctx?.spanId,
      parentSpanId: '',
      name: 'GET orders',
      kind: 'SERVER',
      service: 'producer',
      resource: { 'service.name': 'producer', 'service.instance.id': 'pod-a' },
      attributes: { 'http.response.status_code': 503, 'sluice.route': 'default' },
      events: [{ name: 'sluice.retry', attributes: { 'sluice.attempt': 2, 'sluice.retry_reason': 'status_503' } }],
      status: { code: 'ERROR', message: 'circuit-open' },
    });
    expect(BigInt(s?.endTimeUnixNano ?? 0) >= BigInt(s?.startTimeUnixNano ?? 1)).toBe(true);
  });

  it('refuses what is not an export, with the reason', () => {
    expect(() => decodeJson('{')).toThrow(OtlpDecodeError);
    expect(() => decodeJson('[]')).toThrow('an ExportTraceServiceRequest is a JSON object');
    expect(() => decodeJson(JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'abc', spanId: '0000000000000001' }] }] }] }))).toThrow(
      'traceId must be 16 bytes (32 hex digits), got "abc"',
    );
    expect(() => decodeJson(JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ name: 'x' }] }] }] }))).toThrow('every span needs a traceId and a spanId');
    expect(() => decodeProtobuf(Buffer.from([0x0a, 0xff, 0xff, 0xff]))).toThrow(OtlpDecodeError);
  });

  it('refuses JSON of the wrong shape as undecodable, never with another error', () => {
    const ids = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' };
    const wrap = (span: unknown): string => JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [span] }] }] });
    for (const body of [
      JSON.stringify({ resourceSpans: {} }),
      JSON.stringify({ resourceSpans: [5] }),
      JSON.stringify({ resourceSpans: [{ scopeSpans: 'x' }] }),
      JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [null] }] }] }),
      wrap({ ...ids, events: {} }),
      wrap({ ...ids, attributes: 7 }),
      wrap({ ...ids, attributes: [{ key: 'a', value: { arrayValue: { values: 'no' } } }] }),
      wrap({ ...ids, startTimeUnixNano: {} }),
    ]) {
      expect(() => decodeJson(body), body).toThrow(OtlpDecodeError);
    }
    // Entries that are not what they say are skipped, and values of the wrong type are empty.
    const [span] = decodeJson(wrap({ ...ids, name: 5, attributes: [null, { key: 'b', value: { bytesValue: 5 } }, { key: 'n', value: null }], status: { message: {} }, events: [null] }));
    expect(span).toMatchObject({ name: '', attributes: { b: '', n: '' }, status: { message: '' }, events: [] });
  });

  it('keeps at most what the SDK would send: 128 attributes and events, text cut at 4096 characters', () => {
    const ids = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' };
    const attrs = Array.from({ length: 500 }, (_, i) => ({ key: `k${i}`, value: { stringValue: 'x'.repeat(10_000) } }));
    const events = Array.from({ length: 500 }, () => ({ name: 'e', timeUnixNano: '1', attributes: attrs.slice(0, 40).map((a) => ({ ...a, value: { intValue: '1' } })) }));
    const [span] = decodeJson(JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ ...ids, name: 'n'.repeat(5000), attributes: attrs, events }] }] }] }));
    expect(Object.keys(span!.attributes)).toHaveLength(SPAN_LIMITS.attributes);
    expect(span!.attributes['k0']).toBe(`${'x'.repeat(SPAN_LIMITS.textChars)}…`);
    expect(span!.name).toHaveLength(SPAN_LIMITS.textChars + 1);
    expect(span!.events).toHaveLength(SPAN_LIMITS.events);
    expect(Object.keys(span!.events[0]!.attributes)).toHaveLength(SPAN_LIMITS.eventAttributes);
  });

  it('answers with partial success when spans were not kept', () => {
    expect(JSON.parse(exportResponse(true, 3, 'full') as string)).toEqual({ partialSuccess: { rejectedSpans: '3', errorMessage: 'full' } });
    expect(exportResponse(false, 0, '')).toEqual(Buffer.alloc(0));
    const root = protobuf.Root.fromJSON({ nested: { R: { fields: { p: { type: 'P', id: 1 } } }, P: { fields: { n: { type: 'int64', id: 1 }, m: { type: 'string', id: 2 } } } } });
    const decoded = root.lookupType('R').toObject(root.lookupType('R').decode(exportResponse(false, 2, 'full') as Buffer), { longs: Number });
    expect(decoded).toEqual({ p: { n: 2, m: 'full' } });
  });
});
