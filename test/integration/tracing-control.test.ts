// The config service as the OTLP receiver: two real `sluice proxy` processes, tracing set up from
// OTEL_* variables alone, export to it (one in protobuf, one in JSON), and one request through
// both reads back as one trace with the right parent/child spans and attempt spans.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startCliProxy, type RunningProxy } from '../support/cli.ts';
import { policyRepo, startTestControl } from '../support/control.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { buildPolicyYaml, upstream } from '../support/sidecar.ts';

const track = closeAfterEach();
const procs: RunningProxy[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

interface SpanView {
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: string;
  readonly service: string;
  readonly attributes: Record<string, unknown>;
  readonly events: readonly { readonly name: string }[];
  readonly status: { readonly code: string };
}

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const CALLER = 'b7ad6b7169203331';
const TOKEN = 'trace-token-0123456789';

async function proxy(name: string, spec: Record<string, unknown>, env: Record<string, string>): Promise<RunningProxy> {
  const dir = await mkdtemp(join(tmpdir(), `sluice-${name}-`));
  dirs.push(dir);
  const file = join(dir, 'policy.yaml');
  await writeFile(file, await buildPolicyYaml(spec));
  const p = await startCliProxy(['--policy', file, '--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0'], 15_000, {
    OTEL_SERVICE_NAME: name,
    // Export within the test's patience, not the default five seconds.
    OTEL_BSP_SCHEDULE_DELAY: '50',
    ...env,
  });
  procs.push(p);
  return p;
}

describe('traces at the config service', () => {
  it('one request through two sidecars, retried once, is one trace there, in both OTLP encodings', async () => {
    const control = track(await startTestControl(await policyRepo(), { token: TOKEN }));
    const endpoint = `http://127.0.0.1:${control.apiPort}/v1/traces`;
    const tokenDir = await mkdtemp(join(tmpdir(), 'sluice-token-'));
    dirs.push(tokenDir);
    await writeFile(join(tokenDir, 'token'), `${TOKEN}\n`);
    const auth = { authorization: `Bearer ${TOKEN}` };
    const app = track(await startScriptedUpstream([{ status: 503 }, { status: 200, body: 'done' }]));
    const consumer = await proxy('consumer', { inbound: { app: { address: '127.0.0.1', port: app.port } } }, {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      // The token from a file, as injection wires it.
      SLUICE_TRACES_TOKEN_FILE: join(tokenDir, 'token'),
    });
    const producer = await proxy('producer', { outbound: { upstreams: [upstream('orders', `127.0.0.1:${consumer.inboundPort}`)] } }, {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${control.apiPort}`,
      OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${TOKEN}`,
    });

    const r = await send({ port: producer.outboundPort, host: 'orders', path: '/orders/1', headers: { traceparent: `00-${TRACE}-${CALLER}-01` } });
    expect(r.status).toBe(200);

    const spans = await eventually(
      'seven spans of the trace at the config service',
      async () => {
        const got = await send({ port: control.apiPort, path: `/v1/traces/${TRACE}`, headers: auth });
        if (got.status !== 200) return undefined;
        const body = JSON.parse(got.text) as { spans: SpanView[] };
        return body.spans.length >= 7 ? body.spans : undefined;
      },
      10_000,
      50,
    );
    expect(spans).toHaveLength(7);
    const of = (service: string, kind: string) => spans.filter((s) => s.service === service && s.kind === kind);
    const [root] = of('producer', 'SERVER');
    expect(root?.parentSpanId).toBe(CALLER);
    expect(root?.events.map((e) => e.name)).toEqual(['sluice.retry']);
    const tries = of('producer', 'CLIENT').sort((a, b) => Number(a.attributes['sluice.attempt']) - Number(b.attributes['sluice.attempt']));
    expect(tries.map((t) => [t.parentSpanId, t.attributes['sluice.attempt'], t.attributes['http.response.status_code'], t.status.code])).toEqual([
      [root?.spanId, 1, 503, 'ERROR'],
      [root?.spanId, 2, 200, 'UNSET'],
    ]);
    expect(tries[1]?.attributes['sluice.retry_reason']).toBe('status_503');
    const hops = of('consumer', 'SERVER');
    expect(hops.map((h) => h.parentSpanId).sort()).toEqual(tries.map((t) => t.spanId).sort());
    expect(of('consumer', 'CLIENT').map((c) => c.parentSpanId).sort()).toEqual(hops.map((h) => h.spanId).sort());

    // The errored try makes it a failed trace: in the service's list of failed ones, in call order.
    const listed = await send({ port: control.apiPort, path: '/v1/traces?errored=true&limit=5', headers: auth });
    const summaries = (JSON.parse(listed.text) as { traces: { traceId: string; services: string[]; spanCount: number; errored: boolean; error: string | null }[] }).traces;
    expect(summaries.find((t) => t.traceId === TRACE)).toMatchObject({ spanCount: 7, services: ['producer', 'consumer'], errored: true });
  });
});
