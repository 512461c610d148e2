// Tracing for `sluice proxy`, set up by the OpenTelemetry SDK from the standard OTEL_* variables
// (exporter, endpoint, headers, protocol, sampler, resource attributes, propagators). Off unless
// an exporter or an OTLP endpoint is named: a sidecar with nowhere to send spans would only
// burn CPU on them and fill its logs with failed exports. The SDK is imported only then: loading
// it costs an idle sidecar ~13 MiB of resident memory and some start-up time, which a sidecar
// with tracing off (in every pod) should not pay.
import { propagation, trace } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { Tracing } from './tracing.ts';

export interface TracingSetup {
  /** undefined: tracing off. */
  readonly tracing: Tracing | undefined;
  /** Flushes spans still batched, then stops exporting. */
  shutdown(): Promise<void>;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Whether the environment asks for traces (the SDK itself would default to an OTLP exporter). */
export function tracingWanted(env: Env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporters = env.OTEL_TRACES_EXPORTER?.split(',').map((e) => e.trim().toLowerCase()).filter((e) => e !== '');
  if (exporters !== undefined && exporters.length > 0) return !exporters.includes('none');
  return (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '').trim() !== '';
}

export async function setUpTracing(
  env: Env,
  identity: { readonly sidecarId: string; readonly version: string; readonly token?: string | undefined },
  log: Logger,
): Promise<TracingSetup> {
  if (!tracingWanted(env)) return { tracing: undefined, shutdown: async () => undefined };
  if (identity.token !== undefined) {
    // The SDK's exporter reads its headers from here when it is built (sdk.start below); a
    // token in a file keeps it out of the pod spec, which OTEL_EXPORTER_OTLP_HEADERS would not.
    const headers = process.env.OTEL_EXPORTER_OTLP_TRACES_HEADERS;
    const auth = `authorization=${encodeURIComponent(`Bearer ${identity.token}`)}`;
    process.env.OTEL_EXPORTER_OTLP_TRACES_HEADERS = headers === undefined || headers.trim() === '' ? auth : `${headers},${auth}`;
  }
  const [{ NodeSDK }, { envDetector, hostDetector, processDetector, resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/resources'),
  ]);
  const sdk = new NodeSDK({
    // service.name defaults to sluice; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the env
    // detector, last) override it and anything else here.
    resource: resourceFromAttributes({ 'service.name': 'sluice', 'service.version': identity.version, 'service.instance.id': identity.sidecarId }),
    resourceDetectors: [processDetector, hostDetector, envDetector],
    // Spans only: metrics are Prometheus' (on /metrics), logs are JSON on stdout.
    metricReaders: [],
    logRecordProcessors: [],
    // No auto-instrumentation: the proxy makes its own spans, one per request and per try; the
    // HTTP instrumentations would add a second, unrelated pair for every one of them.
    instrumentations: [],
  });
  sdk.start();
  log.info(
    {
      exporter: env.OTEL_TRACES_EXPORTER ?? 'otlp',
      endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT,
      sampler: env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on',
      samplerArg: env.OTEL_TRACES_SAMPLER_ARG,
    },
    'tracing on',
  );
  return {
    tracing: { tracer: trace.getTracer('sluice', identity.version), propagator: propagation },
    shutdown: () =>
      sdk.shutdown().catch((err: unknown) => {
        log.warn({ err }, 'tracing: flushing spans at shutdown failed');
      }),
  };
}
