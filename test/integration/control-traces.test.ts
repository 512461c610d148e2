// The config service's OTLP/HTTP receiver over a real socket: what it accepts and refuses, and
// forwarding to a collector that answers, refuses or is gone. Bodies are made by the SDK's own
// serializers, byte for byte what exporters send.
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { policyRepo, startTestControl } from '../support/control.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';

const track = closeAfterEach();

async function someSpans(): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ resource: resourceFromAttributes({ 'service.name': 'producer' }), spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = provider.getTracer('t');
  const root = tracer.startSpan('GET orders', { kind: SpanKind.SERVER });
  root.setStatus({ code: SpanStatusCode.ERROR, message: 'circuit-open' });
  root.end();
  await provider.forceFlush();
  return exporter.getFinishedSpans();
}

const proto = (spans: ReadableSpan[]): Buffer => Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) as Uint8Array);
const json = (spans: ReadableSpan[]): Buffer => Buffer.from(JsonTraceSerializer.serializeRequest(spans) as Uint8Array);

/** A stand-in collector recording what reaches it; `status` is what it answers. */
async function collector(status = 200): Promise<{ url: string; got: { type: string; encoding: string | undefined; body: Buffer }[]; close(): Promise<void> }> {
  const got: { type: string; encoding: string | undefined; body: Buffer }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ type: String(req.headers['content-type']), encoding: req.headers['content-encoding'], body: Buffer.concat(chunks) });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
    got,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const TOKEN = 'a-token-for-traces';
const auth = { authorization: `Bearer ${TOKEN}` };

describe('OTLP/HTTP receiver of the config service', () => {
  it('takes protobuf, JSON and gzip exports behind the token, and shows the trace', async () => {
    const control = track(await startTestControl(await policyRepo(), { token: TOKEN }));
    const spans = await someSpans();
    const traceId = spans[0]?.spanContext().traceId as string;
    const post = (body: Buffer, headers: Record<string, string>) => send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body, headers });
    expect((await post(proto(spans), { 'content-type': 'application/x-protobuf' })).status).toBe(401);
    const ok = await post(proto(spans), { ...auth, 'content-type': 'application/x-protobuf' });
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toBe('application/x-protobuf');
    const viaJson = await post(json(spans), { ...auth, 'content-type': 'application/json' });
    expect([viaJson.status, viaJson.text]).toEqual([200, '{}']);
    expect((await post(gzipSync(proto(spans)), { ...auth, 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' })).status).toBe(200);

    const list = JSON.parse((await send({ port: control.apiPort, path: '/v1/traces?errored=true', headers: auth })).text) as { traces: { traceId: string; spanCount: number; error: string }[] };
    expect(list.traces).toEqual([expect.objectContaining({ traceId, spanCount: 1, error: 'circuit-open', rootName: 'GET orders' })]);
    const one = await send({ port: control.apiPort, path: `/v1/traces/${traceId}`, headers: auth });
    // Sent three times (as an exporter retrying would), kept once.
    expect(JSON.parse(one.text)).toMatchObject({ traceId, spans: [{ name: 'GET orders', kind: 'SERVER', status: { code: 'ERROR', message: 'circuit-open' } }] });
    const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
    expect(metricSum(m, 'sluice_control_trace_spans_received_total', { encoding: 'protobuf' })).toBe(2);
    expect(metricSum(m, 'sluice_control_trace_spans_received_total', { encoding: 'json' })).toBe(1);
    expect(metricSum(m, 'sluice_control_traces_stored', { kind: 'errored' })).toBe(1);
  });

  it('refuses what it cannot take, saying why', async () => {
    const control = track(await startTestControl(await policyRepo()));
    const post = (body: Buffer, headers: Record<string, string>) => send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body, headers });
    expect((await post(Buffer.from('x'), { 'content-type': 'text/plain' })).status).toBe(415);
    expect((await post(Buffer.from('x'), { 'content-type': 'application/json', 'content-encoding': 'br' })).status).toBe(415);
    const bad = await post(Buffer.from('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}'), { 'content-type': 'application/json' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('traceId must be 16 bytes');
    expect((await post(Buffer.from([0x0a, 0xff, 0xff]), { 'content-type': 'application/x-protobuf' })).status).toBe(400);
    expect((await post(Buffer.alloc(5 * 1024 * 1024), { 'content-type': 'application/x-protobuf' })).status).toBe(413);
    // A small gzip that would inflate past the bound is refused, not inflated.
    expect((await post(gzipSync(Buffer.alloc(40 * 1024 * 1024)), { 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' })).status).toBe(413);
    expect((await send({ port: control.apiPort, method: 'PUT', path: '/v1/traces' })).status).toBe(405);
    expect((await send({ port: control.apiPort, path: '/v1/traces/0af7651916cd43dd8448eb211c80319c' })).status).toBe(404);
    expect((await send({ port: control.apiPort, path: '/v1/traces?limit=0' })).status).toBe(400);
    // Streamed without a length, refused once past the bound.
    const streamed = await post(Readable.from([Buffer.alloc(3 * 1024 * 1024), Buffer.alloc(3 * 1024 * 1024)]) as unknown as Buffer, { 'content-type': 'application/x-protobuf' });
    expect(streamed.status).toBe(413);
    // JSON of the wrong shape is the sender's mistake, refused; the service lives on.
    for (const body of ['{"resourceSpans": {}}', '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "events": {}}]}]}]}']) {
      expect((await post(Buffer.from(body), { 'content-type': 'application/json' })).status, body).toBe(400);
    }
    expect((await send({ port: control.apiPort, path: '/healthz' })).status).toBe(200);
    const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
    expect(metricSum(m, 'sluice_control_trace_exports_total', { result: 'unsupported' })).toBe(2);
    expect(metricSum(m, 'sluice_control_trace_exports_total', { result: 'undecodable' })).toBe(4);
    expect(metricSum(m, 'sluice_control_trace_exports_total', { result: 'too_large' })).toBe(3);
    expect(metricSum(m, 'sluice_control_trace_exports_total', { result: 'accepted' })).toBe(0);
  });

  it('takes at most 8 exports at once; the next is told to retry', async () => {
    const control = track(await startTestControl(await policyRepo()));
    // Eight exports whose bodies never end, held open by the test.
    const held = Array.from({ length: 8 }, () => new PassThrough());
    const pending = held.map((body) => {
      body.write('{');
      return send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body, headers: { 'content-type': 'application/json' } });
    });
    await eventually('eight exports in flight', async () => {
      const r = await send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body: json(await someSpans()), headers: { 'content-type': 'application/json' } });
      return r.status === 429 ? r : undefined;
    }).then((r) => expect(r.headers['retry-after']).toBe('1'));
    for (const body of held) body.end('}');
    expect((await Promise.all(pending)).map((r) => r.status)).toEqual(Array(8).fill(200));
    // Each answered: room again.
    expect((await send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body: json(await someSpans()), headers: { 'content-type': 'application/json' } })).status).toBe(200);
  });

  it('forwards every export unchanged; a refusing or dead collector costs the sidecar nothing', async () => {
    const up = await collector(200);
    const control = track(await startTestControl(await policyRepo(), { traces: { forwardUrl: up.url } }));
    const body = gzipSync(proto(await someSpans()));
    const post = () => send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body, headers: { 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' } });
    expect((await post()).status).toBe(200);
    await eventually('the forward', async () => up.got.length === 1 || undefined);
    expect(up.got[0]).toEqual({ type: 'application/x-protobuf', encoding: 'gzip', body });
    await up.close();
    // The collector is gone: the export is still taken and kept, the failed forward counted.
    expect((await post()).status).toBe(200);
    await eventually('the failed forward counted', async () => {
      const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
      return metricSum(m, 'sluice_control_trace_forwards_total', { result: 'failed' }) === 1 || undefined;
    });
    const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
    expect(metricSum(m, 'sluice_control_trace_forwards_total', { result: 'sent' })).toBe(1);
  });

  it('a collector that refuses is counted as failed', async () => {
    const up = await collector(503);
    const control = track(await startTestControl(await policyRepo(), { traces: { forwardUrl: up.url } }));
    expect((await send({ port: control.apiPort, method: 'POST', path: '/v1/traces', body: json(await someSpans()), headers: { 'content-type': 'application/json' } })).status).toBe(200);
    await eventually('the refusal counted', async () => {
      const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
      return metricSum(m, 'sluice_control_trace_forwards_total', { result: 'failed' }) === 1 || undefined;
    });
    await up.close();
  });
});
