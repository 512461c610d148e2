// When `sluice proxy` turns tracing on: only when the environment names somewhere to send spans.
import { describe, expect, it } from 'vitest';
import { tracingWanted } from '../../../src/telemetry/otel.ts';

describe('tracing from the OTEL_* variables', () => {
  const cases: [string, Record<string, string>, boolean][] = [
    ['nothing set: off (no collector to send to)', {}, false],
    ['an OTLP endpoint', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
    ['a traces endpoint', { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://control:15014/v1/traces' }, true],
    ['an empty endpoint', { OTEL_EXPORTER_OTLP_ENDPOINT: ' ' }, false],
    ['an exporter named', { OTEL_TRACES_EXPORTER: 'console' }, true],
    ['exporter none wins over an endpoint', { OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, false],
    ['the SDK disabled wins over everything', { OTEL_SDK_DISABLED: 'TRUE', OTEL_TRACES_EXPORTER: 'otlp' }, false],
    ['OTEL_SDK_DISABLED=false is not disabled', { OTEL_SDK_DISABLED: 'false', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, true],
  ];
  for (const [what, env, on] of cases) it(what, () => expect(tracingWanted(env)).toBe(on));
});
