// How fast an open circuit breaker answers: one run, one markdown table. See bench/README.md.
//
//   node bench/breaker.ts          (npm run bench:breaker)
//
// sluice (the built dist/, default policy) in front of an upstream whose endpoint refuses every
// connection. The first tries fail (connect failures), the breaker opens, and from then on every
// request is answered by sluice itself with 503 circuit-open. A keep-alive client sends requests
// one at a time and times each from send to the end of the reply; the same client against a local
// Node server answering 200 is the yardstick. Bounded: BENCH_REQUESTS requests per row.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BenchOutcome } from './lib/procs.ts';
import { envNum, fmt, freePort, httpGet, makeTmpDir, runMain, sleep, sluiceNodeFlags, sluiceRevision } from './lib/procs.ts';
import { sluiceMissing, sluicePolicy, startSluice } from './lib/proxies.ts';
import { percentile } from './lib/stats.ts';

const P = {
  requests: envNum('BENCH_REQUESTS', 5000),
  cpu: process.env['BENCH_SERVER_CPU'] ?? '1',
};

interface Timing {
  readonly label: string;
  readonly statuses: Map<number, number>;
  readonly ms: number[];
}

/** `n` sequential GETs on one keep-alive connection; each timed from send to the reply's end. */
async function timeRequests(label: string, port: number, host: string, n: number): Promise<Timing> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const statuses = new Map<number, number>();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('bench client timeout')));
      req.on('error', reject);
    });
    ms.push(performance.now() - t0);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
  agent.destroy();
  return { label, statuses, ms };
}

async function main(): Promise<BenchOutcome> {
  const missing = sluiceMissing();
  if (missing !== undefined) throw new Error(missing);
  const tmp = makeTmpDir('sluice-bench-breaker-', false);

  // The yardstick: a local server answering 200 with a short body.
  const direct = http.createServer((_q, s) => s.end('ok\n'));
  await new Promise<void>((r) => direct.listen(0, '127.0.0.1', r));
  const directPort = (direct.address() as AddressInfo).port;

  // An endpoint nothing listens on: every connect is refused.
  const deadPort = await freePort();
  const admin = await freePort();
  const out = await freePort();
  const policy = sluicePolicy({
    name: 'bench-breaker',
    adminPort: admin,
    graceMs: 2000,
    outbound: { port: out, upstream: 'down', hosts: ['down'], endpoints: [`127.0.0.1:${deadPort}`] },
  });
  await startSluice(path.join(tmp, 'sluice.yaml'), policy, 'sluice', admin, P.cpu, undefined, sluiceNodeFlags());

  // Open the breaker: failures until its state gauge says open (bounded).
  const openBy = Date.now() + 10_000;
  for (;;) {
    await httpGet(`http://127.0.0.1:${out}/`, 5000, 'down');
    const m = await httpGet(`http://127.0.0.1:${admin}/metrics`, 2000);
    if (/sluice_circuit_breaker_state\{upstream="down",route="",state="open"\} 1/.test(m.body)) break;
    if (Date.now() > openBy) throw new Error('the breaker did not open within 10 s');
    await sleep(5);
  }

  const rows = [
    await timeRequests('direct (local server, 200)', directPort, 'direct', P.requests),
    await timeRequests('sluice, breaker open (503 circuit-open)', out, 'down', P.requests),
  ];
  direct.close();

  const failed = rows[1]!.statuses.get(503) !== P.requests;
  const lines = [
    '## sluice open-breaker benchmark',
    '',
    `- date: ${new Date().toISOString()}; sluice ${sluiceRevision()}; node ${process.version} (client)`,
    `- ${P.requests} sequential GETs per row on one keep-alive connection, each timed from send to the end of the reply; sluice pinned to CPU ${P.cpu}, default policy (circuitBreaker: minRequests 20, failureRatio 0.5, openMs 5000 doubling to 60000), its one endpoint refusing connections`,
    '',
    '| row | statuses | p50 ms | p99 ms | max ms |',
    '|---|---|---:|---:|---:|',
  ];
  for (const r of rows) {
    const sorted = [...r.ms].sort((a, b) => a - b);
    const statuses = [...r.statuses].map(([s, n]) => `${s} × ${n}`).join(', ');
    lines.push(`| ${r.label} | ${statuses} | ${fmt(percentile(sorted, 0.5), 3)} | ${fmt(percentile(sorted, 0.99), 3)} | ${fmt(sorted.at(-1), 3)} |`);
  }
  if (failed) lines.push('', '**FAILED**: not every request through sluice was answered 503 circuit-open.');
  return { report: () => lines.join('\n'), failed };
}

runMain('breaker', main);
