// Traces through real sidecars on loopback, collected by an in-memory exporter: one request
// through a producer and a consumer sidecar is one trace, server span per request and client
// span per try, each hop the child of the try that reached it; local decisions are events.
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  AlwaysOffSampler,
  InMemorySpanExporter,
  ParentBasedSampler,
  TracerProvider,
  type ReadableSpan,
  type Sampler,
} from '@opentelemetry/sdk-trace';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Propagator, Tracing } from '../../src/telemetry/tracing.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { metricSum } from '../support/metrics.ts';
import { callUnary, grpc, grpcClient, startGrpcServer } from '../support/grpc.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';
import { memoryTracing } from '../support/tracing.ts';

const track = closeAfterEach();
let exporter: InMemorySpanExporter;
let providers: TracerProvider[];

beforeEach(() => {
  exporter = new InMemorySpanExporter();
  providers = [];
});
afterEach(async () => {
  await Promise.all(providers.map((p) => p.shutdown()));
});

/** A sidecar's tracing, as `sluice proxy` sets it up, exporting to this test's memory. */
function tracing(service: string, sampler?: Sampler, propagator?: Propagator): Tracing {
  const { tracing, provider } = memoryTracing(service, exporter, sampler, propagator);
  providers.push(provider);
  return tracing;
}

const CLIENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';

function parsedTraceparent(value: string | string[] | undefined): { traceId: string; parentId: string; flags: string } {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(String(value));
  if (m === null) throw new Error(`not a traceparent: ${String(value)}`);
  return { traceId: m[1] as string, parentId: m[2] as string, flags: m[3] as string };
}

const service = (s: ReadableSpan): unknown => s.resource.attributes['service.name'];
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;

/** Waits until the spans of `count` ended (a server span ends when the answer is written). */
function spans(count: number): Promise<ReadableSpan[]> {
  return eventually(`${count} spans`, async () => {
    const got = exporter.getFinishedSpans();
    return got.length >= count ? [...got] : undefined;
  });
}

async function producerAndConsumer(appScript: Parameters<typeof startScriptedUpstream>[0], producerSpec: Record<string, unknown> = {}) {
  const app = track(await startScriptedUpstream(appScript));
  const consumer = track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port } } }, { tracing: tracing('consumer') }));
  const producer = track(
    await startTestSidecar(
      { outbound: { upstreams: [upstream('orders', `127.0.0.1:${consumer.inboundPort}`, producerSpec)] } },
      { tracing: tracing('producer') },
    ),
  );
  return { app, consumer, producer };
}

describe('traces through two sidecars', () => {
  it('one request, retried once, is one trace: server span per hop, client span per try, each hop a child of its try', async () => {
    const { app, producer } = await producerAndConsumer([{ status: 503 }, { status: 200, body: 'done' }]);
    const r = await send({
      port: producer.outboundPort,
      host: 'orders',
      path: '/orders/42?token=secret',
      headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`, tracestate: 'vendor=abc' },
    });
    expect(r.status).toBe(200);
    // Producer: its request and two tries; consumer: a request and a try for each of those.
    const all = await spans(7);
    expect(all).toHaveLength(7);
    expect(new Set(all.map((s) => s.spanContext().traceId))).toEqual(new Set([CLIENT_TRACE]));

    const [producerServer, ...others] = all.filter((s) => service(s) === 'producer' && s.kind === SpanKind.SERVER);
    expect(others).toEqual([]);
    if (producerServer === undefined) throw new Error('no producer server span');
    expect(parentOf(producerServer)).toBe(CLIENT_SPAN);
    expect(producerServer.name).toBe('GET orders');
    expect(producerServer.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/orders/42',
      'http.response.status_code': 200,
      'sluice.direction': 'outbound',
      'sluice.upstream': 'orders',
      'sluice.route': 'default',
    });
    expect(producerServer.events.map((e) => [e.name, e.attributes])).toEqual([
      ['sluice.retry', { 'sluice.attempt': 2, 'sluice.retry_reason': 'status_503', 'sluice.backoff_ms': expect.any(Number) }],
    ]);

    const tries = all.filter((s) => service(s) === 'producer' && s.kind === SpanKind.CLIENT).sort((a, b) => Number(a.attributes['sluice.attempt']) - Number(b.attributes['sluice.attempt']));
    expect(tries.map((s) => [parentOf(s), s.attributes['sluice.attempt'], s.attributes['http.response.status_code'], s.status.code])).toEqual([
      [producerServer.spanContext().spanId, 1, 503, SpanStatusCode.ERROR],
      [producerServer.spanContext().spanId, 2, 200, SpanStatusCode.UNSET],
    ]);
    expect(tries[1]?.attributes).toMatchObject({ 'sluice.retry_reason': 'status_503', 'http.request.resend_count': 1 });

    // Each try reached the consumer as a request of its own, the child of that try.
    const consumerServers = all.filter((s) => service(s) === 'consumer' && s.kind === SpanKind.SERVER);
    expect(consumerServers.map((s) => parentOf(s)).sort()).toEqual(tries.map((t) => t.spanContext().spanId).sort());
    expect(consumerServers.every((s) => s.attributes['sluice.direction'] === 'inbound')).toBe(true);
    const consumerTries = all.filter((s) => service(s) === 'consumer' && s.kind === SpanKind.CLIENT);
    expect(consumerTries.map((s) => parentOf(s)).sort()).toEqual(consumerServers.map((s) => s.spanContext().spanId).sort());

    // The app sees the consumer's try as its parent, and the caller's tracestate kept.
    const seen = await app.waitForRequest(2);
    const tp = parsedTraceparent(seen.headers.traceparent);
    expect(tp.traceId).toBe(CLIENT_TRACE);
    expect(consumerTries.map((s) => s.spanContext().spanId)).toContain(tp.parentId);
    expect(seen.headers.tracestate).toBe('vendor=abc');
    // One traceparent on the wire, not the caller's plus ours.
    expect(seen.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === 'traceparent')).toHaveLength(1);
  });

  it('a request without trace context starts a trace at the first sidecar', async () => {
    const { app, producer } = await producerAndConsumer([{ status: 200 }]);
    expect((await send({ port: producer.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const all = await spans(4);
    const root = all.find((s) => service(s) === 'producer' && s.kind === SpanKind.SERVER);
    expect(root?.parentSpanContext).toBeUndefined();
    expect(new Set(all.map((s) => s.spanContext().traceId)).size).toBe(1);
    expect(parsedTraceparent((await app.waitForRequest(1)).headers.traceparent).traceId).toBe(root?.spanContext().traceId);
  });

  it("sampling follows the caller's decision: an unsampled trace records nothing but still propagates", async () => {
    const { app, producer } = await producerAndConsumer([{ status: 200 }]);
    expect((await send({ port: producer.outboundPort, host: 'orders', path: '/', headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-00` } })).status).toBe(200);
    const tp = parsedTraceparent((await app.waitForRequest(1)).headers.traceparent);
    expect(tp).toMatchObject({ traceId: CLIENT_TRACE, flags: '00' });
    expect(tp.parentId).not.toBe(CLIENT_SPAN);
    await Promise.all(providers.map((p) => p.forceFlush()));
    expect(exporter.getFinishedSpans()).toEqual([]);
  });

  it('a root sampler that says no records nothing, and the next hop learns it', async () => {
    const app = track(await startScriptedUpstream([{ status: 200 }]));
    const sc = track(
      await startTestSidecar({ outbound: { upstreams: [upstream('orders', app.endpoint)] } }, { tracing: tracing('producer', new ParentBasedSampler({ root: new AlwaysOffSampler() })) }),
    );
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    expect(parsedTraceparent((await app.waitForRequest(1)).headers.traceparent).flags).toBe('00');
    await Promise.all(providers.map((p) => p.forceFlush()));
    expect(exporter.getFinishedSpans()).toEqual([]);
  });

  it('every propagator header goes once per try, retries included (traceparent, tracestate, baggage)', async () => {
    const app = track(await startScriptedUpstream([{ status: 503 }, { status: 200 }]));
    const both = new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] });
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', app.endpoint)] } }, { tracing: tracing('producer', undefined, both) }));
    const headers = { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`, tracestate: 'a=1', baggage: 'tenant=blue' };
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/', headers })).status).toBe(200);
    await app.waitForRequest(2);
    const tries = await spans(3).then((all) => all.filter((s) => s.kind === SpanKind.CLIENT));
    for (const [i, seen] of app.requests.entries()) {
      const named = (n: string): string[] => seen.rawHeaders.filter((_, j) => j % 2 === 1 && seen.rawHeaders[j - 1]?.toLowerCase() === n);
      expect(named('baggage'), `try ${i + 1}`).toEqual(['tenant=blue']);
      expect(named('tracestate')).toEqual(['a=1']);
      expect(named('traceparent')).toHaveLength(1);
      expect(parsedTraceparent(named('traceparent')[0]).parentId).toBe(tries[i]?.spanContext().spanId);
    }
  });

  it('a gRPC try answered UNAVAILABLE (trailers-only) is an error client span; the retry that worked is not', async () => {
    const server = track(await startGrpcServer([{ fail: { code: grpc.status.UNAVAILABLE } }, {}]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('greeter', `127.0.0.1:${server.port}`)] } }, { tracing: tracing('producer') }));
    const client = grpcClient(sc.outboundPort, 'greeter');
    track({ close: async () => client.close() });
    expect((await callUnary(client, Buffer.from('hi'))).error).toBeUndefined();
    const all = await spans(3);
    expect(all.filter((s) => s.kind === SpanKind.CLIENT).map((s) => [s.attributes['sluice.attempt'], s.attributes['rpc.grpc.status_code'], s.attributes['error.type'], s.status.code])).toEqual([
      [1, 14, '14', SpanStatusCode.ERROR],
      [2, undefined, undefined, SpanStatusCode.UNSET],
    ]);
    expect(all.find((s) => s.kind === SpanKind.SERVER)?.status.code).toBe(SpanStatusCode.UNSET);
  });

  it('with tracing off the trace context passes through untouched', async () => {
    const app = track(await startScriptedUpstream([{ status: 200 }]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', app.endpoint)] } }));
    const traceparent = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/', headers: { traceparent, tracestate: 'a=1' } })).status).toBe(200);
    const seen = await app.waitForRequest(1);
    expect(seen.headers.traceparent).toBe(traceparent);
    expect(seen.headers.tracestate).toBe('a=1');
  });
});

describe('local decisions on the trace', () => {
  it('a rate-limited request is an event and the span says which decision ended it', async () => {
    const app = track(await startScriptedUpstream([{ status: 200 }]));
    const sc = track(
      await startTestSidecar(
        { outbound: { upstreams: [upstream('orders', app.endpoint, { rateLimits: [{ name: 'all', requestsPerMinute: 1, burst: 1 }] })] } },
        { tracing: tracing('producer') },
      ),
    );
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const refused = await send({ port: sc.outboundPort, host: 'orders', path: '/' });
    expect(refused.status).toBe(429);
    const all = await spans(3);
    const limited = all.find((s) => s.kind === SpanKind.SERVER && s.attributes['http.response.status_code'] === 429);
    expect(limited?.events.map((e) => e.name)).toEqual(['sluice.rate-limited']);
    expect(limited?.attributes).toMatchObject({ 'error.type': 'rate-limited', 'sluice.local_reply': 'rate-limited' });
    // Refused before the wire: no try, so no client span under it.
    expect(all.filter((s) => parentOf(s) === limited?.spanContext().spanId)).toEqual([]);
  });

  it('an open breaker refusal is an error span with its event; the tries that opened it are error client spans', async () => {
    const app = track(await startScriptedUpstream(() => ({ status: 503, body: 'down' })));
    const sc = track(
      await startTestSidecar(
        { outbound: { upstreams: [upstream('orders', app.endpoint, { retry: 'off', outlierDetection: { mode: 'off' }, circuitBreaker: { minRequests: 2, openMs: 60_000 } })] } },
        { tracing: tracing('producer') },
      ),
    );
    for (let i = 0; i < 2; i++) expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(503);
    await eventually('the breaker open', async () => metricSum(await sc.metrics(), 'sluice_circuit_breaker_state', { upstream: 'orders', route: '', state: 'open' }) === 1 || undefined);
    const refused = await send({ port: sc.outboundPort, host: 'orders', path: '/' });
    expect(refused.headers['sluice-error']).toBe('circuit-open');
    const all = await spans(5);
    expect(all.filter((s) => s.kind === SpanKind.CLIENT).map((s) => [s.attributes['http.response.status_code'], s.attributes['error.type'], s.status.code])).toEqual([
      [503, '503', SpanStatusCode.ERROR],
      [503, '503', SpanStatusCode.ERROR],
    ]);
    const open = all.find((s) => s.kind === SpanKind.SERVER && s.attributes['sluice.local_reply'] === 'circuit-open');
    expect(open?.events.map((e) => e.name)).toEqual(['sluice.circuit-open']);
    expect(open?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'circuit-open' });
  });

  it('a client that leaves mid-request: the span still says how the request ended, and that the client left', async () => {
    const app = track(await startScriptedUpstream(['hang']));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', app.endpoint)] } }, { tracing: tracing('producer') }));
    const leave = new AbortController();
    const sent = send({ port: sc.outboundPort, host: 'orders', path: '/', signal: leave.signal }).catch((err: unknown) => err);
    await app.waitForRequest(1);
    leave.abort();
    await sent;
    const server = (await spans(2)).find((s) => s.kind === SpanKind.SERVER);
    expect(server?.events.map((e) => e.name)).toContain('sluice.client_gone');
    expect(server?.attributes['http.response.status_code']).toBeGreaterThanOrEqual(400);
    expect(server?.attributes['sluice.local_reply']).toBe('client-closed');
  });

  it('a try that got no answer is an error client span named by its failure', async () => {
    const app = track(await startScriptedUpstream(['reset', { status: 200 }]));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', app.endpoint)] } }, { tracing: tracing('producer') }));
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    const all = await spans(3);
    const tries = all.filter((s) => s.kind === SpanKind.CLIENT).sort((a, b) => Number(a.attributes['sluice.attempt']) - Number(b.attributes['sluice.attempt']));
    expect(tries.map((s) => [s.attributes['sluice.attempt'], s.attributes['error.type'], s.attributes['http.response.status_code']])).toEqual([
      [1, 'upstream-reset', undefined],
      [2, undefined, 200],
    ]);
  });
});

describe('access log', () => {
  function capture(): { log: Logger; lines: () => Record<string, unknown>[] } {
    const out: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        out.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    });
    return { log: pino({ level: 'info' }, stream) as unknown as Logger, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['kind'] === 'access') };
  }

  it('one line per request, when it is over: trace id, upstream, attempts, status, no query string', async () => {
    const app = track(await startScriptedUpstream([{ status: 503 }, { status: 200, body: 'ok' }]));
    const { log, lines } = capture();
    const sc = track(
      await startTestSidecar({ accessLog: {}, outbound: { upstreams: [upstream('orders', app.endpoint)] } }, { log, tracing: tracing('producer') }),
    );
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/orders/7?token=secret', headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01` } })).status).toBe(200);
    const [line] = await eventually('the access line', async () => (lines().length > 0 ? lines() : undefined));
    expect(line).toMatchObject({
      msg: 'access',
      direction: 'outbound',
      upstream: 'orders',
      route: 'default',
      method: 'GET',
      path: '/orders/7',
      status: 200,
      attempts: 2,
      retryReason: 'status_503',
      complete: true,
      traceId: CLIENT_TRACE,
    });
    expect(line?.['localReply']).toBeUndefined();
    expect(JSON.stringify(line)).not.toContain('secret');
  });

  it('failures are sampled apart: at sampleRate 0, errorSampleRate 1, only the refusal is logged', async () => {
    const app = track(await startScriptedUpstream([{ status: 200 }, { status: 200 }]));
    const { log, lines } = capture();
    const sc = track(
      await startTestSidecar(
        {
          accessLog: { sampleRate: 0, errorSampleRate: 1 },
          outbound: { upstreams: [upstream('orders', app.endpoint, { rateLimits: [{ name: 'all', requestsPerMinute: 2, burst: 2 }] })] },
        },
        { log },
      ),
    );
    for (let i = 0; i < 2; i++) expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(200);
    expect((await send({ port: sc.outboundPort, host: 'orders', path: '/' })).status).toBe(429);
    const logged = await eventually('the refusal logged', async () => (lines().length > 0 ? lines() : undefined));
    expect(logged.map((l) => [l['status'], l['localReply'], l['traceId']])).toEqual([[429, 'rate-limited', undefined]]);
  });
});
