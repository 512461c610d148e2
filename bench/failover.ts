// Endpoint-failure benchmark: one run, one markdown table. See bench/README.md.
//
//   node bench/failover.ts          (npm run bench:failover)
//
// Three upstream endpoints (bench/failover-upstream.ts, one process, with a control port). An
// open-loop fixed-rate load (bench/failover-load.ts) runs through the proxy under test; partway
// through, this process turns one endpoint faulty (503 to everything, or hangs), then healthy
// again. Rows: sluice (default policy), nginx, haproxy, each x fault kind. Upstreams and proxy on
// one core, load generator and this process on the other. Everything started here is stopped by
// PID at the end, also on error or Ctrl-C.
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { LoadRecord } from './failover-load.ts';
import type { BenchOutcome } from './lib/procs.ts';
import {
  NODE,
  Proc,
  ROOT,
  checkPlatform,
  envList,
  envNum,
  fmt,
  freePort,
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
import { percentile } from './lib/stats.ts';
import { haproxyConf, nginxConf, sluicePolicy, startHaproxy, startNginx, startSluice, sluiceMissing, toolMissing } from './lib/proxies.ts';

const P = {
  rate: envNum('BENCH_RATE', 1500),
  healthySeconds: envNum('BENCH_HEALTHY_SECONDS', 3),
  faultSeconds: envNum('BENCH_FAULT_SECONDS', 10),
  recoverySeconds: envNum('BENCH_RECOVERY_SECONDS', 4),
  warmupSeconds: envNum('BENCH_WARMUP_SECONDS', 3),
  connections: envNum('BENCH_CONNECTIONS', 512),
  drainSeconds: envNum('BENCH_DRAIN_SECONDS', 6),
  loadCpu: process.env['BENCH_LOAD_CPU'] ?? '0',
  serverCpu: process.env['BENCH_SERVER_CPU'] ?? '1',
  rows: envList('BENCH_ROWS'),
  faults: envList('BENCH_FAULTS', '503,hang') as Fault[],
  keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  sluiceNodeFlags: sluiceNodeFlags(),
};
type Fault = '503' | 'hang';
/** Index of the endpoint that goes bad. */
const BAD = 1;
/** "Still receiving at fault end": a request reached the bad endpoint this close to recovery. */
const NEVER_MS = 250;
const BURST_MS = 100;

const nowEpoch = (): number => performance.timeOrigin + performance.now();

const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : '—');

const serverCmd = (cmd: string, args: string[]): [string, string[]] => pinned(P.serverCpu, cmd, args);

// ---------------------------------------------------------------------------------------------
// Proxies under test. Each gets the three endpoint ports and returns the URL to load.

interface Target {
  url: string;
  proc: Proc;
  adminPort?: number;
}

interface RowSpec {
  id: string;
  label: string;
  skip(): string | undefined;
  start(tmp: string, eps: number[]): Promise<Target>;
}

const HOST = 'svc';

function nginxUpstream(eps: number[]): string[] {
  return eps.map((p) => `server 127.0.0.1:${p} max_fails=3 fail_timeout=2s;`);
}
const NGINX_DOC = `\`upstream svc { server … max_fails=3 fail_timeout=2s; ×3; keepalive 128; }\`, \`proxy_next_upstream error timeout http_503; proxy_next_upstream_tries 3; proxy_next_upstream_timeout 5s; proxy_connect_timeout 1s; proxy_read_timeout 2s; proxy_send_timeout 2s\`, HTTP/1.1 keep-alive to the upstreams, round robin (nginx open source: passive failure detection only)`;

function haproxyServers(eps: number[]): string[] {
  return eps.map((p, i) => `server s${i} 127.0.0.1:${p}`);
}
const HAPROXY_DOC = `\`balance roundrobin\`, \`retries 3\`, \`option redispatch 1\`, \`retry-on all-retryable-errors\`, \`option httpchk GET /health\` + \`http-check expect status 200\`, \`default-server check inter 500 fall 2 rise 2 observe layer7 error-limit 10 on-error mark-down\`, \`timeout connect 1s\`, \`timeout server 2s\`, \`timeout check 1s\`, \`http-reuse always\`, \`nbthread 1\``;
const SLUICE_DOC = `outbound listener, \`upstreams: [{name: svc, hosts: [svc], endpoints: [3 × 127.0.0.1:PORT]}]\`, everything else default (p2c-ewma, outlier detection \`enforce\`: 5 consecutive failures / success rate / latency, base ejection 1 s; retries: 3 attempts on 502/503/504 and connection errors with a 20% budget; timeouts connect 1 s, per try 5 s, request 15 s)`;

const ROWS: RowSpec[] = [
  {
    id: 'sluice',
    label: 'sluice',
    skip: sluiceMissing,
    start: async (tmp, eps) => {
      const admin = await freePort();
      const port = await freePort();
      const policy = sluicePolicy({
        name: 'failover',
        adminPort: admin,
        graceMs: 1000,
        outbound: { port, upstream: 'svc', hosts: [HOST], endpoints: eps.map((p) => `127.0.0.1:${p}`) },
      });
      const proc = await startSluice(path.join(tmp, 'sluice.yaml'), policy, 'sluice', admin, P.serverCpu, undefined, P.sluiceNodeFlags);
      return { url: `http://127.0.0.1:${port}/`, proc, adminPort: admin };
    },
  },
  {
    id: 'nginx',
    label: 'nginx',
    skip: () => toolMissing('nginx'),
    start: async (tmp, eps) => {
      const dir = path.join(tmp, 'nginx');
      const port = await freePort();
      const conf = nginxConf({
        dir,
        port,
        errorLogLevel: 'crit',
        upstream: 'svc',
        servers: nginxUpstream(eps),
        location: [
          'proxy_next_upstream error timeout http_503;',
          'proxy_next_upstream_tries 3;',
          'proxy_next_upstream_timeout 5s;',
          'proxy_connect_timeout 1s;',
          'proxy_read_timeout 2s;',
          'proxy_send_timeout 2s;',
        ],
      });
      const proc = await startNginx(dir, conf, port, P.serverCpu, undefined, HOST);
      return { url: `http://127.0.0.1:${port}/`, proc };
    },
  },
  {
    id: 'haproxy',
    label: 'haproxy',
    skip: () => toolMissing('haproxy'),
    start: async (tmp, eps) => {
      const port = await freePort();
      const conf = haproxyConf({
        port,
        timeoutServer: '2s',
        defaults: ['timeout check 1s', 'retries 3', 'option redispatch 1', 'retry-on all-retryable-errors'],
        backend: [
          'balance roundrobin',
          'option httpchk GET /health',
          'http-check expect status 200',
          'default-server check inter 500 fall 2 rise 2 observe layer7 error-limit 10 on-error mark-down',
          ...haproxyServers(eps),
        ],
      });
      const proc = await startHaproxy(path.join(tmp, 'haproxy.cfg'), conf, port, P.serverCpu, undefined, HOST);
      return { url: `http://127.0.0.1:${port}/`, proc };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Upstreams

interface UpstreamStats {
  modeChanges: { at: number; ep: number; mode: string }[];
  endpoints: { port: number; arrivals: number[]; health: number; hung: number }[];
}

async function control(ctl: number, q: string): Promise<string> {
  const r = await httpGet(`http://127.0.0.1:${ctl}${q}`, 5000);
  if (r.status !== 200) throw new Error(`upstream control ${q}: status ${r.status}`);
  return r.body;
}

// ---------------------------------------------------------------------------------------------
// One run: proxy x fault kind

interface RunResult {
  label: string;
  fault: Fault;
  skipped?: string;
  error?: string;
  succFault?: number;
  succRecovery?: number;
  succBefore?: number;
  tputFault?: number;
  p99Before?: number;
  p99Fault?: number;
  maxFault?: number;
  stopMs?: number | 'never';
  badDuringFault?: number;
  backMs?: number | 'never';
  burst?: number;
  attemptsPerReq?: number;
  failDetail?: string;
  metrics?: string;
  ejections?: string;
  sendLagP99Ms?: number;
}

function p99(xs: number[]): number {
  return percentile(Float64Array.from(xs).sort(), 0.99);
}

function analyse(res: RunResult, rec: LoadRecord, st: UpstreamStats): void {
  const F = st.modeChanges.find((m) => m.mode !== 'ok')?.at;
  const R = st.modeChanges.find((m) => m.mode === 'ok')?.at;
  if (F === undefined || R === undefined) throw new Error(`fault was not applied and lifted: ${JSON.stringify(st.modeChanges)}`);
  const lastSched = rec.scheduled[rec.scheduled.length - 1] as number;
  const win = (a: number, b: number): number[] => {
    const idx: number[] = [];
    for (let k = 0; k < rec.scheduled.length; k++) {
      const s = rec.scheduled[k] as number;
      if (s >= a && s < b) idx.push(k);
    }
    return idx;
  };
  const ok = (k: number): boolean => (rec.status[k] as number) >= 200 && (rec.status[k] as number) < 300;
  const before = win(-Infinity, F);
  const fault = win(F, R);
  const recovery = win(R, Infinity);
  const rate = (idx: number[]): number => idx.filter(ok).length / idx.length;
  res.succBefore = rate(before);
  res.succFault = rate(fault);
  res.succRecovery = rate(recovery);
  let done = 0;
  for (let k = 0; k < rec.end.length; k++) if (ok(k) && (rec.end[k] as number) >= F && (rec.end[k] as number) < R) done++;
  res.tputFault = done / ((R - F) / 1000);
  const lat = (idx: number[]): number[] => idx.map((k) => (rec.end[k] as number) - (rec.scheduled[k] as number));
  res.p99Before = p99(lat(before));
  res.p99Fault = p99(lat(fault));
  res.maxFault = Math.max(...lat(fault));
  const bad = (st.endpoints[BAD]?.arrivals ?? []).slice().sort((a, b) => a - b);
  const inFault = bad.filter((t) => t >= F && t < R);
  res.badDuringFault = inFault.length;
  const last = inFault[inFault.length - 1];
  res.stopMs = last === undefined ? 0 : last >= R - NEVER_MS ? 'never' : last - F;
  const first = bad.find((t) => t >= R);
  res.backMs = first === undefined || first > lastSched ? 'never' : first - R;
  res.burst = bad.filter((t) => t >= R && t < R + BURST_MS).length;
  let attempts = 0;
  for (const ep of st.endpoints) attempts += ep.arrivals.filter((t) => t >= F && t < R).length;
  res.attemptsPerReq = attempts / fault.length;
  const fails: Record<string, number> = {};
  for (const k of fault) {
    if (ok(k)) continue;
    const s = rec.status[k] as number;
    const key = s === 0 ? 'error' : s === -1 ? 'unanswered' : String(s);
    fails[key] = (fails[key] ?? 0) + 1;
  }
  const recFails = recovery.filter((k) => !ok(k)).length;
  const beforeFails = before.filter((k) => !ok(k)).length;
  const parts: string[] = [];
  if (Object.keys(fails).length > 0) parts.push(`fault-window failures ${Object.entries(fails).map(([k, v]) => `${k}×${v}`).join(', ')}`);
  if (recFails > 0) parts.push(`recovery-window failures ${recFails}`);
  if (beforeFails > 0) parts.push(`FAILURES BEFORE THE FAULT ${beforeFails}`);
  if (rec.firstError !== undefined) parts.push(`first client error: ${rec.firstError}`);
  res.failDetail = parts.join('; ');
  res.sendLagP99Ms = rec.sendLagP99Ms;
}

async function runOne(spec: RowSpec, fault: Fault, tmp: string, ctl: number, eps: number[]): Promise<RunResult> {
  const res: RunResult = { label: spec.label, fault };
  const why = spec.skip();
  if (why !== undefined) return { ...res, skipped: why };
  let target: Target | undefined;
  const timers: NodeJS.Timeout[] = [];
  try {
    await control(ctl, '/reset');
    process.stderr.write(`[failover] ${spec.label} / ${fault}: starting\n`);
    target = await spec.start(tmp, eps);
    const out = path.join(tmp, `load-${spec.id}-${fault}.json`);
    const seconds = P.healthySeconds + P.faultSeconds + P.recoverySeconds;
    const [loadCmd, args] = pinned(P.loadCpu, NODE, [
      path.join(ROOT, 'bench', 'failover-load.ts'),
      '--url', target.url, '--rate', String(P.rate), '--seconds', String(seconds),
      '--warmup-seconds', String(P.warmupSeconds), '--connections', String(P.connections),
      '--host', HOST, '--drain-seconds', String(P.drainSeconds), '--out', out,
    ]);
    const load = new Proc('failover-load', loadCmd, args);
    await waitFor('load generator start', [load], async () => /^start /m.test(load.stdout), 10_000);
    const start = Number(/^start ([\d.]+)/m.exec(load.stdout)?.[1]);
    const at = (ms: number, q: string): void => {
      timers.push(
        setTimeout(() => {
          control(ctl, q).catch((err: unknown) => process.stderr.write(`[failover] control ${q} failed: ${String(err)}\n`));
        }, Math.max(0, start + ms - nowEpoch())),
      );
    };
    at(P.healthySeconds * 1000, `/mode?ep=${BAD}&m=${fault}`);
    at((P.healthySeconds + P.faultSeconds) * 1000, `/mode?ep=${BAD}&m=ok`);
    const bound = (P.warmupSeconds + seconds + P.drainSeconds) * 1000 + 15_000;
    const finished = await Promise.race([load.exited.then(() => true), sleep(bound).then(() => false)]);
    if (!finished) {
      await load.stop(1000);
      throw new Error(`load generator did not finish within ${bound} ms\n${load.describe()}`);
    }
    if (load.exitCode !== 0) throw new Error(`load generator exited ${load.exitCode}\n${load.describe()}`);
    const rec = JSON.parse(readFileSync(out, 'utf8')) as LoadRecord;
    const st = JSON.parse(await control(ctl, '/stats')) as UpstreamStats;
    analyse(res, rec, st);
    if (target.adminPort !== undefined) {
      const m = await httpGet(`http://127.0.0.1:${target.adminPort}/metrics`, 5000);
      res.metrics = m.body
        .split('\n')
        .filter((l) => /^sluice_(outlier_ejections_total|retries_total)\b/.test(l))
        .map((l) => l.replace(/\s+/, ' '))
        .join(', ');
    }
    if (target.adminPort !== undefined && P.keepTmp) {
      // For a closer look at a run: the proxy's whole log beside the load records.
      writeFileSync(path.join(tmp, `log-${spec.id}-${fault}.txt`), `${target.proc.stdout}\n${target.proc.stderr}`);
    }
    if (target.adminPort !== undefined) {
      // sluice logs each ejection (pino JSON on stdout): which endpoint, why, when vs fault start.
      const F = st.modeChanges.find((c) => c.mode !== 'ok')?.at ?? 0;
      const R = st.modeChanges.find((c) => c.mode === 'ok')?.at ?? 0;
      const ev: string[] = [];
      for (const line of `${target.proc.stdout}\n${target.proc.stderr}`.split('\n')) {
        if (!line.includes('endpoint ejected')) continue;
        try {
          const j = JSON.parse(line) as { time?: number | string; endpoint?: string; reason?: string; ejectedForMs?: number };
          const port = Number(String(j.endpoint).split(':').pop());
          const which = port === eps[BAD] ? 'BAD' : `healthy#${eps.indexOf(port)}`;
          const at = typeof j.time === 'string' ? Date.parse(j.time) : Number(j.time);
          const t = at - F;
          const phase = at < F ? 'before fault' : at < R ? 'fault' : 'recovery';
          ev.push(`${which} ${j.reason} for ${j.ejectedForMs} ms at F${t >= 0 ? '+' : ''}${Math.round(t)} ms (${phase})`);
        } catch {
          // not JSON
        }
      }
      res.ejections = ev.length === 0 ? '(none logged)' : ev.join('; ');
    }
    if (!target.proc.alive) throw new Error(`${target.proc.name} died during the run\n${target.proc.describe()}`);
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`[failover] ${spec.label} / ${fault}: FAILED: ${res.error}\n`);
  } finally {
    for (const t of timers) clearTimeout(t);
    if (target !== undefined) await target.proc.stop();
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Report

function header(): string {
  const cpus = os.cpus();
  const total = P.healthySeconds + P.faultSeconds + P.recoverySeconds;
  return [
    '## sluice endpoint-failure benchmark',
    '',
    `- date: ${new Date().toISOString()}; machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${os.type()} ${os.release()}, load average at start ${loadAverage()}`,
    `- node: ${versionOf(NODE, ['--version'])}; sluice ${sluiceRevision()}; ${proxyVersions()}`,
    `- pinning: load generator and this process on CPU ${P.loadCpu}; the three upstreams (one process) and the proxy on CPU ${P.serverCpu}`,
    `- upstreams: bench/failover-upstream.ts, 3 endpoints, 200 + 100-byte body; endpoint #${BAD} becomes faulty: **503** = answers 503 to everything, **hang** = accepts and reads the request, never answers (requests it hung stay hung); then answers normally again`,
    `- load: bench/failover-load.ts, open loop ${P.rate} req/s \`GET /\` \`Host: ${HOST}\`, up to ${P.connections} keep-alive connections, ${P.warmupSeconds}s unrecorded warm-up, then ${total}s recorded: ${P.healthySeconds}s healthy, ${P.faultSeconds}s fault, ${P.recoverySeconds}s recovered; latency from the scheduled send time; requests unanswered ${P.drainSeconds}s after the last send count as failures. A fresh proxy per row.`,
    `- windows: requests are assigned by scheduled send time; fault start/end are the times the upstream switched mode`,
    `- **sluice**: ${SLUICE_DOC}`,
    `- **nginx**: ${NGINX_DOC}`,
    `- **haproxy**: ${HAPROXY_DOC}`,
    `- columns: *success* = 2xx share of requests scheduled in the window; *tput* = 2xx responses completed during the fault ÷ its length; *p99* includes failed requests; *bad stops after* = last request the faulty endpoint received during the fault, measured from fault start ("never" = it still received one within ${NEVER_MS} ms of the recovery; count in brackets = requests it received during the fault); *back after* = first request it received after recovery; *burst* = requests it received in the first ${BURST_MS} ms after recovery (at ${P.rate}/s an even third is ~${Math.round((P.rate / 3) * (BURST_MS / 1000))}); *attempts/req* = requests received by all three endpoints during the fault ÷ client requests scheduled in it (health checks excluded everywhere)`,
  ].join('\n');
}

function table(rows: RunResult[]): string {
  const out = [
    '| proxy | fault | success during fault | success after recovery | tput during fault req/s | p99 ms before | p99 ms during fault | p99 × | bad endpoint stops after ms | back after recovery ms | burst first 100 ms | attempts/req during fault | notes |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const foot: string[] = [];
  for (const r of rows) {
    if (r.skipped !== undefined) {
      out.push(`| ${r.label} | ${r.fault} | — | — | — | — | — | — | — | — | — | — | skipped: ${r.skipped} |`);
      continue;
    }
    if (r.error !== undefined) {
      out.push(`| ${r.label} | ${r.fault} | — | — | — | — | — | — | — | — | — | — | FAILED, see below |`);
      foot.push(`**${r.label} / ${r.fault} failed:**\n\n\`\`\`\n${r.error.slice(0, 3000)}\n\`\`\``);
      continue;
    }
    const ms = (v: number | 'never' | undefined): string => (v === 'never' ? 'never' : fmt(v, 0));
    const notes: string[] = [`max ms during fault ${fmt(r.maxFault, 0)}`];
    if (r.failDetail) notes.push(r.failDetail);
    if ((r.sendLagP99Ms ?? 0) > 1) notes.push(`generator send lag p99 ${fmt(r.sendLagP99Ms)} ms`);
    out.push(
      `| ${r.label} | ${r.fault} | ${pct(r.succFault ?? Number.NaN)} | ${pct(r.succRecovery ?? Number.NaN)} | ${fmt(r.tputFault, 0)} | ${fmt(r.p99Before, 1)} | ${fmt(r.p99Fault, 1)} | ${fmt(
        (r.p99Fault ?? Number.NaN) / (r.p99Before ?? Number.NaN),
        1,
      )} | ${ms(r.stopMs)} (${r.badDuringFault}) | ${ms(r.backMs)} | ${r.burst} | ${fmt(r.attemptsPerReq, 2)} | ${notes.join('; ')} |`,
    );
  }
  const metrics = rows.filter((r) => r.metrics !== undefined);
  if (metrics.length > 0) {
    foot.unshift(
      ['**sluice /metrics at the end of each run:**', '', ...metrics.map((r) => `- ${r.fault}: ${r.metrics === '' ? '(no matching series)' : `\`${r.metrics}\``}; ejections logged (F = fault start): ${r.ejections ?? '—'}`)].join('\n'),
    );
  }
  return [out.join('\n'), ...foot].join('\n\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<BenchOutcome> {
  checkPlatform([P.loadCpu, P.serverCpu]);
  for (const f of P.faults) if (f !== '503' && f !== 'hang') throw new Error(`BENCH_FAULTS: unknown fault ${f}`);
  pinSelf(P.loadCpu);
  const tmp = makeTmpDir('sluice-failover-', P.keepTmp);
  const results: RunResult[] = [];
  const [cmd, args] = serverCmd(NODE, [path.join(ROOT, 'bench', 'failover-upstream.ts'), '3']);
  const up = new Proc('upstreams', cmd, args);
  await waitFor('upstreams', [up], async () => /^listening [\d ]+$/m.test(up.stdout), 10_000);
  const ports = (/^listening ([\d ]+)$/m.exec(up.stdout)?.[1] ?? '').trim().split(' ').map(Number);
  const ctl = ports[0] as number;
  const eps = ports.slice(1);
  for (const spec of ROWS.filter((r) => P.rows.length === 0 || P.rows.includes(r.id))) {
    for (const fault of P.faults) {
      if (isAborting()) throw new Error('interrupted');
      results.push(await runOne(spec, fault, tmp, ctl, eps));
      if (!up.alive) throw new Error(`upstreams died\n${up.describe()}`);
    }
  }
  return { report: () => `${header()}\n\n${table(results)}`, failed: results.some((r) => r.error !== undefined) };
}

runMain('failover', main);
