// Overload benchmark: one run, one markdown table. See bench/README.md ("Overload").
//
//   node bench/overload.ts          (npm run bench:overload; builds dist/ first)
//
// A consumer app of fixed capacity (bench/overload-app.ts: 20 slots × 20 ms = 1000 req/s, an
// unbounded FIFO behind them) takes open-loop load from two producers (bench/overload-load.ts:
// 1 s client deadline, refusals retried) at an unloaded rate and at 1×, 2× and 5× its capacity,
// directly, through nginx and haproxy (default and hand-sized to the app), and through sluice
// sidecars (one per producer, one in front of the app, adaptive admission, credits off and on).
// The load generator runs on one core; the app, what fronts it and the producer sidecars on the
// other (bench/overload-targets.ts). Everything started here is stopped by PID at the end, also
// on error or Ctrl-C.
import os from 'node:os';
import path from 'node:path';
import type { AppStats } from './overload-app.ts';
import type { OverloadLoadResult } from './overload-load.ts';
import { CLK_TCK, cpuBusyTicks, otherCpuMeter, ticksDelta, treeTicks, waitQuiet } from './lib/cpu.ts';
import type { BenchOutcome } from './lib/procs.ts';
import {
  NODE,
  Proc,
  ROOT,
  checkNice,
  checkPlatform,
  envList,
  envNice,
  envNum,
  httpGet,
  isAborting,
  loadAverage,
  makeTmpDir,
  pinSelf,
  pinned,
  proxyVersions,
  runMain,
  sleep,
  sluiceNodeFlags,
  sluiceRevision,
  versionOf,
  waitFor,
} from './lib/procs.ts';
import { type LevelResult, NOISY_PCT, type RowResult, table } from './overload-report.ts';
import { C, HAPROXY_MAXCONN, HOST, NGINX_LIMIT, NGINX_WORKER_CONNECTIONS, ROWS, type RowSpec, type Target, consumerPolicy, producerPolicy } from './overload-targets.ts';

const P = {
  seconds: envNum('BENCH_OVERLOAD_SECONDS', 5),
  warmupSeconds: envNum('BENCH_OVERLOAD_WARMUP_SECONDS', 2),
  warmupRate: envNum('BENCH_OVERLOAD_WARMUP_RATE', 500),
  unloadedRate: envNum('BENCH_OVERLOAD_UNLOADED_RATE', 200),
  /** Multiples of the app's capacity. */
  levels: envList('BENCH_OVERLOAD_LEVELS', '1,2,5').map(Number),
  /** Per producer: enough for every request of 5× to be on the wire within its deadline. */
  connections: envNum('BENCH_OVERLOAD_CONNECTIONS', 2560),
  /** After a level, wait up to this long for the app to finish its queue. */
  drainSeconds: envNum('BENCH_OVERLOAD_DRAIN_SECONDS', 60),
  loadCpu: process.env['BENCH_LOAD_CPU'] ?? '0',
  serverCpu: process.env['BENCH_SERVER_CPU'] ?? '1',
  /**
   * The producer sidecars share the app's core, as the mesh row of bench/run.ts does: on the load
   * core they starve the generator, which then cannot keep its schedule at 5×.
   */
  producerCpu: process.env['BENCH_PRODUCER_CPU'] ?? process.env['BENCH_SERVER_CPU'] ?? '1',
  rows: envList('BENCH_ROWS'),
  quietWaitSeconds: process.env['BENCH_QUIET_WAIT_SECONDS'] === '0' ? 0 : envNum('BENCH_QUIET_WAIT_SECONDS', 5),
  /** A level during which other processes used the bench cores is run again, up to this many times. */
  noisyRetries: process.env['BENCH_OVERLOAD_NOISY_RETRIES'] === '0' ? 0 : envNum('BENCH_OVERLOAD_NOISY_RETRIES', 1),
  keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  /** Niceness for every bench process (BENCH_NICE; negative needs root): others' work gets less of the cores. */
  nice: envNice(),
  sluiceNodeFlags: sluiceNodeFlags(),
};

/** The app and the clients, fixed by the scenario (BENCH_OVERLOAD_WORK_MS scales the capacity down for a slower machine). */
const WORK_MS = envNum('BENCH_OVERLOAD_WORK_MS', 20);
const APP = { slots: 20, workMs: WORK_MS, capacity: Math.round((20 * 1000) / WORK_MS), timeoutMs: 1000, maxRetries: 2, backoffMs: 50, fastMs: 10 } as const;

// ---------------------------------------------------------------------------------------------
// Reading the app and the sidecars

async function getJson<T>(url: string, timeoutMs: number): Promise<T> {
  const r = await httpGet(url, timeoutMs);
  if (r.status !== 200) throw new Error(`GET ${url}: status ${r.status} ${r.body.slice(0, 500)}`);
  return JSON.parse(r.body) as T;
}

/** Prometheus text: sum of the samples of `name` (exact metric name), by label set. */
async function metricSamples(admin: number, name: string): Promise<Map<string, number>> {
  const r = await httpGet(`http://127.0.0.1:${admin}/metrics`, 5000);
  const out = new Map<string, number>();
  for (const line of r.body.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(name.length, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

/** Local replies (the sidecar answered itself) per sidecar and code, as "consumer:shed 12" keys. */
async function localReplies(t: Target): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const admins: [string, number][] = [['consumer', t.consumerAdmin as number], ...(t.producerAdmins ?? []).map((a, i): [string, number] => [`producer-${i + 1}`, a])];
  for (const [who, admin] of admins) {
    for (const [labels, v] of await metricSamples(admin, 'sluice_local_replies_total')) {
      const code = /code="([^"]*)"/.exec(labels)?.[1] ?? '?';
      out.set(`${who} ${code}`, (out.get(`${who} ${code}`) ?? 0) + v);
    }
  }
  return out;
}

/** Waits until the app has nothing queued or in progress; its stats then. */
async function appDrained(statsUrl: string): Promise<{ stats: AppStats; drained: boolean }> {
  const deadline = Date.now() + P.drainSeconds * 1000;
  for (;;) {
    const stats = await getJson<AppStats>(statsUrl, 5000);
    if (stats.queued === 0 && stats.inProgress === 0) return { stats, drained: true };
    if (Date.now() > deadline || isAborting()) return { stats, drained: false };
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------
// One row: start the proxy and the generator, warm up, then each level

async function runLevel(t: Target, app: AppPorts, control: number, rate: number, label: string, roots: number[]): Promise<LevelResult> {
  if (P.quietWaitSeconds > 0 && (await waitQuiet([P.loadCpu, P.serverCpu], P.quietWaitSeconds)) === undefined) {
    process.stderr.write(`[overload] CPUs still busy with other work after ${P.quietWaitSeconds}s; starting ${label} anyway\n`);
  }
  await getJson(`http://127.0.0.1:${app.stats}/__reset`, 5000);
  const sluice = t.consumerAdmin !== undefined;
  const wire0 = sluice ? sum(await metricSamples(t.consumerAdmin as number, 'http_server_request_duration_seconds_count')) : 0;
  const replies0 = sluice ? await localReplies(t) : undefined;
  const noise = otherCpuMeter([P.loadCpu, P.serverCpu], roots);
  const proxyRoots = t.procs.map((p) => p.pid);
  const proxy0 = treeTicks(proxyRoots);
  const busy0 = cpuBusyTicks();
  const t0 = performance.now();
  process.stderr.write(`[overload]   ${label}: ${rate} req/s for ${P.seconds}s\n`);
  const load = await getJson<OverloadLoadResult>(`http://127.0.0.1:${control}/run?rate=${rate}&seconds=${P.seconds}`, P.seconds * 1000 + 30_000);
  const otherCpuPct = noise(0);
  const busy1 = cpuBusyTicks();
  const proxyTicks = ticksDelta(proxy0, treeTicks(proxyRoots));
  const busyPct = (cpu: string): number => (((busy1.get(cpu) ?? 0) - (busy0.get(cpu) ?? 0)) / CLK_TCK / ((performance.now() - t0) / 1000)) * 100;
  const loadEnded = performance.timeOrigin + performance.now();
  const { stats, drained } = await appDrained(`http://127.0.0.1:${app.stats}/__stats`);
  const res: LevelResult = {
    label,
    rate,
    load,
    app: stats,
    drained,
    otherCpuPct,
    serverCpuPct: busyPct(P.serverCpu),
    proxyCpuPct: proxyRoots.length === 0 ? undefined : (proxyTicks / CLK_TCK / ((performance.now() - t0) / 1000)) * 100,
    runs: 1,
    appTailMs: Math.max(0, stats.lastCompletedAt - loadEnded),
  };
  res.wire = load.wireAttempts;
  if (sluice) {
    res.wire = sum(await metricSamples(t.consumerAdmin as number, 'http_server_request_duration_seconds_count')) - wire0;
    const replies1 = await localReplies(t);
    res.localReplies = [...replies1].map(([k, v]) => [k, v - (replies0?.get(k) ?? 0)] as [string, number]).filter(([, v]) => v > 0);
  }
  for (const p of t.procs) if (!p.alive) throw new Error(`${p.name} died during ${label}\n${p.describe()}`);
  return res;
}

interface AppPorts {
  proc: Proc;
  port: number;
  stats: number;
}

async function runRow(spec: RowSpec, tmp: string, app: AppPorts): Promise<RowResult> {
  const res: RowResult = { id: spec.id, label: spec.label, levels: [] };
  const why = spec.skip();
  if (why !== undefined) return { ...res, skipped: why };
  let target: Target | undefined;
  let gen: Proc | undefined;
  try {
    process.stderr.write(`[overload] ${spec.label}: starting\n`);
    target = await spec.start(tmp, app.port);
    const [cmd, args] = pinned(P.loadCpu, NODE, [
      '--expose-gc', path.join(ROOT, 'bench', 'overload-load.ts'),
      '--urls', target.urls.join(','), '--host', HOST, '--connections', String(P.connections),
      '--timeout-ms', String(APP.timeoutMs), '--max-retries', String(APP.maxRetries),
      '--backoff-ms', String(APP.backoffMs), '--fast-ms', String(APP.fastMs),
    ], P.nice);
    const g = new Proc('overload-load', cmd, args);
    gen = g;
    await waitFor('load generator', [g], async () => /^control \d+/m.test(g.stdout), 10_000);
    const control = Number(/^control (\d+)/m.exec(g.stdout)?.[1]);
    const roots = [app.proc.pid, g.pid, ...target.procs.map((p) => p.pid)];
    process.stderr.write(`[overload]   warm-up: ${P.warmupRate} req/s for ${P.warmupSeconds}s\n`);
    await getJson(`http://127.0.0.1:${control}/run?rate=${P.warmupRate}&seconds=${P.warmupSeconds}`, P.warmupSeconds * 1000 + 30_000);
    await appDrained(`http://127.0.0.1:${app.stats}/__stats`);
    const levels: [string, number][] = [[`unloaded`, P.unloadedRate], ...P.levels.map((m): [string, number] => [`${m}×`, m * APP.capacity])];
    for (const [label, rate] of levels) {
      if (isAborting()) throw new Error('interrupted');
      let r = await runLevel(target, app, control, rate, label, roots);
      for (let k = 1; k <= P.noisyRetries && r.otherCpuPct >= NOISY_PCT; k++) {
        process.stderr.write(`[overload]   ${label}: other processes used ${r.otherCpuPct.toFixed(0)}% of a core: once more\n`);
        r = { ...(await runLevel(target, app, control, rate, label, roots)), runs: k + 1 };
      }
      res.levels.push(r);
    }
    if (target.consumerAdmin !== undefined) {
      // What the sidecars' backpressure layers report about themselves at the end of the row.
      const lines: string[] = [];
      for (const [who, admin] of [['consumer', target.consumerAdmin], ...(target.producerAdmins ?? []).map((a, i) => [`producer-${i + 1}`, a])] as [string, number][]) {
        const r = await httpGet(`http://127.0.0.1:${admin}/metrics`, 5000);
        for (const l of r.body.split('\n')) {
          if (/^sluice_(?!ratelimit)\w*(admission|adaptive|credit|shed|concurren|limit|queue|retries|circuit_breaker_state)\w*[{ ]/.test(l)) lines.push(`${who}: ${l}`);
        }
      }
      res.sluiceMetrics = lines;
    }
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`[overload] ${spec.label}: FAILED: ${res.error.slice(0, 2000)}\n`);
  } finally {
    await gen?.stop(1000);
    if (target !== undefined) await Promise.all(target.procs.map((p) => p.stop()));
    // A proxy that died leaves the app with work for nobody: let it finish before the next row.
    await appDrained(`http://127.0.0.1:${app.stats}/__stats`).catch(() => undefined);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Report header

function header(loadStart: string, loadEnd: string): string {
  const cpus = os.cpus();
  const indent = (yaml: string): string => yaml.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
  return [
    '## sluice overload benchmark',
    '',
    `- date: ${new Date().toISOString()}; machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${os.type()} ${os.release()}; load average at start ${loadStart}, at end ${loadEnd}`,
    `- node: ${versionOf(NODE, ['--version'])}; sluice ${sluiceRevision()} (\`node ${[...P.sluiceNodeFlags, 'dist/main.js'].join(' ')} proxy --policy FILE\`); ${proxyVersions()}`,
    `- pinning: load generator and this process on CPU ${P.loadCpu}; the app and what fronts it (nginx, haproxy, the consumer sidecar) on CPU ${P.serverCpu}; the two producer sidecars on CPU ${P.producerCpu} (BENCH_LOAD_CPU, BENCH_SERVER_CPU, BENCH_PRODUCER_CPU)${P.nice === undefined ? '' : `; every bench process at nice ${P.nice} (BENCH_NICE)`}`,
    `- app: bench/overload-app.ts, ${APP.slots} slots × ${APP.workMs} ms of timer work = ${APP.capacity} req/s, unbounded FIFO behind the slots, never checks whether the client is still there; *wasted* = work that ended after the client's give-up time or on a closed connection`,
    `- load: bench/overload-load.ts, two producers (one undici Pool each, up to ${P.connections} connections each), open loop, requests alternate between them; \`GET /\` \`Host: ${HOST}\`; latency from the scheduled send time; client deadline ${APP.timeoutMs} ms (then it aborts); 503, 429 and connection errors retried at most ${APP.maxRetries} times after ${APP.backoffMs} ms × 2^n × [0.5, 1.5) if that is before the deadline (Retry-After ≥ 1 s ignored); ${P.warmupSeconds} s warm-up at ${P.warmupRate} req/s per row, then each level for ${P.seconds} s: unloaded (${P.unloadedRate} req/s), then ${P.levels.map((m) => `${m}× (${m * APP.capacity} req/s)`).join(', ')} (BENCH_OVERLOAD_SECONDS, _WARMUP_SECONDS, _WARMUP_RATE, _UNLOADED_RATE, _LEVELS, _CONNECTIONS)`,
    `- between levels the bench waits (up to ${P.drainSeconds} s, BENCH_OVERLOAD_DRAIN_SECONDS) for the app to finish its queue, and up to ${P.quietWaitSeconds} s for both CPUs to go idle (BENCH_QUIET_WAIT_SECONDS); the app's counters cover the level and its drain; a level during which other processes used ≥${NOISY_PCT}% of a core is run again, up to ${P.noisyRetries} times (BENCH_OVERLOAD_NOISY_RETRIES)`,
    `- columns: *goodput* = 2xx within the deadline ÷ level length; *p99* of 2xx only; *× unloaded* divides by the same row's unloaded p99; *1st-try* = p99 of the 2xx that needed no client retry (admitted work, without the clients' backoff); *refused fast* = requests whose last attempt was refused (503/429/connection error) within ${APP.fastMs} ms; *timed out* = the client gave up at ${APP.timeoutMs} ms; shares are of offered requests; *wire* = requests that reached the consumer's host: client attempts written to a connection for direct/nginx/haproxy (the rest gave up still queued in the client's pool), the consumer sidecar's \`http_server_request_duration_seconds_count\` (summed) for sluice rows; *app got* = requests the app received`,
    '- nginx: the shared bench config (one worker, upstream keep-alive, `proxy_http_version 1.1`), `worker_connections ' + NGINX_WORKER_CONNECTIONS + '`; "limit_conn 20" adds `' + NGINX_LIMIT.join(' ') + '`',
    `- haproxy: the shared bench config (\`nbthread 1\`, \`http-reuse always\`, \`timeout server 120s\`, \`timeout connect 1s\`), \`maxconn ${HAPROXY_MAXCONN}\`; "maxconn 20" is \`server s1 … maxconn 20\` (requests queue in haproxy; \`timeout queue\` unset = the connect timeout)`,
    '- sluice policies as run (ports are picked free at run time; shown here with example ports); sidecar env POD_NAME=consumer-1, producer-1, producer-2:',
    '',
    indent(consumerPolicy(15000, 15006, 8080, true).replace('credits: {}', 'credits: {}   # credits-on row only')),
    '',
    indent(producerPolicy('producer-1', 15000, 15001, 15006, true).replace('credits: {}', 'credits: {}   # credits-on row only')),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<BenchOutcome> {
  checkPlatform([P.loadCpu, P.serverCpu, P.producerCpu]);
  checkNice(P.nice);
  Object.assign(C, { serverCpu: P.serverCpu, producerCpu: P.producerCpu, nice: P.nice, sluiceNodeFlags: P.sluiceNodeFlags });
  for (const m of P.levels) if (!(m > 0)) throw new Error(`BENCH_OVERLOAD_LEVELS: ${m} is not a positive multiple`);
  pinSelf(P.loadCpu);
  const startLoad = loadAverage();
  const tmp = makeTmpDir('sluice-overload-', P.keepTmp);
  const [cmd, args] = pinned(P.serverCpu, NODE, [path.join(ROOT, 'bench', 'overload-app.ts'), String(APP.slots), String(APP.workMs)], P.nice);
  const proc = new Proc('app', cmd, args);
  await waitFor('app', [proc], async () => /^listening \d+ \d+$/m.test(proc.stdout), 10_000);
  const [port, stats] = (/^listening (\d+) (\d+)$/m.exec(proc.stdout) ?? []).slice(1).map(Number) as [number, number];
  const app: AppPorts = { proc, port, stats };
  const results: RowResult[] = [];
  for (const spec of ROWS.filter((r) => P.rows.length === 0 || P.rows.includes(r.id))) {
    if (isAborting()) throw new Error('interrupted');
    results.push(await runRow(spec, tmp, app));
    if (!proc.alive) throw new Error(`app died\n${proc.describe()}`);
  }
  const endLoad = loadAverage();
  return {
    report: () => `${header(startLoad, endLoad)}\n\n${table(results)}`,
    failed: results.some((r) => r.error !== undefined),
  };
}

runMain('overload', main);
