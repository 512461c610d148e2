// The metrics as Prometheus sees them: a real Prometheus (Debian's package) scrapes a sidecar
// under traffic and a retry counter and the latency histograms read back through its query API;
// promtool's linter passes the /metrics of a producer and a consumer sidecar with every layer
// on, and of the config service.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.ts';
import { policyRepo, startTestControl } from '../support/control.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { onFreePort } from '../support/raw-upstream.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type TestSidecar } from '../support/sidecar.ts';
import { toolAvailable } from '../support/tools.ts';

const track = closeAfterEach();

/** Node's process metrics (prom-client's defaults), documented as a group. */
const PROCESS_METRIC = /^(process_|nodejs_)/;

/** The README's metrics reference: family name → type, from its table rows. */
function metricsReference(): Map<string, string> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const out = new Map<string, string>();
  for (const row of readme.matchAll(/^\| ((?:`[a-z_]+`(?:, )?)+) \| (counter|gauge|histogram) \|/gm)) {
    for (const name of (row[1] as string).matchAll(/`([a-z_]+)`/g)) out.set(name[1] as string, row[2] as string);
  }
  return out;
}
const hasPrometheus = toolAvailable('prometheus', ['--version'], 'apt-get install -y prometheus');
const hasPromtool = toolAvailable('promtool', ['--version'], 'apt-get install -y prometheus');

let prometheus: ChildProcess | undefined;
let dataDir: string | undefined;
afterEach(async () => {
  const p = prometheus;
  prometheus = undefined;
  if (p !== undefined && p.exitCode === null) {
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
  }
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  dataDir = undefined;
});

async function startPrometheus(targetPort: number): Promise<number> {
  dataDir = await mkdtemp(join(tmpdir(), 'sluice-prometheus-'));
  const config = join(dataDir, 'prometheus.yml');
  await writeFile(
    config,
    ['global:', '  scrape_interval: 1s', '  scrape_timeout: 900ms', 'scrape_configs:', '  - job_name: sluice', '    static_configs:', `      - targets: ['127.0.0.1:${targetPort}']`, ''].join('\n'),
  );
  const dir = dataDir;
  return onFreePort((port) => runPrometheus(config, dir, port), (err) => /address already in use/i.test(String(err)));
}

async function runPrometheus(config: string, dir: string, port: number): Promise<number> {
  let output = '';
  const p = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  p.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  p.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  prometheus = p;
  await eventually(
    'prometheus ready',
    async () => {
      if (p.exitCode !== null) throw new Error(`prometheus exited with ${p.exitCode}:\n${output}`);
      // Ours, not whatever else may listen there: Prometheus names itself in /-/ready.
      const r = await send({ port, path: '/-/ready', timeoutMs: 1000 }).catch(() => ({ status: 0, text: '' }));
      return (r.status === 200 && r.text.includes('Prometheus')) || undefined;
    },
    15_000,
    50,
  );
  return port;
}

/** An instant query's single value, or undefined while it has no result yet. */
async function queryValue(port: number, promql: string): Promise<number | undefined> {
  const r = await send({ port, path: `/api/v1/query?query=${encodeURIComponent(promql)}` });
  const body = JSON.parse(r.text) as { status: string; error?: string; data?: { result: { value: [number, string] }[] } };
  if (body.status !== 'success') throw new Error(`${promql}: ${body.error}`);
  const [first] = body.data?.result ?? [];
  return first === undefined ? undefined : Number(first.value[1]);
}

describe.runIf(hasPrometheus)('a real Prometheus scraping a sidecar', () => {
  it('reads the retry counter and the latency histograms back through the query API', async () => {
    // Every request's first try gets a 503 and its retry a 200.
    let n = 0;
    const up = track(await startScriptedUpstream(() => (n++ % 2 === 0 ? { status: 503 } : { status: 200, body: 'ok' })));
    const sc = track(await startTestSidecar({ outbound: { upstreams: [upstream('orders', up.endpoint)] } }));
    const port = await startPrometheus(sc.adminPort);
    for (let i = 0; i < 6; i++) expect((await send({ port: sc.outboundPort, host: 'orders', path: `/orders/${i}` })).status).toBe(200);

    const retries = await eventually('the retries in Prometheus', async () => ((await queryValue(port, 'sum(sluice_retries_total{upstream="orders",reason="status_503"})')) === 6 ? 6 : undefined), 15_000, 100);
    expect(retries).toBe(6);
    // The callers' view: six requests, all 200; the upstream's: twelve tries, half 503.
    expect(await queryValue(port, 'sum(http_server_request_duration_seconds_count{direction="outbound",upstream="orders",http_response_status_code="200"})')).toBe(6);
    expect(await queryValue(port, 'sum by (http_response_status_code) (http_client_request_duration_seconds_count{upstream="orders",http_response_status_code="503"})')).toBe(6);
    expect(await queryValue(port, 'sum(http_client_request_duration_seconds_count{upstream="orders"})')).toBe(12);
    // The histogram's buckets are there to take a quantile of: finite, and within the buckets.
    const p50 = await queryValue(port, 'histogram_quantile(0.5, sum by (le) (http_server_request_duration_seconds_bucket{upstream="orders"}))');
    expect(p50).toBeGreaterThan(0);
    expect(p50).toBeLessThanOrEqual(10);
    // No raw path became a label: the six paths are one series.
    expect(await queryValue(port, 'count(http_server_request_duration_seconds_count{upstream="orders"})')).toBe(1);
  });
});

/** promtool's linter on one /metrics text: its complaints, '' when there are none. */
function lint(text: string): string {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim() + (r.status === 0 ? '' : ` (exit ${r.status})`);
}

describe.runIf(hasPromtool)('promtool check metrics', () => {
  it('passes the sidecars with every layer on, after traffic, and the config service', async () => {
    const app = track(await startScriptedUpstream(() => ({ status: 200, body: 'ok' })));
    const consumer: TestSidecar = track(
      await startTestSidecar({
        inbound: {
          app: { address: '127.0.0.1', port: app.port },
          rateLimits: [{ name: 'inbound-all', requestsPerSecond: 10_000 }],
          admission: { maxConcurrency: 8 },
          credits: { leaseMs: 1000 },
          idempotency: {},
        },
      }),
    );
    const other = track(await startScriptedUpstream(() => ({ status: 503 })));
    const producer = track(
      await startTestSidecar({
        outbound: {
          upstreams: [
            upstream('orders', `127.0.0.1:${consumer.inboundPort}`, { credits: { maxWaitMs: 50 }, hedge: { delayMs: 200, maxHedges: 1 } }),
            upstream('billing', other.endpoint, { rateLimits: [{ name: 'all', requestsPerSecond: 10_000 }], circuitBreaker: { minRequests: 2 } }),
          ],
        },
      }),
    );
    for (let i = 0; i < 3; i++) {
      expect((await send({ port: producer.outboundPort, host: 'orders', path: '/', headers: { 'idempotency-key': `k${i}` } })).status).toBe(200);
      await send({ port: producer.outboundPort, host: 'billing', path: '/' });
    }
    const control = track(await startTestControl(await policyRepo()));
    const documented = metricsReference();
    for (const [who, port] of [
      ['producer', producer.adminPort],
      ['consumer', consumer.adminPort],
      ['config service', control.apiPort],
    ] as const) {
      const text = (await send({ port, path: '/metrics' })).text;
      expect(text, who).toContain('# TYPE');
      expect(lint(text), who).toBe('');
      // The reference in the README lists every family exported, with its type.
      for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        const [name, type] = [m[1] as string, m[2] as string];
        if (PROCESS_METRIC.test(name)) continue;
        expect(documented.get(name), `${who}: ${name} (${type}) is not in README's metrics reference`).toBe(type);
      }
    }
  });

  it("every metric in the README's reference is declared in the source, so the docs cannot list a ghost", async () => {
    const source = execFileSync('git', ['grep', '-h', '-o', "'\\(sluice\\|http\\)_[a-z_]*'", '--', 'src'], { cwd: ROOT, encoding: 'utf8' });
    const declared = new Set(source.split('\n').map((l) => l.replaceAll("'", '')));
    for (const name of metricsReference().keys()) expect(declared.has(name), `${name} is documented but declared nowhere in src/`).toBe(true);
  });
});
