// A sidecar's tracing as `sluice proxy` sets it up, but exporting to memory: for tests that read
// spans back, or hand them to the config service's receiver as an exporter would.
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, ParentBasedSampler, SimpleSpanProcessor, TracerProvider, type ReadableSpan, type Sampler, type SpanExporter } from '@opentelemetry/sdk-trace';
import type { Propagator, Tracing } from '../../src/telemetry/tracing.ts';
import { send } from './http-client.ts';

const W3C = new W3CTraceContextPropagator();

/** Tracing for `service` into `exporter`; shut the provider down after the test. */
export function memoryTracing(
  service: string,
  exporter: SpanExporter,
  sampler: Sampler = new ParentBasedSampler({ root: new AlwaysOnSampler() }),
  propagator: Propagator = W3C,
): { tracing: Tracing; provider: TracerProvider } {
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': service }),
    sampler,
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
  });
  return { tracing: { tracer: provider.getTracer('sluice'), propagator }, provider };
}

/** Posts spans to an OTLP/HTTP receiver as the SDK's JSON exporter does; throws unless 200. */
export async function exportSpans(port: number, spans: readonly ReadableSpan[], headers: Record<string, string> = {}): Promise<void> {
  const body = Buffer.from(JsonTraceSerializer.serializeRequest([...spans]) as Uint8Array);
  const r = await send({ port, method: 'POST', path: '/v1/traces', headers: { 'content-type': 'application/json', ...headers }, body });
  if (r.status !== 200) throw new Error(`trace export answered ${r.status}: ${r.text}`);
}
