// Overhead benchmark: one run, one markdown table. See bench/README.md.
//
//   node bench/run.ts          (npm run bench)
//
// Rows: direct (load -> upstream), sluice outbound, sluice outbound -> inbound (two sidecars),
// nginx and haproxy reverse proxies when installed. The load generator runs on one core, the
// upstream and the proxy under test on the other. Everything started here is stopped by PID at
// the end, also on error or Ctrl-C.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FixedRateResult } from './fixed-rate.ts';
import { CLK_TCK, otherCpuMeter, ticksDelta, treeTicks, waitQuiet } from './lib/cpu.ts';
import type { BenchOutcome } from './lib/procs.ts';
import {
  NODE,
  Proc,
  ROOT,
  checkPlatform,
  checkNice,
  envList,
  envNice,
  envNum,
  firstLine,
  fmt,
  freePort,
  isAborting,
  loadAverage,
  makeTmpDir,
  onPath,
  pinSelf,
  pinned,
  processTree,
  proxyVersions,
  runMain,
  sleep,
  sluiceNodeFlags,
  sluiceRevision,
  versionOf,
  waitFor,
} from './lib/procs.ts';
import { haproxyConf, nginxConf, sluicePolicy, startHaproxy, startNginx, startSluice as startSluiceProc, sluiceMissing, toolMissing } from './lib/proxies.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const P = {
  satSeconds: envNum('BENCH_SECONDS', 5),
  warmupSeconds: envNum('BENCH_WARMUP_SECONDS', 3),
  connections: envNum('BENCH_CONNECTIONS', 64),
  rate: envNum('BENCH_RATE', 2000),
  fixedSeconds: envNum('BENCH_FIXED_SECONDS', 5),
  fixedWarmupSeconds: envNum('BENCH_FIXED_WARMUP_SECONDS', 1),
  loadCpu: process.env['BENCH_LOAD_CPU'] ?? '0',
  serverCpu: process.env['BENCH_SERVER_CPU'] ?? '1',
  /** Comma-separated row ids to run (direct always runs: ratios need it). */
  rows: envList('BENCH_ROWS'),
  keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  /** Scheduling niceness for all bench processes (negative needs root): less noise from others. */
  nice: envNice(),
  /** Before each row, wait up to this long for the bench CPUs to go idle (other people's work). */
  quietWaitSeconds: process.env['BENCH_QUIET_WAIT_SECONDS'] === '0' ? 0 : envNum('BENCH_QUIET_WAIT_SECONDS', 10),
  /** Extra node flags for the sidecar processes (BENCH_SLUICE_NODE_FLAGS). */
  sluiceNodeFlags: sluiceNodeFlags(),
};

// ---------------------------------------------------------------------------------------------
// Small utilities

function fmtInt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  return Math.round(n).toLocaleString('en-US');
}

// ---------------------------------------------------------------------------------------------
// /proc accounting

function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Load generators (pinned to the load core). Run through `sh` so the wrapper can report the
// generator's own CPU (its children's utime+stime) for the "other CPU" noise estimate.

interface LoadRun {
  stdout: string;
  stderr: string;
  code: number | null;
  /** CPU ticks used by the generator process. */
  ticks: number;
}

const WRAP = '"$@"; rc=$?; read -r s < /proc/$$/stat; echo "SLUICE_BENCH_STAT $s" >&2; exit $rc';

async function runLoad(name: string, argv: string[], timeoutMs: number): Promise<LoadRun> {
  const [cmd, args] = pinned(P.loadCpu, 'sh', ['-c', WRAP, 'sh', ...argv], P.nice);
  const p = new Proc(name, cmd, args);
  const timedOut = await Promise.race([p.exited.then(() => false), sleep(timeoutMs).then(() => true)]);
  if (timedOut) {
    await p.stop(1000);
    throw new Error(`${name}: did not finish within ${timeoutMs} ms\n${p.describe()}`);
  }
  let ticks = 0;
  const m = /SLUICE_BENCH_STAT (.*)$/m.exec(p.stderr);
  if (m) {
    const s = m[1] as string;
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks = Number(rest[13]) + Number(rest[14]); // cutime(16) + cstime(17)
  }
  const stderr = p.stderr.replace(/^SLUICE_BENCH_STAT .*\n?/m, '');
  return { stdout: p.stdout, stderr, code: p.exitCode, ticks };
}

interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  raw: string;
}

function wrkDurationMs(v: string, unit: string): number {
  const n = Number(v);
  switch (unit) {
    case 'us':
      return n / 1000;
    case 'ms':
      return n;
    case 's':
      return n * 1000;
    case 'm':
      return n * 60_000;
    case 'h':
      return n * 3_600_000;
    default:
      return Number.NaN;
  }
}

export function parseWrk(out: string): WrkResult {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!req || !rps) throw new Error(`could not parse wrk output:\n${out}`);
  const pct = (q: string): number | undefined => {
    const m = new RegExp(`^\\s*${q}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm').exec(out);
    return m ? wrkDurationMs(m[1] as string, m[2] as string) : undefined;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(req[1]),
    seconds: wrkDurationMs(req[2] as string, req[3] as string) / 1000,
    rps: Number(rps[1]),
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock
      ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
    raw: out,
  };
}

async function wrk(url: string, seconds: number): Promise<{ result: WrkResult; ticks: number }> {
  const args = ['wrk', '-t1', `-c${P.connections}`, `-d${seconds}s`, '--latency', '-H', 'Host: bench', url];
  const run = await runLoad('wrk', args, seconds * 1000 + 15_000);
  if (run.code !== 0) throw new Error(`wrk exited ${run.code}: ${run.stderr}\n${run.stdout}`);
  return { result: parseWrk(run.stdout), ticks: run.ticks };
}

async function fixedRate(url: string): Promise<{ result: FixedRateResult; ticks: number }> {
  const args = [
    NODE,
    path.join(ROOT, 'bench', 'fixed-rate.ts'),
    '--url',
    url,
    '--rate',
    String(P.rate),
    '--seconds',
    String(P.fixedSeconds),
    '--warmup-seconds',
    String(P.fixedWarmupSeconds),
    '--connections',
    String(P.connections),
    '--host',
    'bench',
  ];
  const run = await runLoad('fixed-rate', args, (P.fixedSeconds + P.fixedWarmupSeconds) * 1000 + 30_000);
  if (run.code !== 0) throw new Error(`fixed-rate exited ${run.code}: ${run.stderr}`);
  return { result: JSON.parse(firstLine(run.stdout)) as FixedRateResult, ticks: run.ticks };
}

// ---------------------------------------------------------------------------------------------
// Targets: each row starts its proxy process(es) and returns the URL to load.

interface Target {
  url: string;
  /** Root PIDs of the proxy under test (their descendants count too); empty for direct. */
  procs: Proc[];
  /** How peak RSS is combined across `procs`, for the notes. */
  rssNote?: string;
}

interface RowSpec {
  id: string;
  label: string;
  /** Undefined when the row can run; otherwise why it is skipped. */
  skip(): string | undefined;
  start(tmp: string, upstreamPort: number): Promise<Target>;
}

function serverCmd(cmd: string, args: string[]): [string, string[]] {
  return pinned(P.serverCpu, cmd, args, P.nice);
}

async function startUpstream(): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const [cmd, args] = serverCmd(NODE, [path.join(ROOT, 'bench', 'upstream.ts'), String(port)]);
  const proc = new Proc('upstream', cmd, args);
  await waitFor('upstream', [proc], async () => /listening \d+/.test(proc.stdout), 10_000);
  return { proc, port };
}

/** Policy for one bench sidecar: outbound to upstream `bench` (Host: bench), or inbound to the app. */
function benchPolicy(
  name: string,
  adminPort: number,
  outbound: { port: number; endpoint: string } | undefined,
  inbound: { port: number; appPort: number } | undefined,
): string {
  return sluicePolicy({
    name,
    adminPort,
    graceMs: 2000,
    ...(outbound === undefined ? {} : { outbound: { port: outbound.port, upstream: 'bench', hosts: ['bench'], endpoints: [outbound.endpoint] } }),
    ...(inbound === undefined ? {} : { inbound }),
  });
}

async function startSluice(tmp: string, name: string, policy: string, adminPort: number): Promise<Proc> {
  return startSluiceProc(path.join(tmp, `${name}.yaml`), policy, name, adminPort, P.serverCpu, P.nice, P.sluiceNodeFlags);
}

const ROWS: RowSpec[] = [
  {
    id: 'direct',
    label: 'direct',
    skip: () => undefined,
    start: async (_tmp, upstreamPort) => ({ url: `http://127.0.0.1:${upstreamPort}/`, procs: [] }),
  },
  {
    id: 'sluice-outbound',
    label: 'sluice outbound',
    skip: sluiceMissing,
    start: async (tmp, upstreamPort) => {
      const admin = await freePort();
      const out = await freePort();
      const policy = benchPolicy('bench-a', admin, { port: out, endpoint: `127.0.0.1:${upstreamPort}` }, undefined);
      const a = await startSluice(tmp, 'sluice-a', policy, admin);
      return { url: `http://127.0.0.1:${out}/`, procs: [a] };
    },
  },
  {
    id: 'sluice-mesh',
    label: 'sluice outbound→inbound',
    skip: sluiceMissing,
    start: async (tmp, upstreamPort) => {
      const adminB = await freePort();
      const inB = await freePort();
      const b = await startSluice(
        tmp,
        'sluice-b',
        benchPolicy('bench-b', adminB, undefined, { port: inB, appPort: upstreamPort }),
        adminB,
      );
      const adminA = await freePort();
      const outA = await freePort();
      const a = await startSluice(
        tmp,
        'sluice-a',
        benchPolicy('bench-a', adminA, { port: outA, endpoint: `127.0.0.1:${inB}` }, undefined),
        adminA,
      );
      return { url: `http://127.0.0.1:${outA}/`, procs: [a, b], rssNote: 'sum of A and B' };
    },
  },
  {
    id: 'nginx',
    label: 'nginx',
    skip: () => toolMissing('nginx'),
    start: async (tmp, upstreamPort) => {
      const dir = path.join(tmp, 'nginx');
      const port = await freePort();
      const conf = nginxConf({ dir, port, errorLogLevel: 'warn', upstream: 'bench', servers: [`server 127.0.0.1:${upstreamPort};`] });
      const proc = await startNginx(dir, conf, port, P.serverCpu, P.nice);
      return { url: `http://127.0.0.1:${port}/`, procs: [proc], rssNote: 'sum of master and worker' };
    },
  },
  {
    id: 'haproxy',
    label: 'haproxy',
    skip: () => toolMissing('haproxy'),
    start: async (tmp, upstreamPort) => {
      const port = await freePort();
      const conf = haproxyConf({ port, timeoutServer: '120s', backend: [`server s1 127.0.0.1:${upstreamPort}`] });
      const proc = await startHaproxy(path.join(tmp, 'haproxy.cfg'), conf, port, P.serverCpu, P.nice);
      return { url: `http://127.0.0.1:${port}/`, procs: [proc] };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// One row

interface RowResult {
  label: string;
  skipped?: string;
  error?: string;
  sat?: WrkResult;
  fixed?: FixedRateResult;
  cpuUsPerReq?: number;
  rssMiB?: number;
  rssDetail?: string;
  /** Busy CPU on the two bench cores not used by our processes, during each run, % of one core. */
  otherCpuSatPct?: number;
  otherCpuFixedPct?: number;
  /** Phases that started while the bench CPUs were still busy with other work. */
  notQuiet?: string[];
}

async function settle(label: string, phase: string, res: RowResult): Promise<void> {
  if (P.quietWaitSeconds <= 0) return;
  const waited = await waitQuiet([P.loadCpu, P.serverCpu], P.quietWaitSeconds);
  if (waited === undefined) {
    (res.notQuiet ??= []).push(phase);
    process.stderr.write(`[bench] ${label}: CPUs still busy with other work after ${P.quietWaitSeconds}s; starting ${phase} anyway\n`);
  } else if (waited > 1.5) {
    process.stderr.write(`[bench] ${label}: waited ${fmt(waited, 0)}s for other work to stop\n`);
  }
}

async function runRow(spec: RowSpec, tmp: string, upstream: Proc, upstreamPort: number): Promise<RowResult> {
  const res: RowResult = { label: spec.label };
  const why = spec.skip();
  if (why !== undefined) return { ...res, skipped: why };
  let target: Target | undefined;
  try {
    process.stderr.write(`[bench] ${spec.label}: starting\n`);
    target = await spec.start(tmp, upstreamPort);
    const roots = target.procs.map((p) => p.pid);

    process.stderr.write(`[bench] ${spec.label}: warm-up ${P.warmupSeconds}s\n`);
    const warm = await wrk(target.url, P.warmupSeconds);
    if (warm.result.requests === 0) throw new Error(`warm-up completed no requests\n${warm.result.raw}`);

    await settle(spec.label, 'saturation', res);
    process.stderr.write(`[bench] ${spec.label}: saturation ${P.satSeconds}s\n`);
    const proxy0 = treeTicks(roots);
    const satNoise = otherCpuMeter([P.loadCpu, P.serverCpu], [...roots, upstream.pid]);
    let peakRssKiB = 0;
    const sampler = setInterval(() => {
      let sum = 0;
      for (const pid of processTree(roots)) sum += statusKiB(pid, 'VmRSS') ?? 0;
      peakRssKiB = Math.max(peakRssKiB, sum);
    }, 250);
    let sat: { result: WrkResult; ticks: number };
    try {
      sat = await wrk(target.url, P.satSeconds);
    } finally {
      clearInterval(sampler);
    }
    res.otherCpuSatPct = satNoise(sat.ticks);
    const proxy1 = treeTicks(roots);
    res.sat = sat.result;
    if (roots.length > 0 && sat.result.requests > 0) {
      const ticks = ticksDelta(proxy0, proxy1);
      res.cpuUsPerReq = (ticks * (1e6 / CLK_TCK)) / sat.result.requests;
    }

    await settle(spec.label, 'fixed rate', res);
    process.stderr.write(`[bench] ${spec.label}: fixed rate ${P.rate}/s for ${P.fixedSeconds}s\n`);
    const fixedNoise = otherCpuMeter([P.loadCpu, P.serverCpu], [...roots, upstream.pid]);
    const fixed = await fixedRate(target.url);
    res.otherCpuFixedPct = fixedNoise(fixed.ticks);
    res.fixed = fixed.result;

    if (roots.length > 0) {
      const parts: string[] = [];
      let hwmSum = 0;
      for (const proc of target.procs) {
        let kib = 0;
        for (const pid of processTree([proc.pid])) kib += statusKiB(pid, 'VmHWM') ?? 0;
        hwmSum += kib;
        parts.push(`${proc.name} ${fmt(kib / 1024, 1)}`);
      }
      res.rssMiB = Math.max(hwmSum, peakRssKiB) / 1024;
      if (target.procs.length > 1 || target.rssNote !== undefined) res.rssDetail = `${target.rssNote ?? ''}: ${parts.join(' + ')}`;
    }
    for (const p of target.procs) {
      if (!p.alive) throw new Error(`${p.name} died during the run\n${p.describe()}`);
    }
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`[bench] ${spec.label}: FAILED: ${res.error}\n`);
  } finally {
    if (target !== undefined) await Promise.all(target.procs.map((p) => p.stop()));
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Report

function header(): string {
  const cpus = os.cpus();
  const lines = [
    '## sluice overhead benchmark',
    '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${fmt(os.totalmem() / 2 ** 30, 1)} GiB RAM, ${os.type()} ${os.release()}, load average at start ${loadAverage()}`,
    `- node: ${versionOf(NODE, ['--version'])} (${NODE}); sluice ${sluiceRevision()}`,
    `- tools: ${versionOf('wrk', ['-v'])}; ${proxyVersions()}`,
    `- sluice: \`node ${[...P.sluiceNodeFlags, 'dist/main.js'].join(' ')} proxy --policy <generated>\` (BENCH_SLUICE_NODE_FLAGS), default log level; outbound upstream \`bench\` with default timeouts/retries, \`unknownHosts: reject\``,
    `- before each measured phase the bench waits up to ${P.quietWaitSeconds}s for both CPUs to be idle (BENCH_QUIET_WAIT_SECONDS; 0 = don't wait)`,
    `- pinning: load generator on CPU ${P.loadCpu}; upstream and proxies on CPU ${P.serverCpu} (taskset)${P.nice === undefined ? '' : `; all bench processes at nice ${P.nice} (BENCH_NICE) to keep other work on the machine from interfering`}`,
    `- upstream: bench/upstream.ts (node http), 200 with a 100-byte body, keep-alive; requests are \`GET /\` with \`Host: bench\``,
    `- saturation: \`wrk -t1 -c${P.connections} -d${P.satSeconds}s --latency\` after a ${P.warmupSeconds}s warm-up run of the same (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS)`,
    `- fixed rate: bench/fixed-rate.ts, open loop at ${P.rate} req/s for ${P.fixedSeconds}s after ${P.fixedWarmupSeconds}s unrecorded, up to ${P.connections} connections, latency from the scheduled send time (BENCH_RATE, BENCH_FIXED_SECONDS, BENCH_FIXED_WARMUP_SECONDS)`,
    `- proxy CPU: utime+stime from /proc/PID/stat of the proxy process tree over the saturation run ÷ requests completed (CLK_TCK ${CLK_TCK}: resolution ${fmt(1000 / CLK_TCK, 0)} ms of CPU per run)`,
    '- peak RSS: VmHWM from /proc/PID/status at the end of the row, summed over the proxy processes (nginx master+worker; both sidecars in the outbound→inbound row)',
  ];
  return lines.join('\n');
}

/** "Other CPU" above this share of a core marks a row as measured on a busy machine. */
const NOISY_PCT = 10;

function table(rows: RowResult[]): string {
  const direct = rows.find((r) => r.label === 'direct');
  const out: string[] = [];
  out.push(
    '| row | saturation req/s | × direct | p50 ms @' +
      `${P.rate}/s | p99 ms @${P.rate}/s | p99 × direct | proxy CPU µs/req | proxy peak RSS MiB | errors | notes |`,
  );
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---|');
  const footnotes: string[] = [];
  let anyNoisy = false;
  for (const r of rows) {
    if (r.skipped !== undefined) {
      out.push(`| ${r.label} | — | — | — | — | — | — | — | — | skipped: ${r.skipped} |`);
      continue;
    }
    if (r.error !== undefined && (r.sat === undefined || r.fixed === undefined)) {
      footnotes.push(`**${r.label} failed:**\n\n\`\`\`\n${r.error.slice(0, 3000)}\n\`\`\``);
    }
    const isDirect = r === direct;
    const satRatio = !isDirect && direct?.sat && r.sat ? r.sat.rps / direct.sat.rps : undefined;
    const p99Ratio = !isDirect && direct?.fixed && r.fixed ? r.fixed.latencyMs.p99 / direct.fixed.latencyMs.p99 : undefined;
    const errs: string[] = [];
    if (r.sat) {
      const s = r.sat.socketErrors;
      if (r.sat.non2xx > 0) errs.push(`wrk non-2xx ${r.sat.non2xx}`);
      const sockTotal = s.connect + s.read + s.write + s.timeout;
      if (sockTotal > 0) errs.push(`wrk socket c${s.connect}/r${s.read}/w${s.write}/t${s.timeout}`);
    }
    if (r.fixed) {
      if (r.fixed.non2xx > 0) errs.push(`fixed non-2xx ${r.fixed.non2xx} (${JSON.stringify(r.fixed.statuses)})`);
      if (r.fixed.errors > 0) errs.push(`fixed errors ${r.fixed.errors} (${r.fixed.firstError ?? ''})`);
      if (r.fixed.incomplete > 0) errs.push(`fixed unanswered ${r.fixed.incomplete}`);
    }
    if (r.error !== undefined) errs.push('FAILED, see below');
    const notes: string[] = [];
    if (r.rssDetail) notes.push(`RSS ${r.rssDetail}`);
    const noisy = (r.otherCpuSatPct ?? 0) >= NOISY_PCT || (r.otherCpuFixedPct ?? 0) >= NOISY_PCT;
    if (r.notQuiet !== undefined && !noisy) notes.push(`machine was busy as ${r.notQuiet.join(' and ')} started`);
    if (noisy) {
      notes.push(
        `NOISY: other processes used ${fmt(r.otherCpuSatPct, 0)}% / ${fmt(r.otherCpuFixedPct, 0)}% of a core during saturation / fixed rate`,
      );
      anyNoisy = true;
    }
    if (r.sat && r.sat.rps < P.rate * 1.2) notes.push(`saturation is not well above ${P.rate}/s: fixed-rate latency is mostly queueing`);
    if (r.fixed && r.fixed.sendLagMs.p99 > 1) notes.push(`generator send lag p99 ${fmt(r.fixed.sendLagMs.p99)} ms`);
    out.push(
      `| ${r.label} | ${fmtInt(r.sat?.rps)} | ${isDirect ? '1.00' : fmt(satRatio)} | ${fmt(r.fixed?.latencyMs.p50, 3)} | ${fmt(
        r.fixed?.latencyMs.p99,
        3,
      )} | ${isDirect ? '1.00' : fmt(p99Ratio)} | ${isDirect ? '—' : fmt(r.cpuUsPerReq, 1)} | ${isDirect ? '—' : fmt(r.rssMiB, 1)} | ${
        errs.length === 0 ? '0' : errs.join('; ')
      } | ${notes.join('; ')} |`,
    );
  }
  if (anyNoisy) {
    footnotes.unshift(
      `**Warning:** rows marked NOISY ran while other processes used ≥${NOISY_PCT}% of a core on the bench CPUs; ` +
        'their figures understate what the proxies can do. Re-run on an idle machine.',
    );
  }
  return [out.join('\n'), ...footnotes].join('\n\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<BenchOutcome> {
  checkPlatform([P.loadCpu, P.serverCpu]);
  if (onPath('wrk') === undefined) throw new Error('wrk is not on PATH (apt-get install wrk)');
  // This process coordinates and samples; keep it off the server core.
  pinSelf(P.loadCpu);
  checkNice(P.nice);

  const tmp = makeTmpDir('sluice-bench-', P.keepTmp);
  const results: RowResult[] = [];
  const { proc: upstream, port: upstreamPort } = await startUpstream();
  const selected = ROWS.filter((r) => r.id === 'direct' || P.rows.length === 0 || P.rows.includes(r.id));
  for (const spec of selected) {
    if (isAborting()) throw new Error('interrupted');
    results.push(await runRow(spec, tmp, upstream, upstreamPort));
    if (!upstream.alive) throw new Error(`upstream died\n${upstream.describe()}`);
  }
  // The report (git, tool versions) is written after runMain has stopped everything.
  return { report: () => `${header()}\n\n${table(results)}`, failed: results.some((r) => r.error !== undefined) };
}

runMain('bench', main);
